// Package starter is the Temporal client side of Turnstile: it opens and
// signals users' session workflows, queries them and steers them.
package starter

import (
	"context"
	"errors"
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/workflows"
)

// Starter talks to the session workflows through a Temporal client.
type Starter struct {
	Client    client.Client
	TaskQueue string
	// Config is given to every session run the Starter opens.
	Config workflows.Config
	// HistoryBudget is the history length (events) at which a session run
	// stops taking the signals that only steer it (close, cancel, pause,
	// resume, policy): they answer ErrSessionBusy until the run continues
	// as new. 0 means DefaultHistoryBudget; deliveries are not held back
	// (they are bounded by the queue cap). See docs/architecture.md, "What
	// bounds a session's history".
	HistoryBudget int64
}

// DefaultHistoryBudget is below Temporal's 10,240-event warning and far
// below its 51,200-event limit, above the ~4,096 events at which a session
// continues as new between requests: only a run held open by a long request
// while it is flooded with signals reaches it.
const DefaultHistoryBudget = 8000

// ErrSessionBusy is returned for a steering signal to a session run whose
// history has reached the budget; retry once its request is done.
var ErrSessionBusy = errors.New("session history at its budget; retry after its current request")

// New returns a Starter on the default task queue.
func New(c client.Client, cfg workflows.Config) *Starter {
	return &Starter{Client: c, TaskQueue: models.TaskQueue, Config: cfg}
}

// Submit appends reqs, in order, to the user's queue, opening the session if
// none is running. It returns only once Temporal has durably recorded the
// signal.
func (s *Starter) Submit(ctx context.Context, userID string, reqs []models.QueuedRequest) error {
	return s.signalWithStart(ctx, userID, models.SignalSubmit, reqs)
}

// Deliver signals inbox entries to the user's session, opening a run if
// none is running. It returns once Temporal has durably recorded the signal.
func (s *Starter) Deliver(ctx context.Context, userID string, d models.Delivery) error {
	if d.Entries == nil {
		d.Entries = []models.QueuedRequest{}
	}
	return s.signalWithStartArg(ctx, userID, models.SignalDeliver, d)
}

func (s *Starter) signalWithStart(ctx context.Context, userID, signal string, reqs []models.QueuedRequest) error {
	return s.signalWithStartArg(ctx, userID, signal, models.Submission{Requests: reqs})
}

func (s *Starter) signalWithStartArg(ctx context.Context, userID, signal string, arg any) error {
	opts := client.StartWorkflowOptions{
		ID:                    models.SessionWorkflowID(userID),
		TaskQueue:             s.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(workflows.UserIDAttr.ValueSet(userID)),
	}
	in := workflows.Input{UserID: userID, Config: s.Config}
	_, err := s.Client.SignalWithStartWorkflow(ctx, opts.ID, signal, arg, opts, models.SessionWorkflowType, in)
	if err != nil {
		return fmt.Errorf("signal %s to session of %s: %w", signal, userID, err)
	}
	return nil
}

// State returns the user's session state; a user with no running session
// gets State == models.SessionClosed.
func (s *Starter) State(ctx context.Context, userID string) (models.SessionState, error) {
	closed := models.SessionState{UserID: userID, State: models.SessionClosed, Policy: models.PolicyContinue, Queue: []models.QueueEntry{}}
	resp, err := s.Client.QueryWorkflowWithOptions(ctx, &client.QueryWorkflowWithOptionsRequest{
		WorkflowID:           models.SessionWorkflowID(userID),
		QueryType:            models.QueryState,
		QueryRejectCondition: enumspb.QUERY_REJECT_CONDITION_NOT_OPEN,
	})
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return closed, nil
	}
	if err != nil {
		return models.SessionState{}, fmt.Errorf("query session of %s: %w", userID, err)
	}
	if resp.QueryRejected != nil {
		return closed, nil
	}
	var st models.SessionState
	if err := resp.QueryResult.Get(&st); err != nil {
		return models.SessionState{}, fmt.Errorf("decode session state: %w", err)
	}
	if st.Queue == nil {
		st.Queue = []models.QueueEntry{}
	}
	return st, nil
}

// ErrNoSession is returned when steering a user whose session is not running.
var ErrNoSession = errors.New("no running session")

// signal sends a signal to the user's running session, unless the run's
// history has reached the budget (ErrSessionBusy).
func (s *Starter) signal(ctx context.Context, userID, name string, arg any) error {
	id := models.SessionWorkflowID(userID)
	var notFound *serviceerror.NotFound
	desc, err := s.Client.DescribeWorkflowExecution(ctx, id, "")
	if errors.As(err, &notFound) {
		return fmt.Errorf("signal %s to session of %s: %w", name, userID, ErrNoSession)
	}
	if err != nil {
		return fmt.Errorf("describe session of %s: %w", userID, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return fmt.Errorf("signal %s to session of %s: %w", name, userID, ErrNoSession)
	}
	budget := s.HistoryBudget
	if budget <= 0 {
		budget = DefaultHistoryBudget
	}
	if n := info.GetHistoryLength(); n >= budget {
		return fmt.Errorf("signal %s to session of %s (%d events, budget %d): %w", name, userID, n, budget, ErrSessionBusy)
	}
	err = s.Client.SignalWorkflow(ctx, id, "", name, arg)
	if errors.As(err, &notFound) {
		return fmt.Errorf("signal %s to session of %s: %w", name, userID, ErrNoSession)
	}
	if err != nil {
		return fmt.Errorf("signal %s to session of %s: %w", name, userID, err)
	}
	return nil
}

// ignoreNoSession treats "nothing running" as done, for signals that only
// matter to a running session.
func ignoreNoSession(err error) error {
	if errors.Is(err, ErrNoSession) {
		return nil
	}
	return err
}

// Close asks the user's session to end once its queue is empty; closing a
// session that is not running is a no-op.
// through is the user's last accepted sequence number: the session ends only
// once it has taken in everything up to it.
func (s *Starter) Close(ctx context.Context, userID string, through int64) error {
	return ignoreNoSession(s.signal(ctx, userID, models.SignalClose, models.CloseSignal{Through: through}))
}

// Cancel drops a queued request from the user's session queue. The caller
// has already marked it cancelled in MongoDB, which is what the session
// checks before it starts a request; this only keeps the queue tidy.
func (s *Starter) Cancel(ctx context.Context, userID, requestID string) error {
	return ignoreNoSession(s.signal(ctx, userID, models.SignalCancel, models.CancelSignal{RequestID: requestID}))
}

// Requeue sends requests back to the tail of the user's queue, opening the
// session if none is running. The caller has set them queued in MongoDB.
func (s *Starter) Requeue(ctx context.Context, userID string, reqs []models.QueuedRequest) error {
	return s.signalWithStart(ctx, userID, models.SignalRequeue, reqs)
}

// Pause stops the user's queue from starting new requests.
func (s *Starter) Pause(ctx context.Context, userID string) error {
	return s.signal(ctx, userID, models.SignalPause, nil)
}

// Resume undoes Pause.
func (s *Starter) Resume(ctx context.Context, userID string) error {
	return s.signal(ctx, userID, models.SignalResume, nil)
}

// SetPolicy sets the user's session failure policy.
func (s *Starter) SetPolicy(ctx context.Context, userID string, p models.FailurePolicy) error {
	if !p.Valid() {
		return fmt.Errorf("unknown failure policy %q", p)
	}
	return s.signal(ctx, userID, models.SignalPolicy, models.PolicySignal{Policy: p})
}

// Ping checks that the Temporal frontend answers.
func (s *Starter) Ping(ctx context.Context) error {
	if _, err := s.Client.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return fmt.Errorf("temporal health: %w", err)
	}
	return nil
}
