package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/models"
)

// firstSessionEvent opens GET /v1/events on srv and returns the data of its
// first session event.
func firstSessionEvent(t *testing.T, srv *httptest.Server, token string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/events: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	kind := ""
	for sc.Scan() {
		line := sc.Text()
		if k, ok := strings.CutPrefix(line, "event: "); ok {
			kind = k
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok && kind == "session" {
			var m map[string]any
			if err := json.Unmarshal([]byte(d), &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no session event: %v", sc.Err())
	return nil
}

// An event stream tells the session's state without the state query (a
// workflow task for Temporal and the worker per read, which 200 streams
// turned into the bottleneck of many-users): from whether a run is open
// and the user's queue document. A close that covers everything accepted
// is "closing"; a submission after it opens the session again.
func TestEventStreamSessionStateWithoutAQuery(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":{}}`); w.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	f.sessions.mu.Lock()
	f.sessions.queries = 0
	f.sessions.mu.Unlock()

	if st := firstSessionEvent(t, srv, f.token); st["state"] != "open" {
		t.Errorf("after a submit: session event %v, want open", st)
	}
	f.sessions.mu.Lock()
	streamed := f.sessions.queries
	f.sessions.mu.Unlock()
	if w := f.do("DELETE", "/v1/session", ""); w.Code/100 != 2 { // its answer is the queried session
		t.Fatalf("close: %d %s", w.Code, w.Body)
	}
	f.sessions.mu.Lock()
	f.sessions.queries = streamed
	f.sessions.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := firstSessionEvent(t, srv, f.token)
		if st["state"] == "closing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a close: session event %v, want closing", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":{}}`); w.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	if st := firstSessionEvent(t, srv, f.token); st["state"] != "open" {
		t.Errorf("a submit after the close: session event %v, want open", st)
	}
	f.sessions.mu.Lock()
	defer f.sessions.mu.Unlock()
	if f.sessions.queries != 0 {
		t.Errorf("the streams queried the session %d times, want 0", f.sessions.queries)
	}
}

// TestEventLagTimesEachStartOnceAndEachFinish: the lag histogram takes a
// live event's finish, and a run's start once; a running event for a retry
// (its started_at is the run's first attempt's), a request already running
// when the stream started (not live) and queued or session events are not
// timed; a requeued request's new run is.
func TestEventLagTimesEachStartOnceAndEachFinish(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	req := func(id string, st models.Status, attempts int, started, finished *time.Time) *models.Request {
		return &models.Request{ID: id, Status: st, Attempts: attempts, StartedAt: started, FinishedAt: finished}
	}
	steps := []struct {
		name   string
		e      events.Event
		change string
		at     *time.Time
	}{
		{"running at stream start", events.Event{Request: req("a", models.StatusRunning, 0, at(0), nil)}, "", nil},
		{"its retry", events.Event{Live: true, Request: req("a", models.StatusRunning, 1, at(0), nil)}, "", nil},
		{"its finish", events.Event{Live: true, Request: req("a", models.StatusFailed, 2, at(0), at(5*time.Second))}, "finished", at(5 * time.Second)},
		{"queued", events.Event{Live: true, Request: req("b", models.StatusQueued, 0, nil, nil)}, "", nil},
		{"session", events.Event{Live: true}, "", nil},
		{"first start", events.Event{Live: true, Request: req("b", models.StatusRunning, 0, at(6*time.Second), nil)}, "started", at(6 * time.Second)},
		{"retry", events.Event{Live: true, Request: req("b", models.StatusRunning, 1, at(6*time.Second), nil)}, "", nil},
		{"second retry", events.Event{Live: true, Request: req("b", models.StatusRunning, 2, at(6*time.Second), nil)}, "", nil},
		{"finish", events.Event{Live: true, Request: req("b", models.StatusSucceeded, 3, at(6*time.Second), at(9*time.Second))}, "finished", at(9 * time.Second)},
		{"requeued", events.Event{Live: true, Request: req("a", models.StatusQueued, 2, nil, nil)}, "", nil},
		{"its new run", events.Event{Live: true, Request: req("a", models.StatusRunning, 2, at(10*time.Second), nil)}, "started", at(10 * time.Second)},
	}
	var c lagClock
	for _, s := range steps {
		change, got, ok := c.observe(s.e)
		want := time.Time{}
		if s.at != nil {
			want = *s.at
		}
		if change != s.change || !got.Equal(want) || ok != (s.change != "") {
			t.Errorf("%s: observe = %q %v %v, want %q %v", s.name, change, got, ok, s.change, want)
		}
	}
}
