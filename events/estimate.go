package events

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// DefaultEstimate is the execution time assumed for a type the user has
// no finished request of yet.
const DefaultEstimate = time.Second

// estimateSamples is how many recent execution times per type an
// Estimator keeps: enough for a steady median, few enough to follow a
// change of workload within a few requests.
const estimateSamples = 20

// Estimator estimates how long a user's next request of a type will run:
// the median execution time (finished - started, retries included) of
// their last estimateSamples finished requests of that type; for a type
// they have not run, the median over all their types; DefaultEstimate
// before they have run anything. The median rather than the mean, so one
// timeout does not move every estimate behind it.
type Estimator struct {
	byType map[string][]time.Duration
	all    []time.Duration
	seen   map[string]bool
	order  []string
}

// NewEstimator is an empty Estimator.
func NewEstimator() *Estimator {
	return &Estimator{byType: map[string][]time.Duration{}, seen: map[string]bool{}}
}

// Observe takes in r's execution time if it has finished after running;
// each request counts once.
func (e *Estimator) Observe(r models.Request) {
	if r.StartedAt == nil || r.FinishedAt == nil || (r.Status != models.StatusSucceeded && r.Status != models.StatusFailed) {
		return
	}
	if e.seen[r.ID] {
		return
	}
	e.seen[r.ID] = true
	e.order = append(e.order, r.ID)
	if len(e.order) > 4*estimateSamples {
		delete(e.seen, e.order[0])
		e.order = e.order[1:]
	}
	d := max(r.FinishedAt.Sub(*r.StartedAt), 0)
	e.byType[r.Type] = keepLast(append(e.byType[r.Type], d))
	e.all = keepLast(append(e.all, d))
}

func keepLast(s []time.Duration) []time.Duration {
	if len(s) > estimateSamples {
		return s[len(s)-estimateSamples:]
	}
	return s
}

// Duration is the estimated execution time of a request of typ.
func (e *Estimator) Duration(typ string) time.Duration {
	if s := e.byType[typ]; len(s) > 0 {
		return median(s)
	}
	if len(e.all) > 0 {
		return median(e.all)
	}
	return DefaultEstimate
}

// Finish is the estimated finish of running request r, never before now.
func (e *Estimator) Finish(r models.Request, now time.Time) time.Time {
	if r.StartedAt == nil {
		return now.Add(e.Duration(r.Type))
	}
	return maxTime(r.StartedAt.Add(e.Duration(r.Type)), now)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func median(s []time.Duration) time.Duration {
	c := slices.Clone(s)
	slices.Sort(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// Estimate is where a live request stands: a waiting one's position (1 =
// next) and estimated start, the running one's estimated finish
// (Position 0).
type Estimate struct {
	Position int
	ETA      time.Time
}

// Views keeps, per user, a watcher without a stream for the reads that
// answer a position and an ETA (GET of a request, the session): a client
// polling a waiting request costs a read of the user's queue document per
// GET, and, when it moved, of the places that may have changed (the head,
// what is new), not a walk of every place ahead of it. A user's view is
// dropped after Idle without a read, and the least recently read beyond
// Users. Safe for concurrent use; one user's reads take turns.
type Views struct {
	cfg   Config
	store Store
	users int
	idle  time.Duration

	mu    sync.Mutex
	views map[string]*view
	swept time.Time
}

type view struct {
	mu   sync.Mutex
	w    *Watcher
	used time.Time
}

// Defaults of NewViews.
const (
	DefaultViewUsers = 4096
	DefaultViewIdle  = time.Minute
)

// NewViews reads s; cfg.Window bounds the places a view follows past the
// first not yet handled (the requests beyond show no estimate). users and
// idle <= 0 take the defaults.
func NewViews(cfg Config, s Store, users int, idle time.Duration) *Views {
	if users <= 0 {
		users = DefaultViewUsers
	}
	if idle <= 0 {
		idle = DefaultViewIdle
	}
	return &Views{cfg: cfg.withDefaults(), store: s, users: users, idle: idle, views: map[string]*view{}}
}

// Estimates returns where each of userID's live requests within the
// window stands, by request ID, and their queue document as read now.
func (v *Views) Estimates(ctx context.Context, userID string) (map[string]Estimate, store.Queue, error) {
	vw := v.take(userID)
	vw.mu.Lock()
	defer vw.mu.Unlock()
	var err error
	if vw.w == nil {
		w := NewWatcher(v.cfg, v.store, nil, userID)
		w.lean = true
		w.emit = func(Event) error { return nil }
		if err = w.start(ctx, nil); err == nil {
			vw.w = w
		}
	} else if err = vw.w.Poll(ctx); err == nil {
		vw.w.settle() // the estimates as of now, moved or not
	} else {
		vw.w = nil // start afresh next time
	}
	if err != nil {
		return nil, store.Queue{}, err
	}
	out := make(map[string]Estimate, len(vw.w.items))
	for id, it := range vw.w.items {
		if it.eta != nil {
			out[id] = Estimate{Position: it.position, ETA: *it.eta}
		}
	}
	return out, vw.w.q, nil
}

// take is userID's view, made if missing, marked used; it drops idle
// views and, beyond the bound, the least recently used.
func (v *Views) take(userID string) *view {
	now := v.cfg.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.swept) >= v.idle {
		v.swept = now
		v.evict(now, false)
	}
	vw := v.views[userID]
	if vw == nil {
		if len(v.views) >= v.users {
			v.evict(now, true)
		}
		vw = &view{}
		v.views[userID] = vw
	}
	vw.used = now
	return vw
}

// evict drops the idle views and, if full still, the least recently used.
func (v *Views) evict(now time.Time, full bool) {
	var oldest string
	for id, vw := range v.views {
		if now.Sub(vw.used) >= v.idle {
			delete(v.views, id)
			continue
		}
		if oldest == "" || vw.used.Before(v.views[oldest].used) {
			oldest = id
		}
	}
	if full && len(v.views) >= v.users && oldest != "" {
		delete(v.views, oldest)
	}
}
