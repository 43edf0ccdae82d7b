package store_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// TestRequestsCancelRacesStart: a user cancels a request just as the worker
// starts it. Exactly one may win, and the stored status must say which.
func TestRequestsCancelRacesStart(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	const rounds = 40
	for i := range rounds {
		r := queued(t, "alice")
		mustInsert(t, s, r)
		var (
			wg        sync.WaitGroup
			cancelErr error
			started   models.Status
			startErr  error
		)
		wg.Go(func() { _, cancelErr = s.Requests.CancelQueued(ctx, "alice", r.ID, t0) })
		wg.Go(func() { started, startErr = markStatus(s.Requests.MarkRunning(ctx, r.ID, "", t0)) })
		wg.Wait()
		if startErr != nil {
			t.Fatal(startErr)
		}
		cancelled := cancelErr == nil
		if !cancelled && !errors.Is(cancelErr, store.ErrConflict) {
			t.Fatal(cancelErr)
		}
		final := mustGet(t, s, r.ID).Status
		switch {
		case cancelled && started == models.StatusRunning:
			t.Fatalf("round %d: both the cancel and the start won; stored %s", i, final)
		case cancelled && final != models.StatusCancelled, !cancelled && final != models.StatusRunning:
			t.Fatalf("round %d: cancel won=%v, start returned %s, stored %s", i, cancelled, started, final)
		}
	}
}

// TestRequestsFinishRacesLateAttempt: a late SetAttempts from a timed-out
// attempt must not undo Finish.
func TestRequestsFinishRacesLateAttempt(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	for i := range 40 {
		r := queued(t, "alice")
		mustInsert(t, s, r)
		if _, err := s.Requests.MarkRunning(ctx, r.ID, "", t0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var finishErr error
		wg.Go(func() { _ = s.Requests.SetAttempts(ctx, r.ID, 1) })
		wg.Go(func() {
			finishErr = s.Requests.Finish(ctx, r.ID, models.StatusSucceeded, "1", "", 2, t0.Add(time.Second))
		})
		wg.Wait()
		if finishErr != nil {
			t.Fatal(finishErr)
		}
		if got := mustGet(t, s, r.ID); got.Status != models.StatusSucceeded || got.Result != "1" {
			t.Fatalf("round %d: Finish was undone: %+v", i, got)
		}
	}
}
