package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/turnstile/turnstile/models"
)

// --- Registry and Permanent ---

func TestRegistryRegisterLookupTypes(t *testing.T) {
	r := NewRegistry()
	if got := r.Types(); len(got) != 0 {
		t.Fatalf("empty registry Types = %v", got)
	}
	r.Register("sleep", Sleep{})
	r.Register("echo", Echo{})
	if got := strings.Join(r.Types(), ","); got != "echo,sleep" {
		t.Errorf("Types = %s, want echo,sleep (sorted)", got)
	}
	h, err := r.Lookup("echo")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(Echo); !ok {
		t.Errorf("Lookup(echo) = %T, want Echo", h)
	}

	// Register replaces an earlier handler of the same type.
	replaced := HandlerFunc(func(context.Context, Job) (json.RawMessage, error) {
		return json.RawMessage(`"replaced"`), nil
	})
	r.Register("echo", replaced)
	h, err = r.Lookup("echo")
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := h.Handle(context.Background(), Job{}); string(out) != `"replaced"` {
		t.Errorf("after re-Register, echo returned %s", out)
	}
	if n := len(r.Types()); n != 2 {
		t.Errorf("re-Register changed the type count to %d", n)
	}
}

func TestRegistryUnknownType(t *testing.T) {
	r := NewRegistry()
	r.Register("echo", Echo{})
	_, err := r.Lookup("nope")
	if !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Lookup err = %v, want ErrUnknownType", err)
	}
	if !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("error %q does not name the type", err)
	}
	if err := r.Validate("nope", json.RawMessage(`{}`)); !errors.Is(err, ErrUnknownType) {
		t.Errorf("Validate err = %v, want ErrUnknownType", err)
	}
}

func TestRegistryValidate(t *testing.T) {
	r := NewRegistry()
	r.Register("sleep", Sleep{})
	r.Register("anything", HandlerFunc(func(context.Context, Job) (json.RawMessage, error) { return nil, nil }))

	if err := r.Validate("sleep", json.RawMessage(`{"ms": 5}`)); err != nil {
		t.Errorf("good sleep payload: %v", err)
	}
	if err := r.Validate("sleep", json.RawMessage(`{"ms": -5}`)); err == nil {
		t.Error("bad sleep payload accepted: a Validator handler must be consulted")
	}
	// A handler that is not a Validator accepts any payload.
	if err := r.Validate("anything", json.RawMessage(`not json`)); err != nil {
		t.Errorf("non-Validator handler: %v", err)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad input")
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	if IsPermanent(nil) || IsPermanent(base) {
		t.Error("IsPermanent true for nil or a plain error")
	}

	p := Permanent(base)
	if !IsPermanent(p) {
		t.Error("IsPermanent(Permanent(err)) = false")
	}
	if !errors.Is(p, base) {
		t.Error("errors.Is does not see through Permanent")
	}
	if p.Error() != base.Error() {
		t.Errorf("Permanent changed the message: %q", p.Error())
	}

	// Wrapping a permanent error keeps it permanent; wrapping a sentinel
	// inside Permanent keeps it findable.
	wrapped := fmt.Errorf("calling upstream: %w", p)
	if !IsPermanent(wrapped) || !errors.Is(wrapped, base) {
		t.Errorf("wrapped permanent error: IsPermanent=%v Is=%v", IsPermanent(wrapped), errors.Is(wrapped, base))
	}
	ctxErr := Permanent(fmt.Errorf("gave up: %w", context.DeadlineExceeded))
	if !errors.Is(ctxErr, context.DeadlineExceeded) {
		t.Error("errors.Is(Permanent(fmt.Errorf(%w, DeadlineExceeded)), DeadlineExceeded) = false")
	}
}

// --- Echo ---

func TestEchoReturnsPayload(t *testing.T) {
	for _, tc := range []struct{ payload, want string }{
		{`{"a":1,"b":[true,null]}`, `{"a":1,"b":[true,null]}`},
		{`"text"`, `"text"`},
		{`42`, `42`},
		{``, `null`},
	} {
		out, err := Echo{}.Handle(context.Background(), Job{Payload: json.RawMessage(tc.payload)})
		if err != nil {
			t.Errorf("Echo(%q): %v", tc.payload, err)
			continue
		}
		if string(out) != tc.want {
			t.Errorf("Echo(%q) = %s, want %s", tc.payload, out, tc.want)
		}
	}
	out, err := Echo{}.Handle(context.Background(), Job{})
	if err != nil || string(out) != "null" {
		t.Errorf("Echo(nil payload) = %s, %v; want null", out, err)
	}
}

// --- Sleep ---

func TestSleepValidate(t *testing.T) {
	maxMS := MaxSleep.Milliseconds()
	for _, tc := range []struct {
		payload string
		ok      bool
	}{
		{`{"ms": 0}`, true},
		{`{"ms": 250}`, true},
		{fmt.Sprintf(`{"ms": %d}`, maxMS), true},
		{fmt.Sprintf(`{"ms": %d}`, maxMS+1), false},
		{`{"ms": -1}`, false},
		{`{}`, false},
		{`{"ms": null}`, false},
		{`{"millis": 5}`, false},
		{`{"ms": 1.5}`, false},
		{`{"ms": "5"}`, false},
		{`[]`, false},
		{`"5"`, false},
		{`5`, false},
		{`null`, false},
		{``, false},
	} {
		err := Sleep{}.Validate(json.RawMessage(tc.payload))
		if tc.ok && err != nil {
			t.Errorf("Validate(%s) = %v, want ok", tc.payload, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("Validate(%s) accepted, want an error", tc.payload)
		}
	}
}

// The ms value is multiplied into a time.Duration before the range check, so
// a value large enough to overflow int64 nanoseconds wraps around (negative,
// or small and positive) and slips past the MaxSleep bound.
func TestSleepValidateRejectsOverflowingMS(t *testing.T) {
	for _, ms := range []int64{
		9223372036855,  // just over MaxInt64 ns: wraps to a negative duration
		18446744073710, // just over 2^64 ns: wraps to about 0.45ms
		1 << 62,
	} {
		payload := json.RawMessage(fmt.Sprintf(`{"ms": %d}`, ms))
		if err := (Sleep{}).Validate(payload); err == nil {
			t.Errorf("Validate(%s) accepted; it is far more than MaxSleep", payload)
		}
	}
}

func TestSleepHandleSleeps(t *testing.T) {
	const ms = 60
	start := time.Now()
	out, err := Sleep{}.Handle(context.Background(), Job{Payload: json.RawMessage(fmt.Sprintf(`{"ms": %d}`, ms))})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed < ms*time.Millisecond || elapsed > ms*time.Millisecond+2*time.Second {
		t.Errorf("slept %v, want about %dms", elapsed, ms)
	}
	var res struct {
		SleptMS int64 `json:"slept_ms"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.SleptMS != ms {
		t.Errorf("result = %s (%v), want slept_ms %d", out, err, ms)
	}
}

func TestSleepHandleBadPayloadIsPermanent(t *testing.T) {
	_, err := Sleep{}.Handle(context.Background(), Job{Payload: json.RawMessage(`{"ms": -1}`)})
	if err == nil || !IsPermanent(err) {
		t.Errorf("err = %v, want a permanent error", err)
	}
}

func TestSleepHandleHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(20*time.Millisecond, cancel)

	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := Sleep{}.Handle(ctx, Job{Payload: json.RawMessage(`{"ms": 10000}`)})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if IsPermanent(err) {
			t.Error("an interrupted sleep must not be permanent")
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("returned after %v", elapsed)
		}
	case <-time.After(time.Second):
		t.Fatal("Handle did not return within 1s of cancellation")
	}
}

// --- HTTP ---

func TestParseAllowlist(t *testing.T) {
	allow, err := ParseAllowlist(" 127.0.0.1:8080, Example.COM:443 ,,[::1]:9000, ")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:8080", "example.com:443", "[::1]:9000"}
	if len(allow) != len(want) {
		t.Errorf("allow = %v, want %v", allow, want)
	}
	for _, w := range want {
		if !allow[w] {
			t.Errorf("allow lacks %s: %v", w, allow)
		}
	}

	for _, s := range []string{"", "  ", ",,"} {
		allow, err := ParseAllowlist(s)
		if err != nil || len(allow) != 0 {
			t.Errorf("ParseAllowlist(%q) = %v, %v; want empty", s, allow, err)
		}
	}

	for _, bad := range []string{
		"localhost",
		"localhost:",
		":8080",
		"127.0.0.1:8080,example.com",
		"http://example.com:80",
		"::1:80",
	} {
		if allow, err := ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q) = %v, want an error", bad, allow)
		}
	}
}

func TestHTTPValidate(t *testing.T) {
	allow, err := ParseAllowlist("127.0.0.1:8080,example.com:80,secure.example:443")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHTTP(allow, time.Second)
	for _, tc := range []struct {
		payload string
		ok      bool
	}{
		{`{"method": "GET", "url": "http://127.0.0.1:8080/x"}`, true},
		{`{"url": "http://127.0.0.1:8080/x"}`, true},                     // method defaults to GET
		{`{"method": "post", "url": "http://127.0.0.1:8080/x"}`, true},   // method case
		{`{"method": "DELETE", "url": "http://127.0.0.1:8080/x"}`, true}, // every listed method
		{`{"url": "http://EXAMPLE.com/"}`, true},                         // host case; http → 80
		{`{"url": "https://secure.example/"}`, true},                     // https → 443
		{`{"url": "https://example.com/"}`, false},                       // 443 not allowed for example.com
		{`{"url": "http://secure.example/"}`, false},                     // 80 not allowed for secure.example
		{`{"url": "http://example.com:8080/"}`, false},
		{`{"url": "http://127.0.0.1:9999/"}`, false},
		{`{"url": "http://127.0.0.2:8080/"}`, false},
		{`{"url": "ftp://127.0.0.1:8080/"}`, false},
		{`{"url": "file:///etc/passwd"}`, false},
		{`{"url": "127.0.0.1:8080/x"}`, false},
		{`{"url": "http:///no-host"}`, false},
		{`{"url": ""}`, false},
		{`{}`, false},
		{`{"url": "http://[::1"}`, false},
		{`{"method": "TRACE", "url": "http://127.0.0.1:8080/"}`, false},
		{`{"method": "CONNECT", "url": "http://127.0.0.1:8080/"}`, false},
		{`{"method": "FETCH", "url": "http://127.0.0.1:8080/"}`, false},
		{`"http://127.0.0.1:8080/"`, false},
		{`[]`, false},
		{``, false},
	} {
		err := h.Validate(json.RawMessage(tc.payload))
		if tc.ok && err != nil {
			t.Errorf("Validate(%s) = %v, want ok", tc.payload, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("Validate(%s) accepted, want an error", tc.payload)
		}
	}
}

// capturedRequest is what a test server saw.
type capturedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   string
}

// recordingServer answers every call with status and body and keeps the
// requests it saw.
type recordingServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []capturedRequest
}

func newRecordingServer(t *testing.T, status int, body string) *recordingServer {
	t.Helper()
	s := &recordingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, capturedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b)})
		s.mu.Unlock()
		w.Header().Set("X-Reply", "yes")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *recordingServer) requests() []capturedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]capturedRequest(nil), s.seen...)
}

// hostPort is the allowlist entry for a test server.
func hostPort(srv *httptest.Server) string { return srv.Listener.Addr().String() }

func handlerFor(t *testing.T, timeout time.Duration, servers ...*httptest.Server) *HTTP {
	t.Helper()
	entries := make([]string, len(servers))
	for i, s := range servers {
		entries[i] = hostPort(s)
	}
	allow, err := ParseAllowlist(strings.Join(entries, ","))
	if err != nil {
		t.Fatal(err)
	}
	return NewHTTP(allow, timeout)
}

func httpJob(t *testing.T, id string, payload map[string]any) Job {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return Job{ID: id, UserID: "u1", Type: "http", Payload: b, Attempt: 1}
}

func TestHTTPHandleSendsJSONBodyHeadersAndIdempotencyKey(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "pong")
	h := handlerFor(t, 5*time.Second, srv.Server)

	out, err := h.Handle(context.Background(), httpJob(t, "req-42", map[string]any{
		"method": "post",
		"url":    srv.URL + "/hook",
		"headers": map[string]string{
			"X-Trace":         "trace-1",
			"Idempotency-Key": "caller-chosen", // the request ID wins
		},
		"body": map[string]any{"a": 1},
	}))
	if err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.Method != http.MethodPost || got.Path != "/hook" {
		t.Errorf("request %s %s, want POST /hook", got.Method, got.Path)
	}
	if k := got.Header.Get("Idempotency-Key"); k != "req-42" {
		t.Errorf("Idempotency-Key = %q, want the request ID req-42", k)
	}
	if v := got.Header.Get("X-Trace"); v != "trace-1" {
		t.Errorf("X-Trace = %q, want trace-1", v)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if got.Body != `{"a":1}` {
		t.Errorf("body = %q, want {\"a\":1}", got.Body)
	}

	var res HTTPResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("result %s: %v", out, err)
	}
	if res.Status != http.StatusOK || res.Body != "pong" || res.Headers["X-Reply"] != "yes" {
		t.Errorf("result = %+v, want status 200, body pong, X-Reply yes", res)
	}
}

func TestHTTPHandleStringBodySentRaw(t *testing.T) {
	srv := newRecordingServer(t, http.StatusCreated, "")
	h := handlerFor(t, 5*time.Second, srv.Server)

	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{
		"method": "PUT",
		"url":    srv.URL + "/raw",
		"body":   "plain text, not \"JSON\"",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := srv.requests()[0]
	if got.Body != `plain text, not "JSON"` {
		t.Errorf("body = %q, want the string unquoted", got.Body)
	}
	if ct := got.Header.Get("Content-Type"); ct == "application/json" {
		t.Error("a string body was labelled application/json")
	}
	var res HTTPResult
	if err := json.Unmarshal(out, &res); err != nil || res.Status != http.StatusCreated {
		t.Errorf("result = %s (%v), want status 201", out, err)
	}
}

func TestHTTPHandleKeepsCallerContentType(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "")
	h := handlerFor(t, 5*time.Second, srv.Server)

	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{
		"method":  "POST",
		"url":     srv.URL,
		"headers": map[string]string{"content-type": "application/vnd.turnstile+json"},
		"body":    []int{1, 2},
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := srv.requests()[0]
	if ct := got.Header.Get("Content-Type"); ct != "application/vnd.turnstile+json" {
		t.Errorf("Content-Type = %q, want the caller's", ct)
	}
	if got.Body != "[1,2]" {
		t.Errorf("body = %q", got.Body)
	}
}

func TestHTTPHandleStatusClassification(t *testing.T) {
	for _, tc := range []struct {
		status    int
		permanent bool
	}{
		{http.StatusInternalServerError, false},
		{http.StatusBadGateway, false},
		{http.StatusServiceUnavailable, false},
		{http.StatusRequestTimeout, false},
		{http.StatusTooManyRequests, false},
		{http.StatusBadRequest, true},
		{http.StatusUnauthorized, true},
		{http.StatusNotFound, true},
		{http.StatusConflict, true},
		{http.StatusUnprocessableEntity, true},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			srv := newRecordingServer(t, tc.status, "upstream says no")
			h := handlerFor(t, 5*time.Second, srv.Server)
			_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL}))
			if err == nil {
				t.Fatalf("status %d: no error", tc.status)
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("status %d: permanent = %v, want %v (err %v)", tc.status, IsPermanent(err), tc.permanent, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tc.status)) || !strings.Contains(err.Error(), "upstream says no") {
				t.Errorf("error %q lacks the status or body snippet", err)
			}
		})
	}
}

func TestHTTPHandleResponseTooLargeIsPermanent(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "0123456789A")
	h := handlerFor(t, 5*time.Second, srv.Server)
	h.MaxResponseBytes = 10

	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL}))
	if err == nil || !IsPermanent(err) {
		t.Errorf("11-byte body over a 10-byte cap: err = %v, want permanent", err)
	}

	exact := newRecordingServer(t, http.StatusOK, "0123456789")
	h = handlerFor(t, 5*time.Second, exact.Server)
	h.MaxResponseBytes = 10
	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": exact.URL}))
	if err != nil {
		t.Fatalf("10-byte body at a 10-byte cap: %v", err)
	}
	var res HTTPResult
	if err := json.Unmarshal(out, &res); err != nil || res.Body != "0123456789" {
		t.Errorf("result = %s (%v)", out, err)
	}
}

// HTTP's doc says 5xx answers are retried. A 5xx with a large error page
// (a proxy's HTML, say) trips the result-size cap first and fails the
// request at once instead.
func TestHTTPHandleServerErrorWithLargeBodyIsRetried(t *testing.T) {
	srv := newRecordingServer(t, http.StatusServiceUnavailable, strings.Repeat("x", 100))
	h := handlerFor(t, 5*time.Second, srv.Server)
	h.MaxResponseBytes = 10

	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL}))
	if err == nil {
		t.Fatal("503: no error")
	}
	if IsPermanent(err) {
		t.Errorf("503 with a body over the cap: err %v is permanent, want retried", err)
	}
}

func TestHTTPHandleRedirectWithinAllowlistFollowed(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/start" {
			http.Redirect(w, r, srv.URL+"/final", http.StatusFound)
			return
		}
		_, _ = io.WriteString(w, "arrived at "+r.URL.Path)
	}))
	defer srv.Close()
	h := handlerFor(t, 5*time.Second, srv)

	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL + "/start"}))
	if err != nil {
		t.Fatal(err)
	}
	var res HTTPResult
	if err := json.Unmarshal(out, &res); err != nil || res.Body != "arrived at /final" {
		t.Errorf("result = %s (%v)", out, err)
	}
}

func TestHTTPHandleRedirectOffAllowlistRefused(t *testing.T) {
	var offListCalls atomic.Int32
	offList := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offListCalls.Add(1)
		_, _ = io.WriteString(w, "secret")
	}))
	defer offList.Close()
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, offList.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	defer allowed.Close()
	h := handlerFor(t, 5*time.Second, allowed) // offList is not on the allowlist

	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": allowed.URL}))
	if err == nil {
		t.Fatalf("redirect off the allowlist followed; result %s", out)
	}
	if !strings.Contains(err.Error(), "allowlist") {
		t.Errorf("err = %v, want it to name the allowlist", err)
	}
	if !IsPermanent(err) {
		t.Errorf("a refused redirect is retried: %v", err)
	}
	if n := offListCalls.Load(); n != 0 {
		t.Errorf("the server off the allowlist was called %d times", n)
	}
}

func TestHTTPHandleOffAllowlistIsPermanentAndNotCalled(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "")
	h := NewHTTP(map[string]bool{}, time.Second)

	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL}))
	if err == nil || !IsPermanent(err) {
		t.Errorf("err = %v, want permanent", err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("server called %d times", n)
	}
}

func TestHTTPHandleClientTimeoutIsRetryable(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	h := handlerFor(t, 100*time.Millisecond, slow)

	start := time.Now()
	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": slow.URL}))
	if err == nil {
		t.Fatal("no error from a call that outlived the timeout")
	}
	if IsPermanent(err) {
		t.Errorf("timeout err %v is permanent, want retried", err)
	}
	if elapsed := time.Since(start); elapsed > 900*time.Millisecond {
		t.Errorf("returned after %v; the 100ms client timeout did not apply", elapsed)
	}
}

// --- Activities with a fake Recorder ---

// fakeRecorder is an in-memory Recorder.
type fakeRecorder struct {
	mu       sync.Mutex
	reqs     map[string]*models.Request
	attempts map[string]int
	finished []finishCall
	err      error // returned by every method when set
}

type finishCall struct {
	ID       string
	Status   models.Status
	Result   string
	ErrMsg   string
	Attempts int
	Now      time.Time
}

func newFakeRecorder(reqs ...models.Request) *fakeRecorder {
	f := &fakeRecorder{reqs: map[string]*models.Request{}, attempts: map[string]int{}}
	for _, r := range reqs {
		f.reqs[r.ID] = &r
	}
	return f
}

func (f *fakeRecorder) MarkRunning(_ context.Context, id, _ string, now time.Time) (*models.Request, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	r, ok := f.reqs[id]
	if !ok {
		return nil, fmt.Errorf("mark running %s: %w", id, ErrNotFound)
	}
	if !r.Status.Final() {
		r.Status = models.StatusRunning
		r.StartedAt = &now
	}
	c := *r
	return &c, nil
}

func (f *fakeRecorder) SetAttempts(_ context.Context, id string, attempts int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.attempts[id] = attempts
	return nil
}

func (f *fakeRecorder) Finish(_ context.Context, id string, status models.Status, result, errMsg string, attempts int, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.finished = append(f.finished, finishCall{id, status, result, errMsg, attempts, now})
	return nil
}

func (f *fakeRecorder) get(id string) models.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.reqs[id]
}

func (f *fakeRecorder) attemptsRecorded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.attempts)
}

func (f *fakeRecorder) finishCalls() []finishCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]finishCall(nil), f.finished...)
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestActivities returns Activities over rec and handlers, registered in
// a fresh test activity environment.
func newTestActivities(rec Recorder, handlers *Registry) (*Activities, *testsuite.TestActivityEnvironment) {
	a := &Activities{
		Store:          rec,
		Handlers:       handlers,
		Logger:         slog.New(slog.DiscardHandler),
		HeartbeatEvery: 10 * time.Millisecond,
		Now:            func() time.Time { return testNow },
	}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a)
	return a, env
}

func registryWith(typ string, h Handler) *Registry {
	r := NewRegistry()
	r.Register(typ, h)
	return r
}

// applicationError extracts the *temporal.ApplicationError an activity failed
// with.
func applicationError(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	if err == nil {
		t.Fatal("activity succeeded, want an error")
	}
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		t.Fatalf("err = %v (%T), want a *temporal.ApplicationError inside", err, err)
	}
	return appErr
}

func failureAttempts(t *testing.T, appErr *temporal.ApplicationError) int {
	t.Helper()
	var d FailureDetails
	if err := appErr.Details(&d); err != nil {
		t.Fatalf("Details: %v", err)
	}
	return d.Attempts
}

func TestRunWithFakeRecorder_Success(t *testing.T) {
	var (
		mu  sync.Mutex
		got Job
	)
	h := HandlerFunc(func(_ context.Context, job Job) (json.RawMessage, error) {
		mu.Lock()
		got = job
		mu.Unlock()
		return json.RawMessage(`{"ok":true}`), nil
	})
	rec := newFakeRecorder()
	a, env := newTestActivities(rec, registryWith("work", h))

	val, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "work", Payload: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	var res RunResult
	if err := val.Get(&res); err != nil {
		t.Fatal(err)
	}
	if string(res.Result) != `{"ok":true}` || res.Attempts != 1 {
		t.Errorf("result = %s, attempts %d; want {\"ok\":true}, 1", res.Result, res.Attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.ID != "r1" || got.UserID != "u1" || got.Type != "work" || string(got.Payload) != `{"n":1}` || got.Attempt != 1 {
		t.Errorf("handler got %+v", got)
	}
	if n := rec.attemptsRecorded(); n != 0 {
		t.Errorf("SetAttempts called %d times on the first attempt", n)
	}
}

func TestRunWithFakeRecorder_EmptyResultBecomesNull(t *testing.T) {
	h := HandlerFunc(func(context.Context, Job) (json.RawMessage, error) { return nil, nil })
	a, env := newTestActivities(newFakeRecorder(), registryWith("work", h))

	val, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "work"})
	if err != nil {
		t.Fatal(err)
	}
	var res RunResult
	if err := val.Get(&res); err != nil {
		t.Fatal(err)
	}
	if string(res.Result) != "null" {
		t.Errorf("result = %q, want null", res.Result)
	}
}

func TestRunWithFakeRecorder_PermanentErrorIsNonRetryable(t *testing.T) {
	h := HandlerFunc(func(context.Context, Job) (json.RawMessage, error) {
		return nil, Permanent(errors.New("payload is nonsense"))
	})
	a, env := newTestActivities(newFakeRecorder(), registryWith("work", h))

	_, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "work"})
	appErr := applicationError(t, err)
	if appErr.Type() != ErrTypePermanent || !appErr.NonRetryable() {
		t.Errorf("type %q nonRetryable %v, want %q and true", appErr.Type(), appErr.NonRetryable(), ErrTypePermanent)
	}
	if !strings.Contains(appErr.Error(), "payload is nonsense") {
		t.Errorf("message %q lost the handler's error", appErr.Error())
	}
	if n := failureAttempts(t, appErr); n != 1 {
		t.Errorf("FailureDetails.Attempts = %d, want 1", n)
	}
}

func TestRunWithFakeRecorder_ErrorIsRetryable(t *testing.T) {
	h := HandlerFunc(func(context.Context, Job) (json.RawMessage, error) {
		return nil, errors.New("upstream flaky")
	})
	a, env := newTestActivities(newFakeRecorder(), registryWith("work", h))

	_, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "work"})
	appErr := applicationError(t, err)
	if appErr.Type() != ErrTypeRetryable || appErr.NonRetryable() {
		t.Errorf("type %q nonRetryable %v, want %q and false", appErr.Type(), appErr.NonRetryable(), ErrTypeRetryable)
	}
	if n := failureAttempts(t, appErr); n != 1 {
		t.Errorf("FailureDetails.Attempts = %d, want 1", n)
	}
}

func TestRunWithFakeRecorder_UnknownTypeIsNonRetryable(t *testing.T) {
	called := false
	h := HandlerFunc(func(context.Context, Job) (json.RawMessage, error) { called = true; return nil, nil })
	a, env := newTestActivities(newFakeRecorder(), registryWith("work", h))

	_, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "teleport"})
	appErr := applicationError(t, err)
	if appErr.Type() != ErrTypeUnknownType || !appErr.NonRetryable() {
		t.Errorf("type %q nonRetryable %v, want %q and true", appErr.Type(), appErr.NonRetryable(), ErrTypeUnknownType)
	}
	if !strings.Contains(appErr.Error(), "teleport") {
		t.Errorf("message %q does not name the type", appErr.Error())
	}
	if n := failureAttempts(t, appErr); n != 1 {
		t.Errorf("FailureDetails.Attempts = %d, want 1", n)
	}
	if called {
		t.Error("a handler ran for an unknown type")
	}
}

func TestRunWithFakeRecorder_HeartbeatsWhileHandlerWorks(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, _ Job) (json.RawMessage, error) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, nil
	})
	a, env := newTestActivities(newFakeRecorder(), registryWith("work", h))
	var beats atomic.Int32
	env.SetOnActivityHeartbeatListener(func(*activity.Info, converter.EncodedValues) { beats.Add(1) })

	if _, err := env.ExecuteActivity(a.Run, RunInput{RequestID: "r1", UserID: "u1", Type: "work"}); err != nil {
		t.Fatal(err)
	}
	if beats.Load() == 0 {
		t.Error("no heartbeat while a 300ms handler ran with HeartbeatEvery 10ms")
	}
}

func TestMarkRunningWithFakeRecorder_MissingRequestIsSkipped(t *testing.T) {
	a, env := newTestActivities(newFakeRecorder(), NewRegistry())

	val, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "gone", UserID: "u1"})
	if err != nil {
		t.Fatalf("missing request: %v, want no error", err)
	}
	var res MarkRunningResult
	if err := val.Get(&res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "" || len(res.Payload) != 0 {
		t.Errorf("result = %+v, want empty status", res)
	}
}

func TestMarkRunningWithFakeRecorder_QueuedStartsRunning(t *testing.T) {
	rec := newFakeRecorder(models.Request{ID: "r1", UserID: "u1", Type: "echo", Payload: `{"x":1}`, Status: models.StatusQueued})
	a, env := newTestActivities(rec, NewRegistry())

	val, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "r1", UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	var res MarkRunningResult
	if err := val.Get(&res); err != nil {
		t.Fatal(err)
	}
	if res.Status != models.StatusRunning || string(res.Payload) != `{"x":1}` {
		t.Errorf("result = %+v, want running with the payload", res)
	}
	if got := rec.get("r1"); got.Status != models.StatusRunning || got.StartedAt == nil || !got.StartedAt.Equal(testNow) {
		t.Errorf("stored request = %+v, want running since %v", got, testNow)
	}
}

func TestMarkRunningWithFakeRecorder_OtherUsersRequestIsRefused(t *testing.T) {
	rec := newFakeRecorder(models.Request{ID: "r1", UserID: "owner", Status: models.StatusQueued})
	a, env := newTestActivities(rec, NewRegistry())

	_, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "r1", UserID: "intruder"})
	appErr := applicationError(t, err)
	if !appErr.NonRetryable() || appErr.Type() != ErrTypePermanent {
		t.Errorf("type %q nonRetryable %v, want %q and true", appErr.Type(), appErr.NonRetryable(), ErrTypePermanent)
	}
}

func TestMarkRunningWithFakeRecorder_FinalRequestReturnsItsStatus(t *testing.T) {
	for _, st := range []models.Status{models.StatusSucceeded, models.StatusFailed, models.StatusCancelled} {
		rec := newFakeRecorder(models.Request{ID: "r1", UserID: "u1", Status: st})
		a, env := newTestActivities(rec, NewRegistry())

		val, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "r1", UserID: "u1"})
		if err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		var res MarkRunningResult
		if err := val.Get(&res); err != nil {
			t.Fatal(err)
		}
		if res.Status != st {
			t.Errorf("status = %q, want %q", res.Status, st)
		}
		if got := rec.get("r1").Status; got != st {
			t.Errorf("stored status became %q, want %q unchanged", got, st)
		}
	}
}

func TestMarkRunningWithFakeRecorder_StoreErrorIsRetryable(t *testing.T) {
	rec := newFakeRecorder()
	rec.err = errors.New("mongo unreachable")
	a, env := newTestActivities(rec, NewRegistry())

	_, err := env.ExecuteActivity(a.MarkRunning, MarkRunningInput{RequestID: "r1", UserID: "u1"})
	appErr := applicationError(t, err)
	if appErr.NonRetryable() {
		t.Errorf("store outage gave a non-retryable error: %v", appErr)
	}
	if !strings.Contains(appErr.Error(), "mongo unreachable") {
		t.Errorf("message %q lost the cause", appErr.Error())
	}
}

func TestFinishWithFakeRecorder_NonFinalStatusIsRefused(t *testing.T) {
	for _, st := range []models.Status{models.StatusQueued, models.StatusRunning, "", "bogus"} {
		rec := newFakeRecorder()
		a, env := newTestActivities(rec, NewRegistry())

		_, err := env.ExecuteActivity(a.Finish, FinishInput{RequestID: "r1", UserID: "u1", Status: st, Attempts: 1})
		appErr := applicationError(t, err)
		if !appErr.NonRetryable() {
			t.Errorf("status %q: error is retryable", st)
		}
		if n := len(rec.finishCalls()); n != 0 {
			t.Errorf("status %q: recorder Finish called %d times", st, n)
		}
	}
}

func TestFinishWithFakeRecorder_PassesValues(t *testing.T) {
	rec := newFakeRecorder()
	a, env := newTestActivities(rec, NewRegistry())

	_, err := env.ExecuteActivity(a.Finish, FinishInput{
		RequestID: "r1", UserID: "u1", Status: models.StatusFailed,
		Result: json.RawMessage(`{"partial":true}`), Error: "http 404: not found", Attempts: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := finishCall{ID: "r1", Status: models.StatusFailed, Result: `{"partial":true}`, ErrMsg: "http 404: not found", Attempts: 3, Now: testNow}
	calls := rec.finishCalls()
	if len(calls) != 1 || calls[0] != want {
		t.Errorf("Finish calls = %+v, want [%+v]", calls, want)
	}

	if _, err := env.ExecuteActivity(a.Finish, FinishInput{RequestID: "r2", UserID: "u1", Status: models.StatusSucceeded, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if calls := rec.finishCalls(); len(calls) != 2 || calls[1].Result != "" || calls[1].Status != models.StatusSucceeded {
		t.Errorf("second Finish call = %+v, want succeeded with no result", calls[len(calls)-1])
	}
}

func TestFinishWithFakeRecorder_StoreErrorIsRetryable(t *testing.T) {
	rec := newFakeRecorder()
	rec.err = errors.New("mongo unreachable")
	a, env := newTestActivities(rec, NewRegistry())

	_, err := env.ExecuteActivity(a.Finish, FinishInput{RequestID: "r1", UserID: "u1", Status: models.StatusSucceeded, Attempts: 1})
	appErr := applicationError(t, err)
	if appErr.NonRetryable() {
		t.Errorf("store outage gave a non-retryable error: %v", appErr)
	}
}
