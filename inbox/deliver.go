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

// outbox is one user's undelivered deliveries, each contiguous, in order.
type outbox struct {
	pending []models.Delivery
}

// NewDispatcher returns a Dispatcher that sends until ctx is done.
func NewDispatcher(ctx context.Context, cfg DispatcherConfig, sessions Sessions, queues *store.Queues) *Dispatcher {
	return &Dispatcher{cfg: cfg.withDefaults(), sessions: sessions, queues: queues, ctx: ctx, users: map[string]*outbox{}}
}

// Add queues d for userID's session. Consecutive deliveries merge.
func (d *Dispatcher) Add(userID string, del models.Delivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ob, busy := d.users[userID]
	if !busy {
		ob = &outbox{}
		d.users[userID] = ob
		d.wg.Add(1)
		go d.send(userID, ob)
	}
	if n := len(ob.pending); n > 0 && ob.pending[n-1].Through == del.After {
		last := &ob.pending[n-1]
		last.Entries = append(last.Entries, del.Entries...)
		last.Through = del.Through
		return
	}
	ob.pending = append(ob.pending, del)
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

func (d *Dispatcher) send(userID string, ob *outbox) {
	defer d.wg.Done()
	if !sleep(d.ctx, d.cfg.Linger) {
		return
	}
	backoff := retryInitial
	for {
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
