package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
)

// BatchItem is one queued request of a batch.
type BatchItem struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Seq  int64  `json:"seq,omitempty"`
}

// BatchInput is a run of consecutive queued requests of one user, all of
// short types, to execute one after another in a single activity.
type BatchInput struct {
	UserID string      `json:"user_id"`
	Items  []BatchItem `json:"items"`
	// Budget: no item is started after this long (the first always is), so
	// a batch reports back to the session regularly.
	Budget time.Duration `json:"budget"`
	// TryTimeout bounds one try of one request, as LocalTimeout does for a
	// local activity; a try that runs out is a retryable failure.
	TryTimeout time.Duration `json:"try_timeout,omitempty"`
	// StopOnFailure ends the batch after a request that failed (the session
	// pauses on failure).
	StopOnFailure bool `json:"stop_on_failure,omitempty"`
}

// BatchOutcome is how one item of a batch ended.
type BatchOutcome struct {
	ID     string        `json:"id"`
	Status models.Status `json:"status"`
	// Skipped: the request did not run here (missing, not this user's, or
	// not queued any more).
	Skipped bool `json:"skipped,omitempty"`
}

// BatchResult says how far a batch got. Done are the first items, handled
// and recorded. The item after them, if any, may be Unrecorded (it ran, but
// MongoDB did not take its outcome in time: the session records it) or need
// a Retry (its first attempt failed and may be retried: the session runs it
// with the regular retry policy). Every later item was not touched.
type BatchResult struct {
	Done       []BatchOutcome `json:"done"`
	Unrecorded *FinishInput   `json:"unrecorded,omitempty"`
	Retry      *BatchRetry    `json:"retry,omitempty"`
}

// BatchRetry is a request whose first attempt in a batch failed.
type BatchRetry struct {
	ID       string `json:"id"`
	Attempts int    `json:"attempts"`
}

// Settler is a Recorder that can record a request's start and outcome as
// one change (store.Requests.Settle). RunBatch uses it when the store is
// one; otherwise it marks, runs and finishes each request in three steps.
type Settler interface {
	Settle(ctx context.Context, id, owner string, now func() time.Time, run func(cur *models.Request) models.Settlement) (*models.Request, bool, error)
}

// RunBatch executes in.Items in order, one at a time: each is started only
// if it is still queued (a cancel that came first wins), run once, and its
// own status, attempts, result and times are recorded before the next
// starts. It heartbeats the outcomes so far, so a retry after a lost worker
// resumes at the first unfinished request; a request's handler runs again
// only if its outcome was not recorded, the same at-least-once boundary as
// a single request.
func (a *Activities) RunBatch(ctx context.Context, in BatchInput) (res BatchResult, err error) {
	var told int64 // the last low mark recorded during the batch (a repeat is a write that wakes streams)
	defer func() {
		if n := len(res.Done); err == nil && n > 0 && in.Items[n-1].Seq != told {
			a.handled(ctx, in.UserID, in.Items[n-1].Seq)
		}
	}()
	if activity.HasHeartbeatDetails(ctx) {
		_ = activity.GetHeartbeatDetails(ctx, &res.Done)
		res.Done = res.Done[:min(len(res.Done), len(in.Items))]
	}
	first := len(res.Done)
	if a.Inbox != nil && first < len(in.Items) && in.Items[first].Seq > 0 {
		if err := a.Inbox.Started(ctx, in.UserID, in.Items[first].Seq+1); err != nil {
			a.logger(ctx, in.Items[first].ID, in.UserID).Warn("could not record the queue's started mark", "err", err)
		}
	}
	start := time.Now()
	announced, announce := start, a.AnnounceEvery
	for i := first; i < len(in.Items); i++ {
		if i > first && (time.Since(start) >= in.Budget || ctx.Err() != nil) {
			break
		}
		out, stop, err := a.batchItem(ctx, in, in.Items[i], &res)
		if err != nil {
			if i == first {
				return BatchResult{}, err // nothing done: the session retries
			}
			break // the rest goes back to the queue
		}
		if stop {
			return res, nil
		}
		res.Done = append(res.Done, out)
		activity.RecordHeartbeat(ctx, res.Done)
		if announce > 0 && i < len(in.Items)-1 && time.Since(announced) >= announce {
			if a.handled(ctx, in.UserID, in.Items[i].Seq) { // the end's covers the last
				told = in.Items[i].Seq
			}
			announced = time.Now()
		}
		if out.Status == models.StatusFailed && !out.Skipped && in.StopOnFailure {
			break
		}
	}
	return res, nil
}

// batchItem runs one item. stop reports that it ended the batch by setting
// res.Retry or res.Unrecorded; an error, that nothing was done.
func (a *Activities) batchItem(ctx context.Context, in BatchInput, it BatchItem, res *BatchResult) (out BatchOutcome, stop bool, err error) {
	out = BatchOutcome{ID: it.ID}
	settler, ok := a.Store.(Settler)
	if !ok {
		return a.batchItemSteps(ctx, in, it, res)
	}
	var (
		set     models.Settlement
		retry   bool
		started time.Time
	)
	cur, called, err := settler.Settle(ctx, it.ID, in.UserID, a.now, func(cur *models.Request) models.Settlement {
		started = a.now()
		set, retry = a.tryOnce(ctx, in, it, cur, started, slices.Clone(res.Done))
		return set
	})
	switch {
	case errors.Is(err, ErrNotFound):
		a.logger(ctx, it.ID, in.UserID).Warn("request missing from store; skipping")
		out.Skipped = true
		return out, false, nil
	case err != nil && !called:
		return out, false, err
	case !called:
		out.Status, out.Skipped = cur.Status, true
		return out, false, nil
	}
	wait := started.Sub(cur.EnqueuedAt)
	metrics.RequestStarted(cur.Type, wait)
	if retry {
		res.Retry = &BatchRetry{ID: it.ID, Attempts: set.Attempts}
		return out, true, nil
	}
	if err != nil {
		a.logger(ctx, it.ID, in.UserID).Warn("could not record outcome; the session will", "err", err)
		res.Unrecorded = &FinishInput{RequestID: it.ID, UserID: in.UserID, Status: set.Status,
			Result: json.RawMessage(set.Result), Error: set.Error, Attempts: set.Attempts}
		if set.Result == "" {
			res.Unrecorded.Result = nil
		}
		return out, true, nil
	}
	metrics.RequestFinished(cur.Type, string(set.Status), set.Attempts)
	a.logger(ctx, it.ID, in.UserID).Info("request finished", "type", cur.Type, "status", set.Status,
		"attempts", set.Attempts, "queue_wait_ms", wait.Milliseconds(), "error", set.Error)
	out.Status = set.Status
	return out, false, nil
}

// tryOnce runs cur's handler once and says how it went: final, or running
// with retry set when the failure may be retried (a try that outlasts
// TryTimeout is one, whatever the handler returned). done is the batch's
// progress, for the heartbeats sent meanwhile.
func (a *Activities) tryOnce(ctx context.Context, in BatchInput, it BatchItem, cur *models.Request, started time.Time, done []BatchOutcome) (set models.Settlement, retry bool) {
	attempt := cur.Attempts + 1
	tctx := ctx
	if in.TryTimeout > 0 {
		var cancel context.CancelFunc
		tctx, cancel = context.WithTimeout(ctx, in.TryTimeout)
		defer cancel()
	}
	run, err := a.attempt(tctx, RunInput{
		RequestID: it.ID, UserID: in.UserID, Type: cur.Type, Payload: json.RawMessage(cur.Payload), PriorAttempts: cur.Attempts,
	}, attempt, done)
	if tctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("timed out after %v", in.TryTimeout)
	}
	set = models.Settlement{Status: models.StatusSucceeded, Result: string(run.Result), Attempts: attempt,
		StartedAt: started, FinishedAt: a.now()}
	var appErr *temporal.ApplicationError
	switch {
	case err == nil:
	case errors.As(err, &appErr) && appErr.NonRetryable():
		set.Status, set.Result, set.Error = models.StatusFailed, "", appErr.Error()
	default:
		set.Status, set.Result = models.StatusRunning, ""
		retry = true
	}
	return set, retry
}

// batchItemSteps is batchItem for a Recorder that is not a Settler.
func (a *Activities) batchItemSteps(ctx context.Context, in BatchInput, it BatchItem, res *BatchResult) (out BatchOutcome, stop bool, err error) {
	out = BatchOutcome{ID: it.ID}
	mark, err := a.MarkRunning(ctx, MarkRunningInput{RequestID: it.ID, UserID: in.UserID})
	var appErr *temporal.ApplicationError
	switch {
	case errors.As(err, &appErr) && appErr.NonRetryable():
		out.Skipped = true
		return out, false, nil
	case err != nil:
		return out, false, err
	case mark.Status != models.StatusRunning:
		out.Status, out.Skipped = mark.Status, true
		return out, false, nil
	}
	cur := &models.Request{ID: it.ID, Type: it.Type, Payload: string(mark.Payload), Attempts: mark.Attempts}
	set, retry := a.tryOnce(ctx, in, it, cur, a.now(), slices.Clone(res.Done))
	if retry {
		if serr := a.Store.SetAttempts(ctx, it.ID, set.Attempts); serr != nil {
			a.logger(ctx, it.ID, in.UserID).Warn("could not record attempt", "err", serr)
		}
		res.Retry = &BatchRetry{ID: it.ID, Attempts: set.Attempts}
		return out, true, nil
	}
	fin := FinishInput{RequestID: it.ID, UserID: in.UserID, Status: set.Status, Error: set.Error, Attempts: set.Attempts}
	if set.Result != "" {
		fin.Result = json.RawMessage(set.Result)
	}
	if err := a.Finish(ctx, fin); err != nil {
		res.Unrecorded = &fin
		return out, true, nil
	}
	out.Status = set.Status
	return out, false, nil
}
