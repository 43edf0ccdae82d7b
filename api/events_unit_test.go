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
