package main

import (
	"testing"
	"time"
)

// TestWatchTimesAStartOnce: a retry's running event carries its run's first
// started_at and is not timed again; finishes are.
func TestWatchTimesAStartOnce(t *testing.T) {
	w := &watchers{firstETA: map[string]time.Time{}, lastETA: map[string]time.Time{}}
	now := time.Date(2026, 12, 4, 12, 0, 10, 0, time.UTC)
	var running string
	for _, d := range []string{
		`{"id":"a","status":"running","started_at":"2026-12-04T12:00:09Z"}`,
		`{"id":"a","status":"running","started_at":"2026-12-04T12:00:09Z"}`,
		`{"id":"a","status":"succeeded","started_at":"2026-12-04T12:00:09Z","finished_at":"2026-12-04T12:00:09.5Z"}`,
	} {
		w.take("request", []byte(d), now, &running)
	}
	want := []time.Duration{time.Second, 500 * time.Millisecond}
	if len(w.latencies) != len(want) || w.latencies[0] != want[0] || w.latencies[1] != want[1] {
		t.Fatalf("latencies %v, want %v", w.latencies, want)
	}
}
