package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// growthTarget is how many requests store-growth adds to the store.
const growthTarget = 100_000

// growthCheckpoints are the store sizes (requests added) at which
// store-growth measures, for a target of growthTarget.
var growthCheckpoints = []int{1_000, 10_000, 25_000, 50_000, 100_000}

// growthRounds is how many times each read is timed at a checkpoint.
const growthRounds = 40

// growthPoint is one checkpoint of store-growth: a probe user's reads
// while the store holds Added more requests than when the scenario began.
type growthPoint struct {
	Added      int           `json:"added"`
	FillRate   float64       `json:"fill_per_s"` // requests added and completed per second since the last checkpoint
	ListP50    time.Duration `json:"list_p50"`   // GET /v1/requests?limit=20
	ListP99    time.Duration `json:"list_p99"`
	GetP50     time.Duration `json:"get_p50"` // GET /v1/requests/:id
	GetP99     time.Duration `json:"get_p99"`
	SessionP50 time.Duration `json:"session_p50"` // GET /v1/session
	SessionP99 time.Duration `json:"session_p99"`
}

// runStoreGrowth fills the store with batches of 100 from filler users
// and, at each checkpoint, once everything submitted has completed (the
// reads are timed on an idle system), times a probe user's list, get and
// session reads. The probe owns five requests throughout: what it reads
// costs its own requests, whatever the store holds.
func runStoreGrowth(ctx context.Context, c *client, runID string, target int, progress io.Writer) ([]growthPoint, error) {
	const fillers, batch, conc = 50, 100, 8
	login := func(name string) (*user, error) {
		tok, refresh, err := c.login(ctx, fmt.Sprintf("bench-%s-store-growth-%s@bench.example.com", runID, name))
		return &user{token: tok, refresh: refresh}, err
	}
	probe, err := login("probe")
	if err != nil {
		return nil, err
	}
	for k := range 5 {
		ids, err := c.submit(ctx, probe.token, "", []map[string]any{{"type": "echo", "payload": map[string]int{"probe": k}}})
		if err != nil {
			return nil, fmt.Errorf("probe submit: %w", err)
		}
		probe.ids = append(probe.ids, ids...)
	}
	if err := waitRecord(ctx, c, probe.token, probe.ids[4]); err != nil {
		return nil, err
	}
	users := make([]*user, fillers)
	if err := parallel(ctx, conc, fillers, func(i int) error {
		var err error
		users[i], err = login(fmt.Sprint(i))
		return err
	}); err != nil {
		return nil, err
	}

	var points []growthPoint
	added := 0
	var next, accepted, failures atomic.Int64
	var fillMu sync.Mutex // a filler user may take two batches at once
	for _, cp := range growthCheckpoints {
		cp = cp * target / growthTarget
		if cp <= added {
			continue
		}
		start := time.Now()
		from := added
		n := (cp - added + batch - 1) / batch
		if err := parallel(ctx, conc, n, func(int) error {
			u := users[int(next.Add(1)-1)%fillers]
			items := make([]map[string]any, batch)
			for k := range items {
				items[k] = map[string]any{"type": "echo", "payload": map[string]int{"k": k}}
			}
			ids, err := c.submit(ctx, u.token, "", items)
			if failedSubmission(ctx, err) {
				failures.Add(1) // not counted as added; the fill goes on
				return nil
			}
			if err != nil {
				return fmt.Errorf("fill: %w", err)
			}
			fillMu.Lock()
			u.ids = ids[len(ids)-1:] // its last: the one to wait for
			fillMu.Unlock()
			accepted.Add(int64(len(ids)))
			return nil
		}); err != nil {
			return nil, err
		}
		added = int(accepted.Load())
		for _, u := range users {
			if len(u.ids) > 0 {
				if err := waitRecord(ctx, c, u.token, u.ids[0]); err != nil {
					return nil, err
				}
			}
		}
		p := growthPoint{Added: added, FillRate: float64(added-from) / time.Since(start).Seconds()}
		var list, get, sess []time.Duration
		for range growthRounds {
			for _, m := range []struct {
				path string
				into *[]time.Duration
			}{{"/v1/requests?limit=20", &list}, {"/v1/requests/" + probe.ids[0], &get}, {"/v1/session", &sess}} {
				t0 := time.Now()
				if err := c.call(ctx, "GET", m.path, probe.token, nil, nil); err != nil {
					return nil, fmt.Errorf("probe %s: %w", m.path, err)
				}
				*m.into = append(*m.into, time.Since(t0))
			}
		}
		p.ListP50, p.ListP99 = pct(list, 50), pct(list, 99)
		p.GetP50, p.GetP99 = pct(get, 50), pct(get, 99)
		p.SessionP50, p.SessionP99 = pct(sess, 50), pct(sess, 99)
		fmt.Fprintf(progress, "   +%d requests (%d failed submissions): list %s, get %s, session %s ms p50\n",
			added, failures.Load(), ms(p.ListP50), ms(p.GetP50), ms(p.SessionP50))
		points = append(points, p)
	}
	return points, nil
}

// printGrowth prints store-growth's checkpoints and, for each read, its
// p50 at the largest store over its p50 at the smallest.
func printGrowth(w io.Writer, points []growthPoint) {
	if len(points) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store-growth: requests added\tfill/s\tlist p50/p99 ms\tget p50/p99 ms\tsession p50/p99 ms\t")
	for _, p := range points {
		fmt.Fprintf(tw, "%d\t%.0f\t%s / %s\t%s / %s\t%s / %s\t\n", p.Added, p.FillRate,
			ms(p.ListP50), ms(p.ListP99), ms(p.GetP50), ms(p.GetP99), ms(p.SessionP50), ms(p.SessionP99))
	}
	first, last := points[0], points[len(points)-1]
	ratio := func(a, b time.Duration) string {
		if a <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", float64(b)/float64(a))
	}
	fmt.Fprintf(tw, "p50 at %d ÷ at %d\t\t%s\t%s\t%s\t\n", last.Added, first.Added,
		ratio(first.ListP50, last.ListP50), ratio(first.GetP50, last.GetP50), ratio(first.SessionP50, last.SessionP50))
	tw.Flush()
}
