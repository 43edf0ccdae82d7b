//go:build linux

package faults

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Scenario 15 covers the hardening issue's points 2 and 3 with every
// service in its own process: API and worker reach the embedded store as
// separate clients, through its gate (devserver/mongogate), and sessions
// get signals from two API instances.

// floodBudget is scenario 15's session history budget, low enough that
// the close flood reaches it within a few seconds.
const floodBudget = 500

func TestFault15_CancelsRaceStartsAndCloseFloodDuringALongRequest(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, apis: 2, env: map[string]string{
		"TURNSTILE_SESSION_HISTORY_BUDGET": strconv.Itoa(floodBudget),
		"TURNSTILE_SIGNAL_RATE":            "1000000",
		"TURNSTILE_SIGNAL_BURST":           "1000000",
		"TURNSTILE_HTTP_TIMEOUT":           "30s", // the long request takes 10 s
	}})
	users := s.newUsers(4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Part 1, cancel against start: each user queues pairs of a blocker
	// and a target through API 0; when the sink has the blocker's effect
	// (the worker is about to start the target) the target is cancelled
	// through API 1 a random 0–30 ms later, so the cancel lands on the
	// worker process's start. Exactly one of the two may win: a request
	// recorded cancelled must never reach the sink (checker: cancelled
	// ran), one that started answers the cancel 409 not_queued.
	var cancelled, tooLate atomic.Int64
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			var cancels sync.WaitGroup
			for range 25 {
				blocker, a := s.submit(u, 30, expectSucceeded, time.Minute)
				if a.status != http.StatusAccepted {
					t.Errorf("submit %s: %s", blocker.Name, a)
					return
				}
				target := s.newOp(u, "") // succeeded or cancelled, whichever won
				cancels.Add(1)
				s.sink.afterEffect(blocker.Name, func() {
					defer cancels.Done()
					time.Sleep(time.Duration(rand.N(30)) * time.Millisecond)
					ids := target.requestIDs()
					if len(ids) == 0 {
						return
					}
					c := call(ctx, "DELETE", s.api(1)+"/v1/requests/"+ids[0], u.token, nil)
					switch {
					case c.status == http.StatusOK:
						cancelled.Add(1)
					case c.status == http.StatusConflict && c.errorCode() == "not_queued":
						tooLate.Add(1)
					default:
						t.Errorf("cancel %s: %s", ids[0], c)
					}
				})
				if a := submitUntilAccepted(ctx, []string{s.api(0)}, u, target, payload(s.sink, u, target, 20), time.Now().Add(time.Minute)); a.status != http.StatusAccepted {
					t.Errorf("submit %s: %s", target.Name, a)
					return
				}
			}
			cancels.Wait()
		})
	}
	wg.Wait()
	t.Logf("cancel against start: %d cancels won, %d found the request started", cancelled.Load(), tooLate.Load())
	if cancelled.Load() == 0 || tooLate.Load() == 0 {
		t.Errorf("the race did not happen both ways (%d won, %d too late): the scenario proves nothing", cancelled.Load(), tooLate.Load())
	}

	// Part 2, a flood of closes while a long request holds each session's
	// run open: 4 clients per user alternate between the APIs for 6 s of
	// the 10 s request. Past the budget the closes answer 429 session_busy;
	// every request, the five queued behind the long one included, runs
	// once and in order.
	for _, u := range users {
		if _, a := s.submit(u, 10000, expectSucceeded, time.Minute); a.status != http.StatusAccepted {
			t.Fatalf("submit the long request: %s", a)
		}
		for range 5 {
			if _, a := s.submit(u, 20, expectSucceeded, time.Minute, s.api(1)); a.status != http.StatusAccepted {
				t.Fatalf("submit: %s", a)
			}
		}
	}
	s.waitBusy(t, 30*time.Second)
	var closed, busy atomic.Int64
	stop := time.Now().Add(6 * time.Second)
	for _, u := range users {
		for i := range 4 {
			wg.Go(func() {
				for n := i; time.Now().Before(stop); n++ {
					c := call(ctx, "DELETE", s.api(n%2)+"/v1/session", u.token, nil)
					switch {
					case c.status == http.StatusAccepted:
						closed.Add(1)
					case c.status == http.StatusTooManyRequests && c.errorCode() == "session_busy":
						busy.Add(1)
					default:
						t.Errorf("close: %s", c)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	maxLen := int64(0)
	for _, u := range users {
		d, err := s.temporalClient().DescribeWorkflowExecution(ctx, "session-"+u.id, "")
		if err != nil {
			t.Fatalf("describe session-%s: %v", u.id, err)
		}
		maxLen = max(maxLen, d.GetWorkflowExecutionInfo().GetHistoryLength())
	}
	t.Logf("close flood: %d closes signalled, %d answered session_busy; longest session history %d events (budget %d)",
		closed.Load(), busy.Load(), maxLen, floodBudget)
	if busy.Load() == 0 {
		t.Errorf("no close reached the budget: the flood proves nothing")
	}
	// Past the budget only closes already in flight land: at most one per
	// flooding client, a few events each.
	if maxLen > floodBudget+4*8 {
		t.Errorf("a session's history reached %d events, budget %d", maxLen, floodBudget)
	}
	s.waitDrained(2 * time.Minute)
	s.check("15 cancels race starts across processes; a close flood during a long request")
}
