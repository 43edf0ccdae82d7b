// Package workflows holds the session workflow: one long-running workflow per
// user that receives requests as signals and runs them strictly one at a time,
// in arrival order.
package workflows

import (
	"errors"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
)

// Search attributes the session keeps current, for the Temporal Web UI and
// the admin API. They must be registered on the namespace.
var (
	UserIDAttr      = temporal.NewSearchAttributeKeyKeyword("UserId")
	QueueLengthAttr = temporal.NewSearchAttributeKeyInt64("QueueLength")
	PausedAttr      = temporal.NewSearchAttributeKeyBool("Paused")
)

// Config tunes a session. Zero fields take the defaults below.
type Config struct {
	// IdleTimeout closes a session that has had nothing to do for this long.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// MaxAttempts bounds how often a request is tried before it fails.
	MaxAttempts int32 `json:"max_attempts"`
	// RetryInitial and RetryMax shape the exponential backoff between tries.
	RetryInitial time.Duration `json:"retry_initial"`
	RetryMax     time.Duration `json:"retry_max"`
	// ExecTimeout bounds one attempt; HeartbeatTimeout detects a dead worker.
	ExecTimeout      time.Duration `json:"exec_timeout"`
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout"`
	// MaxSeen bounds the request IDs remembered for deduplication. MongoDB's
	// status check catches duplicates older than that.
	MaxSeen int `json:"max_seen"`
	// LocalTypes are request types short enough to run as local activities
	// in the worker that runs the workflow task: no round trip through the
	// server per request, so a burst of them runs back to back. They cannot
	// heartbeat, so each try is bounded by LocalTimeout; long work (sleep,
	// slow http) stays a regular activity. Empty = every type is a regular
	// activity (the naive mode the benchmark compares against).
	LocalTypes []string `json:"local_types,omitempty"`
	// LocalTimeout bounds one try of a local-type request.
	LocalTimeout time.Duration `json:"local_timeout,omitempty"`
	// BatchSize is how many consecutive local-type requests at the head of
	// the queue run in one batch activity (each still started, run and
	// recorded on its own); BatchBudget is how long a batch may keep
	// starting requests. 1 runs them one local activity each.
	BatchSize   int           `json:"batch_size,omitempty"`
	BatchBudget time.Duration `json:"batch_budget,omitempty"`
}

// Defaults.
const (
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultMaxAttempts      = 5
	DefaultRetryInitial     = time.Second
	DefaultRetryMax         = time.Minute
	DefaultExecTimeout      = 5 * time.Minute
	DefaultHeartbeatTimeout = 30 * time.Second
	DefaultMaxSeen          = 10000
	DefaultLocalTimeout     = 10 * time.Second
	DefaultBatchSize        = 100
	DefaultBatchBudget      = 250 * time.Millisecond
	// recordTimeout bounds one MongoDB write by a local activity; those are
	// retried without limit, so a MongoDB outage pauses the queue instead of
	// failing requests.
	recordTimeout  = 10 * time.Second
	recordRetryMax = 30 * time.Second
	// recordGiveUp bounds all tries of one MongoDB write together. Without it
	// the SDK takes StartToCloseTimeout as the ScheduleToCloseTimeout of a
	// local activity and gives up after 10 s, despite the unlimited retry
	// policy: an accepted request would stay queued or running forever.
	recordGiveUp = 10 * 365 * 24 * time.Hour
)

// WithDefaults returns c with zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.RetryInitial, DefaultRetryInitial)
	def(&c.RetryMax, DefaultRetryMax)
	def(&c.ExecTimeout, DefaultExecTimeout)
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.LocalTimeout, DefaultLocalTimeout)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxSeen <= 0 {
		c.MaxSeen = DefaultMaxSeen
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	def(&c.BatchBudget, DefaultBatchBudget)
	return c
}

// Input starts a session run. Everything but UserID and Config is state
// carried across continue-as-new.
type Input struct {
	UserID    string                 `json:"user_id"`
	Config    Config                 `json:"config"`
	Queue     []models.QueuedRequest `json:"queue,omitempty"`
	Seen      []string               `json:"seen,omitempty"`
	Processed int64                  `json:"processed,omitempty"`
	Failed    int64                  `json:"failed,omitempty"`
	Closed    bool                   `json:"closed,omitempty"`
	Paused    bool                   `json:"paused,omitempty"`
	Policy    models.FailurePolicy   `json:"policy,omitempty"`
	// LastSeq is the highest inbox sequence number taken in; entries at or
	// below it are duplicates. WantSeq is the highest a delivery announced
	// that has not been read yet (a gap the session fills from the store).
	LastSeq int64 `json:"last_seq,omitempty"`
	WantSeq int64 `json:"want_seq,omitempty"`
	// CloseSeq is the last sequence number accepted before the latest
	// close: entries up to it drain without reopening the session.
	CloseSeq int64 `json:"close_seq,omitempty"`
	// Carried marks a continue-as-new input. A run without it is fresh and,
	// from versionInbox on, first takes in what the store holds for its
	// user (its previous run may have been terminated with work queued).
	Carried bool `json:"carried,omitempty"`
}

// Versions of the session's logic, for workflow.GetVersion. A session that
// started under an older version keeps that behaviour for its whole run;
// its next run (continue-as-new or a new session) takes the newest.
const (
	// changeRequeue: listen to SignalRequeue and keep a requeued request's
	// earlier attempts in its count.
	changeRequeue  = "requeue"
	versionRequeue = workflow.Version(1)
	// versionLocal: run Config.LocalTypes as local activities.
	versionLocal = workflow.Version(2)
	// versionBatch: run consecutive local-type requests at the head of the
	// queue in batches (activities.RunBatch).
	versionBatch = workflow.Version(3)
	// versionRedeliver: when a request's regular activity ran out of
	// attempts by timing out, attempts that never started (a frozen worker's
	// open polls took them) are given back; see execute.
	versionRedeliver = workflow.Version(4)
	// versionInbox: requests arrive as sequenced inbox entries
	// (SignalDeliver), deduplicated by sequence number; a fresh run first
	// takes in its user's pending entries from the store, and a gap in the
	// deliveries is filled from the store; handled entries advance the
	// user's low mark.
	versionInbox = workflow.Version(5)
	// versionLocalBudget: a local-type request's tries are bounded one by
	// one (LocalTimeout each) and in number (MaxAttempts), not all together
	// by LocalTimeout, which the SDK takes as the schedule-to-close timeout
	// when none is set.
	versionLocalBudget = workflow.Version(6)
	// versionCancelAhead: a cancel of a request not delivered yet (its
	// sequence number, from its ID, is above lastSeq) is remembered, and
	// the request is dropped when its delivery comes instead of waiting in
	// the queue until its turn skips it.
	versionCancelAhead = workflow.Version(7)
	// versionSteering: a fresh run starts paused and with the failure
	// policy an operator set, as the store keeps them (they used to end
	// with the run that had them).
	versionSteering = workflow.Version(8)
	// versionLatest is what new runs record.
	versionLatest = versionSteering
)

// outcome is what executing one request ended in.
type outcome struct {
	Status models.Status
	// Skipped is set when the request did not run here: it was missing from
	// the store, already final (a duplicate) or cancelled first.
	Skipped bool
}

// session is the state of one run.
type session struct {
	in      Input
	cfg     Config
	version workflow.Version
	queue   []models.QueuedRequest
	seen    map[string]bool
	order   []string // seen IDs, oldest first, for bounding
	running *models.RunningEntry
	// inBatch are the requests of the running batch after the first, which
	// the session shows as waiting until the batch reports.
	inBatch []models.QueuedRequest

	processed, failed int64
	closed, paused    bool
	policy            models.FailurePolicy

	// lastSeq and wantSeq: see Input. fetchAt is when to read the store
	// for a gap again (zero: at once when wantSeq > lastSeq).
	lastSeq, wantSeq, closeSeq int64
	// cancelAhead: sequence numbers (from the IDs) of requests cancelled
	// before their delivery reached this run (versionCancelAhead).
	cancelAhead map[int64]bool

	// steered: a fresh run has taken the stored steering (versionSteering).
	steered bool

	// Search attribute values last written, to upsert only on change.
	savedQueueLen int64
	savedPaused   bool
}

// Session is the session workflow. It returns when its queue is empty and it
// has been closed, by SignalClose or by the idle timeout, and continues as
// new when Temporal suggests it.
func Session(ctx workflow.Context, in Input) error {
	s := newSession(in)
	s.version = workflow.GetVersion(ctx, changeRequeue, workflow.DefaultVersion, versionLatest)
	if err := workflow.SetQueryHandler(ctx, models.QueryState, s.state); err != nil {
		return err
	}
	return s.run(ctx)
}

func newSession(in Input) *session {
	s := &session{
		in:        in,
		cfg:       in.Config.WithDefaults(),
		queue:     in.Queue,
		seen:      make(map[string]bool, len(in.Seen)),
		processed: in.Processed,
		failed:    in.Failed,
		closed:    in.Closed,
		paused:    in.Paused,
		policy:    in.Policy,
		lastSeq:   in.LastSeq,
		wantSeq:   in.WantSeq,
		closeSeq:  in.CloseSeq,
		// A new run starts with QueueLength and Paused unset in its
		// visibility record (only UserId is given at start), so the first
		// pass writes them.
		savedQueueLen: -1,
	}
	if !s.policy.Valid() {
		s.policy = models.PolicyContinue
	}
	for _, id := range in.Seen {
		s.remember(id)
	}
	return s
}

// remember adds id to the bounded set of seen request IDs.
func (s *session) remember(id string) {
	if s.seen[id] {
		return
	}
	s.seen[id] = true
	s.order = append(s.order, id)
	for len(s.order) > s.cfg.MaxSeen {
		delete(s.seen, s.order[0])
		s.order = s.order[1:]
	}
}

// signals are the channels the session listens on.
type signals struct {
	submit, close, cancel, pause, resume, policy workflow.ReceiveChannel
	// requeue is nil in sessions older than versionRequeue.
	requeue workflow.ReceiveChannel
	// deliver is listened to in every version: an old run that gets an
	// inbox delivery during a deploy takes it in (handling a signal adds
	// no command, so old histories replay the same).
	deliver workflow.ReceiveChannel
}

func (s *session) run(ctx workflow.Context) error {
	log := workflow.GetLogger(ctx)
	sig := signals{
		submit:  workflow.GetSignalChannel(ctx, models.SignalSubmit),
		close:   workflow.GetSignalChannel(ctx, models.SignalClose),
		cancel:  workflow.GetSignalChannel(ctx, models.SignalCancel),
		pause:   workflow.GetSignalChannel(ctx, models.SignalPause),
		resume:  workflow.GetSignalChannel(ctx, models.SignalResume),
		policy:  workflow.GetSignalChannel(ctx, models.SignalPolicy),
		deliver: workflow.GetSignalChannel(ctx, models.SignalDeliver),
	}
	if s.version >= versionRequeue {
		sig.requeue = workflow.GetSignalChannel(ctx, models.SignalRequeue)
	}
	var (
		running    workflow.Future
		idle       workflow.Future
		cancelIdle workflow.CancelFunc
		refetch    workflow.Future
	)
	if s.version >= versionInbox && !s.in.Carried {
		// A fresh run: what the store holds comes before any signal.
		s.fetch(ctx, 0)
	}
	first := true
	for {
		if !first {
			sel := workflow.NewSelector(ctx)
			s.listen(ctx, sel, sig)
			if running != nil {
				sel.AddFuture(running, func(f workflow.Future) {
					var done batchDone
					_ = f.Get(ctx, &done) // the coroutine always sets a value
					for _, out := range done.outcomes {
						s.finished(out)
					}
					s.running, s.inBatch = nil, nil
					// What the batch did not get to goes back to the head.
					s.queue = append(done.rest, s.queue...)
					running = nil
				})
			}
			if refetch != nil {
				sel.AddFuture(refetch, func(workflow.Future) { refetch = nil })
			}
			if idle != nil {
				sel.AddFuture(idle, func(f workflow.Future) {
					if f.Get(ctx, nil) == nil {
						log.Info("session idle; closing", "idle_timeout", s.cfg.IdleTimeout)
						s.closed = true
					}
					idle, cancelIdle = nil, nil
				})
			}
			sel.Select(ctx)
		}
		first = false
		// Take in everything else that has arrived, so one workflow task
		// handles a burst of signals at once.
		s.drain(ctx, sig)
		if s.wantSeq > s.lastSeq && refetch == nil {
			// A delivery came after entries this run has not seen.
			if !s.fetch(ctx, s.lastSeq) {
				refetch = workflow.NewTimer(ctx, refetchEvery)
			}
		}

		// Between two requests is the only safe point to end the run: no
		// activity is in flight, and everything received is in s.
		if running == nil {
			if s.closed && len(s.queue) == 0 && s.lastSeq >= s.wantSeq {
				log.Info("session closed and drained; ending", "processed", s.processed)
				return nil
			}
			if workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
				log.Info("continuing as new", "queue_length", len(s.queue), "processed", s.processed)
				return workflow.NewContinueAsNewError(ctx, Session, s.carry())
			}
			if !s.paused && len(s.queue) > 0 {
				n := max(1, s.batchable())
				batch := s.queue[:n:n]
				s.queue = s.queue[n:]
				running = s.start(ctx, batch)
			}
		}
		if err := s.upsertAttributes(ctx); err != nil {
			return err
		}
		isIdle := running == nil && len(s.queue) == 0 && !s.closed
		switch {
		case isIdle && idle == nil:
			var timerCtx workflow.Context
			timerCtx, cancelIdle = workflow.WithCancel(ctx)
			idle = workflow.NewTimer(timerCtx, s.cfg.IdleTimeout)
		case !isIdle && idle != nil:
			cancelIdle()
			idle, cancelIdle = nil, nil
		}
	}
}

// listen adds a case per signal channel to sel.
func (s *session) listen(ctx workflow.Context, sel workflow.Selector, sig signals) {
	sel.AddReceive(sig.submit, func(c workflow.ReceiveChannel, _ bool) { s.onSubmit(ctx, c) })
	sel.AddReceive(sig.close, func(c workflow.ReceiveChannel, _ bool) { s.onClose(ctx, c) })
	sel.AddReceive(sig.cancel, func(c workflow.ReceiveChannel, _ bool) { s.onCancel(ctx, c) })
	sel.AddReceive(sig.pause, func(c workflow.ReceiveChannel, _ bool) { s.onPause(ctx, c, true) })
	sel.AddReceive(sig.resume, func(c workflow.ReceiveChannel, _ bool) { s.onPause(ctx, c, false) })
	sel.AddReceive(sig.policy, func(c workflow.ReceiveChannel, _ bool) { s.onPolicy(ctx, c) })
	if sig.requeue != nil {
		sel.AddReceive(sig.requeue, func(c workflow.ReceiveChannel, _ bool) { s.onRequeue(ctx, c) })
	}
	sel.AddReceive(sig.deliver, func(c workflow.ReceiveChannel, _ bool) { s.onDeliver(ctx, c) })
}

// refetchEvery is how often a session retries reading a gap that the store
// could not fill yet (a batch still being inserted).
const refetchEvery = time.Second

// onDeliver takes in the entries after the highest sequence number the
// session has. A delivery that starts after it (entries in between went to
// a run that ended, or are on their way from another API instance) is not
// used: the session reads the gap and what follows from the store.
func (s *session) onDeliver(ctx workflow.Context, c workflow.ReceiveChannel) {
	var d models.Delivery
	c.Receive(ctx, &d)
	if d.After > s.lastSeq {
		s.wantSeq = max(s.wantSeq, d.Through)
		return
	}
	s.takeIn(d.Entries, d.Through)
}

// takeIn appends the entries after lastSeq, in order, and moves lastSeq to
// through.
func (s *session) takeIn(entries []models.QueuedRequest, through int64) {
	for _, e := range entries {
		if e.Seq <= s.lastSeq || e.ID == "" {
			continue
		}
		s.lastSeq = e.Seq
		if _, idSeq, ok := models.ParseRequestID(e.ID); ok && s.cancelAhead[idSeq] {
			delete(s.cancelAhead, idSeq) // cancelled before it came
			continue
		}
		// A requeue entry of a request already waiting adds nothing.
		if s.queued(e.ID) || (s.running != nil && s.running.ID == e.ID) {
			continue
		}
		s.queue = append(s.queue, e)
		if e.Seq > s.closeSeq {
			s.closed = false // work accepted after a close reopens the session
		}
	}
	s.lastSeq = max(s.lastSeq, through)
}

// fetch reads the user's pending entries after seq after from the store (0:
// from the user's low mark, for a fresh run) and takes them in. It reports
// whether the store had everything announced so far.
func (s *session) fetch(ctx workflow.Context, after int64) bool {
	var acts *activities.Activities
	var page activities.PendingResult
	err := workflow.ExecuteLocalActivity(s.recordOptions(ctx, recordTimeout), acts.Pending,
		activities.PendingInput{UserID: s.in.UserID, After: after}).Get(ctx, &page)
	if err != nil {
		workflow.GetLogger(ctx).Error("could not read the inbox", "error", err)
		return false
	}
	if after == 0 && !s.in.Carried && !s.steered && s.version >= versionSteering {
		// A fresh run's first read; signals handled after it are newer (an
		// operator's setting is stored before it is signalled).
		s.steered = true
		s.paused = page.Paused
		if page.Policy.Valid() {
			s.policy = page.Policy
		}
	}
	s.takeIn(page.Entries, page.Through)
	return s.lastSeq >= s.wantSeq
}

// drain handles every signal already received, without blocking. Nothing
// buffered may be left behind when the run ends or continues as new.
func (s *session) drain(ctx workflow.Context, sig signals) {
	for {
		handled := true
		sel := workflow.NewSelector(ctx)
		s.listen(ctx, sel, sig)
		sel.AddDefault(func() { handled = false })
		sel.Select(ctx)
		if !handled {
			return
		}
	}
}

func (s *session) onSubmit(ctx workflow.Context, c workflow.ReceiveChannel) {
	var sub models.Submission
	c.Receive(ctx, &sub)
	for _, r := range sub.Requests {
		if r.ID == "" || s.seen[r.ID] {
			continue // a repeated signal: the client retried
		}
		s.remember(r.ID)
		s.queue = append(s.queue, r)
	}
	// New work reopens a session that was closing.
	if len(sub.Requests) > 0 {
		s.closed = false
	}
}

// onRequeue appends requests an operator sent back, even if seen before; one
// already waiting in the queue is not added twice.
func (s *session) onRequeue(ctx workflow.Context, c workflow.ReceiveChannel) {
	var sub models.Submission
	c.Receive(ctx, &sub)
	for _, r := range sub.Requests {
		if r.ID == "" || s.queued(r.ID) || (s.running != nil && s.running.ID == r.ID) {
			continue
		}
		s.remember(r.ID)
		s.queue = append(s.queue, r)
		s.closed = false
	}
}

func (s *session) queued(id string) bool {
	for _, r := range s.queue {
		if r.ID == id {
			return true
		}
	}
	for _, r := range s.inBatch {
		if r.ID == id {
			return true
		}
	}
	return false
}

func (s *session) onClose(ctx workflow.Context, c workflow.ReceiveChannel) {
	if s.version < versionInbox {
		c.Receive(ctx, nil)
		s.closed = true
		return
	}
	var cs models.CloseSignal
	c.Receive(ctx, &cs)
	s.closed = true
	s.wantSeq = max(s.wantSeq, cs.Through)
	s.closeSeq = max(s.closeSeq, cs.Through)
}

func (s *session) onCancel(ctx workflow.Context, c workflow.ReceiveChannel) {
	var cs models.CancelSignal
	c.Receive(ctx, &cs)
	for i, r := range s.queue {
		if r.ID == cs.RequestID {
			s.queue = append(s.queue[:i:i], s.queue[i+1:]...)
			return
		}
	}
	// One in the running batch: the batch finds it cancelled in the store
	// and skips it; stop showing it as waiting.
	for i, r := range s.inBatch {
		if r.ID == cs.RequestID {
			s.inBatch = append(s.inBatch[:i:i], s.inBatch[i+1:]...)
			return
		}
	}
	// Not delivered yet: drop it when it comes.
	if _, seq, ok := models.ParseRequestID(cs.RequestID); ok && seq > s.lastSeq && s.version >= versionCancelAhead {
		if s.cancelAhead == nil {
			s.cancelAhead = map[int64]bool{}
		}
		s.cancelAhead[seq] = true
	}
}

func (s *session) onPause(ctx workflow.Context, c workflow.ReceiveChannel, paused bool) {
	c.Receive(ctx, nil)
	s.paused = paused
}

func (s *session) onPolicy(ctx workflow.Context, c workflow.ReceiveChannel) {
	var ps models.PolicySignal
	c.Receive(ctx, &ps)
	if ps.Policy.Valid() {
		s.policy = ps.Policy
	}
}

// batchDone is what a running request or batch reports: the outcomes of
// the requests it handled, in order, and those it left to run later.
type batchDone struct {
	outcomes []outcome
	rest     []models.QueuedRequest
}

// start runs batch in its own coroutine and returns a future of its
// batchDone: one request on its own (execute), more with
// activities.RunBatch (executeBatch).
func (s *session) start(ctx workflow.Context, batch []models.QueuedRequest) workflow.Future {
	s.running = &models.RunningEntry{ID: batch[0].ID, Type: batch[0].Type, StartedAt: workflow.Now(ctx)}
	s.inBatch = batch[1:]
	fut, set := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(ctx workflow.Context) {
		if len(batch) == 1 {
			set.Set(batchDone{outcomes: []outcome{s.execute(ctx, batch[0])}}, nil)
			return
		}
		set.Set(s.executeBatch(ctx, batch), nil)
	})
	return fut
}

// batchable is how many requests at the head of the queue to run as one
// batch: consecutive local types, none with a failed attempt behind it, at
// most BatchSize. 0 means run the head on its own.
func (s *session) batchable() int {
	if s.version < versionBatch || s.cfg.BatchSize <= 1 {
		return 0
	}
	n := 0
	for _, r := range s.queue {
		if n == s.cfg.BatchSize || r.Tried > 0 || r.Naive || !slices.Contains(s.cfg.LocalTypes, r.Type) {
			break
		}
		n++
	}
	if n < 2 {
		return 0 // one alone runs as a local activity: the lowest latency
	}
	return n
}

// recordOptions are those of the local activities that write to MongoDB.
func (s *session) recordOptions(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout:    timeout,
		ScheduleToCloseTimeout: recordGiveUp,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    recordRetryMax,
		},
	})
}

// executeBatch runs batch in one local activity and turns its report into
// outcomes. A batch that cannot start (MongoDB down) is retried like any
// MongoDB write; what it did not get to is returned to the queue, the
// request whose first attempt failed marked as tried.
func (s *session) executeBatch(ctx workflow.Context, batch []models.QueuedRequest) batchDone {
	var acts *activities.Activities
	in := activities.BatchInput{
		UserID: s.in.UserID, Budget: s.cfg.BatchBudget, TryTimeout: s.cfg.LocalTimeout,
		StopOnFailure: s.policy == models.PolicyPause,
		Items:         make([]activities.BatchItem, len(batch)),
	}
	for i, r := range batch {
		in.Items[i] = activities.BatchItem{ID: r.ID, Type: r.Type, Seq: r.Seq}
	}
	// A regular activity, so the workflow task ends while it works (signals
	// and queries are answered at once) and a lost worker is noticed at the
	// heartbeat timeout. It is retried without limit, like a MongoDB write:
	// it fails only when it could not start its first request.
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: s.cfg.BatchBudget + s.cfg.LocalTimeout + recordTimeout,
		HeartbeatTimeout:    s.cfg.HeartbeatTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    recordRetryMax,
		},
	})
	var res activities.BatchResult
	if err := workflow.ExecuteActivity(actx, acts.RunBatch, in).Get(ctx, &res); err != nil {
		// Only a bug gets here (the retry policy has no limit): run the
		// batch's requests one by one instead.
		workflow.GetLogger(ctx).Error("batch failed; running its requests one by one", "error", err)
		return batchDone{rest: batch}
	}
	var done batchDone
	for _, o := range res.Done {
		done.outcomes = append(done.outcomes, outcome{Status: o.Status, Skipped: o.Skipped})
	}
	next := len(res.Done)
	if res.Unrecorded != nil && next < len(batch) {
		if err := workflow.ExecuteLocalActivity(s.recordOptions(ctx, recordTimeout), acts.Finish, *res.Unrecorded).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Error("could not record outcome", "request_id", res.Unrecorded.RequestID, "error", err)
		}
		done.outcomes = append(done.outcomes, outcome{Status: res.Unrecorded.Status})
		next++
	}
	done.rest = slices.Clone(batch[next:])
	if res.Retry != nil && len(done.rest) > 0 && done.rest[0].ID == res.Retry.ID {
		// One try of its budget is spent (earlier attempts of a requeued
		// request are not: a requeue grants a fresh budget).
		done.rest[0].Tried = 1
	}
	return done
}

// finished updates counters and applies the failure policy.
func (s *session) finished(out outcome) {
	s.running = nil
	if out.Skipped {
		return
	}
	switch out.Status {
	case models.StatusSucceeded:
		s.processed++
	case models.StatusFailed:
		s.processed++
		s.failed++
		if s.policy == models.PolicyPause {
			s.paused = true
		}
	}
}

// execute marks req running, runs it with retries and records the outcome.
// MongoDB writes are local activities retried without limit; the handler is
// an activity with the bounded retry policy.
func (s *session) execute(ctx workflow.Context, req models.QueuedRequest) outcome {
	var acts *activities.Activities
	recordCtx := s.recordOptions(ctx, recordTimeout)
	var mark activities.MarkRunningResult
	err := workflow.ExecuteLocalActivity(recordCtx, acts.MarkRunning,
		activities.MarkRunningInput{RequestID: req.ID, UserID: s.in.UserID, Seq: req.Seq}).Get(ctx, &mark)
	if err != nil || mark.Status != models.StatusRunning {
		// Missing, already final, or not ours: nothing to run.
		workflow.GetLogger(ctx).Info("request skipped", "request_id", req.ID, "status", mark.Status, "error", err)
		return outcome{Status: mark.Status, Skipped: true}
	}

	retry := &temporal.RetryPolicy{
		InitialInterval:        s.cfg.RetryInitial,
		BackoffCoefficient:     2,
		MaximumInterval:        s.cfg.RetryMax,
		MaximumAttempts:        s.cfg.MaxAttempts,
		NonRetryableErrorTypes: []string{activities.ErrTypePermanent, activities.ErrTypeUnknownType},
	}
	if req.Tried > 0 {
		// Its first attempt failed in a batch: the rest of its budget,
		// after the first backoff.
		retry.MaximumAttempts = max(1, s.cfg.MaxAttempts-int32(req.Tried))
		_ = workflow.Sleep(ctx, s.cfg.RetryInitial)
	}
	prior := 0
	if s.version >= versionRequeue {
		prior = mark.Attempts
	}
	input := activities.RunInput{
		RequestID: req.ID, UserID: s.in.UserID, Type: req.Type, Payload: mark.Payload, PriorAttempts: prior,
	}
	var res activities.RunResult
	ran := 0 // attempts known to have run, when redeliver counted them
	local := s.version >= versionLocal && !req.Naive && slices.Contains(s.cfg.LocalTypes, req.Type)
	if local {
		opts := workflow.LocalActivityOptions{StartToCloseTimeout: s.cfg.LocalTimeout, RetryPolicy: retry}
		if s.version >= versionLocalBudget {
			opts.ScheduleToCloseTimeout = recordGiveUp // MaximumAttempts bounds the tries
		}
		err = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, opts), acts.Run, input).Get(ctx, &res)
	} else {
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: s.cfg.ExecTimeout,
			HeartbeatTimeout:    s.cfg.HeartbeatTimeout,
			RetryPolicy:         retry,
		})
		err = workflow.ExecuteActivity(actx, acts.Run, input).Get(ctx, &res)
		if s.version >= versionRedeliver {
			ran, err = s.redeliver(ctx, actx, retry, &input, &res, err)
		}
	}

	fin := activities.FinishInput{RequestID: req.ID, UserID: s.in.UserID, Seq: req.Seq}
	if err == nil {
		fin.Status, fin.Result, fin.Attempts = models.StatusSucceeded, res.Result, res.Attempts
	} else {
		fin.Status, fin.Error, fin.Attempts = models.StatusFailed, failureMessage(err), s.attemptsOf(err, input.PriorAttempts)
		if ran > 0 {
			fin.Attempts = ran
		}
	}
	// Finish retries until MongoDB takes it; it fails only on a bug.
	if err := workflow.ExecuteLocalActivity(recordCtx, acts.Finish, fin).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Error("could not record outcome", "request_id", req.ID, "error", err)
	}
	return outcome{Status: fin.Status}
}

// redeliver gives back the attempts of a request's regular activity that
// timed out without having started. Temporal counts an attempt when it hands
// the task to a worker's poll; a frozen (not dead) worker's open polls keep
// taking the retries, which then time out unseen, so a request could fail
// after MaxAttempts deliveries having run once. Run records every attempt
// after the first before it starts the handler, and the first is taken as
// started, so the attempts that ran are known: while fewer ran than were
// granted, the rest are granted again in a new activity. Each round counts
// at least one more attempt, so this ends within the request's budget. ran
// is the count of attempts that ran when it ends on a timeout, else 0.
func (s *session) redeliver(ctx workflow.Context, actx workflow.Context, retry *temporal.RetryPolicy,
	input *activities.RunInput, res *activities.RunResult, err error) (ran int, _ error) {
	var acts *activities.Activities
	granted := input.PriorAttempts + int(retry.MaximumAttempts)
	for {
		var timeoutErr *temporal.TimeoutError
		if err == nil || !errors.As(err, &timeoutErr) {
			return 0, err
		}
		// MarkRunning on a running request changes nothing and reads its
		// recorded attempts.
		var mark activities.MarkRunningResult
		if rerr := workflow.ExecuteLocalActivity(s.recordOptions(ctx, recordTimeout), acts.MarkRunning,
			activities.MarkRunningInput{RequestID: input.RequestID, UserID: input.UserID}).Get(ctx, &mark); rerr != nil ||
			mark.Status != models.StatusRunning {
			return 0, err
		}
		ran = max(mark.Attempts, input.PriorAttempts+1)
		if ran >= granted {
			return ran, err
		}
		workflow.GetLogger(ctx).Warn("attempts timed out without starting; granting them again",
			"request_id", input.RequestID, "ran", ran, "granted", granted)
		rerun := *retry
		rerun.MaximumAttempts = int32(granted - ran)
		input.PriorAttempts = ran
		err = workflow.ExecuteActivity(workflow.WithRetryPolicy(actx, rerun), acts.Run, *input).Get(ctx, res)
	}
}

// failureMessage is the innermost cause of an activity failure, which is what
// a user wants to read.
func failureMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Error()
	}
	var timeoutErr *temporal.TimeoutError
	if errors.As(err, &timeoutErr) {
		return "timed out (" + timeoutErr.TimeoutType().String() + ")"
	}
	return err.Error()
}

// attemptsOf reads the attempt count a Run failure carries (prior attempts
// included); a timeout carries none and can only be final after the last
// attempt.
func (s *session) attemptsOf(err error, prior int) int {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		var d activities.FailureDetails
		if appErr.Details(&d) == nil && d.Attempts > 0 {
			return d.Attempts
		}
	}
	return prior + int(s.cfg.MaxAttempts)
}

// upsertAttributes writes QueueLength and Paused when they changed.
func (s *session) upsertAttributes(ctx workflow.Context) error {
	n := int64(len(s.queue) + len(s.inBatch))
	if s.running != nil {
		n++
	}
	var updates []temporal.SearchAttributeUpdate
	if n != s.savedQueueLen {
		updates = append(updates, QueueLengthAttr.ValueSet(n))
	}
	if s.paused != s.savedPaused || s.savedQueueLen < 0 {
		updates = append(updates, PausedAttr.ValueSet(s.paused))
	}
	if len(updates) == 0 {
		return nil
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		return err
	}
	s.savedQueueLen, s.savedPaused = n, s.paused
	return nil
}

// state answers QueryState.
func (s *session) state() (models.SessionState, error) {
	st := models.SessionState{
		UserID:      s.in.UserID,
		State:       models.SessionOpen,
		Paused:      s.paused,
		Policy:      s.policy,
		QueueLength: len(s.inBatch) + len(s.queue),
		Queue:       make([]models.QueueEntry, 0, len(s.inBatch)+len(s.queue)),
		Running:     s.running,
		Processed:   s.processed,
		Failed:      s.failed,
	}
	if s.closed {
		st.State = models.SessionClosing
	}
	for i, r := range slices.Concat(s.inBatch, s.queue) {
		st.Queue = append(st.Queue, models.QueueEntry{ID: r.ID, Type: r.Type, Position: i + 1, EnqueuedAt: r.EnqueuedAt})
	}
	return st, nil
}

// carry is the input of the next run.
func (s *session) carry() Input {
	return Input{
		UserID:    s.in.UserID,
		Config:    s.in.Config,
		Queue:     s.queue,
		Seen:      s.order,
		Processed: s.processed,
		Failed:    s.failed,
		Closed:    s.closed,
		Paused:    s.paused,
		Policy:    s.policy,
		LastSeq:   s.lastSeq,
		WantSeq:   s.wantSeq,
		CloseSeq:  s.closeSeq,
		Carried:   true,
	}
}
