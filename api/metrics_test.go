package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/metrics/metricstest"
	"github.com/turnstile/turnstile/store/storetest"
)

func TestMetrics_HTTPCallsAreCountedByRoutePatternNotPath(t *testing.T) {
	f := newFixture(t)
	before := metricstest.Scrape(t, f.h)
	f.do("GET", "/healthz", "")
	f.do("GET", "/v1/requests/0190d5a0-0000-7000-8000-000000000001", "") // 404 from the handler
	f.do("GET", "/v1/no/such/route/abc123", "")                          // no route: 404
	f.do("BREW", "/healthz", "")                                         // a made-up method
	after := metricstest.Scrape(t, f.h)

	for series, want := range map[string]float64{
		`turnstile_http_requests_total{code="200",method="GET",route="/healthz"}`:                 1,
		`turnstile_http_requests_total{code="404",method="GET",route="/v1/requests/:id"}`:         1,
		`turnstile_http_requests_total{code="404",method="GET",route="unmatched"}`:                1,
		`turnstile_http_requests_total{code="405",method="other",route="unmatched"}`:              1,
		`turnstile_http_request_duration_seconds_count{method="GET",route="/v1/requests/:id"}`:    1,
		`turnstile_http_request_duration_seconds_bucket{method="GET",route="/healthz",le="+Inf"}`: 1,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	for series := range after {
		if strings.Contains(series, "0190d5a0") || strings.Contains(series, "abc123") || strings.Contains(series, "BREW") {
			t.Errorf("a raw path or method became a label: %s", series)
		}
	}
}

func TestMetrics_AcceptedSubmissionsAreCountedPerRequest(t *testing.T) {
	f := newFixture(t)
	f.h = mustServer(t, f, f.sessions, slog.New(slog.DiscardHandler))
	const series = `turnstile_requests_submitted_total{type="echo"}`
	before := metricstest.Scrape(t, f.h)[series]

	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`); w.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`); w.Code != http.StatusAccepted {
		t.Fatalf("batch: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/v1/requests", `{"type":"nope","payload":2}`); w.Code != http.StatusBadRequest {
		t.Fatalf("submit of an unknown type: %d %s", w.Code, w.Body)
	}
	for range 2 { // a replay by Idempotency-Key returns the same request: counted once
		if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":3}`, "Idempotency-Key", "once"); w.Code != http.StatusAccepted {
			t.Fatalf("keyed submit: %d %s", w.Code, w.Body)
		}
	}
	if got := metricstest.Scrape(t, f.h)[series] - before; got != 4 {
		t.Fatalf("submitted moved by %v, want 4 (one single, a batch of two, one keyed twice, none refused)", got)
	}
}

func mustServer(t *testing.T, f *fixture, sessions Sessions, log *slog.Logger) http.Handler {
	t.Helper()
	reg := activities.NewRegistry()
	reg.Register("echo", activities.Echo{})
	tokens := &auth.Tokens{Key: []byte("0123456789abcdef0123456789abcdef"), Issuer: "i", Audience: "a", TTL: time.Minute}
	h, err := NewServer(Config{Tokens: tokens, Types: reg, Logger: log}, f.st, sessions)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestLogs_NeverHoldPasswordsOrTokens(t *testing.T) {
	// The handler serialises its writes, and the calls below are
	// synchronous, so a plain buffer is enough.
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := storetest.New(t)
	f := &fixture{t: t, st: st, sessions: &fakeSessions{}}
	f.h = mustServer(t, f, f.sessions, log)

	const email, password = "logs@example.com", "correct horse battery staple 42"
	call := func(method, path, body, token string, want int) map[string]any {
		t.Helper()
		f.token = token
		w := f.do(method, path, body)
		if w.Code != want {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
		var out map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return out
	}
	creds := `{"email":"` + email + `","password":"` + password + `"}`
	call("POST", "/v1/auth/register", creds, "", http.StatusCreated)
	call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"wrong password, also secret"}`, "", http.StatusUnauthorized)
	login := call("POST", "/v1/auth/login", creds, "", http.StatusOK)
	access, _ := login["access_token"].(string)
	refresh, _ := login["refresh_token"].(string)
	if access == "" || refresh == "" {
		t.Fatalf("login: %v", login)
	}
	pair := call("POST", "/v1/auth/refresh", `{"refresh_token":"`+refresh+`"}`, "", http.StatusOK)
	access2, _ := pair["access_token"].(string)
	refresh2, _ := pair["refresh_token"].(string)
	// Reusing a spent refresh token is logged as a security event.
	call("POST", "/v1/auth/refresh", `{"refresh_token":"`+refresh+`"}`, "", http.StatusUnauthorized)
	call("POST", "/v1/requests", `{"type":"echo","payload":"hello"}`, access2, http.StatusAccepted)
	call("GET", "/v1/requests?limit=5", "", access2, http.StatusOK)
	call("GET", "/v1/session", "", "not-a-token."+access2, http.StatusUnauthorized)
	call("POST", "/v1/auth/logout", "", access2, http.StatusNoContent)

	out := logs.String()
	if !strings.Contains(out, `"http request"`) || !strings.Contains(out, `"route":"/v1/auth/login"`) {
		t.Fatalf("the flow was not logged; the test would prove nothing:\n%s", out)
	}
	for name, secret := range map[string]string{
		"password": password, "wrong password": "wrong password, also secret",
		"access token": access, "refreshed access token": access2,
		"refresh token": refresh, "rotated refresh token": refresh2,
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
		// A token's signature alone is as good as the token.
		if i := strings.LastIndexByte(secret, '.'); i > 0 && strings.Contains(out, secret[i+1:]) {
			t.Errorf("the %s's signature appears in the logs", name)
		}
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a log line is not JSON: %q", line)
		}
	}
}
