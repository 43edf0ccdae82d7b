package workflows

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
)

// deliveries stands in for the workers Temporal hands Run's attempts to: a
// frozen worker's open poll takes an attempt that then times out without
// starting (swallowed), a worker that froze mid-run started it and timed out
// (stalled), a live one runs it.
type deliveries struct {
	h    *harness
	mu   sync.Mutex
	n    int
	plan func(n int) string // "swallow", "stall" or "run" for the nth delivery (1-based)
}

func (d *deliveries) run(ctx context.Context, in activities.RunInput) (activities.RunResult, error) {
	d.mu.Lock()
	d.n++
	what := d.plan(d.n)
	d.mu.Unlock()
	timedOut := temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil)
	switch what {
	case "swallow":
		return activities.RunResult{}, timedOut
	case "stall":
		// What Run does before it starts the handler of a retry.
		if a := activity.GetInfo(ctx).Attempt; a > 1 {
			_ = d.h.store.SetAttempts(ctx, in.RequestID, in.PriorAttempts+int(a))
		}
		return activities.RunResult{}, timedOut
	}
	return d.h.acts.Run(ctx, in)
}

func (d *deliveries) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

func runWithDeliveries(t *testing.T, plan func(n int) string) (*harness, *deliveries) {
	h := newHarness(t)
	d := &deliveries{h: h, plan: plan}
	h.env.OnActivity(h.acts.Run, mock.Anything, mock.Anything).Return(d.run)
	h.submitAt(0, "r1", "r2")
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{})
	return h, d
}

// Fault scenario 2's flake: the attempt in flight on a frozen worker and the
// two retries its open polls took all time out; only one of the three ran.
func TestSessionWithFakeStore_AttemptsSwallowedByAFrozenWorkerAreGrantedAgain(t *testing.T) {
	h, d := runWithDeliveries(t, func(n int) string {
		switch n {
		case 1:
			return "stall"
		case 2, 3:
			return "swallow"
		}
		return "run"
	})
	h.wantRan("r1", "r2")
	// The stalled first attempt counts; the swallowed ones do not.
	h.wantStatus("r1", models.StatusSucceeded, 2)
	if got := d.count(); got != 5 { // r1: 3 timed out + 1 run; r2: 1
		t.Fatalf("%d deliveries of Run, want 5", got)
	}
}

// Attempts that started and then timed out are real attempts: the budget is
// not granted again.
func TestSessionWithFakeStore_AttemptsThatStartedAndTimedOutAreNotGrantedAgain(t *testing.T) {
	h, d := runWithDeliveries(t, func(n int) string {
		if n <= 3 {
			return "stall"
		}
		return "run"
	})
	h.wantRan("r2")
	h.wantStatus("r1", models.StatusFailed, 3)
	if got := d.count(); got != 4 {
		t.Fatalf("%d deliveries of Run, want 4 (3 for r1, 1 for r2)", got)
	}
}

// With every delivery swallowed (all workers frozen) the grants still end:
// each round counts its first delivery as an attempt.
func TestSessionWithFakeStore_SwallowedAttemptsAreGrantedAgainOnlyWithinTheBudget(t *testing.T) {
	h, d := runWithDeliveries(t, func(n int) string {
		if n <= 6 {
			return "swallow"
		}
		return "run"
	})
	h.wantRan("r2")
	h.wantStatus("r1", models.StatusFailed, 3)
	if got := d.count(); got != 7 { // r1: rounds of 3, 2 and 1; r2: 1
		t.Fatalf("%d deliveries of Run, want 7", got)
	}
	if r := h.store.get("r1"); r.Error != "timed out (Heartbeat)" {
		t.Fatalf("r1 error %q", r.Error)
	}
}

// An attempt handed out before its request ended (a zombie worker's, in
// practice) finds it no longer running and does not run it again.
func TestSessionWithFakeStore_StaleAttemptOfAnEndedRequestDoesNotRun(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["r1"] = 1
	h.work.onRun = func(_ context.Context, job activities.Job) {
		if job.ID == "r1" && job.Attempt == 1 {
			// Its outcome is recorded elsewhere meanwhile.
			_ = h.store.Finish(context.Background(), "r1", models.StatusSucceeded, `"elsewhere"`, "", 1, time.Now())
		}
	}
	h.submitAt(0, "r1", "r2")
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{})
	if n := h.work.callsOf("r1"); n != 1 {
		t.Fatalf("r1's handler ran %d times, want 1", n)
	}
	if r := h.store.get("r1"); r.Status != models.StatusSucceeded || r.Result != `"elsewhere"` {
		t.Fatalf("r1 is %s (%q): the stale attempt changed it", r.Status, r.Result)
	}
	h.wantRan("r2")
}
