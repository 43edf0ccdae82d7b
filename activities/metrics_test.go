package activities

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/metrics/metricstest"
	"github.com/turnstile/turnstile/models"
)

// storeLike behaves like the MongoDB store where metrics care: a retried
// start keeps its started_at, a retried finish keeps the first outcome, and
// it can read a request back (RequestReader).
type storeLike struct {
	mu  sync.Mutex
	req models.Request
}

func (s *storeLike) MarkRunning(_ context.Context, _, _ string, now time.Time) (*models.Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.req.Status == models.StatusQueued {
		s.req.Status, s.req.StartedAt = models.StatusRunning, &now
	}
	c := s.req
	return &c, nil
}

func (s *storeLike) SetAttempts(context.Context, string, int) error { return nil }

func (s *storeLike) Finish(_ context.Context, _ string, st models.Status, _, _ string, n int, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.req.Status.Final() {
		ms := now.Truncate(time.Millisecond) // as MongoDB keeps it
		s.req.Status, s.req.Attempts, s.req.FinishedAt = st, n, &ms
	}
	return nil
}

func (s *storeLike) Request(context.Context, string) (*models.Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.req
	return &c, nil
}

func TestMetrics_StartAndFinishAreCountedOnceHoweverOftenRetried(t *testing.T) {
	const typ = "metrics-test" // a type no other test uses, so counts are ours
	enqueued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := enqueued.Add(1500 * time.Millisecond)
	st := &storeLike{req: models.Request{ID: "r1", UserID: "u1", Type: typ, Payload: `1`, Status: models.StatusQueued, EnqueuedAt: enqueued}}
	reg := registryWith(typ, HandlerFunc(func(context.Context, Job) (json.RawMessage, error) {
		time.Sleep(5 * time.Millisecond)
		return json.RawMessage(`1`), nil
	}))
	a := &Activities{Store: st, Handlers: reg, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a)

	for range 2 { // the second start is a retry: same request, later clock
		if _, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "r1", UserID: "u1"}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	if _, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: typ, Payload: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := env.ExecuteActivity(a.Finish, FinishInput{RequestID: "r1", UserID: "u1", Status: models.StatusSucceeded, Attempts: 2}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}

	got := metricstest.Scrape(t, metrics.Handler())
	for series, want := range map[string]float64{
		`turnstile_requests_started_total{type="` + typ + `"}`:                     1,
		`turnstile_request_queue_wait_seconds_sum{type="` + typ + `"}`:             1.5,
		`turnstile_request_queue_wait_seconds_bucket{type="` + typ + `",le="1"}`:   0,
		`turnstile_request_queue_wait_seconds_bucket{type="` + typ + `",le="2.5"}`: 1,
		`turnstile_request_execution_seconds_count{type="` + typ + `"}`:            1,
		`turnstile_requests_finished_total{status="succeeded",type="` + typ + `"}`: 1,
		`turnstile_request_attempts_count{type="` + typ + `"}`:                     1,
		`turnstile_request_attempts_sum{type="` + typ + `"}`:                       2,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
}
