// Package tests holds Turnstile's end-to-end tests: they run the real API
// over HTTP, a real embedded Temporal server, a real worker and the embedded
// MongoDB-compatible store over the Mongo wire protocol, all in this process.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/devserver"
	"github.com/turnstile/turnstile/workflows"
)

// stack is one running Turnstile with its embedded servers, shared by the
// tests of this package; each test works with users of its own.
type stack struct {
	base     string
	cfg      app.Config
	backends *app.Backends
	temporal *devserver.Temporal
	mongo    *devserver.Mongo
	sink     *sink
	// logs holds every line the services logged at info and above.
	logs *logCapture
}

var shared *stack

// testJWTKey signs the stack's tokens; tests forge and expire tokens with it.
var testJWTKey = []byte("e2e-test-key-0123456789abcdef-0123456789")

func TestMain(m *testing.M) {
	code, err := runWithStack(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e stack:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runWithStack(m *testing.M) (int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	level := slog.LevelWarn
	if os.Getenv("TURNSTILE_TEST_VERBOSE") != "" {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	temporal, err := devserver.StartTemporal(ctx, devserver.TemporalConfig{Logger: log})
	if err != nil {
		return 0, err
	}
	defer temporal.Stop()
	mongo, err := devserver.StartMongo(ctx, devserver.MongoConfig{Logger: log})
	if err != nil {
		return 0, err
	}
	defer mongo.Stop()
	sk := newSink()
	defer sk.Close()

	cfg, err := app.FromEnv(func(string) string { return "" })
	if err != nil {
		return 0, err
	}
	cfg.TemporalAddress, cfg.Namespace = temporal.Address(), temporal.Namespace()
	cfg.MongoURI, cfg.MongoDatabase = mongo.URI(), "turnstile_e2e"
	cfg.JWTKey = testJWTKey
	cfg.HTTPAllowlist = map[string]bool{sk.hostPort(): true}
	cfg.MaxQueue = 50
	cfg.MaxBodyBytes = 16 << 10
	cfg.Session = workflows.Config{
		IdleTimeout:  time.Minute,
		MaxAttempts:  3,
		RetryInitial: 50 * time.Millisecond,
		RetryMax:     100 * time.Millisecond,
		// echo runs as a local activity, as by default; the rest are
		// regular activities: the suite covers both paths.
		LocalTypes: []string{"echo"},
	}
	// The services log to stderr as before and, at info, to a capture the
	// tests read; the embedded servers' own chatter stays out of it.
	logs := &logCapture{}
	log = slog.New(slog.NewMultiHandler(log.Handler(),
		slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	b, err := app.Connect(ctx, cfg, log)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	srv, err := app.NewAPIServer(cfg, b, log)
	if err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() { _ = app.Serve(ctx, srv, ln) }()
	w := app.NewWorker(cfg, b, log)
	if err := w.Start(); err != nil {
		return 0, err
	}
	defer w.Stop()

	shared = &stack{base: "http://" + ln.Addr().String(), cfg: cfg, backends: b, temporal: temporal, mongo: mongo, sink: sk, logs: logs}
	return m.Run(), nil
}

// client is one API user.
type client struct {
	t      *testing.T
	base   string
	token  string
	userID string
	email  string
}

var userSeq atomic.Int64

// newUser registers and logs in a fresh user.
func newUser(t *testing.T) *client {
	t.Helper()
	c := &client{t: t, base: shared.base}
	c.email = fmt.Sprintf("user%d-%d@example.com", time.Now().UnixNano(), userSeq.Add(1))
	var reg struct{ ID string }
	c.mustDo("POST", "/v1/auth/register", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 201, &reg)
	c.userID = reg.ID
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	c.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 200, &tok)
	c.token = tok.AccessToken
	return c
}

// response is an API answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorCode is the code of an error body, or "" if the body is not one.
func (r response) errorCode() string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(r.body, &e)
	if e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

// do sends body (marshalled unless it is []byte or string) with the client's
// token and the given extra headers (pairs).
func (c *client) do(method, path string, body any, headers ...string) response {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// mustDo is do that fails the test unless the status is want, decoding the
// body into out if it is not nil.
func (c *client) mustDo(method, path string, body any, want int, out any, headers ...string) response {
	c.t.Helper()
	r := c.do(method, path, body, headers...)
	if r.status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if out != nil {
		r.decode(c.t, out)
	}
	return r
}

// request is a request as the API shows it.
type request struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	Status     string          `json:"status"`
	Position   *int            `json:"position"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result"`
	Error      *string         `json:"error"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

func (c *client) submit(typ string, payload any, headers ...string) request {
	c.t.Helper()
	var r request
	c.mustDo("POST", "/v1/requests", map[string]any{"type": typ, "payload": payload}, 202, &r, headers...)
	if r.Status != "queued" || r.ID == "" {
		c.t.Fatalf("submitted request: %+v", r)
	}
	return r
}

func (c *client) get(id string) request {
	c.t.Helper()
	var r request
	c.mustDo("GET", "/v1/requests/"+id, nil, 200, &r)
	return r
}

// waitFinal polls until every request is final and returns them in order.
func (c *client) waitFinal(ids ...string) []request {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	out := make([]request, len(ids))
	for i, id := range ids {
		for {
			out[i] = c.get(id)
			if s := out[i].Status; s == "succeeded" || s == "failed" || s == "cancelled" {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("request %s still %s after 60s", id, out[i].Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}

// list returns all the client's requests, following cursors.
func (c *client) list(query string) []request {
	c.t.Helper()
	var all []request
	cursor := ""
	for {
		path := "/v1/requests?limit=7" + query
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Requests   []request `json:"requests"`
			NextCursor *string   `json:"next_cursor"`
		}
		c.mustDo("GET", path, nil, 200, &page)
		all = append(all, page.Requests...)
		if page.NextCursor == nil {
			return all
		}
		cursor = *page.NextCursor
	}
}
