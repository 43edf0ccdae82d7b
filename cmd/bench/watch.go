package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// watchers holds the event streams (GET /v1/events) a scenario keeps open
// while it runs, and what they saw: how long after a change its event
// arrived, and the first estimated start each waiting request was given.
type watchers struct {
	mu        sync.Mutex
	latencies []time.Duration
	firstETA  map[string]time.Time
	lastETA   map[string]time.Time // the last estimate before the start
	errors    int
	streams   int
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// watch opens one stream for each of the first n users.
func watch(ctx context.Context, c *client, users []*user, n int) *watchers {
	ctx, cancel := context.WithCancel(ctx)
	w := &watchers{firstETA: map[string]time.Time{}, lastETA: map[string]time.Time{}, cancel: cancel, streams: min(n, len(users))}
	for _, u := range users[:w.streams] {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := w.follow(ctx, c, u.token); err != nil && ctx.Err() == nil {
				w.mu.Lock()
				w.errors++
				w.mu.Unlock()
			}
		}()
	}
	return w
}

// event is the part of an event's data the bench reads.
type event struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	ETA        *time.Time `json:"eta"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Positions  []struct {
		ID  string     `json:"id"`
		ETA *time.Time `json:"eta"`
	} `json:"positions"`
}

func (w *watchers) follow(ctx context.Context, c *client, token string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &apiError{Status: resp.StatusCode}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	var kind, running string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			w.take(kind, []byte(line[6:]), time.Now(), &running)
		}
	}
	return sc.Err()
}

// take records one event received at now. running is the ID of the request
// the stream last told was running: a run's start is timed once (a retry's
// running event carries the run's first started_at).
func (w *watchers) take(kind string, data []byte, now time.Time, running *string) {
	var e event
	if json.Unmarshal(data, &e) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch kind {
	case "request":
		// The change's own time, as the server recorded it (same clock
		// as this machine's for make run).
		again := e.ID == *running
		switch {
		case e.Status == "running":
			*running = e.ID
		case again:
			*running = ""
		}
		switch {
		case e.Status == "running" && e.StartedAt != nil && !again:
			w.latencies = append(w.latencies, now.Sub(*e.StartedAt))
		case (e.Status == "succeeded" || e.Status == "failed") && e.FinishedAt != nil:
			w.latencies = append(w.latencies, now.Sub(*e.FinishedAt))
		}
		if e.Status == "queued" && e.ETA != nil {
			w.estimate(e.ID, *e.ETA)
		}
	case "positions":
		for _, p := range e.Positions {
			if p.ETA != nil {
				w.estimate(p.ID, *p.ETA)
			}
		}
	}
}

func (w *watchers) estimate(id string, eta time.Time) {
	if _, ok := w.firstETA[id]; !ok {
		w.firstETA[id] = eta
	}
	w.lastETA[id] = eta
}

// stop closes the streams and fills in res's event figures, with the
// estimates' error against the real starts in records.
func (w *watchers) stop(res *result, users []*user) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	res.Streams, res.StreamErrors, res.Events = w.streams, w.errors, len(w.latencies)
	res.EventP50, res.EventP99 = pct(w.latencies, 50), pct(w.latencies, 99)
	var first, last []time.Duration
	for _, u := range users {
		for k, r := range u.records {
			if r.StartedAt == nil {
				continue
			}
			if eta, ok := w.firstETA[u.ids[k]]; ok {
				first = append(first, r.StartedAt.Sub(eta).Abs())
			}
			if eta, ok := w.lastETA[u.ids[k]]; ok {
				last = append(last, r.StartedAt.Sub(eta).Abs())
			}
		}
	}
	res.ETAErrorP50, res.ETALastErrorP50, res.ETAs = pct(first, 50), pct(last, 50), len(first)
}
