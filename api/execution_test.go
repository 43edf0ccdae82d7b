package api

import (
	"net/http"
	"strings"
	"testing"
)

func TestSubmitWithFakeSessions_ExecutionHeader(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.AllowNaive = true })
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`, executionHeader, "naive"); w.Code != http.StatusAccepted {
		t.Fatalf("naive: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`, executionHeader, "default"); w.Code != http.StatusAccepted {
		t.Fatalf("default batch: %d %s", w.Code, w.Body)
	}
	got := f.sessions.waitSubmitted(t, 3)
	if len(got) != 3 || !got[0].Naive || got[1].Naive || got[2].Naive {
		t.Fatalf("signalled %+v; want the first naive, the batch not", got)
	}
	w := f.do("POST", "/v1/requests", `{"type":"echo"}`, executionHeader, "turbo")
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "invalid_execution") {
		t.Fatalf("unknown mode: %d %s", w.Code, w.Body)
	}
	if n := len(f.stored()); n != 3 {
		t.Fatalf("%d requests stored after a refused submission, want 3", n)
	}
}

func TestSubmitWithFakeSessions_NaiveRefusedUnlessAllowed(t *testing.T) {
	f := newFixture(t)
	w := f.do("POST", "/v1/requests", `{"type":"echo"}`, executionHeader, "naive")
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "TURNSTILE_BENCH_MODES") {
		t.Fatalf("naive while not allowed: %d %s", w.Code, w.Body)
	}
	if len(f.stored()) != 0 || len(f.sessions.submitted) != 0 {
		t.Fatal("a refused submission changed something")
	}
}
