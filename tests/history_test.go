package tests

import (
	"context"
	"os"
	"testing"
	"time"

	historypb "go.temporal.io/api/history/v1"
	sdkworker "go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/worker"
)

// TestE2E_SessionHistoryReplays drives one session through every kind of
// event the workflow knows (submits, retries, a failure, pause, resume,
// policy, cancel, requeue, close), then replays the history the server recorded
// against the current workflow code. With TURNSTILE_RECORD_HISTORY=<file>
// it also writes the history there: that is how
// workflows/testdata/*.json are made before a workflow change.
func TestE2E_SessionHistoryReplays(t *testing.T) {
	c := newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := starter.New(shared.backends.Temporal, shared.cfg.Session)

	first := c.submit("sleep", map[string]int{"ms": 300})
	c.waitStatus(first.ID, "running")
	if err := st.Pause(ctx, c.userID); err != nil {
		t.Fatal(err)
	}
	failing := c.submit("http", map[string]any{"url": shared.sink.URL + "/x?status=500"})
	cancelled := c.submit("echo", "cancelled")
	c.mustDo("DELETE", "/v1/requests/"+cancelled.ID, nil, 200, nil)
	if err := st.SetPolicy(ctx, c.userID, models.PolicyContinue); err != nil {
		t.Fatal(err)
	}
	if err := st.Resume(ctx, c.userID); err != nil {
		t.Fatal(err)
	}
	var batch struct{ Requests []request }
	c.mustDo("POST", "/v1/requests/batch", map[string]any{"requests": []map[string]any{
		{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2},
	}}, 202, &batch)
	c.waitFinal(failing.ID)
	newAdmin(t).mustDo("POST", "/v1/admin/requests/"+failing.ID+"/requeue", nil, 202, nil)
	c.mustDo("DELETE", "/v1/session", nil, 202, nil)
	done := c.waitFinal(first.ID, failing.ID, cancelled.ID, batch.Requests[0].ID, batch.Requests[1].ID)
	if done[1].Status != "failed" || done[1].Attempts != 2*int(shared.cfg.Session.MaxAttempts) {
		t.Fatalf("requeued failing request: %+v", done[1])
	}

	replayRecorded(ctx, t, models.SessionWorkflowID(c.userID), 20, "TURNSTILE_RECORD_HISTORY")
}

// replayRecorded waits for the session run to end, replays its history
// (at least minEvents long) against the current workflow code and, when the
// environment variable recordEnv names a file, writes the history there.
func replayRecorded(ctx context.Context, t *testing.T, workflowID string, minEvents int, recordEnv string) *historypb.History {
	t.Helper()
	run := shared.backends.Temporal.GetWorkflow(ctx, workflowID, "")
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("session run ended with %v", err)
	}
	hist := &historypb.History{}
	iter := shared.backends.Temporal.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if len(hist.Events) < minEvents {
		t.Fatalf("history has only %d events", len(hist.Events))
	}
	replayer := sdkworker.NewWorkflowReplayer()
	worker.RegisterWorkflows(replayer)
	if err := replayer.ReplayWorkflowHistory(nil, hist); err != nil {
		t.Fatalf("replay of a recorded session failed: %v", err)
	}
	if path := os.Getenv(recordEnv); path != "" {
		data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d events to %s", len(hist.Events), path)
	}
	return hist
}
