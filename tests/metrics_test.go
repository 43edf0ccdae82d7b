package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/metrics/metricstest"
)

// logCapture keeps what a JSON slog handler writes, for tests to read.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns every captured line that contains all of subs, decoded.
func (l *logCapture) lines(t *testing.T, subs ...string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := bytes.Clone(l.buf.Bytes())
	l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		keep := len(line) > 0
		for _, s := range subs {
			keep = keep && bytes.Contains(line, []byte(s))
		}
		if !keep {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, rec)
	}
	return out
}

func scrapeMetrics(t *testing.T) metricstest.Series {
	t.Helper()
	resp, err := http.Get(shared.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return metricstest.Parse(t, resp.Body)
}

func TestMetrics_MoveWhenRequestsFlow(t *testing.T) {
	before := scrapeMetrics(t)
	c := newUser(t)
	ok := c.submit("echo", map[string]string{"hello": "metrics"})
	failed := c.submit("http", map[string]any{"url": shared.sink.URL + "/x?status=404"})
	var batch struct{ Requests []request }
	c.mustDo("POST", "/v1/requests/batch", map[string]any{"requests": []map[string]any{
		{"type": "echo", "payload": 1}, {"type": "echo", "payload": 2},
	}}, 202, &batch)
	// A request cancelled while it waits behind a sleeping one.
	sleeper := c.submit("sleep", map[string]int{"ms": 800})
	doomed := c.submit("echo", "never runs")
	c.mustDo("DELETE", "/v1/requests/"+doomed.ID, nil, 200, nil)
	c.waitFinal(ok.ID, failed.ID, batch.Requests[0].ID, batch.Requests[1].ID, sleeper.ID, doomed.ID)

	after := scrapeMetrics(t)
	moved := func(name string, atLeast float64) {
		t.Helper()
		if d := after[name] - before[name]; d < atLeast {
			t.Errorf("%s moved by %v, want at least %v", name, d, atLeast)
		}
	}
	moved(`turnstile_http_requests_total{code="202",method="POST",route="/v1/requests"}`, 4)
	moved(`turnstile_http_requests_total{code="202",method="POST",route="/v1/requests/batch"}`, 1)
	moved(`turnstile_http_requests_total{code="200",method="GET",route="/v1/requests/:id"}`, 1)
	moved(`turnstile_http_request_duration_seconds_count{method="POST",route="/v1/requests"}`, 4)
	moved(`turnstile_requests_submitted_total{type="echo"}`, 4)
	moved(`turnstile_requests_submitted_total{type="http"}`, 1)
	moved(`turnstile_requests_submitted_total{type="sleep"}`, 1)
	moved(`turnstile_requests_started_total{type="echo"}`, 3)
	moved(`turnstile_requests_started_total{type="http"}`, 1)
	moved(`turnstile_requests_finished_total{status="succeeded",type="echo"}`, 3)
	moved(`turnstile_requests_finished_total{status="succeeded",type="sleep"}`, 1)
	moved(`turnstile_requests_finished_total{status="failed",type="http"}`, 1)
	moved(`turnstile_request_queue_wait_seconds_count{type="echo"}`, 3)
	moved(`turnstile_request_execution_seconds_count{type="http"}`, 1)
	moved(`turnstile_request_execution_seconds_count{type="sleep"}`, 1)
	moved(`turnstile_request_attempts_count{type="http"}`, 1)
	moved(`turnstile_request_attempts_bucket{type="http",le="1"}`, 1) // a 404 fails at once

	// The SDK's own metrics, as the dashboard queries them.
	for _, name := range []string{
		"temporal_workflow_task_execution_latency_seconds_count",
		"temporal_activity_execution_latency_seconds_count",
		"temporal_local_activity_execution_latency_seconds_count",
		"temporal_workflow_task_queue_poll_succeed_total",
		"temporal_request_total",
	} {
		if !after.Has(name + "{") {
			t.Errorf("no %s series", name)
		}
	}
	for k := range after {
		if strings.Contains(k, c.userID) || strings.Contains(k, ok.ID) {
			t.Errorf("a user or request ID became a label: %s", k)
		}
	}

	t.Run("sessions open", func(t *testing.T) {
		// Cached for up to 10s, so poll past one refresh.
		deadline := time.Now().Add(15 * time.Second)
		for {
			if scrapeMetrics(t)["turnstile_sessions_open"] >= 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("turnstile_sessions_open never counted this user's open session")
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		const name = `turnstile_requests_finished_total{status="cancelled",type="echo"}`
		if after[name]-before[name] < 1 {
			t.Errorf("%s did not move after a cancel", name)
		}
	})

	t.Run("logs carry request, user and workflow IDs", func(t *testing.T) {
		for _, id := range []string{ok.ID, failed.ID} {
			lines := shared.logs.lines(t, id)
			msgs := map[string]bool{}
			for _, l := range lines {
				msgs[l["msg"].(string)] = true
				if l["request_id"] != id || l["user_id"] != c.userID || l["workflow_id"] != "session-"+c.userID {
					t.Errorf("line without its request, user or workflow ID: %v", l)
				}
			}
			for _, want := range []string{"requests accepted", "http request", "request started", "request finished"} {
				if !msgs[want] {
					t.Errorf("request %s: no %q line among %v", id, want, msgs)
				}
			}
		}
	})

	t.Run("logs hold no password or token", func(t *testing.T) {
		for name, secret := range map[string]string{"password": "s3cret-passw0rd", "access token": c.token} {
			if got := shared.logs.lines(t, secret); len(got) > 0 {
				t.Errorf("the %s is in the logs: %v", name, got[0])
			}
		}
	})
}
