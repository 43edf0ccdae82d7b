package events

import (
	"context"
	"slices"
	"time"

	"github.com/turnstile/turnstile/models"
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

// Estimates reads userID's requests once and returns where each live one
// stands, by request ID, for the first limit places from the first not yet
// handled (a bound on the reads: one per place, plus a few finished ones
// for the estimator). It is the watcher's view without the stream: the
// positions follow the user's sequence, the order their session runs them
// in.
func Estimates(ctx context.Context, s Store, userID string, limit int) (map[string]Estimate, error) {
	w := NewWatcher(Config{Window: limit}, s, nil, userID)
	w.emit = func(Event) error { return nil }
	if err := w.start(ctx, nil); err != nil {
		return nil, err
	}
	out := make(map[string]Estimate, len(w.items))
	for id, it := range w.items {
		if it.eta != nil {
			out[id] = Estimate{Position: it.position, ETA: *it.eta}
		}
	}
	return out, nil
}
