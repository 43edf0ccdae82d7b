package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The fake API's fixtures, as raw JSON so --json output can be compared with
// exactly what the server sent.
const (
	fakeEmail    = "admin@example.com"
	fakePassword = "correct horse battery"

	sessionsPage1 = `{"sessions":[
		{"user_id":"u-ada","email":"ada@example.com","workflow_id":"session-u-ada","run_id":"run-1","status":"Running","queue_length":2,"paused":false,"started_at":"2026-05-01T10:00:00Z","closed_at":null},
		{"user_id":"u-bob","email":"bob@example.com","workflow_id":"session-u-bob","run_id":"run-2","status":"Running","queue_length":7,"paused":true,"started_at":"2026-05-01T11:30:00Z","closed_at":null}
	],"next_cursor":"c2"}`
	sessionsPage2 = `{"sessions":[
		{"user_id":"u-cy","email":"cy@example.com","workflow_id":"session-u-cy","run_id":"run-3","status":"Completed","queue_length":0,"paused":false,"started_at":"2026-04-30T08:00:00Z","closed_at":"2026-04-30T09:00:00Z"}
	],"next_cursor":null}`
	sessionsEmpty = `{"sessions":[],"next_cursor":null}`

	sessionAda = `{"user_id":"u-ada","email":"ada@example.com","state":"open","paused":false,"policy":"continue","queue_length":2,
		"queue":[{"id":"r-q1","type":"echo","position":1,"enqueued_at":"2026-05-01T10:01:00Z"},{"id":"r-q2","type":"sleep","position":2,"enqueued_at":"2026-05-01T10:02:00Z","eta":"2030-01-01T00:00:00Z"}],
		"running":{"id":"r-run","type":"http","started_at":"2026-05-01T10:00:30Z"},"processed":41,"failed":3}`
	sessionIdle = `{"user_id":"u-idle","email":"idle@example.com","state":"open","paused":false,"policy":"pause","queue_length":0,"queue":[],"running":null,"processed":5,"failed":0}`

	requestQueued = `{"id":"r-q1","user_id":"u-ada","type":"echo","payload":{"hello":"world"},"status":"queued","position":1,"attempts":0,"result":null,"error":null,"enqueued_at":"2026-05-01T10:01:00Z","started_at":null,"finished_at":null}`
	requestFailed = `{"id":"r-failed","user_id":"u-ada","type":"http","payload":{"method":"GET","url":"http://svc:80/"},"status":"failed","position":null,"attempts":5,"result":null,"error":"503 from svc:80","enqueued_at":"2026-05-01T09:00:00Z","started_at":"2026-05-01T09:00:01Z","finished_at":"2026-05-01T09:01:00Z"}`

	usersPage = `{"users":[
		{"id":"u-ada","email":"ada@example.com","role":"user","disabled":false,"created_at":"2026-04-01T12:00:00Z"},
		{"id":"u-root","email":"admin@example.com","role":"admin","disabled":false,"created_at":"2026-03-01T12:00:00Z"}
	],"next_cursor":null}`

	statsBody = `{"users":12,"requests":{"queued":3,"running":1,"succeeded":1234,"failed":7,"cancelled":2},"sessions":{"open":4,"paused":1}}`
)

// recordedCall is one request the fake API received.
type recordedCall struct {
	Method, Path, Query, Auth, Body string
}

// fakeAPI is an httptest stand-in for the Turnstile API's auth and admin
// routes, with the contract's status codes and error bodies.
type fakeAPI struct {
	mu       sync.Mutex
	access   map[string]string // access token → role
	refresh  map[string]string // live refresh token → role
	issued   int
	calls    []recordedCall
	logins   []map[string]string
	refreshN int
	logoutN  int
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{access: map[string]string{}, refresh: map[string]string{}}
	srv := httptest.NewServer(f.routes())
	t.Cleanup(srv.Close)
	return f, srv
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// issue makes a new token pair for role; the caller holds f.mu.
func (f *fakeAPI) issue(role string) (access, refresh string) {
	f.issued++
	access, refresh = fmt.Sprintf("access-%d", f.issued), fmt.Sprintf("refresh-%d", f.issued)
	f.access[access] = role
	f.refresh[refresh] = role
	return access, refresh
}

// grant adds a token pair for role, as a login would have.
func (f *fakeAPI) grant(access, refresh, role string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if access != "" {
		f.access[access] = role
	}
	if refresh != "" {
		f.refresh[refresh] = role
	}
}

// counters returns what the auth routes saw.
func (f *fakeAPI) counters() (logins []map[string]string, refreshes, logouts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]string(nil), f.logins...), f.refreshN, f.logoutN
}

func (f *fakeAPI) recorded() []recordedCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedCall(nil), f.calls...)
}

func (f *fakeAPI) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.logins = append(f.logins, in)
		if in["email"] != fakeEmail || in["password"] != fakePassword {
			writeError(w, 401, "unauthorized", "email or password is wrong")
			return
		}
		a, rt := f.issue("admin")
		writeRaw(w, 200, fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":900,"refresh_token":%q}`, a, rt))
	})
	mux.HandleFunc("POST /v1/auth/refresh", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.refreshN++
		role, ok := f.refresh[in["refresh_token"]]
		if !ok {
			writeError(w, 401, "unauthorized", "invalid or expired refresh token")
			return
		}
		delete(f.refresh, in["refresh_token"]) // spent
		a, rt := f.issue(role)
		writeRaw(w, 200, fmt.Sprintf(`{"access_token":%q,"token_type":"Bearer","expires_in":900,"refresh_token":%q}`, a, rt))
	})
	mux.HandleFunc("POST /v1/auth/logout", f.authed("user", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.logoutN++
		clear(f.refresh)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))

	admin := func(pattern string, h http.HandlerFunc) { mux.HandleFunc(pattern, f.authed("admin", h)) }
	admin("GET /v1/admin/sessions", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Query().Get("state") == "closed":
			writeRaw(w, 200, sessionsEmpty)
		case r.URL.Query().Get("cursor") == "c2":
			writeRaw(w, 200, sessionsPage2)
		default:
			writeRaw(w, 200, sessionsPage1)
		}
	})
	admin("GET /v1/admin/sessions/{user_id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("user_id") {
		case "u-ada":
			writeRaw(w, 200, sessionAda)
		case "u-idle":
			writeRaw(w, 200, sessionIdle)
		default:
			writeError(w, 404, "not_found", "no such user")
		}
	})
	steer := func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("user_id") {
		case "u-ada":
			body := sessionAda
			if strings.HasSuffix(r.URL.Path, "/pause") {
				body = strings.Replace(body, `"paused":false`, `"paused":true`, 1)
			}
			writeRaw(w, 200, body)
		case "u-idle":
			writeError(w, 409, "no_session", "the user has no running session")
		default:
			writeError(w, 404, "not_found", "no such user")
		}
	}
	admin("POST /v1/admin/sessions/{user_id}/pause", steer)
	admin("POST /v1/admin/sessions/{user_id}/resume", steer)
	admin("POST /v1/admin/sessions/{user_id}/close", steer)
	admin("PUT /v1/admin/sessions/{user_id}/policy", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Policy string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || (in.Policy != "continue" && in.Policy != "pause") {
			writeError(w, 400, "invalid_policy", "policy must be continue or pause")
			return
		}
		writeRaw(w, 200, strings.Replace(sessionAda, `"policy":"continue"`, `"policy":"`+in.Policy+`"`, 1))
	})
	admin("GET /v1/admin/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "r-q1":
			writeRaw(w, 200, requestQueued)
		case "r-failed":
			writeRaw(w, 200, requestFailed)
		case "r-boom":
			writeError(w, 500, "internal", "internal error")
		default:
			writeError(w, 404, "not_found", "no such request")
		}
	})
	admin("POST /v1/admin/requests/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "r-q1":
			writeRaw(w, 200, strings.Replace(strings.Replace(requestQueued, `"queued"`, `"cancelled"`, 1), `"position":1`, `"position":null`, 1))
		case "r-failed":
			writeError(w, 409, "not_queued", "the request is not queued")
		default:
			writeError(w, 404, "not_found", "no such request")
		}
	})
	admin("POST /v1/admin/requests/{id}/requeue", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "r-failed":
			writeRaw(w, 202, strings.Replace(strings.Replace(requestFailed, `"failed"`, `"queued"`, 1), `"position":null`, `"position":3`, 1))
		case "r-q1":
			writeError(w, 409, "not_requeueable", "only a failed or cancelled request can be requeued")
		default:
			writeError(w, 404, "not_found", "no such request")
		}
	})
	admin("GET /v1/admin/users", func(w http.ResponseWriter, r *http.Request) { writeRaw(w, 200, usersPage) })
	setDisabled := func(w http.ResponseWriter, r *http.Request) {
		disabled := strings.HasSuffix(r.URL.Path, "/disable")
		writeRaw(w, 200, fmt.Sprintf(`{"id":%q,"email":"ada@example.com","role":"user","disabled":%t,"created_at":"2026-04-01T12:00:00Z"}`, r.PathValue("id"), disabled))
	}
	admin("POST /v1/admin/users/{id}/disable", setDisabled)
	admin("POST /v1/admin/users/{id}/enable", setDisabled)
	admin("GET /v1/admin/stats", func(w http.ResponseWriter, r *http.Request) { writeRaw(w, 200, statsBody) })

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, recordedCall{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), string(body)})
		f.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		mux.ServeHTTP(w, r)
	})
}

// authed checks the bearer token: 401 without a live one, 403 when the
// route needs admin and the token is a user's.
func (f *fakeAPI) authed(need string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		role, live := f.access[token]
		f.mu.Unlock()
		switch {
		case !ok || !live:
			writeError(w, 401, "unauthorized", "invalid or expired access token")
		case need == "admin" && role != "admin":
			writeError(w, 403, "forbidden", "this route needs the admin role")
		default:
			h(w, r)
		}
	}
}

// env is one isolated tsctl environment: a fake API, a config file in a
// temporary directory and no variables from the real environment.
type env struct {
	t       *testing.T
	api     *fakeAPI
	url     string
	cfgPath string
	vars    map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	api, srv := newFakeAPI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "tsctl.json")
	return &env{t: t, api: api, url: srv.URL, cfgPath: path, vars: map[string]string{"TSCTL_CONFIG": path, "HOME": dir}}
}

// loggedInAs saves a login with the given tokens (the fake knows them as
// role; "" leaves a token unknown to it, as an expired one is).
func (e *env) loggedInAs(access, refresh, role string) {
	e.t.Helper()
	if role != "" {
		e.api.grant(access, refresh, role)
	}
	if err := saveConfig(e.cfgPath, config{API: e.url, Email: fakeEmail, AccessToken: access, RefreshToken: refresh}); err != nil {
		e.t.Fatal(err)
	}
}

// admin logs the env in as an admin with live tokens.
func (e *env) admin() *env {
	e.loggedInAs("admin-access", "admin-refresh", "admin")
	return e
}

func (e *env) run(stdin string, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errOut strings.Builder
	code = run(args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return e.vars[k] })
	return code, out.String(), errOut.String()
}

func (e *env) savedConfig() config {
	e.t.Helper()
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	var cfg config
	if err := json.Unmarshal(b, &cfg); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}
