package main

import (
	"context"

	"github.com/turnstile/turnstile/internal/benchkit"
)

// Shared with cmd/benchpeer, so both compute and print figures alike.
var (
	pct    = benchkit.Percentile
	ms     = benchkit.Millis
	ticker = benchkit.Ticker
)

// parallel runs fn(0..n-1) on at most k goroutines; the first error wins.
func parallel(ctx context.Context, k, n int, fn func(i int) error) error {
	return benchkit.Parallel(ctx, k, n, func(_, i int) error { return fn(i) })
}
