package workflows

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/turnstile/turnstile/models"
)

// Histories under testdata were recorded from a real server by
// tests.TestE2E_SessionHistoryReplays (TURNSTILE_RECORD_HISTORY=<file>).
// Every one must replay against the current code: a change to the session's
// logic that would break running sessions fails here unless it is versioned
// with workflow.GetVersion.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recorded histories in testdata (%v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflowWithOptions(Session, workflow.RegisterOptions{Name: models.SessionWorkflowType})
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}

// The replay check must be able to fail: a session that skips its MongoDB
// bookkeeping is not the code that wrote the history.
func TestReplayDetectsAnIncompatibleChange(t *testing.T) {
	changed := func(ctx workflow.Context, in Input) error {
		return workflow.Sleep(ctx, DefaultIdleTimeout)
	}
	r := worker.NewWorkflowReplayer()
	r.RegisterWorkflowWithOptions(changed, workflow.RegisterOptions{Name: models.SessionWorkflowType})
	if err := r.ReplayWorkflowHistoryFromJSONFile(nil, "testdata/session_v0_initial.json"); err == nil {
		t.Fatal("an incompatible workflow replayed the recorded history without error")
	}
}
