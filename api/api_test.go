package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// fakeSessions stands in for Temporal in these handler tests; the store is
// real (FerretDB over the wire). The end-to-end suite in tests/ uses a real
// Temporal server.
type fakeSessions struct {
	mu        sync.Mutex
	submitErr error
	pingErr   error
	steerErr  error // answered by Close, Cancel, Pause, Resume and SetPolicy
	submitted []models.QueuedRequest
	queries   int // State calls: each is a workflow query on a real session
}

func (f *fakeSessions) Submit(_ context.Context, _ string, reqs []models.QueuedRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.submitErr != nil {
		return f.submitErr
	}
	f.submitted = append(f.submitted, reqs...)
	return nil
}

// Deliver records a delivery's entries as Submit does.
func (f *fakeSessions) Deliver(ctx context.Context, userID string, d models.Delivery) error {
	return f.Submit(ctx, userID, d.Entries)
}

// QueueLength is every signalled request, as State reports them.
func (f *fakeSessions) QueueLength(ctx context.Context, userID string) (int, error) {
	st, err := f.State(ctx, userID)
	return st.QueueLength, err
}

// Running: a session is open once something was signalled (this fake
// session never ends).
func (f *fakeSessions) Running(context.Context, string) (bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.submitted) > 0, false, nil
}

// State reports every signalled request as waiting: this fake session
// never runs anything (one fixture serves one user).
func (f *fakeSessions) State(_ context.Context, userID string) (models.SessionState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	st := models.SessionState{UserID: userID, State: models.SessionClosed, Queue: []models.QueueEntry{}}
	for i, r := range f.submitted {
		st.State = models.SessionOpen
		st.Queue = append(st.Queue, models.QueueEntry{ID: r.ID, Type: r.Type, Position: i + 1})
	}
	st.QueueLength = len(st.Queue)
	return st, nil
}
func (f *fakeSessions) Close(context.Context, string, int64) error   { return f.steerErr }
func (f *fakeSessions) Cancel(context.Context, string, string) error { return f.steerErr }
func (f *fakeSessions) Ping(context.Context) error                   { return f.pingErr }
func (f *fakeSessions) Pause(context.Context, string) error          { return f.steerErr }
func (f *fakeSessions) Resume(context.Context, string) error         { return f.steerErr }
func (f *fakeSessions) SetPolicy(context.Context, string, models.FailurePolicy) error {
	return f.steerErr
}
func (f *fakeSessions) Requeue(ctx context.Context, userID string, reqs []models.QueuedRequest) error {
	return f.Submit(ctx, userID, reqs)
}
func (f *fakeSessions) ListSessions(context.Context, starter.SessionFilter, int, string) ([]starter.SessionSummary, string, error) {
	return nil, "", nil
}
func (f *fakeSessions) CountSessions(context.Context, starter.SessionFilter) (int64, error) {
	return 0, nil
}

type fixture struct {
	t        *testing.T
	h        http.Handler
	st       *store.Store
	sessions *fakeSessions
	token    string
	userID   string
	tokens   *auth.Tokens
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, nil) }

// newFixtureWith is newFixture with the Config edited by edit first.
func newFixtureWith(t *testing.T, edit func(*Config)) *fixture {
	st := storetest.New(t)
	reg := activities.NewRegistry()
	reg.Register("echo", activities.Echo{})
	tokens := &auth.Tokens{Key: []byte("0123456789abcdef0123456789abcdef"), Issuer: "i", Audience: "a", TTL: time.Minute}
	f := &fixture{t: t, st: st, sessions: &fakeSessions{}}
	cfg := Config{Tokens: tokens, Types: reg}
	if edit != nil {
		edit(&cfg)
	}
	f.tokens = cfg.Tokens
	h, err := NewServer(cfg, st, f.sessions)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	u := &models.User{Email: "u@example.com", PasswordHash: "x", Role: models.RoleUser}
	if err := st.Users.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	f.userID = u.ID
	if f.token, _, err = tokens.Issue(u.ID, models.RoleUser); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) do(method, path, body string, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	return w
}

func (f *fixture) stored() []models.Request {
	f.t.Helper()
	reqs, err := f.st.Requests.List(context.Background(), f.userID, "", 100, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return reqs
}

// waitSubmitted waits until n entries were delivered (deliveries are
// asynchronous) and returns them.
func (f *fakeSessions) waitSubmitted(t *testing.T, n int) []models.QueuedRequest {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		got := append([]models.QueuedRequest(nil), f.submitted...)
		f.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Since 2026-12-02 a 202 means MongoDB has the request: a Temporal outage
// does not refuse submissions, and what was accepted is delivered once
// Temporal answers again.
func TestSubmitWithFakeSessions_TemporalDownStillAcceptsAndDeliversLater(t *testing.T) {
	f := newFixture(t)
	f.sessions.mu.Lock()
	f.sessions.submitErr = errors.New("temporal unavailable")
	f.sessions.mu.Unlock()
	w := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`, "Idempotency-Key", "k1")
	if w.Code != http.StatusAccepted {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	got := f.stored()
	if len(got) != 1 || got[0].Status != models.StatusQueued || got[0].Seq != 1 {
		t.Fatalf("stored %+v", got)
	}
	// The client's retry with the same key is the same request.
	w = f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`, "Idempotency-Key", "k1")
	if w.Code != http.StatusAccepted || len(f.stored()) != 1 {
		t.Fatalf("retry: %d %s, stored %d", w.Code, w.Body, len(f.stored()))
	}
	f.sessions.mu.Lock()
	f.sessions.submitErr = nil
	f.sessions.mu.Unlock()
	if sub := f.sessions.waitSubmitted(t, 1); len(sub) != 1 || sub[0].ID != got[0].ID || sub[0].Seq != 1 {
		t.Fatalf("delivered %+v, want the one request once", sub)
	}
}

func TestSubmitWithFakeSessions_ReplayIsTheSameRequest(t *testing.T) {
	f := newFixture(t)
	first := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`, "Idempotency-Key", "k2")
	again := f.do("POST", "/v1/requests", `{"type":"echo","payload":1}`, "Idempotency-Key", "k2")
	var a, b struct{ ID string }
	_ = json.Unmarshal(first.Body.Bytes(), &a)
	_ = json.Unmarshal(again.Body.Bytes(), &b)
	if first.Code != 202 || again.Code != 202 || a.ID == "" || a.ID != b.ID {
		t.Fatalf("first %d %s, again %d %s", first.Code, first.Body, again.Code, again.Body)
	}
	if other := f.do("POST", "/v1/requests", `{"type":"echo","payload":2}`, "Idempotency-Key", "k2"); other.Code != http.StatusConflict {
		t.Fatalf("same key, other content: %d %s", other.Code, other.Body)
	}
	if got := f.stored(); len(got) != 1 {
		t.Fatalf("stored %d requests, want 1", len(got))
	}
}

func TestBatchWithFakeSessions_TemporalDownAcceptsTheWholeBatchInOrder(t *testing.T) {
	f := newFixture(t)
	f.sessions.mu.Lock()
	f.sessions.submitErr = errors.New("down")
	f.sessions.mu.Unlock()
	w := f.do("POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"},{"type":"echo"}]}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	got := f.stored()
	if len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 1 {
		t.Fatalf("stored %+v, want seq 1..3", got)
	}
}

func TestReadyzWithFakeSessions_ReportsTemporalDown(t *testing.T) {
	f := newFixture(t)
	f.sessions.pingErr = errors.New("no frontend")
	w := f.do("GET", "/readyz", "")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"temporal":"unavailable"`) ||
		!strings.Contains(w.Body.String(), `"mongodb":"ok"`) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

func TestDisabledUsersTokenStopsWorkingAtOnce(t *testing.T) {
	f := newFixture(t)
	if w := f.do("GET", "/v1/session", ""); w.Code != 200 {
		t.Fatalf("before disable: %d %s", w.Code, w.Body)
	}
	if err := f.st.Users.SetDisabled(context.Background(), f.userID, true); err != nil {
		t.Fatal(err)
	}
	if w := f.do("GET", "/v1/session", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("after disable: %d %s", w.Code, w.Body)
	}
}

func TestBearerTokenParsing(t *testing.T) {
	for _, tc := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer abc", "abc", true},
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic abc", "", false},
		{"Bearer a b", "", false},
		{"Bearerabc", "", false},
	} {
		got, err := bearerToken(tc.header)
		if (err == nil) != tc.ok || got != tc.token {
			t.Errorf("bearerToken(%q) = %q, %v", tc.header, got, err)
		}
	}
}

func TestCursorRoundTripAndRejects(t *testing.T) {
	id := models.RequestID("01a21944-c3be-70d4-b79a-c7c2870ba14c", 42)
	got, err := decodeCursor(encodeCursor(id))
	if err != nil || got != id {
		t.Fatalf("round trip: %q %v", got, err)
	}
	for _, bad := range []string{"!!", encodeCursor("not-a-request-id"), encodeCursor("01a21944-c3be-70d4-b79a-c7c2870ba14c"), encodeCursor(id + "0"), "e30"} {
		if _, err := decodeCursor(bad); err == nil {
			t.Errorf("decodeCursor(%q) accepted", bad)
		}
	}
}

// A waiting request's position and ETA come from the store's sequence (the
// order the session runs them in), not from a query of the session: a
// client polling its request costs Temporal nothing.
func TestGetRequestPositionFromTheSequenceWithoutASessionQuery(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for range 3 {
		w := f.do("POST", "/v1/requests", `{"type":"echo","payload":{}}`)
		if w.Code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", w.Code, w.Body)
		}
		var v struct{ ID string }
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	get := func(id string) (pos int, eta *time.Time) {
		t.Helper()
		w := f.do("GET", "/v1/requests/"+id, "")
		if w.Code != http.StatusOK {
			t.Fatalf("get: %d %s", w.Code, w.Body)
		}
		var v struct {
			Position int        `json:"position"`
			ETA      *time.Time `json:"eta"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		return v.Position, v.ETA
	}
	f.sessions.mu.Lock()
	f.sessions.queries = 0
	f.sessions.mu.Unlock()
	if pos, eta := get(ids[2]); pos != 3 || eta == nil {
		t.Errorf("third waiting: position %d, eta %v; want 3 and an eta", pos, eta)
	}
	// What the worker does at a start: the mark, then the started counter.
	if _, err := f.st.Requests.MarkRunning(context.Background(), ids[0], f.userID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Queues.Started(context.Background(), f.userID, 2, time.Now()); err != nil {
		t.Fatal(err)
	}
	if pos, _ := get(ids[2]); pos != 2 {
		t.Errorf("after the first started: position %d, want 2", pos)
	}
	if pos, eta := get(ids[0]); pos != 0 || eta == nil {
		t.Errorf("running: position %d, eta %v; want 0 and an estimated finish", pos, eta)
	}
	f.sessions.mu.Lock()
	defer f.sessions.mu.Unlock()
	if f.sessions.queries != 0 {
		t.Errorf("GET /v1/requests/:id queried the session %d times, want 0", f.sessions.queries)
	}
}

// GET reads the request, then the user's view of their queue; a start in
// between must not make a waiting request show no position (the view's
// "running" estimate is for a request r says still waits).
func TestGetViewOfARequestThatStartedMeanwhileKeepsAPosition(t *testing.T) {
	f := newFixture(t)
	w := f.do("POST", "/v1/requests", `{"type":"echo","payload":{}}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", w.Code, w.Body)
	}
	var sub struct{ ID string }
	if err := json.Unmarshal(w.Body.Bytes(), &sub); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := f.st.Requests.Get(ctx, f.userID, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Requests.MarkRunning(ctx, sub.ID, f.userID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Queues.Started(ctx, f.userID, 2, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := &server{store: f.st, views: events.NewViews(events.Config{Window: etaPlaces}, eventSource{f.st}, 0, 0)}
	v := s.view(ctx, r) // r as read before the start
	if v.Status != models.StatusQueued || v.Position == nil {
		t.Errorf("queued as read, started since: status %s, position %v; want queued with a position", v.Status, v.Position)
	}
}
