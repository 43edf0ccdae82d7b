// Package worker builds a Temporal worker that runs session workflows and
// their activities.
package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/workflows"
)

// Config is what a worker needs besides its Temporal client.
type Config struct {
	Requests       *store.Requests
	Queues         *store.Queues
	Handlers       *activities.Registry
	Logger         *slog.Logger
	HeartbeatEvery time.Duration
	// AnnounceEvery is activities.Activities.AnnounceEvery.
	AnnounceEvery time.Duration
	Options       sdkworker.Options
	// TaskQueue is models.TaskQueue when empty.
	TaskQueue string
}

// DefaultStopTimeout is how long Stop waits for the requests a worker is
// running to finish (and be reported) before it cancels them, when
// Options.WorkerStopTimeout is not set. A cancelled request burns an attempt
// and runs again on another worker after its heartbeat timeout; requests
// longer than this still do, on every stop.
const DefaultStopTimeout = 30 * time.Second

// New returns a worker on the session task queue with the session workflow
// and its activities registered. Start it with Run or Start; Stop drains
// in-flight requests for up to Options.WorkerStopTimeout (DefaultStopTimeout
// when 0; negative: no wait).
func New(c client.Client, cfg Config) sdkworker.Worker {
	queue := cfg.TaskQueue
	if queue == "" {
		queue = models.TaskQueue
	}
	switch {
	case cfg.Options.WorkerStopTimeout == 0:
		cfg.Options.WorkerStopTimeout = DefaultStopTimeout
	case cfg.Options.WorkerStopTimeout < 0:
		cfg.Options.WorkerStopTimeout = 0
	}
	w := sdkworker.New(c, queue, cfg.Options)
	RegisterWorkflows(w)
	acts := &activities.Activities{
		Store:          Recorder{cfg.Requests},
		Handlers:       cfg.Handlers,
		Logger:         cfg.Logger,
		HeartbeatEvery: cfg.HeartbeatEvery,
		AnnounceEvery:  cfg.AnnounceEvery,
	}
	if cfg.Queues != nil {
		acts.Inbox = Inbox{Requests: cfg.Requests, Queues: cfg.Queues}
	}
	w.RegisterActivity(acts)
	return w
}

// RegisterWorkflows registers the session workflow under its wire name on r:
// a worker, a test environment or a replayer.
func RegisterWorkflows(r interface {
	RegisterWorkflowWithOptions(w any, options workflow.RegisterOptions)
}) {
	r.RegisterWorkflowWithOptions(workflows.Session, workflow.RegisterOptions{Name: models.SessionWorkflowType})
}

// Recorder adapts the MongoDB request repository to activities.Recorder.
type Recorder struct{ Requests *store.Requests }

// MarkRunning implements activities.Recorder.
func (r Recorder) MarkRunning(ctx context.Context, id, owner string, now time.Time) (*models.Request, error) {
	req, err := r.Requests.MarkRunning(ctx, id, owner, now)
	return req, mapNotFound(err)
}

// SetAttempts implements activities.Recorder.
func (r Recorder) SetAttempts(ctx context.Context, id string, attempts int) error {
	err := r.Requests.SetAttempts(ctx, id, attempts)
	if errors.Is(err, store.ErrConflict) {
		return errors.Join(activities.ErrNotRunning, err)
	}
	return mapNotFound(err)
}

// Finish implements activities.Recorder.
func (r Recorder) Finish(ctx context.Context, id string, status models.Status, result, errMsg string, attempts int, now time.Time) error {
	return mapNotFound(r.Requests.Finish(ctx, id, status, result, errMsg, attempts, now))
}

// Request implements activities.RequestReader.
func (r Recorder) Request(ctx context.Context, id string) (*models.Request, error) {
	req, err := r.Requests.Get(ctx, "", id)
	return req, mapNotFound(err)
}

func mapNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errors.Join(activities.ErrNotFound, err)
	}
	return err
}

// Settle records a request's start and outcome as one change where the
// store allows (activities.Settler).
func (r Recorder) Settle(ctx context.Context, id, owner string, now func() time.Time, run func(*models.Request) models.Settlement) (*models.Request, bool, error) {
	req, called, err := r.Requests.Settle(ctx, id, owner, now, run)
	return req, called, mapNotFound(err)
}

// Inbox adapts the store's inbox to activities.Inbox.
type Inbox struct {
	Requests *store.Requests
	Queues   *store.Queues
	// AbandonAfter: see store.DefaultAbandonAfter (used when zero).
	AbandonAfter time.Duration
}

// Pending implements activities.Inbox.
func (i Inbox) Pending(ctx context.Context, userID string, after int64, limit int) (models.Delivery, error) {
	if after <= 0 {
		q, err := i.Queues.Get(ctx, userID)
		if err != nil {
			return models.Delivery{}, err
		}
		after = max(q.Low-1, 0)
	}
	abandon := i.AbandonAfter
	if abandon <= 0 {
		abandon = store.DefaultAbandonAfter
	}
	page, err := i.Requests.Entries(ctx, userID, after, limit, abandon)
	if err != nil {
		return models.Delivery{}, err
	}
	return page.Delivery(after), nil
}

// Steering implements activities.Inbox.
func (i Inbox) Steering(ctx context.Context, userID string) (bool, models.FailurePolicy, error) {
	q, err := i.Queues.Get(ctx, userID)
	if err != nil {
		return false, "", err
	}
	return q.Paused, q.Policy, nil
}

// Started implements activities.Inbox.
func (i Inbox) Started(ctx context.Context, userID string, next int64) error {
	return i.Queues.Started(ctx, userID, next, time.Now().UTC())
}

// Handled implements activities.Inbox.
func (i Inbox) Handled(ctx context.Context, userID string, low int64) error {
	return i.Queues.Handled(ctx, userID, low, time.Now().UTC())
}
