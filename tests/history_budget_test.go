package tests

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/models"
)

// TestE2E_SignalFloodDuringALongRequestStaysWithinTheHistoryBudget floods a
// session with closes while a long request holds its run open (a session
// continues as new only between requests). Every close is a signal and
// costs the run history events; unchecked, about 13,000 of them pass
// Temporal's 51,200-event limit and the server terminates the run. With the
// signal rate limit lifted on an API of its own, this test shows the second
// guard: at its history budget (300 here) the run takes no more steering
// signals (429 session_busy), its history stays at the budget, and every
// request still runs, in order, once.
func TestE2E_SignalFloodDuringALongRequestStaysWithinTheHistoryBudget(t *testing.T) {
	const budget = 300
	cfg := shared.cfg
	cfg.HistoryBudget = budget
	cfg.SignalRate, cfg.SignalBurst = 1_000_000, 1_000_000
	srv, err := app.NewAPIServer(cfg, shared.backends, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = app.Serve(ctx, srv, ln) }()

	c := newUser(t)
	c.base = "http://" + ln.Addr().String()
	long := c.submit("sleep", map[string]int{"ms": 9000})
	var after []string
	for i := range 5 {
		after = append(after, c.submit("echo", i).ID)
	}
	c.waitStatus(long.ID, "running")
	before, err := shared.backends.Temporal.DescribeWorkflowExecution(t.Context(), models.SessionWorkflowID(c.userID), "")
	if err != nil {
		t.Fatal(err)
	}

	// Flood for 5 s of the 9 s request: 8 clients closing as fast as the
	// API answers.
	var accepted, busy, other atomic.Int64
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				r := c.do("DELETE", "/v1/session", nil)
				switch {
				case r.status == 202:
					accepted.Add(1)
				case r.status == 429 && r.errorCode() == "session_busy":
					busy.Add(1)
				default:
					other.Add(1)
					t.Errorf("close during the flood: %d %s", r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	desc, err := shared.backends.Temporal.DescribeWorkflowExecution(t.Context(), models.SessionWorkflowID(c.userID), "")
	if err != nil {
		t.Fatal(err)
	}
	info := desc.GetWorkflowExecutionInfo()
	t.Logf("flood: %d closes signalled, %d answered session_busy; the run's history: %d events (budget %d)",
		accepted.Load(), busy.Load(), info.GetHistoryLength(), budget)
	if info.GetExecution().GetRunId() != before.GetWorkflowExecutionInfo().GetExecution().GetRunId() {
		t.Fatalf("the session run changed during the request (was it terminated?)")
	}
	// Past the budget only the closes already in flight land: at most one
	// per flooding client, a few events each.
	if n := info.GetHistoryLength(); n > budget+8*5 {
		t.Fatalf("history %d events after the flood, budget %d: the guard let signals through", n, budget)
	}
	if busy.Load() == 0 {
		t.Fatalf("no close was held back: the flood (%d closes) never reached the budget", accepted.Load())
	}

	done := c.waitFinal(append([]string{long.ID}, after...)...)
	for i, r := range done {
		if r.Status != "succeeded" || r.Attempts != 1 {
			t.Fatalf("request %d after the flood: %+v", i, r)
		}
		if i > 0 && r.StartedAt.Before(*done[i-1].FinishedAt) {
			t.Fatalf("request %d started before request %d finished", i, i-1)
		}
	}
}
