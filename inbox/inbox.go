// Package inbox owns the acceptance of requests: idempotency, the queue cap,
// per-user sequence numbers, the commit to MongoDB that a 202 stands for,
// and the delivery of accepted requests to the users' sessions — coalesced
// per user right after acceptance (Dispatcher), and reconciled after any
// crash or outage (Relay). The HTTP layer decodes, calls Submit, encodes.
//
// The mechanism is described in docs/architecture.md ("The inbox").
package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// Sessions is where deliveries go; *starter.Starter implements it.
type Sessions interface {
	// Deliver signals d to userID's session, opening a run if none is.
	Deliver(ctx context.Context, userID string, d models.Delivery) error
}

// Errors Submit returns besides the store's.
var (
	// ErrKeyReused: the Idempotency-Key was used for a different submission.
	ErrKeyReused = errors.New("idempotency key used for a different submission")
	// ErrKeyInUse: a submission with the key is being accepted right now.
	ErrKeyInUse = errors.New("a submission with this idempotency key is in progress")
)

// QueueFullError says the user's queue cannot take the submission.
type QueueFullError struct{ Queued, Limit int }

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("your queue holds %d requests; the limit is %d", e.Queued, e.Limit)
}

// Item is one request as submitted, validated by the caller.
type Item struct {
	Type    string
	Payload string // compact JSON
}

// Submission is what one API call submits: its items are accepted in order,
// all or none.
type Submission struct {
	UserID string
	Key    string // Idempotency-Key, "" for none
	Items  []Item
	// Naive asks for the benchmark's naive execution path.
	Naive bool
}

// Accepted is a submission's answer: the requests as recorded, the queue
// position of the first, and whether they were accepted by an earlier
// submission with the same key.
type Accepted struct {
	Requests []models.Request
	Position int
	Replayed bool
}

// Config tunes an Inbox. Zero fields take the defaults.
type Config struct {
	// MaxQueue bounds a user's waiting and running requests.
	MaxQueue int
	Logger   *slog.Logger
	Now      func() time.Time
}

// DefaultMaxQueue is Config.MaxQueue's default.
const DefaultMaxQueue = 1000

// Inbox accepts submissions into the store and hands them to a Dispatcher.
type Inbox struct {
	cfg      Config
	requests *store.Requests
	queues   *store.Queues
	// dispatch delivers accepted requests; nil leaves them to the Relay.
	dispatch *Dispatcher
	// tails is the highest sequence number this process committed per
	// user: a better allocation hint than a queue document read under load.
	tails sync.Map // userID -> int64
	// pace is, per user whose session is busy, how fast it starts requests
	// (from successive readings of its queue document).
	pace sync.Map // userID -> *paceOf
}

// paceOf estimates how long one of a user's requests takes to start after
// the one before: a moving average over readings of the queue's started
// mark.
type paceOf struct {
	mu      sync.Mutex
	at      time.Time
	started int64
	per     time.Duration
}

// busyHeld is how many delivered requests a session must have not started
// yet before new entries are held for it.
const busyHeld = 2

// hold is how long userID's new entries may wait for more before their
// signal, given q read just now: about half the time the session needs to
// start the requests it already holds, so the signal comes well before it
// runs out of work; 0 when it has fewer than busyHeld, or no pace is known
// yet.
func (in *Inbox) hold(userID string, q store.Queue, now time.Time) time.Duration {
	held := q.Held()
	if held < busyHeld {
		in.pace.Delete(userID)
		return 0
	}
	v, loaded := in.pace.LoadOrStore(userID, &paceOf{at: now, started: q.Started})
	if !loaded {
		return 0
	}
	p := v.(*paceOf)
	p.mu.Lock()
	defer p.mu.Unlock()
	if q.Started > p.started && now.After(p.at) {
		sample := now.Sub(p.at) / time.Duration(q.Started-p.started)
		if p.per == 0 {
			p.per = sample
		} else {
			p.per = (3*p.per + sample) / 4
		}
		p.at, p.started = now, q.Started
	}
	return time.Duration(held) * p.per / 2
}

// New returns an Inbox on st that hands accepted requests to d (nil: only
// the relay delivers them).
func New(cfg Config, st *store.Store, d *Dispatcher) *Inbox {
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Inbox{cfg: cfg, requests: st.Requests, queues: st.Queues, dispatch: d}
}

// hintTries bounds the writes of a queue's tail hint after a commit.
const hintTries = 3

// itemKey is the idempotency key stored on the i-th of n requests of a
// submission. The separator is a space, which a client's key cannot hold,
// so a batch's keys never collide with a single submission's.
func itemKey(key string, i, n int) string {
	if key == "" || n == 1 {
		return key
	}
	return key + " " + strconv.Itoa(i)
}

// Submit accepts sub: when it returns nil, MongoDB has durably recorded
// every request with its sequence number, and delivery to the session is
// owed (see the package doc). A store that cannot be reached is an error
// that wraps the driver's.
func (in *Inbox) Submit(ctx context.Context, sub Submission) (Accepted, error) {
	q, err := in.queues.Get(ctx, sub.UserID)
	if err != nil {
		return Accepted{}, err
	}
	if sub.Key != "" {
		prev, _, err := in.replay(ctx, sub, false)
		if err != nil || prev != nil {
			return in.replayed(prev, q), err
		}
	}
	if pending := int(q.Pending()); pending+len(sub.Items) > in.cfg.MaxQueue {
		return Accepted{}, &QueueFullError{Queued: pending, Limit: in.cfg.MaxQueue}
	}
	now := in.cfg.Now().UTC().Truncate(time.Millisecond)
	items := make([]models.Request, len(sub.Items))
	for i, it := range sub.Items {
		items[i] = models.Request{Type: it.Type, Payload: it.Payload, EnqueuedAt: now, Naive: sub.Naive,
			IdempotencyKey: itemKey(sub.Key, i, len(sub.Items))}
	}
	var reqs []models.Request
	for try := 1; ; try++ {
		reqs, err = in.requests.Append(ctx, sub.UserID, in.tail(sub.UserID, q), items)
		if !errors.Is(err, store.ErrDuplicate) || sub.Key == "" {
			break
		}
		// A concurrent submission with the same key won, or the key is
		// held by a member of a voided batch, now freed.
		prev, freed, rerr := in.replay(ctx, sub, true)
		switch {
		case rerr != nil:
			return Accepted{}, rerr
		case prev != nil:
			return in.replayed(prev, q), nil
		case !freed || try == freeTries:
			return Accepted{}, ErrKeyInUse
		}
	}
	if err != nil {
		return Accepted{}, fmt.Errorf("accept: %w", err)
	}
	first, last := reqs[0].Seq, reqs[len(reqs)-1].Seq
	in.committed(ctx, sub.UserID, last)
	if sub.Key != "" {
		ids := make([]string, len(reqs))
		for i, r := range reqs {
			ids[i] = r.ID
		}
		if err := in.requests.RememberKey(context.WithoutCancel(ctx), sub.UserID, sub.Key, ids); err != nil {
			// Accepted all the same: a retry finds them by a scan instead.
			in.cfg.Logger.Warn("could not record the idempotency key", "user_id", sub.UserID, "request_id", reqs[0].ID, "error", err)
		}
	}
	if in.dispatch != nil {
		entries := make([]models.QueuedRequest, len(reqs))
		for i, r := range reqs {
			entries[i] = store.Entry{Seq: r.Seq, Request: r}.Queued()
		}
		in.dispatch.Add(sub.UserID, models.Delivery{After: first - 1, Through: last, Entries: entries}, in.hold(sub.UserID, q, now))
	}
	for _, r := range reqs {
		metrics.RequestsSubmitted(r.Type)
	}
	in.cfg.Logger.Info("requests accepted", "user_id", sub.UserID, "request_id", reqs[0].ID, "count", len(reqs),
		"seq", first, "workflow_id", models.SessionWorkflowID(sub.UserID), "type", reqs[0].Type)
	return Accepted{Requests: reqs, Position: q.Position(first)}, nil
}

// committed raises the user's tail hint to seq, here and in the store,
// where the relay looks for undelivered entries. The requests are committed
// whatever happens here; if the hint cannot be written, the in-process
// delivery still takes them, and a session's gap read finds them.
func (in *Inbox) committed(ctx context.Context, userID string, seq int64) {
	for {
		v, loaded := in.tails.LoadOrStore(userID, seq)
		if !loaded || v.(int64) >= seq || in.tails.CompareAndSwap(userID, v, seq) {
			break
		}
	}
	ctx = context.WithoutCancel(ctx)
	var err error
	for range hintTries {
		if err = in.queues.Committed(ctx, userID, seq, in.cfg.Now().UTC()); err == nil {
			return
		}
	}
	in.cfg.Logger.Error("could not record the queue's tail", "user_id", userID, "seq", seq, "error", err)
}

// freeTries bounds a submission's appends when its key was held by a
// member of a voided batch.
const freeTries = 3

// replay returns the requests an earlier submission with sub.Key made, nil
// if there is none. scan also looks for them by the key field (a scan on the
// embedded store), for a submission whose key was not remembered yet; freed
// reports that it found the key held by a member of a voided batch and
// freed it (the caller may append again).
func (in *Inbox) replay(ctx context.Context, sub Submission, scan bool) (prev []models.Request, freed bool, err error) {
	prev, err = in.requests.ByKey(ctx, sub.UserID, sub.Key)
	if errors.Is(err, store.ErrNotFound) && scan {
		prev = nil
		for i := range sub.Items {
			held, err := in.requests.ByIdempotencyKey(ctx, sub.UserID, itemKey(sub.Key, i, len(sub.Items)))
			var r *models.Request
			if err == nil {
				// Only a request that counts: not a member of a batch
				// still being inserted, or voided.
				r, err = in.requests.Get(ctx, sub.UserID, held.ID)
				if errors.Is(err, store.ErrNotFound) {
					if f, ferr := in.requests.FreeVoided(ctx, sub.UserID, held.ID); ferr != nil {
						return nil, false, fmt.Errorf("free the key of a voided request: %w", ferr)
					} else if f {
						freed = true
						continue
					}
				}
			}
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if err != nil {
				return nil, false, fmt.Errorf("find by idempotency key: %w", err)
			}
			prev = append(prev, *r)
		}
		if len(prev) < len(sub.Items) {
			// None (the key was freed), or a submission still in
			// progress: the caller appends again or answers "retry".
			return nil, freed, nil
		}
	} else if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("find by idempotency key: %w", err)
	}
	if len(prev) != len(sub.Items) {
		return nil, false, ErrKeyReused
	}
	for i, r := range prev {
		if r.Type != sub.Items[i].Type || r.Payload != sub.Items[i].Payload {
			return nil, false, ErrKeyReused
		}
	}
	return prev, false, nil
}

func (in *Inbox) replayed(prev []models.Request, q store.Queue) Accepted {
	if prev == nil {
		return Accepted{}
	}
	a := Accepted{Requests: prev, Replayed: true}
	if prev[0].Status == models.StatusQueued {
		a.Position = q.Position(prev[0].Seq)
	}
	return a
}

// Requeue sends request id of userID, already set queued, to the tail of
// the user's queue with a new inbox entry.
func (in *Inbox) Requeue(ctx context.Context, r *models.Request) error {
	q, err := in.queues.Get(ctx, r.UserID)
	if err != nil {
		return err
	}
	seq, err := in.requests.AppendRequeue(ctx, r.UserID, in.tail(r.UserID, q), r.ID, in.cfg.Now().UTC().Truncate(time.Millisecond))
	if err != nil {
		return fmt.Errorf("requeue %s: %w", r.ID, err)
	}
	in.committed(ctx, r.UserID, seq)
	if in.dispatch != nil {
		in.dispatch.Add(r.UserID, models.Delivery{After: seq - 1, Through: seq,
			Entries: []models.QueuedRequest{store.Entry{Seq: seq, Request: *r}.Queued()}}, 0)
	}
	return nil
}

// Flush sends userID's held entries now: a close is on its way.
func (in *Inbox) Flush(userID string) {
	if in.dispatch != nil {
		in.dispatch.Flush(userID)
	}
}

// Tail is the highest sequence number accepted for userID that this
// process or the store knows of: what a close must wait for.
func (in *Inbox) Tail(ctx context.Context, userID string) (int64, error) {
	q, err := in.queues.Get(ctx, userID)
	if err != nil {
		return 0, err
	}
	return in.tail(userID, q), nil
}

// tail is the highest sequence number known committed for userID: the
// queue document's, or a higher one this process committed itself.
func (in *Inbox) tail(userID string, q store.Queue) int64 {
	if v, ok := in.tails.Load(userID); ok {
		return max(q.Tail, v.(int64))
	}
	return q.Tail
}
