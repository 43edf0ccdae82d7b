package tests

import (
	"context"
	"log/slog"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/worker"
)

// TestAdmin_PauseAndPolicyOutliveTheSessionRun pauses a user's session and
// sets its failure policy, lets the run end by its idle timeout, and
// submits again: the new run must still be paused with the policy set.
// Both lived only in the run's state, so an idle end silently resumed the
// user's queue. With TURNSTILE_RECORD_STEERING_HISTORY=<file> the new
// run's history is written there.
func TestAdmin_PauseAndPolicyOutliveTheSessionRun(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The first run idles out after 1 s: it runs on a task queue of its
	// own with a worker of its own.
	queue := "steer-" + u.userID
	cfg := shared.cfg.Session
	cfg.IdleTimeout = time.Second
	w := worker.New(shared.backends.Temporal, worker.Config{
		TaskQueue: queue, Requests: shared.backends.Store.Requests, Queues: shared.backends.Store.Queues,
		Handlers: app.Registry(shared.cfg), Logger: slog.Default(),
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	st := &starter.Starter{Client: shared.backends.Temporal, TaskQueue: queue, Config: cfg}
	if err := st.Deliver(ctx, u.userID, models.Delivery{}); err != nil {
		t.Fatal(err)
	}
	var sess adminSession
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/pause", nil, 200, &sess)
	admin.mustDo("PUT", "/v1/admin/sessions/"+u.userID+"/policy", map[string]string{"policy": "pause"}, 200, &sess)
	if !sess.Paused || sess.Policy != models.PolicyPause {
		t.Fatalf("after pause and policy: %+v", sess)
	}
	for {
		d, err := shared.backends.Temporal.DescribeWorkflowExecution(ctx, models.SessionWorkflowID(u.userID), "")
		if err != nil {
			t.Fatal(err)
		}
		if s := d.GetWorkflowExecutionInfo().GetStatus(); s != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			t.Logf("the first run ended idle: %s", s)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A new run, opened by the submission.
	r := u.submit("echo", "after the idle end")
	time.Sleep(1500 * time.Millisecond)
	if got := u.get(r.ID); got.Status != "queued" {
		t.Fatalf("request %s in the new run of a paused session: %s, want queued", r.ID, got.Status)
	}
	sess = admin.session(u.userID)
	if !sess.Paused || sess.Policy != models.PolicyPause {
		t.Fatalf("the new run: paused %v, policy %q; want paused with policy pause", sess.Paused, sess.Policy)
	}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil, 200, nil)
	admin.mustDo("PUT", "/v1/admin/sessions/"+u.userID+"/policy", map[string]string{"policy": "continue"}, 200, nil)
	if done := u.waitFinal(r.ID)[0]; done.Status != "succeeded" {
		t.Fatalf("after resume: %+v", done)
	}
	// The new run's history, which starts from the stored steering,
	// replays (workflows/testdata/session_v8_steering.json is one).
	u.mustDo("DELETE", "/v1/session", nil, 202, nil)
	replayRecorded(ctx, t, models.SessionWorkflowID(u.userID), 10, "TURNSTILE_RECORD_STEERING_HISTORY")
}

// TestAdmin_DisablingAUserPausesTheirQueue: a disabled user's waiting
// requests stay queued (the running one finishes); enabling the account
// does not run them, an operator's resume does.
func TestAdmin_DisablingAUserPausesTheirQueue(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	long := u.submit("sleep", map[string]int{"ms": 500})
	waiting := u.submit("echo", "waits")
	u.waitStatus(long.ID, "running")
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/disable", nil, 200, nil)
	var r adminRequestView
	deadline := time.Now().Add(20 * time.Second)
	for {
		admin.mustDo("GET", "/v1/admin/requests/"+long.ID, nil, 200, &r)
		if r.Status == "succeeded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running request did not finish: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/enable", nil, 200, nil)
	time.Sleep(time.Second)
	if admin.mustDo("GET", "/v1/admin/requests/"+waiting.ID, nil, 200, &r); r.Status != "queued" {
		t.Fatalf("a disabled (then enabled) user's waiting request is %s, want queued", r.Status)
	}
	if st := admin.session(u.userID); !st.Paused {
		t.Fatalf("the session of a user who was disabled: %+v, want paused", st.SessionState)
	}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil, 200, nil)
	if done := u.waitFinal(waiting.ID)[0]; done.Status != "succeeded" {
		t.Fatalf("after resume: %+v", done)
	}
}

type adminRequestView struct {
	request
	UserID string `json:"user_id"`
}

// TestE2E_ReplayedSubmissionDoesNotReopenAClosedSession: resubmitting a
// request already accepted (same Idempotency-Key) after the session was
// closed and ended answers the same request and opens no new run (a replay
// is not new work).
func TestE2E_ReplayedSubmissionDoesNotReopenAClosedSession(t *testing.T) {
	c := newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := c.submit("echo", "once", "Idempotency-Key", "closed-1")
	c.waitFinal(first.ID)
	c.mustDo("DELETE", "/v1/session", nil, 202, nil)
	id := models.SessionWorkflowID(c.userID)
	running := func() (bool, string) {
		d, err := shared.backends.Temporal.DescribeWorkflowExecution(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		info := d.GetWorkflowExecutionInfo()
		return info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, info.GetExecution().GetRunId()
	}
	for {
		if ok, _ := running(); !ok {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the closed session did not end")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, ended := running()
	again := c.submit2xx("echo", "once", "Idempotency-Key", "closed-1")
	if again.ID != first.ID || again.Status != "succeeded" {
		t.Fatalf("replay after the close: %+v", again)
	}
	time.Sleep(time.Second) // a delivery would have opened a run by now
	if ok, run := running(); ok || run != ended {
		t.Fatalf("the replay opened a session run (%s, running %v)", run, ok)
	}
	if st := c.sessionState(); st.State != models.SessionClosed {
		t.Fatalf("session after the replay: %+v", st)
	}
}

func (c *client) sessionState() models.SessionState {
	c.t.Helper()
	var st models.SessionState
	c.mustDo("GET", "/v1/session", nil, 200, &st)
	return st
}
