package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
)

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// from sends an anonymous call from the client address remote ("ip:port"),
// with extra headers (pairs).
func (f *fixture) from(remote, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	return w
}

func errCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct{ Error apiError }
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return e.Error.Code
}

// registerUser creates an account with password pw through the API.
func (f *fixture) registerUser(email, pw string) {
	f.t.Helper()
	w := f.from("192.0.2.200:1", "POST", "/v1/auth/register", fmt.Sprintf(`{"email":%q,"password":%q}`, email, pw))
	if w.Code != http.StatusCreated {
		f.t.Fatalf("register %s: %d %s", email, w.Code, w.Body)
	}
}

func login(email, pw string) string { return fmt.Sprintf(`{"email":%q,"password":%q}`, email, pw) }

const (
	goodPW = "correct horse battery"
	badPW  = "wrong horse battery"
)

func TestLoginLockoutGrowsAndAnswers429WithRetryAfter(t *testing.T) {
	clk := newClock()
	f := newFixtureWith(t, func(c *Config) {
		c.Now = clk.Now
		c.LoginLockoutThreshold, c.LoginLockoutBase, c.LoginLockoutMax = 3, 10*time.Second, 40*time.Second
	})
	f.registerUser("ada@example.com", goodPW)
	const ip = "198.51.100.7:4000"
	try := func(pw string, wantStatus int, wantRetry string) {
		t.Helper()
		w := f.from(ip, "POST", "/v1/auth/login", login("ada@example.com", pw))
		if w.Code != wantStatus || w.Header().Get("Retry-After") != wantRetry {
			t.Fatalf("login: %d Retry-After=%q %s; want %d Retry-After=%q", w.Code, w.Header().Get("Retry-After"), w.Body, wantStatus, wantRetry)
		}
		if wantStatus == http.StatusTooManyRequests && errCode(t, w) != "login_locked" {
			t.Fatalf("lockout code %q", errCode(t, w))
		}
	}
	for range 3 {
		try(badPW, 401, "")
	}
	try(goodPW, 429, "10") // locked: even the right password is not checked
	clk.advance(9 * time.Second)
	try(goodPW, 429, "1")
	clk.advance(time.Second)
	try(badPW, 401, "") // the 4th failure doubles the lock
	try(badPW, 429, "20")
	clk.advance(20 * time.Second)
	try(badPW, 401, "")
	try(badPW, 429, "40")
	clk.advance(40 * time.Second)
	try(badPW, 401, "")
	try(badPW, 429, "40") // capped at LoginLockoutMax
	clk.advance(40 * time.Second)
	try(goodPW, 200, "") // success forgets the failures
	try(badPW, 401, "")
	try(badPW, 401, "")
	try(goodPW, 200, "")
}

func TestLoginLockoutCannotLockTheOwnerOutFromElsewhere(t *testing.T) {
	clk := newClock()
	f := newFixtureWith(t, func(c *Config) {
		c.Now = clk.Now
		c.LoginLockoutThreshold = 2
	})
	f.registerUser("victim@example.com", goodPW)
	const attacker, owner = "203.0.113.66:1234", "198.51.100.20:5555"
	for range 2 {
		f.from(attacker, "POST", "/v1/auth/login", login("victim@example.com", badPW))
	}
	if w := f.from(attacker, "POST", "/v1/auth/login", login("victim@example.com", goodPW)); w.Code != 429 {
		t.Fatalf("attacker not locked out: %d %s", w.Code, w.Body)
	}
	// No trusted proxies: a forged X-Forwarded-For does not move the
	// attacker to a fresh address.
	if w := f.from(attacker, "POST", "/v1/auth/login", login("victim@example.com", badPW), "X-Forwarded-For", "192.0.2.99"); w.Code != 429 {
		t.Fatalf("X-Forwarded-For from an untrusted peer escaped the lockout: %d %s", w.Code, w.Body)
	}
	// The owner, from their own address, logs in as usual.
	if w := f.from(owner, "POST", "/v1/auth/login", login("victim@example.com", goodPW)); w.Code != 200 {
		t.Fatalf("owner locked out by someone else's failures: %d %s", w.Code, w.Body)
	}
	// Another account from the attacker's address is not locked either.
	f.registerUser("bystander@example.com", goodPW)
	if w := f.from(attacker, "POST", "/v1/auth/login", login("bystander@example.com", goodPW)); w.Code != 200 {
		t.Fatalf("lockout spilled over to another account: %d %s", w.Code, w.Body)
	}
}

func TestLoginLockoutLooksTheSameForUnknownAccounts(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.LoginLockoutThreshold = 2 })
	f.registerUser("known@example.com", goodPW)
	const ip = "198.51.100.8:1"
	var last [2]*httptest.ResponseRecorder
	for i, email := range []string{"known@example.com", "unknown@example.com"} {
		f.from(ip, "POST", "/v1/auth/login", login(email, badPW))
		f.from(ip, "POST", "/v1/auth/login", login(email, badPW))
		last[i] = f.from(ip, "POST", "/v1/auth/login", login(email, badPW))
	}
	if last[0].Code != 429 || last[1].Code != 429 || last[0].Body.String() != last[1].Body.String() ||
		last[0].Header().Get("Retry-After") != last[1].Header().Get("Retry-After") {
		t.Fatalf("known: %d %s; unknown: %d %s", last[0].Code, last[0].Body, last[1].Code, last[1].Body)
	}
}

func TestLoginLockoutHoldsAgainstConcurrentGuesses(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.LoginLockoutThreshold = 3 })
	f.registerUser("burst@example.com", goodPW)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := f.from("198.51.100.9:1", "POST", "/v1/auth/login", login("burst@example.com", badPW))
			mu.Lock()
			counts[w.Code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[401] != 3 || counts[429] != 9 {
		t.Fatalf("12 concurrent guesses got %v; want exactly 3 checked (401) and 9 refused (429)", counts)
	}
}

func TestTrustedProxyDecidesTheClientAddress(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) {
		c.TrustedProxies = []string{"10.0.0.1"}
		c.LoginLockoutThreshold = 1
	})
	f.registerUser("proxied@example.com", goodPW)
	const proxy = "10.0.0.1:443"
	// Behind the trusted proxy, two clients are told apart by
	// X-Forwarded-For.
	f.from(proxy, "POST", "/v1/auth/login", login("proxied@example.com", badPW), "X-Forwarded-For", "203.0.113.1")
	if w := f.from(proxy, "POST", "/v1/auth/login", login("proxied@example.com", goodPW), "X-Forwarded-For", "203.0.113.1"); w.Code != 429 {
		t.Fatalf("client behind proxy not locked: %d", w.Code)
	}
	if w := f.from(proxy, "POST", "/v1/auth/login", login("proxied@example.com", goodPW), "X-Forwarded-For", "203.0.113.2"); w.Code != 200 {
		t.Fatalf("another client behind the proxy locked out: %d %s", w.Code, w.Body)
	}
}

func TestAuthRoutesAreRateLimitedPerClientNetwork(t *testing.T) {
	clk := newClock()
	f := newFixtureWith(t, func(c *Config) {
		c.Now = clk.Now
		c.AuthBurst, c.AuthRate = 3, 60 // then one per second
	})
	const a, b = "198.51.100.30:1", "198.51.100.31:1"
	calls := []struct{ path, body string }{
		{"/v1/auth/register", `{"email":"x","password":"y"}`},
		{"/v1/auth/login", login("nobody@example.com", badPW)},
		{"/v1/auth/refresh", `{"refresh_token":"nope"}`},
	}
	for _, c := range calls {
		if w := f.from(a, "POST", c.path, c.body); w.Code == 429 {
			t.Fatalf("%s within the burst: 429", c.path)
		}
	}
	for _, c := range calls {
		w := f.from(a, "POST", c.path, c.body)
		if w.Code != 429 || errCode(t, w) != "rate_limited" || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("%s past the burst: %d Retry-After=%q %s", c.path, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	if w := f.from(b, "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`); w.Code == 429 {
		t.Fatal("another address was limited")
	}
	clk.advance(time.Second)
	if w := f.from(a, "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`); w.Code == 429 {
		t.Fatal("no token back after a second")
	}
	if w := f.from(a, "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`); w.Code != 429 {
		t.Fatalf("second call in that second: %d", w.Code)
	}
	// An IPv6 client cannot dodge the limit by hopping addresses in its /64.
	for i := range 3 {
		f.from(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`)
	}
	if w := f.from("[2001:db8:1:2:ffff::9]:1", "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`); w.Code != 429 {
		t.Fatalf("fourth address of one /64: %d", w.Code)
	}
	if w := f.from("[2001:db8:1:3::1]:1", "POST", "/v1/auth/refresh", `{"refresh_token":"nope"}`); w.Code == 429 {
		t.Fatal("another /64 was limited")
	}
}

func TestSubmissionRateIsLimitedPerUser(t *testing.T) {
	clk := newClock()
	f := newFixtureWith(t, func(c *Config) {
		c.Now = clk.Now
		c.SubmitBurst, c.SubmitRate = 2, 0.5
	})
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`); w.Code != 202 {
		t.Fatalf("first: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`); w.Code != 202 {
		t.Fatalf("batch: %d %s", w.Code, w.Body)
	}
	for _, path := range []string{"/v1/requests", "/v1/requests/batch"} {
		body := `{"type":"echo"}`
		if strings.HasSuffix(path, "batch") {
			body = `{"requests":[{"type":"echo"}]}`
		}
		w := f.do("POST", path, body)
		if w.Code != 429 || errCode(t, w) != "rate_limited" || w.Header().Get("Retry-After") != "2" {
			t.Fatalf("%s past the burst: %d Retry-After=%q %s", path, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	if n := len(f.stored()); n != 3 {
		t.Fatalf("%d requests stored, want 3 (refused calls record nothing)", n)
	}
	// Another user has a bucket of their own.
	other := &models.User{Email: "other@example.com", PasswordHash: "x", Role: models.RoleUser}
	if err := f.st.Users.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.tokens.Issue(other.ID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.do("POST", "/v1/requests", `{"type":"echo"}`, "Authorization", "Bearer "+tok); w.Code != 202 {
		t.Fatalf("other user: %d %s", w.Code, w.Body)
	}
	clk.advance(2 * time.Second)
	if w := f.do("POST", "/v1/requests", `{"type":"echo"}`); w.Code != 202 {
		t.Fatalf("after the refill: %d %s", w.Code, w.Body)
	}
}

func TestJSONDepthIsLimitedOnEveryBody(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxJSONDepth = 4 })
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	// {"payload": ...} is one level, so the payload may nest 3 deep.
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":`+nest(3)+`}`); w.Code != 202 {
		t.Fatalf("depth 4: %d %s", w.Code, w.Body)
	}
	// Brackets inside strings, escaped quotes included, are not nesting.
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":"\"[[[[[[{{{{{"}`); w.Code != 202 {
		t.Fatalf("brackets in a string: %d %s", w.Code, w.Body)
	}
	for _, tc := range []struct{ path, body string }{
		{"/v1/requests", `{"type":"echo","payload":` + nest(4) + `}`},
		{"/v1/requests", `{"type":"echo","payload":` + nest(100000) + `}`},
		{"/v1/requests/batch", `{"requests":[{"type":"echo","payload":{"a":[1]}}]}`},
		{"/v1/auth/register", `{"email":{"a":{"b":{"c":{}}}},"password":"x"}`},
		{"/v1/auth/login", `{"email":[[[[]]]]}`},
		{"/v1/auth/refresh", `{"refresh_token":[[[[1]]]]}`},
	} {
		w := f.do("POST", tc.path, tc.body)
		if w.Code != 400 || errCode(t, w) != "too_deep" {
			t.Errorf("%s %.60s: %d %s", tc.path, tc.body, w.Code, w.Body)
		}
	}
	if n := len(f.stored()); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
}

func TestPayloadSizeIsLimited(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxPayloadBytes = 32 })
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":"`+strings.Repeat("x", 30)+`"}`); w.Code != 202 {
		t.Fatalf("32-byte payload: %d %s", w.Code, w.Body)
	}
	// Whitespace does not count: the payload is stored compacted.
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":[1,    2,    3,    4,    5,    6,    7]}`); w.Code != 202 {
		t.Fatalf("compacts to 15 bytes: %d %s", w.Code, w.Body)
	}
	w := f.do("POST", "/v1/requests", `{"type":"echo","payload":"`+strings.Repeat("x", 31)+`"}`)
	if w.Code != 413 || errCode(t, w) != "payload_too_large" {
		t.Fatalf("33-byte payload: %d %s", w.Code, w.Body)
	}
	w = f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo","payload":1},{"type":"echo","payload":"`+strings.Repeat("y", 40)+`"}]}`)
	if w.Code != 413 || !strings.Contains(w.Body.String(), "requests[1]") {
		t.Fatalf("batch with one big payload: %d %s", w.Code, w.Body)
	}
	if n := len(f.stored()); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
}

func TestBodySizeIsLimited(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxBodyBytes = 64 })
	body := `{"type":"echo","payload":"` + strings.Repeat("x", 64) + `"}`
	if w := f.do("POST", "/v1/requests", body); w.Code != 413 || errCode(t, w) != "too_large" {
		t.Fatalf("with Content-Length: %d %s", w.Code, w.Body)
	}
	// Without a Content-Length (chunked), the reader stops at the limit.
	req := httptest.NewRequest("POST", "/v1/requests", strings.NewReader(body))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+f.token)
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	if w.Code != 413 || errCode(t, w) != "too_large" {
		t.Fatalf("chunked: %d %s", w.Code, w.Body)
	}
}

func TestPageSizeIsLimited(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxPageSize = 3 })
	for range 4 {
		if w := f.do("POST", "/v1/requests", `{"type":"echo"}`); w.Code != 202 {
			t.Fatal(w.Body)
		}
	}
	var page struct {
		Requests   []json.RawMessage `json:"requests"`
		NextCursor *string           `json:"next_cursor"`
	}
	w := f.do("GET", "/v1/requests", "")
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || len(page.Requests) != 3 || page.NextCursor == nil {
		t.Fatalf("default page under a max of 3: %d %s", w.Code, w.Body)
	}
	if w := f.do("GET", "/v1/requests?limit=3", ""); w.Code != 200 {
		t.Fatalf("limit=3: %d", w.Code)
	}
	for _, l := range []string{"4", "0", "-1", "1e2", "99999999999999999999"} {
		if w := f.do("GET", "/v1/requests?limit="+l, ""); w.Code != 400 || errCode(t, w) != "invalid_limit" {
			t.Errorf("limit=%s: %d %s", l, w.Code, w.Body)
		}
	}
}

func TestBatchSizeIsLimited(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxBatch = 2 })
	if w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`); w.Code != 202 {
		t.Fatalf("2 items: %d %s", w.Code, w.Body)
	}
	w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"},{"type":"echo"}]}`)
	if w.Code != 400 || errCode(t, w) != "invalid_batch" {
		t.Fatalf("3 items: %d %s", w.Code, w.Body)
	}
	if n := len(f.stored()); n != 2 {
		t.Fatalf("%d stored", n)
	}
}

func TestQueueLengthIsLimited(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.MaxQueue, c.QueueFullRetryAfter = 2, 7*time.Second })
	if w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`); w.Code != 202 {
		t.Fatalf("fill: %d %s", w.Code, w.Body)
	}
	w := f.do("POST", "/v1/requests", `{"type":"echo"}`)
	if w.Code != 429 || errCode(t, w) != "queue_full" || w.Header().Get("Retry-After") != "7" {
		t.Fatalf("over the cap: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
}

func TestDecodeJSONAcceptsOneObjectOnly(t *testing.T) {
	var v struct{ A int }
	for _, bad := range []string{``, ` `, `null`, `[]`, `1`, `"s"`, `{"a":1}}`, `{"a":1}]`, `{"a":1} {}`, `{"a":1} x`, `{"a":1,"b":2}`, `{"a":"x"}`, `{`} {
		if err := decodeJSONFrom(strings.NewReader(bad), &v); err == nil {
			t.Errorf("decodeJSONFrom(%q) accepted", bad)
		}
	}
	for _, good := range []string{`{"a":1}`, " \n{\"A\":2}\n ", `{}`} {
		if err := decodeJSONFrom(strings.NewReader(good), &v); err != nil {
			t.Errorf("decodeJSONFrom(%q) = %v", good, err)
		}
	}
}

func TestBucketsRefillForgetAndStayBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBuckets(2, 2) // 2 at once, 2 per second
	for i := range 2 {
		if ok, _ := b.take("k", t0); !ok {
			t.Fatalf("take %d refused", i)
		}
	}
	ok, wait := b.take("k", t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("empty bucket: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := b.take("k", t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("no token after 500ms")
	}
	// A full bucket is forgotten at the next sweep.
	b.take("other", t0)
	b.take("k", t0.Add(time.Hour))
	if _, kept := b.m["other"]; kept {
		t.Fatal("a long-idle key was kept")
	}
	for i := range maxLimiterKeys + 10 {
		b.take(fmt.Sprint("flood-", i), t0.Add(time.Hour))
	}
	if n := len(b.m); n > maxLimiterKeys {
		t.Fatalf("%d keys, want at most %d", n, maxLimiterKeys)
	}
}

func TestLockoutsForgetAfterAQuietPeriodAndStayBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLockouts(2, time.Second, 4*time.Second)
	if l.lockFor(0) != time.Second || l.lockFor(1) != 2*time.Second || l.lockFor(2) != 4*time.Second || l.lockFor(60) != 4*time.Second {
		t.Fatalf("lockFor: %v %v %v %v", l.lockFor(0), l.lockFor(1), l.lockFor(2), l.lockFor(60))
	}
	l.begin("k", t0)
	l.begin("k", t0)
	if d := l.begin("k", t0); d != time.Second {
		t.Fatalf("locked for %v", d)
	}
	// Waiting out the lock does not reset the count...
	if d := l.begin("k", t0.Add(time.Second)); d != 0 {
		t.Fatalf("after the lock: %v", d)
	}
	if d := l.begin("k", t0.Add(time.Second)); d != 2*time.Second {
		t.Fatalf("third failure locked for %v, want 2s", d)
	}
	// ...but a quiet period of 4×max does.
	later := t0.Add(time.Second + 16*time.Second + sweepEvery)
	l.begin("x", later)
	if _, kept := l.m["k"]; kept {
		t.Fatal("key kept after its quiet period")
	}
	// A backend failure takes its attempt back.
	l.begin("c", later)
	l.begin("c", later)
	l.cancel("c")
	if d := l.begin("c", later); d != 0 {
		t.Fatalf("cancelled attempt still counted: locked %v", d)
	}
	for i := range maxLimiterKeys + 10 {
		l.begin(fmt.Sprint("flood-", i), later)
	}
	if n := len(l.m); n > maxLimiterKeys {
		t.Fatalf("%d keys, want at most %d", n, maxLimiterKeys)
	}
}

func TestClientNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.9":             "203.0.113.9",
		"::ffff:203.0.113.9":      "203.0.113.9",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2::1":         "2001:db8:1:2::/64",
		"fe80::1%eth0":            "fe80::/64",
		"not an ip":               "not an ip",
		"":                        "",
		"2001:db8:ffff:ffff::abc": "2001:db8:ffff:ffff::/64",
	} {
		if got := clientNetwork(in); got != want {
			t.Errorf("clientNetwork(%q) = %q, want %q", in, got, want)
		}
	}
}

// A validly signed token that claims admin for a user changes nothing: the
// role comes from MongoDB on every call.
func TestAdminClaimInTokenDoesNotGrantAdmin(t *testing.T) {
	f := newFixture(t)
	tok, _, err := f.tokens.Issue(f.userID, models.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.do("GET", "/v1/admin/stats", "", "Authorization", "Bearer "+tok); w.Code != 403 {
		t.Fatalf("user with an admin-claiming token: %d %s", w.Code, w.Body)
	}
}

// A body with bytes that are not UTF-8, or an object with a key twice (at
// any depth), is refused with 400 and stores nothing: decoding would
// otherwise replace the bytes with U+FFFD or keep the last key, silently
// changing what the user sent.
func TestBodyWithInvalidUTF8OrDuplicateKeysIsRefused(t *testing.T) {
	f := newFixture(t)
	for name, body := range map[string]string{
		"invalid UTF-8 in the payload":  "{\"type\":\"echo\",\"payload\":\"a\xff\xfeb\"}",
		"invalid UTF-8 in a key":        "{\"type\":\"echo\",\"payload\":{\"\xc3\":1}}",
		"duplicate top-level key":       `{"type":"echo","type":"sleep","payload":1}`,
		"duplicate key in the payload":  `{"type":"echo","payload":{"a":1,"b":{"c":1,"c":2}}}`,
		"duplicate key spelt escaped":   `{"type":"echo","payload":{"a":1,"\u0061":2}}`,
		"duplicate key in a batch item": `{"requests":[{"type":"echo","payload":{"x":1,"x":1}}]}`,
	} {
		path := "/v1/requests"
		if strings.Contains(body, "requests") {
			path = "/v1/requests/batch"
		}
		w := f.do("POST", path, body)
		if w.Code != http.StatusBadRequest || errCode(t, w) != "bad_json" {
			t.Errorf("%s: %d %s, want 400 bad_json", name, w.Code, w.Body)
		}
	}
	if n := len(f.stored()); n != 0 {
		t.Fatalf("%d requests stored from refused bodies", n)
	}
	// The same key in sibling objects, and valid UTF-8, are fine.
	if w := f.do("POST", "/v1/requests", `{"type":"echo","payload":[{"a":1},{"a":2,"é":"ü"}]}`); w.Code != http.StatusAccepted {
		t.Fatalf("valid body: %d %s", w.Code, w.Body)
	}
}

// Every route that signals a session besides submission spends the steered
// user's signal tokens (each signal costs the session's history events):
// the user's cancel and close, and an operator's steering of that user.
func TestSignallingRoutesAreRateLimitedPerSteeredUser(t *testing.T) {
	clk := newClock()
	f := newFixtureWith(t, func(c *Config) {
		c.Now = clk.Now
		c.SignalBurst, c.SignalRate = 2, 0.5
	})
	admin := &models.User{Email: "admin@example.com", PasswordHash: "x", Role: models.RoleAdmin}
	if err := f.st.Users.Create(context.Background(), admin); err != nil {
		t.Fatal(err)
	}
	adminTok, _, err := f.tokens.Issue(admin.ID, models.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	asAdmin := []string{"Authorization", "Bearer " + adminTok}
	w := f.do("POST", "/v1/requests", `{"type":"echo"}`)
	if w.Code != 202 {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	var r struct{ ID string }
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if w := f.do("DELETE", "/v1/session", ""); w.Code != 202 {
			t.Fatalf("close %d within the burst: %d %s", i, w.Code, w.Body)
		}
	}
	refused := map[string][]string{
		"DELETE /v1/session":                              {},
		"DELETE /v1/requests/" + r.ID:                     {},
		"POST /v1/admin/sessions/" + f.userID + "/pause":  asAdmin,
		"POST /v1/admin/sessions/" + f.userID + "/resume": asAdmin,
		"POST /v1/admin/sessions/" + f.userID + "/close":  asAdmin,
		"PUT /v1/admin/sessions/" + f.userID + "/policy":  asAdmin,
		"POST /v1/admin/requests/" + r.ID + "/cancel":     asAdmin,
		"POST /v1/admin/requests/" + r.ID + "/requeue":    asAdmin,
	}
	for route, headers := range refused {
		method, path, _ := strings.Cut(route, " ")
		w := f.do(method, path, `{"policy":"pause"}`, headers...)
		if w.Code != 429 || errCode(t, w) != "rate_limited" || w.Header().Get("Retry-After") != "2" {
			t.Errorf("%s past the user's signal burst: %d Retry-After=%q %s", route, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	if got := f.stored(); len(got) != 1 || got[0].Status != models.StatusQueued {
		t.Fatalf("after refused calls: %+v, want the one request still queued", got)
	}
	// The admin's own session is another user's bucket.
	if w := f.do("DELETE", "/v1/session", "", asAdmin...); w.Code != 202 {
		t.Fatalf("the admin closing their own session: %d %s", w.Code, w.Body)
	}
	clk.advance(2 * time.Second)
	if w := f.do("DELETE", "/v1/requests/"+r.ID, ""); w.Code != 200 {
		t.Fatalf("cancel after the refill: %d %s", w.Code, w.Body)
	}
}

// A steering signal that the session's history budget holds back
// (starter.ErrSessionBusy) is a clear 429 with Retry-After, not a 503; a
// cancel stands all the same, since MongoDB is what the session checks.
func TestSessionAtItsHistoryBudgetAnswers429(t *testing.T) {
	f := newFixture(t)
	f.sessions.steerErr = fmt.Errorf("signal close: %w", starter.ErrSessionBusy)
	w := f.do("DELETE", "/v1/session", "")
	if w.Code != 429 || errCode(t, w) != "session_busy" || w.Header().Get("Retry-After") != "5" {
		t.Fatalf("close of a busy session: %d Retry-After=%q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	w = f.do("POST", "/v1/requests", `{"type":"echo"}`)
	if w.Code != 202 {
		t.Fatalf("submit to a busy session: %d %s", w.Code, w.Body)
	}
	var r struct{ ID string }
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if w := f.do("DELETE", "/v1/requests/"+r.ID, ""); w.Code != 200 {
		t.Fatalf("cancel with a busy session: %d %s", w.Code, w.Body)
	}
	if got := f.stored(); len(got) != 1 || got[0].Status != models.StatusCancelled {
		t.Fatalf("after the cancel: %+v", got)
	}
}

// Logout revokes every session of the account: its refresh tokens, and
// its access tokens at once, not when they expire (the per-call user check
// compares a token's issue time with the logout).
func TestLogoutEndsAccessTokensAtOnce(t *testing.T) {
	f := newFixture(t)
	// A token from another device, issued two seconds earlier.
	earlier := *f.tokens
	earlier.Now = func() time.Time { return time.Now().Add(-2 * time.Second) }
	other, _, err := earlier.Issue(f.userID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.do("GET", "/v1/session", "", "Authorization", "Bearer "+other); w.Code != 200 {
		t.Fatalf("before logout: %d %s", w.Code, w.Body)
	}
	if w := f.do("POST", "/v1/auth/logout", ""); w.Code != 204 {
		t.Fatalf("logout: %d %s", w.Code, w.Body)
	}
	for name, tok := range map[string]string{"the token that logged out": f.token, "another device's token": other} {
		if w := f.do("GET", "/v1/session", "", "Authorization", "Bearer "+tok); w.Code != 401 {
			t.Errorf("%s after logout: %d %s", name, w.Code, w.Body)
		}
	}
	// A token issued after the logout (a new login) works.
	later := *f.tokens
	later.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
	fresh, _, err := later.Issue(f.userID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	if w := f.do("GET", "/v1/session", "", "Authorization", "Bearer "+fresh); w.Code != 200 {
		t.Fatalf("a token issued after the logout: %d %s", w.Code, w.Body)
	}
}
