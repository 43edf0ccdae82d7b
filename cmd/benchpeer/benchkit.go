package main

import "github.com/turnstile/turnstile/internal/benchkit"

// Shared with cmd/bench, so both compute and print figures alike.
var (
	parallel = benchkit.Parallel
	pct      = benchkit.Percentile
	msf      = benchkit.MillisFloat
	ms       = benchkit.Millis
	ticker   = benchkit.Ticker
)
