package inbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// RelayConfig tunes a Relay. Zero fields take the defaults.
type RelayConfig struct {
	// Every is how often the relay looks for undelivered entries.
	Every time.Duration
	// Grace leaves a user whose queue document changed this recently to the
	// process that is delivering it.
	Grace time.Duration
	// AbandonAfter: see store.DefaultAbandonAfter.
	AbandonAfter time.Duration
	// Timeout bounds one delivery signal.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Relay defaults: an orphan is delivered within Grace + Every (3 s) of
// Temporal being reachable.
const (
	DefaultRelayEvery = time.Second
	DefaultRelayGrace = 2 * time.Second
)

// EndedSessions lists users whose session run ended abnormally (terminated,
// failed, timed out) since a time; *starter.Starter implements it. A relay
// without one leaves such users to their next submission.
type EndedSessions interface {
	EndedSince(ctx context.Context, since time.Time) ([]string, error)
}

// Relay delivers every accepted request that has not reached its session:
// after an API crash right after its 202, a delivery that failed while
// Temporal was down, a session run that was terminated or failed. Several
// relays may run at once (in every worker): a session ignores entries it
// already has.
type Relay struct {
	cfg      RelayConfig
	requests *store.Requests
	queues   *store.Queues
	sessions Sessions
	ended    EndedSessions
	lastEnd  time.Time
}

// NewRelay returns a relay; ended may be nil.
func NewRelay(cfg RelayConfig, st *store.Store, sessions Sessions, ended EndedSessions) *Relay {
	if cfg.Every <= 0 {
		cfg.Every = DefaultRelayEvery
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultRelayGrace
	}
	if cfg.AbandonAfter <= 0 {
		cfg.AbandonAfter = store.DefaultAbandonAfter
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Relay{cfg: cfg, requests: st.Requests, queues: st.Queues, sessions: sessions, ended: ended}
}

// Run relays until ctx is done.
func (r *Relay) Run(ctx context.Context) {
	r.lastEnd = time.Now().Add(-time.Minute)
	for sleep(ctx, r.cfg.Every) {
		if err := r.Tick(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("relay pass failed", "error", err)
		}
	}
}

// Tick is one pass: it delivers what the queue documents say no session
// holds, and restarts sessions whose run ended abnormally.
func (r *Relay) Tick(ctx context.Context) error {
	if r.ended != nil {
		if err := r.restartEnded(ctx); err != nil {
			r.cfg.Logger.Warn("relay: could not list ended sessions", "error", err)
		}
	}
	qs, err := r.queues.Undelivered(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, q := range qs {
		if now.Sub(q.UpdatedAt) < r.cfg.Grace {
			continue
		}
		if err := r.relay(ctx, q.UserID, q.Delivered); err != nil {
			r.cfg.Logger.Warn("relay: delivery failed", "user_id", q.UserID, "workflow_id", models.SessionWorkflowID(q.UserID), "error", err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

// relay delivers userID's entries after seq after.
func (r *Relay) relay(ctx context.Context, userID string, after int64) error {
	for {
		page, err := r.requests.Entries(ctx, userID, after, DefaultMaxEntries, r.cfg.AbandonAfter)
		if err != nil {
			return err
		}
		if page.Through == after {
			return nil // nothing committed after it yet (or a batch in progress)
		}
		del := page.Delivery(after)
		if len(del.Entries) == 0 {
			// Only cancelled or voided entries: nothing to send.
			if err := r.queues.Delivered(ctx, userID, page.Through, time.Now().UTC()); err != nil {
				return err
			}
		} else {
			r.cfg.Logger.Info("relaying undelivered requests", "user_id", userID, "workflow_id", models.SessionWorkflowID(userID),
				"entries", len(del.Entries), "after", after, "through", page.Through)
			if err := deliver(ctx, r.sessions, r.queues, userID, del, r.cfg.Timeout, "relay"); err != nil {
				return err
			}
		}
		if page.Blocked || len(page.Entries) < DefaultMaxEntries {
			return nil
		}
		after = page.Through
	}
}

// restartEnded opens a fresh run for each user whose run ended abnormally
// since the last pass: the fresh run takes in what the store holds. An
// empty delivery does it (a running session ignores it).
func (r *Relay) restartEnded(ctx context.Context) error {
	since := r.lastEnd
	users, err := r.ended.EndedSince(ctx, since.Add(-r.cfg.Every))
	if err != nil {
		return err
	}
	r.lastEnd = time.Now()
	for _, u := range users {
		q, err := r.queues.Get(ctx, u)
		if err != nil {
			return err
		}
		page, err := r.requests.Entries(ctx, u, max(q.Low-1, 0), 1, r.cfg.AbandonAfter)
		if err != nil {
			return err
		}
		if len(page.Entries) == 0 {
			continue // nothing left to run
		}
		r.cfg.Logger.Warn("session run ended abnormally with work pending; opening a new run", "user_id", u,
			"workflow_id", models.SessionWorkflowID(u))
		if err := deliver(ctx, r.sessions, r.queues, u, models.Delivery{}, r.cfg.Timeout, "relay"); err != nil {
			return err
		}
	}
	return nil
}
