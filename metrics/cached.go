package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CountSessionsWith makes turnstile_sessions_open report what count returns.
// The API sets it; a process that never does (a worker alone) exports no
// turnstile_sessions_open. A later call replaces the earlier source.
func CountSessionsWith(count func(ctx context.Context) (int64, error)) {
	sessionsOpen.setSource(func(ctx context.Context) (float64, error) {
		n, err := count(ctx)
		return float64(n), err
	})
}

// cachedGauge is a gauge whose value comes from an expensive source (a
// Temporal visibility query). A scrape starts a refresh when the value is
// older than maxAge, waits at most wait for it, and reports the latest value
// it has. A failed refresh drops the value until the next one succeeds, so a
// dashboard shows a gap rather than a stale number.
type cachedGauge struct {
	desc    *prometheus.Desc
	maxAge  time.Duration
	wait    time.Duration
	timeout time.Duration
	now     func() time.Time

	mu         sync.Mutex
	source     func(context.Context) (float64, error)
	value      float64
	valid      bool
	refreshed  time.Time     // when the last refresh ended; zero before one
	refreshing chan struct{} // closed when the refresh in flight ends
}

func newCachedGauge(desc *prometheus.Desc, maxAge, wait, timeout time.Duration) *cachedGauge {
	return &cachedGauge{desc: desc, maxAge: maxAge, wait: wait, timeout: timeout, now: time.Now}
}

func (g *cachedGauge) setSource(src func(context.Context) (float64, error)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.source, g.valid, g.refreshed = src, false, time.Time{}
}

// Describe implements prometheus.Collector.
func (g *cachedGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *cachedGauge) Collect(ch chan<- prometheus.Metric) {
	if done := g.refreshIfStale(); done != nil {
		t := time.NewTimer(g.wait)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	g.mu.Lock()
	v, ok := g.value, g.valid
	g.mu.Unlock()
	if ok {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
	}
}

// refreshIfStale starts a refresh unless the value is fresh or one is in
// flight, and returns a channel closed when the current refresh ends, or nil
// when there is nothing to wait for.
func (g *cachedGauge) refreshIfStale() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.source == nil {
		return nil
	}
	if g.refreshing != nil {
		return g.refreshing
	}
	if !g.refreshed.IsZero() && g.now().Sub(g.refreshed) < g.maxAge {
		return nil
	}
	done := make(chan struct{})
	g.refreshing = done
	src := g.source
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		v, err := src(ctx)
		cancel()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.refreshing = nil
		g.refreshed = g.now()
		g.value, g.valid = v, err == nil
	}()
	return done
}
