package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// withSettleStore runs f on a Store on a fresh test database.
func withSettleStore(t *testing.T, f func(t *testing.T, s *store.Store)) {
	f(t, storetest.New(t))
}

func settleNow(d time.Duration) func() time.Time { return func() time.Time { return t0.Add(d) } }

// sameTime reports whether p is set and equals want.
func timeIs(p *time.Time, want time.Time) bool { return p != nil && p.Equal(want) }

// noRun is a run that must not be called.
func mustNotRun(t *testing.T) func(*models.Request) models.Settlement {
	return func(cur *models.Request) models.Settlement {
		t.Errorf("run called for %+v", cur)
		return models.Settlement{Status: models.StatusSucceeded, Result: `"wrong"`, Attempts: 99, StartedAt: t0, FinishedAt: t0}
	}
}

func TestSettleQueuedRunsOnceAndRecordsOutcome(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		r.Payload = `{"n":7}`
		r.Attempts = 2 // a requeued request keeps its history of attempts
		mustInsert(t, s, r)
		other := queued(t, "alice")
		mustInsert(t, s, other)

		started, finished := t0.Add(time.Minute), t0.Add(2*time.Minute)
		calls := 0
		var seen models.Request
		got, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), func(cur *models.Request) models.Settlement {
			calls++
			seen = *cur
			return models.Settlement{Status: models.StatusSucceeded, Result: `{"ok":true}`, Attempts: cur.Attempts + 1,
				StartedAt: started, FinishedAt: finished}
		})
		if err != nil || !called {
			t.Fatalf("Settle = called %v, err %v; want called, nil", called, err)
		}
		if calls != 1 {
			t.Fatalf("run called %d times, want 1", calls)
		}
		if seen.ID != r.ID || seen.UserID != "alice" || seen.Type != r.Type || seen.Payload != `{"n":7}` ||
			seen.Attempts != 2 || seen.Status != models.StatusQueued || !seen.EnqueuedAt.Equal(t0) {
			t.Errorf("run got %+v; want the stored queued request with its payload and 2 attempts", seen)
		}
		if got == nil || got.ID != r.ID || got.Status != models.StatusQueued || got.Attempts != 2 ||
			got.Payload != `{"n":7}` || got.StartedAt != nil || got.FinishedAt != nil || got.Result != "" {
			t.Errorf("Settle returned %+v; want the request as it was before (queued, 2 attempts)", got)
		}

		st := mustGet(t, s, r.ID)
		if st.Status != models.StatusSucceeded || st.Result != `{"ok":true}` || st.Error != "" || st.Attempts != 3 ||
			!timeIs(st.StartedAt, started) || !timeIs(st.FinishedAt, finished) || st.Payload != `{"n":7}` {
			t.Errorf("stored %+v; want succeeded, result, 3 attempts, started %v, finished %v", st, started, finished)
		}
		if o := mustGet(t, s, other.ID); o.Status != models.StatusQueued || o.StartedAt != nil {
			t.Errorf("another request changed: %+v", o)
		}

		// Settled is final: a second Settle (a retried batch) runs nothing.
		again, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Hour), mustNotRun(t))
		if err != nil || called || again == nil || again.Status != models.StatusSucceeded || again.Result != `{"ok":true}` {
			t.Fatalf("second Settle = %+v, called %v, %v; want the succeeded request, not called", again, called, err)
		}
		if st2 := mustGet(t, s, r.ID); st2.Attempts != 3 || !timeIs(st2.FinishedAt, finished) || st2.Result != `{"ok":true}` {
			t.Errorf("second Settle changed the request: %+v", st2)
		}
	})
}

func TestSettleFailedRecordsError(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		mustInsert(t, s, r)
		started, finished := t0.Add(time.Minute), t0.Add(2*time.Minute)
		_, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), func(cur *models.Request) models.Settlement {
			return models.Settlement{Status: models.StatusFailed, Error: "boom", Attempts: 1, StartedAt: started, FinishedAt: finished}
		})
		if err != nil || !called {
			t.Fatalf("Settle = called %v, %v", called, err)
		}
		st := mustGet(t, s, r.ID)
		if st.Status != models.StatusFailed || st.Error != "boom" || st.Result != "" || st.Attempts != 1 ||
			!timeIs(st.StartedAt, started) || !timeIs(st.FinishedAt, finished) {
			t.Errorf("stored %+v; want failed with error boom, 1 attempt, started and finished", st)
		}
		// A failed request is final too.
		if got, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Hour), mustNotRun(t)); err != nil || called || got.Status != models.StatusFailed {
			t.Errorf("Settle(failed) = %+v, called %v, %v", got, called, err)
		}
	})
}

func TestSettleRetryLeavesRunningAndKeepsFirstStart(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		mustInsert(t, s, r)
		first := t0.Add(time.Minute)
		_, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), func(cur *models.Request) models.Settlement {
			// A retryable failure: the fields of an outcome must not be written.
			return models.Settlement{Status: models.StatusRunning, Attempts: 1, Error: "flaky", Result: `"partial"`,
				StartedAt: first, FinishedAt: t0.Add(2 * time.Minute)}
		})
		if err != nil || !called {
			t.Fatalf("Settle = called %v, %v", called, err)
		}
		st := mustGet(t, s, r.ID)
		if st.Status != models.StatusRunning || st.Attempts != 1 || !timeIs(st.StartedAt, first) ||
			st.FinishedAt != nil || st.Error != "" || st.Result != "" {
			t.Fatalf("after a retry settlement: %+v; want running, 1 attempt, started %v, no outcome", st, first)
		}
		// A running request cannot be cancelled any more.
		if _, err := s.Requests.CancelQueued(ctx, "alice", r.ID, t0); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CancelQueued(running) err = %v, want ErrConflict", err)
		}

		// The session tries it again: Settle runs it once more.
		later, end := t0.Add(time.Hour), t0.Add(time.Hour+time.Second)
		calls := 0
		var seen models.Request
		got, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Hour), func(cur *models.Request) models.Settlement {
			calls++
			seen = *cur
			return models.Settlement{Status: models.StatusSucceeded, Result: `2`, Attempts: cur.Attempts + 1, StartedAt: later, FinishedAt: end}
		})
		if err != nil || !called || calls != 1 {
			t.Fatalf("second Settle = called %v (%d runs), %v", called, calls, err)
		}
		if seen.Status != models.StatusRunning || seen.Attempts != 1 || !timeIs(seen.StartedAt, first) {
			t.Errorf("second run got %+v; want running with 1 attempt since %v", seen, first)
		}
		if got.Status != models.StatusRunning || got.Attempts != 1 {
			t.Errorf("second Settle returned %+v; want the running request as it was", got)
		}
		st = mustGet(t, s, r.ID)
		if st.Status != models.StatusSucceeded || st.Attempts != 2 || st.Result != `2` || !timeIs(st.FinishedAt, end) {
			t.Errorf("stored %+v; want succeeded after 2 attempts, finished %v", st, end)
		}
		if !timeIs(st.StartedAt, first) {
			t.Errorf("started_at = %v; a retried start must keep the first, %v", st.StartedAt, first)
		}
	})
}

func TestSettleFinalRequestIsNotRun(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		start, end := t0.Add(time.Second), t0.Add(2*time.Second)
		for _, st := range []models.Status{models.StatusSucceeded, models.StatusFailed, models.StatusCancelled} {
			r := queued(t, "alice")
			r.Status, r.Attempts, r.StartedAt, r.FinishedAt = st, 4, &start, &end
			if st == models.StatusSucceeded {
				r.Result = `"done"`
			} else {
				r.Error = "earlier"
			}
			mustInsert(t, s, r)
			got, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Hour), mustNotRun(t))
			if err != nil || called {
				t.Errorf("%s: Settle called %v, %v; want not called, nil", st, called, err)
				continue
			}
			if got == nil || got.Status != st || got.Attempts != 4 {
				t.Errorf("%s: Settle returned %+v; want the request showing %s", st, got, st)
			}
			after := mustGet(t, s, r.ID)
			if after.Status != st || after.Attempts != 4 || after.Result != r.Result || after.Error != r.Error ||
				!timeIs(after.StartedAt, start) || !timeIs(after.FinishedAt, end) {
				t.Errorf("%s: request changed: %+v", st, after)
			}
		}
	})
}

func TestSettleAfterCancelQueuedIsNotRun(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		mustInsert(t, s, r)
		cancelledAt := t0.Add(time.Second)
		if _, err := s.Requests.CancelQueued(ctx, "alice", r.ID, cancelledAt); err != nil {
			t.Fatal(err)
		}
		got, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), mustNotRun(t))
		if err != nil || called || got == nil || got.Status != models.StatusCancelled {
			t.Fatalf("Settle after cancel = %+v, called %v, %v; want cancelled, not called", got, called, err)
		}
		if st := mustGet(t, s, r.ID); st.Status != models.StatusCancelled || st.StartedAt != nil || st.Attempts != 0 ||
			!timeIs(st.FinishedAt, cancelledAt) {
			t.Errorf("cancelled request changed: %+v", st)
		}
	})
}

func TestSettleOwnerMismatchAndMissingAreNotFound(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		mustInsert(t, s, r)
		got, called, err := s.Requests.Settle(ctx, r.ID, "bob", settleNow(time.Minute), mustNotRun(t))
		if !errors.Is(err, store.ErrNotFound) || called {
			t.Fatalf("Settle(another owner) = %+v, called %v, %v; want ErrNotFound, not called", got, called, err)
		}
		if st := mustGet(t, s, r.ID); st.Status != models.StatusQueued || st.StartedAt != nil || st.Attempts != 0 {
			t.Errorf("another owner's Settle changed the request: %+v", st)
		}
		if _, called, err := s.Requests.Settle(ctx, newID(t), "alice", settleNow(time.Minute), mustNotRun(t)); !errors.Is(err, store.ErrNotFound) || called {
			t.Errorf("Settle(missing) called %v, err %v; want ErrNotFound, not called", called, err)
		}
		// The owner still can.
		if _, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), func(*models.Request) models.Settlement {
			return models.Settlement{Status: models.StatusSucceeded, Result: `1`, Attempts: 1, StartedAt: t0, FinishedAt: t0}
		}); err != nil || !called {
			t.Errorf("Settle by the owner: called %v, %v", called, err)
		}
	})
}

// TestSettleCancelDuringRunLoses: a user cancels a request while Settle's
// run works on it. The cancel must lose: the request is running before run
// starts.
func TestSettleCancelDuringRunLoses(t *testing.T) {
	withSettleStore(t, func(t *testing.T, s *store.Store) {
		ctx := testContext(t)
		r := queued(t, "alice")
		mustInsert(t, s, r)

		entered, release := make(chan struct{}), make(chan struct{})
		released := false
		releaseRun := func() {
			if !released {
				released = true
				close(release)
			}
		}
		defer releaseRun()
		type settled struct {
			called bool
			err    error
		}
		settleDone := make(chan settled, 1)
		go func() {
			_, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(time.Minute), func(*models.Request) models.Settlement {
				close(entered)
				<-release
				return models.Settlement{Status: models.StatusSucceeded, Result: `"ran"`, Attempts: 1,
					StartedAt: t0.Add(time.Minute), FinishedAt: t0.Add(2 * time.Minute)}
			})
			settleDone <- settled{called, err}
		}()
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("run was never called")
		}

		type cancelled struct {
			req *models.Request
			err error
		}
		cancelDone := make(chan cancelled, 1)
		go func() {
			c, err := s.Requests.CancelQueued(ctx, "alice", r.ID, t0.Add(90*time.Second))
			cancelDone <- cancelled{c, err}
		}()
		c := <-cancelDone // answers at once: the request is running
		if !errors.Is(c.err, store.ErrConflict) || c.req == nil || c.req.Status != models.StatusRunning {
			t.Errorf("CancelQueued during run = %+v, %v; want ErrConflict with the running request", c.req, c.err)
		}
		releaseRun()
		res := <-settleDone
		if res.err != nil || !res.called {
			t.Fatalf("Settle = called %v, %v", res.called, res.err)
		}
		if st := mustGet(t, s, r.ID); st.Status != models.StatusSucceeded || st.Result != `"ran"` {
			t.Errorf("stored %+v; want the settled outcome, the cancel lost", st)
		}
	})
}

// A request that ran but whose outcome could not be written stays running:
// a cancel does not win over it, and the outcome is written by the
// session's Finish or by the activity's retried Settle.
func TestSettleUnrecordedOutcomeIsNotCancelled(t *testing.T) {
	for _, finishBy := range []string{"Finish", "Settle"} {
		t.Run(finishBy, func(t *testing.T) {
			s := storetest.New(t)
			ctx := testContext(t)
			r := queued(t, "alice")
			mustInsert(t, s, r)

			// The write after run fails: run cancels the context it is given.
			wctx, cancel := context.WithCancel(ctx)
			_, called, err := s.Requests.Settle(wctx, r.ID, "alice", settleNow(time.Minute), func(*models.Request) models.Settlement {
				cancel()
				return models.Settlement{Status: models.StatusSucceeded, Result: `"ran"`, Attempts: 1,
					StartedAt: t0.Add(time.Minute), FinishedAt: t0.Add(2 * time.Minute)}
			})
			if err == nil || !called {
				t.Fatalf("Settle = called %v, err %v; want the write to fail after run", called, err)
			}
			if got, err := s.Requests.Get(ctx, "alice", r.ID); err != nil || got.Status != models.StatusRunning {
				t.Fatalf("stored request = %+v, %v; want it running (the write failed)", got, err)
			}
			if c, err := s.Requests.CancelQueued(ctx, "alice", r.ID, t0.Add(3*time.Minute)); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("CancelQueued of a request that ran = %+v, %v; want ErrConflict", c, err)
			}

			switch finishBy {
			case "Finish":
				if err := s.Requests.Finish(ctx, r.ID, models.StatusSucceeded, `"ran"`, "", 1, t0.Add(2*time.Minute)); err != nil {
					t.Fatal(err)
				}
			case "Settle":
				_, called, err := s.Requests.Settle(ctx, r.ID, "alice", settleNow(4*time.Minute), func(*models.Request) models.Settlement {
					return models.Settlement{Status: models.StatusSucceeded, Result: `"ran"`, Attempts: 1,
						StartedAt: t0.Add(time.Minute), FinishedAt: t0.Add(2 * time.Minute)}
				})
				if err != nil || !called {
					t.Fatalf("retried Settle = called %v, %v; want the running request settled", called, err)
				}
			}
			got, err := s.Requests.Get(ctx, "alice", r.ID)
			if err != nil || got.Status != models.StatusSucceeded || got.Result != `"ran"` || !timeIs(got.FinishedAt, t0.Add(2*time.Minute)) {
				t.Fatalf("stored request = %+v, %v; want succeeded with the outcome of the run", got, err)
			}
			if _, err := s.Requests.CancelQueued(ctx, "alice", r.ID, t0.Add(5*time.Minute)); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("CancelQueued after the outcome = %v; want ErrConflict", err)
			}
		})
	}
}
