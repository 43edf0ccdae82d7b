//go:build linux

package faults

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
)

// binPath is the turnstile binary every service runs: built once by
// TestMain, or TURNSTILE_FAULTS_BIN to reuse one.
var binPath string

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault suite:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	if p := os.Getenv("TURNSTILE_FAULTS_BIN"); p != "" {
		binPath = p
		return m.Run(), nil
	}
	dir, err := os.MkdirTemp("", "turnstile-faults-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "turnstile")
	// The test runs in tests/faults; the module root is two levels up.
	cmd := exec.Command("go", "build", "-o", binPath, "./cmd/turnstile")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("build turnstile: %w", err)
	}
	fmt.Fprintf(os.Stderr, "fault suite: built %s in %s\n", binPath, time.Since(start).Round(time.Second))
	return m.Run(), nil
}

// stackOptions shape one scenario's system.
type stackOptions struct {
	apis, workers int
	// env adds or overrides TURNSTILE_* settings of every service.
	env map[string]string
	// apiEnv adds settings to the API with that index (a fault point).
	apiEnv map[int]map[string]string
}

// stack is one system under test: Temporal, the MongoDB-compatible store,
// APIs and workers as separate processes over a shared data directory, the
// recording sink in this process, the admin account and the history.
type stack struct {
	t    *testing.T
	dir  string
	env  map[string]string
	sink *sink
	hist *history

	temporal, mongo *proc
	apis            []*proc
	apiAddrs        []string
	workers         []*proc

	admin *user
	users []*user
	// records are the requests as the final read saw them, by ID.
	records map[string]requestView

	tcOnce sync.Once
	tc     client.Client
	tcErr  error
}

// jwtKey signs the stack's tokens (test-only, 40 bytes).
const jwtKey = "fault-suite-jwt-key-0123456789abcdefghij"

// adminPassword is the operator account's password (test-only).
const adminPassword = "fault suite operator password"

// defaultEnv is what every service gets unless a scenario overrides it:
// quick retries so a poisoned request fails in about a second, a heartbeat
// timeout short enough to wait out, an HTTP timeout well inside the
// suite's waits, rate limits out of the way (hundreds of users come from
// one address; the security tests cover the limits), logs at info for the
// post-mortem.
func defaultEnv() map[string]string {
	return map[string]string{
		"TURNSTILE_HEARTBEAT_TIMEOUT": heartbeatTimeout.String(),
		"TURNSTILE_AUTH_RATE":         "1000000",
		"TURNSTILE_AUTH_BURST":        "1000000",
		"TURNSTILE_SUBMIT_RATE":       "1000000",
		"TURNSTILE_SUBMIT_BURST":      "1000000",
		"TURNSTILE_ENV":               "development",
		"TURNSTILE_DEV_HOST":          "127.0.0.1",
		"TURNSTILE_JWT_KEY":           jwtKey,
		"TURNSTILE_METRICS_ADDR":      "off",
		"TURNSTILE_LOG_LEVEL":         "info",
		"TURNSTILE_MAX_ATTEMPTS":      "3",
		"TURNSTILE_RETRY_INITIAL":     "100ms",
		"TURNSTILE_RETRY_MAX":         "500ms",
		"TURNSTILE_EXEC_TIMEOUT":      "2m",
		"TURNSTILE_IDLE_TIMEOUT":      "10m",
		"TURNSTILE_HTTP_TIMEOUT":      "10s",
		"TURNSTILE_STARTUP_TIMEOUT":   "60s",
		"TURNSTILE_ACCESS_TOKEN_TTL":  "1h",
		"TURNSTILE_MAX_QUEUE":         "1000",
		// Processes are killed here, never the power: SQLite's WAL survives
		// a process crash without an fsync per commit, and the default
		// (full) would slow every scenario (docs/performance.md).
		"TURNSTILE_DEV_SYNC": "normal",
	}
}

// newStack starts a system for t and stops it when t ends. On failure the
// data directory with every service's logs is kept and named.
func newStack(t *testing.T, opt stackOptions) *stack {
	t.Helper()
	if opt.apis == 0 {
		opt.apis = 1
	}
	dir, err := os.MkdirTemp("", "turnstile-faults-")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, env: defaultEnv(), sink: newSink(), hist: newHistory()}
	t.Cleanup(func() {
		s.stopAll()
		s.sink.close()
		if s.tc != nil {
			s.tc.Close()
		}
		if t.Failed() {
			t.Logf("data and service logs kept in %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	})
	temporalPort, mongoPort := freePort(t), freePort(t)
	s.env["TURNSTILE_DATA_DIR"] = filepath.Join(dir, "data")
	s.env["TURNSTILE_TEMPORAL_PORT"] = strconv.Itoa(temporalPort)
	s.env["TURNSTILE_MONGODB_PORT"] = strconv.Itoa(mongoPort)
	s.env["TURNSTILE_TEMPORAL_ADDRESS"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(temporalPort))
	s.env["TURNSTILE_MONGODB_URI"] = fmt.Sprintf("mongodb://127.0.0.1:%d/", mongoPort)
	s.env["TURNSTILE_HTTP_ALLOWLIST"] = s.sink.hostPort()
	for k, v := range opt.env {
		s.env[k] = v
	}

	started := func(log string) bool { return strings.Contains(log, "Press Ctrl-C to stop.") }
	s.temporal = s.newProc("temporal", s.env, started, "dev", "--services", "temporal")
	s.mongo = s.newProc("mongo", s.env, started, "dev", "--services", "mongo")
	s.must(s.temporal.start())
	s.must(s.mongo.start())
	for i := range opt.apis {
		env := s.env
		if extra := opt.apiEnv[i]; extra != nil {
			env = merge(s.env, extra)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		env = merge(env, map[string]string{"TURNSTILE_API_ADDR": addr})
		p := s.newProc(fmt.Sprintf("api%d", i), env, healthy("http://"+addr), "api")
		s.apis = append(s.apis, p)
		s.apiAddrs = append(s.apiAddrs, "http://"+addr)
		s.must(p.start())
	}
	for range opt.workers {
		s.addWorker()
	}
	s.admin = s.createAdmin()
	return s
}

func (s *stack) newProc(name string, env map[string]string, ready func(string) bool, args ...string) *proc {
	return &proc{name: name, bin: binPath, args: args, env: environ(env), dir: s.dir, ready: ready}
}

// addWorker starts one more worker and returns it.
func (s *stack) addWorker() *proc {
	p := s.newProc(fmt.Sprintf("worker%d", len(s.workers)), s.env, workerStarted, "worker")
	s.workers = append(s.workers, p)
	s.must(p.start())
	return p
}

// workerStarted looks for the Temporal SDK's line once its pollers run.
func workerStarted(log string) bool { return strings.Contains(log, `"msg":"Started Worker"`) }

// healthy probes an API's /healthz.
func healthy(base string) func(string) bool {
	return func(string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return call(ctx, "GET", base+"/healthz", "", nil).status == http.StatusOK
	}
}

func (s *stack) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

// procs lists every service process.
func (s *stack) procs() []*proc {
	ps := append([]*proc{}, s.workers...)
	ps = append(ps, s.apis...)
	return append(ps, s.mongo, s.temporal)
}

// stopAll stops workers and APIs first, then the store and Temporal.
func (s *stack) stopAll() {
	for _, p := range s.procs() {
		if p != nil {
			p.shutdown()
		}
	}
}

// logTails returns, per service, the last warnings and errors it logged
// and its last lines.
func (s *stack) logTails(lines int) string {
	var b strings.Builder
	for _, p := range s.procs() {
		if p == nil {
			continue
		}
		fmt.Fprintf(&b, "--- %s (start %d, running %v, %s)\n%s", p.name, p.starts, p.running(), p.logPath, p.tail(lines))
	}
	return b.String()
}

// environ is the parent's environment without TURNSTILE_* (a developer's
// settings must not leak in) plus env.
func environ(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TURNSTILE_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func merge(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// api returns the base URL of API i.
func (s *stack) api(i int) string { return s.apiAddrs[i] }

// createAdmin bootstraps the operator account with the real command and
// logs it in.
func (s *stack) createAdmin() *user {
	const email = "ops@faults.example.com"
	cmd := exec.Command(binPath, "admin", "create", "--email", email)
	cmd.Env = environ(merge(s.env, map[string]string{"TURNSTILE_ADMIN_PASSWORD": adminPassword}))
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("turnstile admin create: %v\n%s", err, out)
	}
	u := &user{tag: "admin", email: email}
	s.must(s.login(u, adminPassword))
	return u
}

// userPassword is every test user's password.
const userPassword = "fault suite user password"

// newUsers registers and logs in n users, a few at a time (password
// hashing is deliberately slow).
func (s *stack) newUsers(n int) []*user {
	s.t.Helper()
	base := len(s.users)
	us := make([]*user, n)
	errs := make([]error, n)
	sem := make(chan struct{}, runtime.NumCPU()*2)
	var wg sync.WaitGroup
	for i := range us {
		us[i] = &user{tag: "u" + strconv.Itoa(base+i), email: fmt.Sprintf("u%d-%d@faults.example.com", base+i, time.Now().UnixNano())}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = s.register(us[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		s.must(err)
	}
	s.users = append(s.users, us...)
	return us
}

// authTries bounds the retries of one registration or login.
const authTries = 20

func (s *stack) register(u *user) error {
	ctx := context.Background()
	var a apiAnswer
	for try := range authTries {
		a = call(ctx, "POST", s.api(0)+"/v1/auth/register", "", map[string]string{"email": u.email, "password": userPassword})
		if a.status == http.StatusCreated {
			var v struct{ ID string }
			if err := json.Unmarshal(a.body, &v); err != nil {
				return err
			}
			u.id = v.ID
			return s.login(u, userPassword)
		}
		if !retryable(a) {
			break
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("register %s: %s", u.email, a)
}

func (s *stack) login(u *user, password string) error {
	var a apiAnswer
	for try := range authTries {
		a = call(context.Background(), "POST", s.api(0)+"/v1/auth/login", "", map[string]string{"email": u.email, "password": password})
		if a.status == http.StatusOK {
			var v struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(a.body, &v); err != nil {
				return err
			}
			u.token = v.AccessToken
			if u.id == "" {
				return s.whoAmI(u)
			}
			return nil
		}
		if !retryable(a) {
			break
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
	}
	return fmt.Errorf("login %s: %s", u.email, a)
}

// whoAmI learns an account's ID from its token's subject.
func (s *stack) whoAmI(u *user) error {
	parts := strings.Split(u.token, ".")
	if len(parts) != 3 {
		return fmt.Errorf("token of %s is not a JWT", u.email)
	}
	raw, err := decodeSegment(parts[1])
	if err != nil {
		return err
	}
	var claims struct{ Sub string }
	if err := json.Unmarshal(raw, &claims); err != nil {
		return err
	}
	u.id = claims.Sub
	return nil
}

// adminDo is an operator call that must succeed with want.
func (s *stack) adminDo(method, path string, body any, want int) apiAnswer {
	s.t.Helper()
	var a apiAnswer
	for try := range 10 {
		a = call(context.Background(), method, s.api(0)+path, s.admin.token, body)
		if a.status == want || !retryable(a) {
			break
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	if a.status != want {
		s.t.Fatalf("%s %s: %s (want %d)", method, path, a, want)
	}
	return a
}

// statusCounts are the admin stats' request counts.
type statusCounts map[string]int64

// stats reads the admin stats (counts of requests by status).
func (s *stack) stats(ctx context.Context) (statusCounts, error) {
	a := call(ctx, "GET", s.api(0)+"/v1/admin/stats", s.admin.token, nil)
	if a.status != http.StatusOK {
		return nil, fmt.Errorf("admin stats: %s", a)
	}
	var v struct {
		Requests statusCounts `json:"requests"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		return nil, err
	}
	return v.Requests, nil
}

// waitDrained waits until no request is queued or running anywhere. It
// gives up early when requests stay unfinished although every session's
// queue is empty and nothing is running: those requests are orphans
// that nothing will ever finish.
func (s *stack) waitDrained(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last statusCounts
	var lastErr error
	var stuckSince time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := s.stats(ctx)
		idle := err == nil && s.sessionsIdle(ctx)
		cancel()
		if err == nil && st["queued"] == 0 && st["running"] == 0 {
			return
		}
		switch {
		case !idle || fmt.Sprint(st) != fmt.Sprint(last):
			stuckSince = time.Time{}
		case stuckSince.IsZero():
			stuckSince = time.Now()
		case time.Since(stuckSince) > orphanGrace:
			s.t.Errorf("requests left unfinished with every session idle for %s: stats %v", orphanGrace, st)
			return
		}
		last, lastErr = st, err
		time.Sleep(500 * time.Millisecond)
	}
	s.t.Errorf("queues not drained after %s: last stats %v (%v)", timeout, last, lastErr)
}

// orphanGrace is how long unfinished requests must sit beside idle
// sessions before waitDrained calls them orphans; it covers the lag of
// Temporal's visibility records.
const orphanGrace = 15 * time.Second

// sessionsIdle reports whether every open session shows an empty queue
// (QueueLength counts the running request too) and is not paused.
func (s *stack) sessionsIdle(ctx context.Context) bool {
	cursor := ""
	for range 100 {
		path := "/v1/admin/sessions?limit=100"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		a := call(ctx, "GET", s.api(0)+path, s.admin.token, nil)
		if a.status != http.StatusOK {
			return false
		}
		var page struct {
			Sessions []struct {
				Status      string `json:"status"`
				QueueLength int    `json:"queue_length"`
				Paused      bool   `json:"paused"`
			} `json:"sessions"`
			NextCursor *string `json:"next_cursor"`
		}
		if json.Unmarshal(a.body, &page) != nil {
			return false
		}
		for _, ss := range page.Sessions {
			if ss.Status == "Running" && (ss.QueueLength > 0 || ss.Paused) {
				return false
			}
		}
		if page.NextCursor == nil {
			return true
		}
		cursor = *page.NextCursor
	}
	return false
}

// check reads every user's requests through the API and runs the checker;
// a failing report fails the test with the report and the services' logs.
func (s *stack) check(scenario string) *report {
	s.t.Helper()
	records := map[string][]requestView{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	errs := make([]error, len(s.users))
	for i, u := range s.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			list, err := listAll(ctx, s.api(0), u)
			errs[i] = err
			mu.Lock()
			records[u.id] = list
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.t.Fatalf("final read: %v\n%s", err, s.logTails(20))
		}
	}
	s.records = map[string]requestView{}
	for _, list := range records {
		for _, v := range list {
			s.records[v.ID] = v
		}
	}
	r := check(scenario, s.hist.all(), s.sink.snapshot(), records)
	if r.ok() {
		s.t.Log("\n" + r.String())
	} else {
		s.t.Errorf("\n%s\nservice logs (warnings and errors):\n%s", r, s.logTails(12))
	}
	return r
}

// temporalClient is an SDK client of the stack's Temporal, for looking at
// workflow runs.
func (s *stack) temporalClient() client.Client {
	s.tcOnce.Do(func() {
		s.tc, s.tcErr = client.Dial(client.Options{HostPort: s.env["TURNSTILE_TEMPORAL_ADDRESS"], Namespace: "default",
			Logger: quietLogger{}})
	})
	s.must(s.tcErr)
	return s.tc
}

// quietLogger drops the SDK client's logs.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

func decodeSegment(seg string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(seg) }
