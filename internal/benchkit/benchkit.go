// Package benchkit holds what the two load benchmarks, cmd/bench (Turnstile)
// and cmd/benchpeer (the RabbitMQ peer), share, so that their figures are
// computed and printed the same way.
package benchkit

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Parallel runs fn(worker, 0..n-1) on at most k workers (worker in
// 0..k-1); the first error wins and stops the rest.
func Parallel(ctx context.Context, k, n int, fn func(worker, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		next     atomic.Int64
	)
	for wk := range max(1, min(k, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(wk, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// Percentile is the p-th percentile of d, nearest rank; 0 for none.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, (len(s)*p+99)/100-1))]
}

// MillisFloat is d in milliseconds, for JSON.
func MillisFloat(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Millis is d in milliseconds with one decimal, for a table.
func Millis(d time.Duration) string { return strconv.FormatFloat(MillisFloat(d), 'f', 1, 64) }

// Ticker prints line() to w every two seconds until stopped.
func Ticker(w io.Writer, line func() string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(w, line())
			}
		}
	}()
	return func() { close(done); <-finished }
}
