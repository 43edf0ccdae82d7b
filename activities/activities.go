package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
)

// Error types the session workflow's retry policy treats as final.
const (
	ErrTypePermanent   = "Permanent"
	ErrTypeUnknownType = "UnknownType"
	// ErrTypeRetryable marks an ordinary handler failure.
	ErrTypeRetryable = "HandlerError"
	// ErrTypeNotRunning marks an attempt that found its request no longer
	// running (a stale one, e.g. taken by a worker that was frozen) and so
	// did not run it.
	ErrTypeNotRunning = "NotRunning"
)

// ErrNotFound is what a Recorder returns for a request it does not hold.
var ErrNotFound = errors.New("request not found")

// ErrNotRunning is what Recorder.SetAttempts returns for a request that is
// not running.
var ErrNotRunning = errors.New("request not running")

// Recorder is the part of the request store the activities write to. Every
// method must be idempotent: activities are retried.
type Recorder interface {
	// MarkRunning moves a queued or running request to running and returns
	// it; a request already final is returned unchanged.
	MarkRunning(ctx context.Context, id, owner string, now time.Time) (*models.Request, error)
	SetAttempts(ctx context.Context, id string, attempts int) error
	Finish(ctx context.Context, id string, status models.Status, result, errMsg string, attempts int, now time.Time) error
}

// Activities are the session workflow's activities. Register a *Activities
// with the worker.
type Activities struct {
	Store    Recorder
	Handlers *Registry
	Logger   *slog.Logger
	// HeartbeatEvery is how often Run heartbeats while a handler works; it
	// must be well below the workflow's heartbeat timeout.
	HeartbeatEvery time.Duration
	Now            func() time.Time
	// Inbox reads users' pending inbox entries and records how far their
	// sessions got; nil in tests that feed sessions by signal only.
	Inbox Inbox
	// AnnounceEvery: if positive, a batch records its progress (the low
	// mark) at most this often while it runs, besides at its end, so that
	// event streams that poll the queue document (a MongoDB without the
	// embedded store's change feed) see a finish early in a batch before
	// the batch ends; 100ms bounds what a batch adds to such an event's
	// latency at a write per 100 ms of batch. Zero (the default): at the
	// end only; with the feed, streams hear of each finish from the
	// request's own write (events.Hub).
	AnnounceEvery time.Duration
}

// Inbox is the part of the store that holds users' sequenced requests.
type Inbox interface {
	// Pending returns userID's entries still to run after sequence number
	// after (0: from the user's low mark), in order, at most limit.
	Pending(ctx context.Context, userID string, after int64, limit int) (models.Delivery, error)
	// Steering returns an operator's pause and failure policy of userID's
	// session ("" policy: never set).
	Steering(ctx context.Context, userID string) (paused bool, policy models.FailurePolicy, err error)
	// Handled records that userID's session has handled every entry
	// before low.
	Handled(ctx context.Context, userID string, low int64) error
	// Started records that userID's session has started every entry
	// before next.
	Started(ctx context.Context, userID string, next int64) error
}

// PendingInput asks for a user's inbox entries after a sequence number.
type PendingInput struct {
	UserID string `json:"user_id"`
	After  int64  `json:"after"`
}

// PendingResult is a page of inbox entries: those in (After, Through].
type PendingResult struct {
	Entries []models.QueuedRequest `json:"entries"`
	Through int64                  `json:"through"`
	// Paused and Policy are the operator's steering of the session, read
	// for a fresh run (After 0) only.
	Paused bool                 `json:"paused,omitempty"`
	Policy models.FailurePolicy `json:"policy,omitempty"`
}

// maxPending bounds the entries one Pending call returns (about 100 bytes
// each in the workflow's history): more are read on the next call.
const maxPending = 2000

// Pending reads a user's pending inbox entries for the session.
func (a *Activities) Pending(ctx context.Context, in PendingInput) (PendingResult, error) {
	if a.Inbox == nil {
		return PendingResult{Through: in.After}, nil
	}
	d, err := a.Inbox.Pending(ctx, in.UserID, in.After, maxPending)
	if err != nil {
		return PendingResult{}, fmt.Errorf("read inbox of %s: %w", in.UserID, err)
	}
	res := PendingResult{Entries: d.Entries, Through: d.Through}
	if in.After <= 0 {
		if res.Paused, res.Policy, err = a.Inbox.Steering(ctx, in.UserID); err != nil {
			return PendingResult{}, fmt.Errorf("read steering of %s: %w", in.UserID, err)
		}
	}
	return res, nil
}

// handled advances userID's low mark past entry seq; best effort (the mark
// is a hint: a lower one costs a longer read when a fresh run starts).
func (a *Activities) handled(ctx context.Context, userID string, seq int64) bool {
	if a.Inbox == nil || seq <= 0 {
		return false
	}
	if err := a.Inbox.Handled(ctx, userID, seq+1); err != nil {
		a.logger(ctx, "", userID).Warn("could not record the queue's low mark", "err", err)
		return false
	}
	return true
}

func (a *Activities) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now().UTC()
}

func (a *Activities) logger(ctx context.Context, requestID, userID string) *slog.Logger {
	l := a.Logger
	if l == nil {
		l = slog.Default()
	}
	info := activity.GetInfo(ctx)
	return l.With("request_id", requestID, "user_id", userID,
		"workflow_id", info.WorkflowExecution.ID, "run_id", info.WorkflowExecution.RunID,
		"activity", info.ActivityType.Name, "attempt", info.Attempt)
}

// MarkRunningInput names the request to start.
type MarkRunningInput struct {
	RequestID string `json:"request_id"`
	UserID    string `json:"user_id"`
	// Seq is the request's inbox entry: once it starts, the user's
	// started mark moves past it (positions and the cap count waiting
	// requests).
	Seq int64 `json:"seq,omitempty"`
}

// MarkRunningResult tells the workflow whether to run the request. Status is
// empty when the store does not hold the request (its submission was undone),
// a final status when it is already done (a duplicate signal, a cancel that
// won the race), and running otherwise.
type MarkRunningResult struct {
	Status  models.Status   `json:"status"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Attempts made before this run: non-zero for a requeued request,
	// whose history of attempts is kept.
	Attempts int `json:"attempts,omitempty"`
}

// MarkRunning records that a request starts and loads its payload.
func (a *Activities) MarkRunning(ctx context.Context, in MarkRunningInput) (MarkRunningResult, error) {
	now := a.now()
	req, err := a.Store.MarkRunning(ctx, in.RequestID, in.UserID, now)
	if errors.Is(err, ErrNotFound) {
		a.logger(ctx, in.RequestID, in.UserID).Warn("request missing from store; skipping")
		return MarkRunningResult{}, nil
	}
	if err != nil {
		return MarkRunningResult{}, fmt.Errorf("mark running %s: %w", in.RequestID, err)
	}
	if req.UserID != in.UserID {
		// A request ID from another user's signal must never run here.
		return MarkRunningResult{}, temporal.NewNonRetryableApplicationError(
			"request belongs to another user", ErrTypePermanent, nil)
	}
	if req.Status == models.StatusRunning && in.Seq > 0 && a.Inbox != nil {
		if err := a.Inbox.Started(ctx, in.UserID, in.Seq+1); err != nil {
			a.logger(ctx, in.RequestID, in.UserID).Warn("could not record the queue's started mark", "err", err)
		}
	}
	if req.Status == models.StatusRunning && startedBy(req, now) {
		wait := now.Sub(req.EnqueuedAt)
		metrics.RequestStarted(req.Type, wait)
		a.logger(ctx, in.RequestID, in.UserID).Info("request started", "type", req.Type, "queue_wait_ms", wait.Milliseconds())
	}
	return MarkRunningResult{Status: req.Status, Payload: json.RawMessage(req.Payload), Attempts: req.Attempts}, nil
}

// startedBy tells whether the start of req is the one recorded at now,
// rather than an earlier one this call merely found (a retried MarkRunning),
// so a start is counted once. MongoDB keeps milliseconds.
func startedBy(req *models.Request, now time.Time) bool {
	return req.StartedAt != nil && !req.StartedAt.Before(now.Truncate(time.Millisecond))
}

// RunInput is one request to execute.
type RunInput struct {
	RequestID string          `json:"request_id"`
	UserID    string          `json:"user_id"`
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	// PriorAttempts is added to this run's attempt numbers in what Run
	// records and reports, so a requeued request's count keeps growing.
	PriorAttempts int `json:"prior_attempts,omitempty"`
}

// RunResult is a request's successful outcome.
type RunResult struct {
	Result   json.RawMessage `json:"result"`
	Attempts int             `json:"attempts"`
}

// FailureDetails rides on a Run failure so the workflow can record how many
// attempts were made.
type FailureDetails struct {
	Attempts int `json:"attempts"`
}

// Run executes a request's handler, heartbeating while it works. A handler
// error comes back as an ApplicationError whose type tells the retry policy
// whether to try again.
func (a *Activities) Run(ctx context.Context, in RunInput) (RunResult, error) {
	info := activity.GetInfo(ctx)
	attempt := in.PriorAttempts + int(info.Attempt)
	if info.Attempt > 1 {
		// The session counts the attempts that ran by this (see its
		// redeliver); otherwise best effort: Finish writes the final count.
		err := a.Store.SetAttempts(ctx, in.RequestID, attempt)
		if errors.Is(err, ErrNotRunning) {
			// The request ended (or went back to the queue) since this
			// attempt was handed out: running it now would run it again.
			a.logger(ctx, in.RequestID, in.UserID).Warn("stale attempt not run", "err", err)
			return RunResult{}, temporal.NewNonRetryableApplicationError("request no longer running; stale attempt not run",
				ErrTypeNotRunning, err, FailureDetails{Attempts: attempt - 1})
		}
		if err != nil {
			a.logger(ctx, in.RequestID, in.UserID).Warn("could not record attempt", "err", err)
		}
	}
	return a.attempt(ctx, in, attempt, nil)
}

// attempt runs in's handler once as attempt number attempt. The heartbeats
// sent while it works carry progress, if given (an activity's heartbeat
// details are replaced by each heartbeat).
func (a *Activities) attempt(ctx context.Context, in RunInput, attempt int, progress any) (RunResult, error) {
	log := a.logger(ctx, in.RequestID, in.UserID)
	details := FailureDetails{Attempts: attempt}
	h, err := a.Handlers.Lookup(in.Type)
	if err != nil {
		return RunResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeUnknownType, nil, details)
	}

	stop := a.heartbeat(ctx, progress)
	start := time.Now()
	result, err := h.Handle(ctx, Job{ID: in.RequestID, UserID: in.UserID, Type: in.Type, Payload: in.Payload, Attempt: attempt})
	stop()
	metrics.RequestExecuted(in.Type, time.Since(start))
	if err != nil {
		log.Warn("request attempt failed", "err", err, "permanent", IsPermanent(err), "duration_ms", time.Since(start).Milliseconds())
		if IsPermanent(err) {
			return RunResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypePermanent, nil, details)
		}
		return RunResult{}, temporal.NewApplicationError(err.Error(), ErrTypeRetryable, details)
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	log.Info("request attempt succeeded", "duration_ms", time.Since(start).Milliseconds())
	return RunResult{Result: result, Attempts: attempt}, nil
}

// heartbeat records heartbeats until the returned stop is called, so any
// handler, however long, shows the server it is alive and learns of
// cancellation.
func (a *Activities) heartbeat(ctx context.Context, progress any) (stop func()) {
	every := a.HeartbeatEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if progress != nil {
					activity.RecordHeartbeat(ctx, progress)
				} else {
					activity.RecordHeartbeat(ctx)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// FinishInput is a request's final outcome.
type FinishInput struct {
	RequestID string          `json:"request_id"`
	UserID    string          `json:"user_id"`
	Status    models.Status   `json:"status"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Attempts  int             `json:"attempts"`
	// Seq is the request's inbox entry; once recorded, the user's low mark
	// moves past it.
	Seq int64 `json:"seq,omitempty"`
}

// Finish records a request's final status, result or error and attempts.
func (a *Activities) Finish(ctx context.Context, in FinishInput) error {
	if !in.Status.Final() {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("finish with non-final status %q", in.Status), ErrTypePermanent, nil)
	}
	now := a.now()
	if err := a.Store.Finish(ctx, in.RequestID, in.Status, string(in.Result), in.Error, in.Attempts, now); err != nil {
		return fmt.Errorf("finish %s: %w", in.RequestID, err)
	}
	a.handled(ctx, in.UserID, in.Seq)
	log := a.logger(ctx, in.RequestID, in.UserID)
	typ, counted := a.finishedType(ctx, in, now)
	if counted {
		metrics.RequestFinished(typ, string(in.Status), in.Attempts)
	}
	log.Info("request finished", "type", typ, "status", in.Status, "attempts", in.Attempts, "error", in.Error)
	return nil
}

// RequestReader is what Finish needs besides a Recorder to label its metrics
// with the request's type and to count a request once however often Finish
// is retried. A Recorder that is not one gets its finishes counted under
// type "unknown", every call.
type RequestReader interface {
	Request(ctx context.Context, id string) (*models.Request, error)
}

// finishedType returns the type of the request in finished and whether this
// call's outcome is the one recorded (a retried Finish finds the first one).
func (a *Activities) finishedType(ctx context.Context, in FinishInput, now time.Time) (typ string, recordedNow bool) {
	rr, ok := a.Store.(RequestReader)
	if !ok {
		return "unknown", true
	}
	req, err := rr.Request(ctx, in.RequestID)
	if err != nil {
		// Metrics are best effort; the outcome is recorded.
		a.logger(ctx, in.RequestID, in.UserID).Warn("could not read the finished request for metrics", "err", err)
		return "unknown", true
	}
	return req.Type, req.Status == in.Status && req.FinishedAt != nil && !req.FinishedAt.Before(now.Truncate(time.Millisecond))
}
