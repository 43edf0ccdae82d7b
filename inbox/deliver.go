package inbox

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// DispatcherConfig tunes a Dispatcher. Zero fields take the defaults.
type DispatcherConfig struct {
	// Linger is how long a user's first accepted request waits for more
	// before its delivery is sent: one signal carries what arrives
	// meanwhile (and everything accepted while a signal is in flight).
	Linger time.Duration
	// MaxHold bounds how long an entry may be held for a busy session (see
	// Add's hold); 0 takes DefaultMaxHold, negative holds nothing.
	MaxHold time.Duration
	// MaxEntries and MaxBytes bound one delivery signal.
	MaxEntries int
	MaxBytes   int
	// Timeout bounds one delivery signal; RetryMax the backoff between
	// tries while Temporal is unreachable.
	Timeout  time.Duration
	RetryMax time.Duration
	Logger   *slog.Logger
}

// Defaults.
const (
	DefaultLinger     = 5 * time.Millisecond
	DefaultMaxHold    = 3 * time.Second
	DefaultMaxEntries = 500
	// DefaultMaxBytes keeps a delivery far below Temporal's 2 MB payload
	// limit: entries carry IDs and types, never payloads.
	DefaultMaxBytes = 256 << 10
	DefaultTimeout  = 10 * time.Second
	DefaultRetryMax = 5 * time.Second
	retryInitial    = 100 * time.Millisecond
	// entryOverhead approximates an entry's size in a signal besides its
	// ID and type (sequence number, time, JSON keys).
	entryOverhead = 80
)

func (c DispatcherConfig) withDefaults() DispatcherConfig {
	if c.Linger < 0 {
		c.Linger = 0
	} else if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxHold < 0 {
		c.MaxHold = 0
	} else if c.MaxHold == 0 {
		c.MaxHold = DefaultMaxHold
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Dispatcher delivers what this process accepted, per user: one sender at a
// time per user, each signal carrying every entry accepted since the last
// one (bounded by MaxEntries and MaxBytes), retried with backoff while
// Temporal is unreachable. What it holds is in memory only; if the process
// dies, the Relay delivers it from the store.
type Dispatcher struct {
	cfg      DispatcherConfig
	sessions Sessions
	queues   *store.Queues
	ctx      context.Context

	mu    sync.Mutex
	users map[string]*outbox
	wg    sync.WaitGroup
}

// outbox is one user's undelivered deliveries, each contiguous, in order,
// and when the next signal is due.
type outbox struct {
	pending []models.Delivery
	due     time.Time
	wake    chan struct{} // an earlier due was set
}

// NewDispatcher returns a Dispatcher that sends until ctx is done.
func NewDispatcher(ctx context.Context, cfg DispatcherConfig, sessions Sessions, queues *store.Queues) *Dispatcher {
	return &Dispatcher{cfg: cfg.withDefaults(), sessions: sessions, queues: queues, ctx: ctx, users: map[string]*outbox{}}
}

// Add queues d for userID's session. Consecutive deliveries merge. hold
// is how long d may wait beyond the linger because the session has work
// it has not started yet (it would not run d sooner): what arrives
// meanwhile shares the signal. It is capped at MaxHold; an Add with a
// shorter wait brings the signal forward.
func (d *Dispatcher) Add(userID string, del models.Delivery, hold time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := time.Now().Add(d.cfg.Linger + min(max(hold, 0), d.cfg.MaxHold))
	ob, busy := d.users[userID]
	if !busy {
		ob = &outbox{due: due, wake: make(chan struct{}, 1)}
		d.users[userID] = ob
		d.wg.Add(1)
		go d.send(userID, ob)
	} else if ob.due.IsZero() || due.Before(ob.due) {
		ob.due = due
		select {
		case ob.wake <- struct{}{}:
		default:
		}
	}
	if n := len(ob.pending); n > 0 && ob.pending[n-1].Through == del.After {
		last := &ob.pending[n-1]
		last.Entries = append(last.Entries, del.Entries...)
		last.Through = del.Through
		return
	}
	ob.pending = append(ob.pending, del)
}

// Flush makes userID's held entries due now (a close is on its way).
func (d *Dispatcher) Flush(userID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ob, ok := d.users[userID]; ok && len(ob.pending) > 0 {
		ob.due = time.Now()
		select {
		case ob.wake <- struct{}{}:
		default:
		}
	}
}

// Wait waits until every sender has stopped (after ctx is done).
func (d *Dispatcher) Wait() { d.wg.Wait() }

// take removes the next signal's worth from ob; ok is false when ob is
// empty, and then the user's sender ends.
func (d *Dispatcher) take(userID string, ob *outbox) (models.Delivery, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(ob.pending) == 0 {
		delete(d.users, userID)
		return models.Delivery{}, false
	}
	head := &ob.pending[0]
	n, size := 0, 0
	for n < len(head.Entries) && n < d.cfg.MaxEntries {
		e := head.Entries[n]
		size += len(e.ID) + len(e.Type) + entryOverhead
		if n > 0 && size > d.cfg.MaxBytes {
			break
		}
		n++
	}
	if n == len(head.Entries) {
		out := *head
		ob.pending = ob.pending[1:]
		if len(ob.pending) == 0 {
			ob.due = time.Time{} // the next Add sets it
		}
		return out, true
	}
	through := head.Entries[n-1].Seq
	out := models.Delivery{After: head.After, Through: through, Entries: head.Entries[:n:n]}
	head.After, head.Entries = through, head.Entries[n:]
	return out, true
}

// giveBack returns an unsent delivery to the front of ob.
func (d *Dispatcher) giveBack(ob *outbox, del models.Delivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(ob.pending) > 0 && ob.pending[0].After == del.Through {
		ob.pending[0].After = del.After
		ob.pending[0].Entries = append(del.Entries, ob.pending[0].Entries...)
		return
	}
	ob.pending = append([]models.Delivery{del}, ob.pending...)
}

// waitDue waits until ob's next signal is due; false when ctx is done.
func (d *Dispatcher) waitDue(ob *outbox) bool {
	for {
		d.mu.Lock()
		due := ob.due
		d.mu.Unlock()
		wait := time.Until(due)
		if due.IsZero() || wait <= 0 {
			return d.ctx.Err() == nil
		}
		t := time.NewTimer(wait)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return false
		case <-ob.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (d *Dispatcher) send(userID string, ob *outbox) {
	defer d.wg.Done()
	backoff := retryInitial
	for {
		if !d.waitDue(ob) {
			return
		}
		del, ok := d.take(userID, ob)
		if !ok {
			return
		}
		err := deliver(d.ctx, d.sessions, d.queues, userID, del, d.cfg.Timeout, "api")
		if err == nil {
			backoff = retryInitial
			continue
		}
		d.giveBack(ob, del)
		d.cfg.Logger.Warn("delivery failed; retrying", "user_id", userID, "workflow_id", models.SessionWorkflowID(userID),
			"entries", len(del.Entries), "through", del.Through, "retry_in", backoff, "error", err)
		if !sleep(d.ctx, backoff) {
			return
		}
		backoff = min(backoff*2, d.cfg.RetryMax)
	}
}

// deliver signals del and records it delivered.
func deliver(ctx context.Context, sessions Sessions, queues *store.Queues, userID string, del models.Delivery, timeout time.Duration, by string) error {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := sessions.Deliver(sctx, userID, del)
	metrics.Delivered(by, len(del.Entries), err)
	if err != nil {
		return err
	}
	// Best effort: a lower mark only makes the relay deliver again, which
	// the session ignores.
	_ = queues.Delivered(sctx, userID, del.Through, time.Now().UTC())
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
