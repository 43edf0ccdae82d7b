package tests

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/worker"
)

// TestE2E_AttemptsSwallowedByAFrozenWorkerAreGrantedAgain reproduces, on the
// real Temporal server, what made fault scenario 2 flaky: a frozen worker's
// open activity polls take every attempt of a request, and each times out
// without running. The session gives the attempts that never started back,
// and the request runs once a live worker polls. The session runs on a task
// queue of its own where, at first, the only activity poller is the frozen
// one. With TURNSTILE_RECORD_REDELIVER_HISTORY=<file> the history is written
// there (workflows/testdata/session_v4_redeliver.json).
func TestE2E_AttemptsSwallowedByAFrozenWorkerAreGrantedAgain(t *testing.T) {
	c := newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	queue := "redeliver-" + c.userID
	cfg := shared.cfg.Session
	cfg.LocalTypes = nil // echo as a regular activity, as long work runs
	cfg.MaxAttempts = 3
	cfg.HeartbeatTimeout = time.Second
	cfg.ExecTimeout = 3 * time.Second
	temporalClient := shared.backends.Temporal
	workerCfg := func(opts sdkworker.Options) worker.Config {
		return worker.Config{
			TaskQueue: queue, Requests: shared.backends.Store.Requests, Handlers: app.Registry(shared.cfg),
			Logger: slog.Default(), HeartbeatEvery: 200 * time.Millisecond, Options: opts,
		}
	}

	// Workflow tasks and local activities (MongoDB writes) only.
	sessions := worker.New(temporalClient, workerCfg(sdkworker.Options{LocalActivityWorkerOnly: true}))
	if err := sessions.Start(); err != nil {
		t.Fatal(err)
	}
	defer sessions.Stop()
	// The frozen worker: takes Run's attempts and never starts them.
	var taken atomic.Int32
	frozen := sdkworker.New(temporalClient, queue, sdkworker.Options{})
	frozen.RegisterActivityWithOptions(func(ctx context.Context, in activities.RunInput) (activities.RunResult, error) {
		// Nothing is heartbeated, so the server times the attempt out after
		// HeartbeatTimeout. A frozen process says nothing, so neither does
		// this one before then (Stop cancels ctx); what it says later is
		// refused.
		taken.Add(1)
		start := time.Now()
		<-ctx.Done()
		time.Sleep(time.Until(start.Add(2 * cfg.HeartbeatTimeout)))
		return activities.RunResult{}, ctx.Err()
	}, activity.RegisterOptions{Name: "Run"})
	if err := frozen.Start(); err != nil {
		t.Fatal(err)
	}
	// Stop ends its polls; it does not wait for the attempts it holds.
	stopFrozen := sync.OnceFunc(frozen.Stop)
	defer stopFrozen()

	st := &starter.Starter{Client: temporalClient, TaskQueue: queue, Config: cfg}
	req := c.submitTo(ctx, st, "echo", `"swallowed"`)

	// All the attempts Temporal grants go to the frozen worker.
	for taken.Load() < cfg.MaxAttempts {
		if ctx.Err() != nil {
			t.Fatalf("the frozen worker took %d attempts, want %d", taken.Load(), cfg.MaxAttempts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopFrozen()
	if got := c.get(req.ID).Status; got != "running" {
		t.Fatalf("request is %s while its attempts time out, want running", got)
	}
	live := worker.New(temporalClient, workerCfg(sdkworker.Options{}))
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer live.Stop()

	done := c.waitFinal(req.ID)[0]
	if done.Status != "succeeded" || string(done.Result) != `"swallowed"` {
		t.Fatalf("request ended %s (error %v, result %s), want succeeded", done.Status, done.Error, done.Result)
	}
	// The first, taken as started, and the one that ran.
	if done.Attempts != 2 {
		t.Fatalf("attempts %d, want 2", done.Attempts)
	}
	if n := taken.Load(); n != cfg.MaxAttempts {
		t.Fatalf("the frozen worker took %d attempts, want %d", n, cfg.MaxAttempts)
	}

	if err := st.Close(ctx, c.userID, 0); err != nil {
		t.Fatal(err)
	}
	hist := replayRecorded(ctx, t, models.SessionWorkflowID(c.userID), 10, "TURNSTILE_RECORD_REDELIVER_HISTORY")
	scheduled, timedOut := 0, 0
	for _, ev := range hist.Events {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "Run" {
				scheduled++
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			timedOut++
		}
	}
	if scheduled != 2 || timedOut != 1 {
		t.Fatalf("history: Run scheduled %d times, timed out %d, want 2 and 1", scheduled, timedOut)
	}
}

// submitTo stores a request of c's and signals it to c's session through
// st (a task queue and session config of the test's own), as the naive
// path does.
func (c *client) submitTo(ctx context.Context, st *starter.Starter, typ, payload string) models.Request {
	c.t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	req := models.Request{ID: uuid.Must(uuid.NewV7()).String(), UserID: c.userID, Type: typ,
		Payload: payload, Status: models.StatusQueued, EnqueuedAt: now}
	if err := shared.backends.Store.Requests.Insert(ctx, req); err != nil {
		c.t.Fatal(err)
	}
	if err := st.Submit(ctx, c.userID, []models.QueuedRequest{{ID: req.ID, Type: req.Type, EnqueuedAt: now}}); err != nil {
		c.t.Fatal(err)
	}
	return req
}
