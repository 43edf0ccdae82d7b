package tests

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/models"
)

// apiInstance is a second API server on the shared backends (MongoDB,
// Temporal, the worker), configured through TURNSTILE_* variables the way
// `turnstile api` is, so its limits can be tight without touching the
// shared server every other test uses.
type apiInstance struct {
	base   string
	routes gin.RoutesInfo
}

// startAPI serves an API whose security settings come from env (read by
// app.FromEnv) and whose connections are the shared stack's.
func startAPI(t *testing.T, env map[string]string) apiInstance {
	t.Helper()
	parsed, err := app.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg := shared.cfg
	cfg.MaxBodyBytes, cfg.MaxQueue, cfg.MaxBatch = parsed.MaxBodyBytes, parsed.MaxQueue, parsed.MaxBatch
	cfg.MaxJSONDepth, cfg.MaxPayloadBytes, cfg.MaxPageSize = parsed.MaxJSONDepth, parsed.MaxPayloadBytes, parsed.MaxPageSize
	cfg.SubmitRate, cfg.SubmitBurst = parsed.SubmitRate, parsed.SubmitBurst
	cfg.AuthRate, cfg.AuthBurst = parsed.AuthRate, parsed.AuthBurst
	cfg.LoginLockoutThreshold, cfg.LoginLockoutBase, cfg.LoginLockoutMax =
		parsed.LoginLockoutThreshold, parsed.LoginLockoutBase, parsed.LoginLockoutMax
	cfg.TrustedProxies = parsed.TrustedProxies
	srv, err := app.NewAPIServer(cfg, shared.backends, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	router, ok := srv.Handler.(interface{ Routes() gin.RoutesInfo })
	if !ok {
		t.Fatalf("the API handler (%T) no longer exposes its routes; the route walk needs them", srv.Handler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return apiInstance{base: "http://" + ln.Addr().String(), routes: router.Routes()}
}

// userAt registers and logs in a fresh user at base, keeping the refresh
// token in refresh.
func userAt(t *testing.T, base string) (c *client, refresh string) {
	t.Helper()
	c = &client{t: t, base: base}
	c.email = fmt.Sprintf("sec%d-%d@example.com", time.Now().UnixNano(), userSeq.Add(1))
	var reg struct{ ID string }
	c.mustDo("POST", "/v1/auth/register", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 201, &reg)
	c.userID = reg.ID
	var pair struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	c.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 200, &pair)
	c.token = pair.AccessToken
	return c, pair.RefreshToken
}

// asToken is a copy of c that authenticates with token.
func (c *client) asToken(t *testing.T, token string) *client {
	cl := *c
	cl.t, cl.token = t, token
	return &cl
}

func TestSecurity_AccessTokensAreVerifiedOnEveryCall(t *testing.T) {
	c, refresh := userAt(t, shared.base)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(edit func(*auth.Claims)) auth.Claims {
		cl := auth.Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: shared.cfg.JWTIssuer, Subject: c.userID, Audience: jwt.ClaimStrings{shared.cfg.JWTAudience},
				ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
				IssuedAt: jwt.NewNumericDate(now.Add(-time.Second)), ID: "jti",
			},
			Type: auth.TokenTypeAccess, Role: models.RoleUser,
		}
		if edit != nil {
			edit(&cl)
		}
		return cl
	}
	sign := func(m jwt.SigningMethod, key any, cl auth.Claims) string {
		s, err := jwt.NewWithClaims(m, cl).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs := func(edit func(*auth.Claims)) string { return sign(jwt.SigningMethodHS256, testJWTKey, claims(edit)) }

	// The control: the same construction, unmodified, is accepted.
	c.asToken(t, hs(nil)).mustDo("GET", "/v1/session", nil, 200, nil)

	for _, tc := range []struct {
		name  string
		token string
	}{
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))},
		{"alg HS384 with the right key", sign(jwt.SigningMethodHS384, testJWTKey, claims(nil))},
		{"alg HS512 with the right key", sign(jwt.SigningMethodHS512, testJWTKey, claims(nil))},
		{"alg RS256", sign(jwt.SigningMethodRS256, rsaKey, claims(nil))},
		{"another key", sign(jwt.SigningMethodHS256, []byte("another-key-another-key-another-key!"), claims(nil))},
		{"wrong iss", hs(func(c *auth.Claims) { c.Issuer = "evil" })},
		{"no iss", hs(func(c *auth.Claims) { c.Issuer = "" })},
		{"wrong aud", hs(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other-api"} })},
		{"no aud", hs(func(c *auth.Claims) { c.Audience = nil })},
		{"typ refresh", hs(func(c *auth.Claims) { c.Type = "refresh" })},
		{"no typ", hs(func(c *auth.Claims) { c.Type = "" })},
		{"missing exp", hs(func(c *auth.Claims) { c.ExpiresAt = nil })},
		{"expired", hs(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) })},
		{"not yet valid", hs(func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) })},
		{"issued in the future", hs(func(c *auth.Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour)) })},
		{"no sub", hs(func(c *auth.Claims) { c.Subject = "" })},
		{"sub of no user", hs(func(c *auth.Claims) { c.Subject = "01a21944-c3be-70d4-b79a-c7c2870ba14c" })},
		{"unknown role", hs(func(c *auth.Claims) { c.Role = "root" })},
		{"refresh token used as access token", refresh},
		{"tampered payload", func() string {
			good := strings.Split(hs(nil), ".")
			admin := strings.Split(hs(func(c *auth.Claims) { c.Role = models.RoleAdmin }), ".")
			return good[0] + "." + admin[1] + "." + good[2]
		}()},
		{"signature stripped", strings.Join(strings.Split(hs(nil), ".")[:2], ".") + "."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := c.asToken(t, tc.token)
			for _, call := range []struct {
				method, path string
				body         any
			}{{"GET", "/v1/session", nil}, {"POST", "/v1/requests", map[string]any{"type": "echo"}}, {"GET", "/v1/admin/stats", nil}} {
				r := cl.do(call.method, call.path, call.body)
				if r.status != http.StatusUnauthorized || r.errorCode() != "unauthorized" ||
					!strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: %d %s (WWW-Authenticate %q)", call.method, call.path, r.status, r.body, r.header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	if got := c.list(""); len(got) != 0 {
		t.Fatalf("rejected tokens recorded %d requests", len(got))
	}
	// An access token is no refresh token either.
	anon := &client{t: t, base: shared.base}
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": c.token}); r.status != 401 {
		t.Fatalf("access token accepted as a refresh token: %d %s", r.status, r.body)
	}
}

func TestSecurity_RefreshReuseRevokesOnlyItsFamilyAndLogoutRevokesAll(t *testing.T) {
	c, first := userAt(t, shared.base)
	anon := &client{t: t, base: shared.base}
	var other struct {
		RefreshToken string `json:"refresh_token"`
	}
	anon.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 200, &other)

	var pair struct {
		RefreshToken string `json:"refresh_token"`
	}
	anon.mustDo("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first}, 200, &pair)
	second := pair.RefreshToken
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first}); r.status != 401 {
		t.Fatalf("reuse of a spent token: %d %s", r.status, r.body)
	}
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": second}); r.status != 401 {
		t.Fatalf("the family survived a reuse: %d %s", r.status, r.body)
	}
	// The other login (its own family) is untouched by the reuse...
	anon.mustDo("POST", "/v1/auth/refresh", map[string]string{"refresh_token": other.RefreshToken}, 200, &pair)
	// ...until logout, which revokes every family of the user.
	c.mustDo("POST", "/v1/auth/logout", nil, 204, nil)
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken}); r.status != 401 {
		t.Fatalf("refresh after logout: %d %s", r.status, r.body)
	}
}

func TestSecurity_DisableRevokesRefreshTokensForGood(t *testing.T) {
	admin := newAdmin(t)
	u, refresh := userAt(t, shared.base)
	anon := &client{t: t, base: shared.base}
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/disable", nil, 200, nil)
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": refresh}); r.status != 401 {
		t.Fatalf("disabled user's refresh: %d %s", r.status, r.body)
	}
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/enable", nil, 200, nil)
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": refresh}); r.status != 401 {
		t.Fatalf("re-enabling revived a revoked refresh token: %d %s", r.status, r.body)
	}
	anon.mustDo("POST", "/v1/auth/login", map[string]string{"email": u.email, "password": "s3cret-passw0rd"}, 200, nil)
}

// routeCase says how the route walk exercises one route.
type routeCase struct {
	access string // "public", "user" or "admin"
	// body is a valid body for a route that reads one (mass assignment is
	// tried on top of it); nil for routes that read none.
	// Admin routes decode their body only for an admin, so their mass
	// assignment is tried as one.
	body map[string]any
	// check runs a route-specific BOLA check as alice against bob's data.
	check func(t *testing.T, w *walk, path string)
}

// walk is the cast of the route walk: alice tries everything against bob.
type walk struct {
	alice, bob, admin *client
	bobRefresh        string
	bobQueued         string // bob's request, kept queued
	bobSecret         string // in bob's payload
}

// routeCases lists every route of the API. The walk fails on a route that
// is missing here, so a new route cannot escape it.
var routeCases = map[string]routeCase{
	"GET /":                  {access: "public"},
	"GET /web/*file":         {access: "public"},
	"GET /healthz":           {access: "public"},
	"GET /readyz":            {access: "public"},
	"GET /openapi.yaml":      {access: "public"},
	"GET /metrics":           {access: "public"},
	"POST /v1/auth/register": {access: "public", body: map[string]any{"email": "", "password": "long enough pw"}},
	"POST /v1/auth/login":    {access: "public", body: map[string]any{"email": "", "password": "s3cret-passw0rd"}},
	"POST /v1/auth/refresh":  {access: "public", body: map[string]any{"refresh_token": ""}},

	"POST /v1/auth/logout": {access: "user", check: func(t *testing.T, w *walk, path string) {
		// Carol, not alice (the walk goes on with alice's token), logs out
		// naming bob: her own access token ends at once, bob's session
		// is untouched.
		carol := newUser(t)
		carol.base = w.bob.base
		carol.mustDo("POST", path, map[string]any{"user_id": w.bob.userID}, 204, nil)
		if r := carol.do("GET", "/v1/session", nil); r.status != 401 {
			t.Errorf("carol's access token after her logout: %d", r.status)
		}
		w.bob.mustDo("GET", "/v1/session", nil, 200, nil)
		anon := &client{t: t, base: w.bob.base}
		var pair struct {
			RefreshToken string `json:"refresh_token"`
		}
		anon.mustDo("POST", "/v1/auth/refresh", map[string]string{"refresh_token": w.bobRefresh}, 200, &pair)
		w.bobRefresh = pair.RefreshToken
	}},
	"POST /v1/requests": {access: "user", body: map[string]any{"type": "echo", "payload": "alice"}, check: func(t *testing.T, w *walk, path string) {
		var r request
		w.alice.mustDo("POST", path, map[string]any{"type": "echo", "payload": "alice"}, 202, &r)
		if got := w.bob.do("GET", "/v1/requests/"+r.ID, nil); got.status != 404 {
			t.Errorf("alice's submission is visible to bob: %d", got.status)
		}
	}},
	"POST /v1/requests/batch": {access: "user", body: map[string]any{"requests": []any{map[string]any{"type": "echo"}}}},
	"GET /v1/requests": {access: "user", check: func(t *testing.T, w *walk, path string) {
		for _, q := range []string{"", "?user_id=" + w.bob.userID, "?owner=" + w.bob.userID + "&status=queued"} {
			r := w.alice.mustDo("GET", path+q, nil, 200, nil)
			w.noLeak(t, "GET "+path+q, r)
		}
	}},
	"GET /v1/requests/:id":    {access: "user"},
	"DELETE /v1/requests/:id": {access: "user"},
	"POST /v1/requests/:id/requeue": {access: "user", check: func(t *testing.T, w *walk, path string) {
		r := w.alice.do("POST", path, nil)
		if r.status != 404 {
			t.Errorf("alice requeueing bob's request: %d %s", r.status, r.body)
		}
		w.noLeak(t, "POST "+path, r)
	}},
	"GET /v1/types": {access: "user"},
	"GET /v1/session": {access: "user", check: func(t *testing.T, w *walk, path string) {
		var st models.SessionState
		r := w.alice.mustDo("GET", path+"?user_id="+w.bob.userID, nil, 200, &st)
		if st.UserID != w.alice.userID {
			t.Errorf("alice's session view is of %q", st.UserID)
		}
		w.noLeak(t, "GET "+path, r)
	}},
	"GET /v1/events": {access: "user", check: func(t *testing.T, w *walk, _ string) {
		// A second of alice's stream names nothing of bob's (his request waits).
		a := w.alice.asToken(t, w.alice.token)
		st := a.openStream("")
		deadline := time.After(time.Second)
		for {
			select {
			case e, ok := <-st.events:
				if !ok {
					t.Fatal("alice's stream ended")
				}
				w.noLeak(t, "GET /v1/events "+e.kind, response{body: e.data})
				continue
			case <-deadline:
			}
			break
		}
		st.close()
	}},
	"DELETE /v1/session": {access: "user", check: func(t *testing.T, w *walk, path string) {
		r := w.alice.mustDo("DELETE", path+"?user_id="+w.bob.userID, nil, 202, nil)
		w.noLeak(t, "DELETE "+path, r)
	}},

	"GET /v1/admin/sessions":                  {access: "admin"},
	"GET /v1/admin/sessions/:user_id":         {access: "admin"},
	"POST /v1/admin/sessions/:user_id/pause":  {access: "admin"},
	"POST /v1/admin/sessions/:user_id/resume": {access: "admin"},
	"POST /v1/admin/sessions/:user_id/close":  {access: "admin"},
	"PUT /v1/admin/sessions/:user_id/policy":  {access: "admin", body: map[string]any{"policy": "continue"}},
	"GET /v1/admin/requests/:id":              {access: "admin"},
	"POST /v1/admin/requests/:id/cancel":      {access: "admin"},
	"POST /v1/admin/requests/:id/requeue":     {access: "admin"},
	"GET /v1/admin/users":                     {access: "admin"},
	"POST /v1/admin/users/:id/disable":        {access: "admin"},
	"POST /v1/admin/users/:id/enable":         {access: "admin"},
	"GET /v1/admin/stats":                     {access: "admin"},
}

// noLeak fails if r mentions anything of bob's.
func (w *walk) noLeak(t *testing.T, what string, r response) {
	t.Helper()
	for _, s := range []string{w.bob.userID, w.bobQueued, w.bobSecret, w.bob.email} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("%s as alice shows bob's %q: %s", what, s, r.body)
		}
	}
}

// fill puts bob's IDs into a route's parameters.
func (w *walk) fill(path string) string {
	path = strings.ReplaceAll(path, ":user_id", w.bob.userID)
	if strings.Contains(path, "/users/") {
		return strings.ReplaceAll(path, ":id", w.bob.userID)
	}
	return strings.ReplaceAll(path, ":id", w.bobQueued)
}

// massAssignmentFields are fields a client must never set.
var massAssignmentFields = map[string]any{
	"user_id": "someone", "owner": "someone", "owner_id": "someone", "status": "succeeded",
	"attempts": 0, "role": "admin", "id": "01a21944-c3be-70d4-b79a-c7c2870ba14c", "disabled": false,
	"result": "forged", "enqueued_at": "2020-01-01T00:00:00Z",
}

func TestSecurity_RouteWalk_BOLA_BFLA_AndMassAssignment(t *testing.T) {
	inst := startAPI(t, nil)
	alice, _ := userAt(t, inst.base)
	bob, bobRefresh := userAt(t, inst.base)
	admin := newAdmin(t)
	admin.base = inst.base
	w := &walk{alice: alice, bob: bob, admin: admin, bobRefresh: bobRefresh, bobSecret: "bob-secret-" + bob.userID[:8]}

	// Bob's session is paused by the operator, so his request stays queued
	// while alice tries to read, cancel and steer it.
	pauseSession(t, admin, bob)
	w.bobQueued = bob.submit("echo", w.bobSecret).ID

	seen := map[string]bool{}
	var keys []string
	for _, rt := range inst.routes {
		keys = append(keys, rt.Method+" "+rt.Path)
	}
	sort.Strings(keys)
	for _, key := range keys {
		seen[key] = true
		rc, ok := routeCases[key]
		if !ok {
			t.Errorf("route %s has no entry in routeCases: decide who may call it and how the walk checks it", key)
			continue
		}
		method, path, _ := strings.Cut(key, " ")
		filled := w.fill(path)
		t.Run(key, func(t *testing.T) {
			anon := &client{t: t, base: inst.base}
			al := alice.asToken(t, alice.token)
			switch rc.access {
			case "user", "admin":
				if r := anon.do(method, filled, rc.body); r.status != 401 {
					t.Errorf("anonymous: %d %s", r.status, r.body)
				}
			}
			switch {
			case rc.access == "admin":
				// BFLA: a user gets 403 on every admin route, even with
				// a valid body, and learns nothing.
				if r := al.do(method, filled, rc.body); r.status != 403 || r.errorCode() != "forbidden" {
					t.Errorf("user on an admin route: %d %s", r.status, r.body)
				} else {
					w.noLeak(t, key, r)
				}
			case rc.check != nil:
				rc.check(t, &walk{alice: al, bob: bob, admin: admin, bobRefresh: w.bobRefresh, bobQueued: w.bobQueued, bobSecret: w.bobSecret}, filled)
			case strings.Contains(path, ":id"):
				// BOLA: bob's request is "not found" to alice, exactly like
				// a request that does not exist.
				r := al.do(method, filled, rc.body)
				missing := al.do(method, strings.ReplaceAll(path, ":id", "01a21944-c3be-70d4-b79a-c7c2870ba14c"), rc.body)
				if r.status != 404 || r.errorCode() != "not_found" || string(r.body) != string(missing.body) {
					t.Errorf("alice on bob's request: %d %s (a missing one: %d %s)", r.status, r.body, missing.status, missing.body)
				}
			}
			// Mass assignment: every body-taking route refuses every field
			// the client does not own, top level and in batch items.
			if rc.body != nil {
				caller := al
				if rc.access == "admin" {
					caller = admin.asToken(t, admin.token)
				}
				for field, value := range massAssignmentFields {
					body := map[string]any{field: value}
					for k, v := range rc.body {
						body[k] = v
					}
					if items, ok := body["requests"].([]any); ok && field != "requests" {
						body = map[string]any{"requests": []any{items[0], map[string]any{"type": "echo", field: value}}}
					}
					if r := caller.do(method, filled, body); r.status != 400 || r.errorCode() != "bad_json" {
						t.Errorf("body with %q: %d %s", field, r.status, r.body)
					}
				}
			}
		})
	}
	for key := range routeCases {
		if !seen[key] {
			t.Errorf("routeCases lists %s, which the API no longer has", key)
		}
	}

	// Nothing alice or the mass assignments did touched bob or his data.
	if r := bob.get(w.bobQueued); r.Status != "queued" || r.Attempts != 0 {
		t.Fatalf("bob's queued request after the walk: %+v", r)
	}
	var st models.SessionState
	bob.mustDo("GET", "/v1/session", nil, 200, &st) // also: bob is not disabled
	if !st.Paused || st.State != models.SessionOpen || st.QueueLength != 1 || st.Policy != models.PolicyContinue {
		t.Fatalf("bob's session after the walk: %+v", st)
	}
	if r := alice.do("GET", "/v1/admin/stats", nil); r.status != 403 {
		t.Fatalf("alice gained admin: %d", r.status)
	}
	anon := &client{t: t, base: inst.base}
	if r := anon.do("POST", "/v1/auth/login", map[string]string{"email": "", "password": "long enough pw"}); r.status != 401 {
		t.Fatalf("a mass-assigned registration created an account: %d %s", r.status, r.body)
	}
	for _, r := range alice.list("") {
		if r.Status != "queued" && r.Status != "running" && r.Status != "succeeded" {
			t.Fatalf("alice's request got a status she set: %+v", r)
		}
	}
}

func TestSecurity_LoginLockoutAndAuthRateLimitThroughTheRealServer(t *testing.T) {
	inst := startAPI(t, map[string]string{
		"TURNSTILE_LOGIN_LOCKOUT_THRESHOLD": "3",
		"TURNSTILE_LOGIN_LOCKOUT_BASE":      "1m",
		"TURNSTILE_AUTH_BURST":              "12",
		"TURNSTILE_AUTH_RATE":               "1",
	})
	victim, _ := userAt(t, inst.base) // 2 auth calls
	anon := &client{t: t, base: inst.base}
	wrong := map[string]string{"email": victim.email, "password": "not-the-password"}
	for range 3 {
		if r := anon.do("POST", "/v1/auth/login", wrong); r.status != 401 {
			t.Fatalf("failed login: %d %s", r.status, r.body)
		}
	}
	r := anon.do("POST", "/v1/auth/login", map[string]string{"email": victim.email, "password": "s3cret-passw0rd"})
	if r.status != 429 || r.errorCode() != "login_locked" || r.header.Get("Retry-After") != "60" {
		t.Fatalf("locked account: %d %s Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"))
	}
	// Unknown accounts lock the same way: the answer tells nothing.
	ghost := map[string]string{"email": "ghost-" + victim.email, "password": "not-the-password"}
	for range 3 {
		anon.do("POST", "/v1/auth/login", ghost)
	}
	if g := anon.do("POST", "/v1/auth/login", ghost); g.status != 429 || string(g.body) != string(r.body) {
		t.Fatalf("unknown account: %d %s, known: %s", g.status, g.body, r.body)
	}
	// 2 + 4 + 4 calls so far; the burst of 12 leaves two.
	anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": "x"})
	anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": "x"})
	if r := anon.do("POST", "/v1/auth/register", map[string]string{"email": "late@example.com", "password": "long enough pw"}); r.status != 429 ||
		r.errorCode() != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("past the per-IP auth burst: %d %s", r.status, r.body)
	}
}

func TestSecurity_ResourceLimitsAreConfigurableEndToEnd(t *testing.T) {
	inst := startAPI(t, map[string]string{
		"TURNSTILE_MAX_JSON_DEPTH":    "5",
		"TURNSTILE_MAX_PAYLOAD_BYTES": "64",
		"TURNSTILE_MAX_PAGE_SIZE":     "3",
		"TURNSTILE_MAX_BATCH":         "2",
		"TURNSTILE_MAX_QUEUE":         "4",
		"TURNSTILE_MAX_BODY_BYTES":    "1024",
		"TURNSTILE_SUBMIT_BURST":      "8",
		"TURNSTILE_SUBMIT_RATE":       "1",
	})
	c, _ := userAt(t, inst.base)
	// A paused session, so what follows stays queued and counts.
	pauseSession(t, newAdmin(t), c)
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		status int
		code   string
	}{
		{"depth over 5", "POST", "/v1/requests", `{"type":"echo","payload":[[[[[1]]]]]}`, 400, "too_deep"},
		{"payload over 64 bytes", "POST", "/v1/requests", `{"type":"echo","payload":"` + strings.Repeat("p", 70) + `"}`, 413, "payload_too_large"},
		{"body over 1024 bytes", "POST", "/v1/requests", `{"type":"echo","payload":"` + strings.Repeat("b", 1100) + `"}`, 413, "too_large"},
		{"page over 3", "GET", "/v1/requests?limit=4", ``, 400, "invalid_limit"},
		{"batch over 2", "POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"},{"type":"echo"}]}`, 400, "invalid_batch"},
		{"fill the batch", "POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`, 202, ""},
		{"fill the queue", "POST", "/v1/requests/batch", `{"requests":[{"type":"echo"},{"type":"echo"}]}`, 202, ""},
		{"queue over 4", "POST", "/v1/requests", `{"type":"echo"}`, 429, "queue_full"},
		// 7 submission calls above spent 7 of the burst of 8 (the
		// oversized body never reached the handler); a few more run out.
		{"submission rate", "POST", "/v1/requests", `{"type":"echo"}`, 429, "rate_limited"},
	} {
		r := c.do(tc.method, tc.path, tc.body)
		if tc.name == "submission rate" {
			for i := 0; i < 20 && r.errorCode() == "queue_full"; i++ {
				r = c.do(tc.method, tc.path, tc.body)
			}
		}
		if r.status != tc.status || r.errorCode() != tc.code {
			t.Errorf("%s: %d %s, want %d %q", tc.name, r.status, r.body, tc.status, tc.code)
		}
		if r.status == 429 && r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 429 without Retry-After", tc.name)
		}
	}
	var page struct{ Requests []request }
	c.mustDo("GET", "/v1/requests", nil, 200, &page)
	if len(page.Requests) != 3 {
		t.Fatalf("default page under a max of 3 holds %d", len(page.Requests))
	}
	// The shared API (page size 100) lists them: exactly the 4 accepted.
	if n := len(c.asBase(t, shared.base).list("&status=queued")); n != 4 {
		t.Fatalf("%d queued, want 4", n)
	}
}

// pauseSession opens u's session with one finished request and has admin
// pause it, so u's next requests stay queued. Cleanup cancels them and
// closes the session.
func pauseSession(t *testing.T, admin, u *client) {
	t.Helper()
	a := admin.asBase(t, shared.base)
	uu := u.asBase(t, shared.base)
	uu.waitFinal(uu.submit("echo", "opens the session").ID)
	a.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/pause", nil, 200, nil)
	t.Cleanup(func() {
		for _, r := range uu.list("&status=queued") {
			uu.do("DELETE", "/v1/requests/"+r.ID, nil)
		}
		a.do("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil)
		a.do("POST", "/v1/admin/sessions/"+u.userID+"/close", nil)
	})
}

// asBase is a copy of c that talks to the API at base.
func (c *client) asBase(t *testing.T, base string) *client {
	cl := *c
	cl.t, cl.base = t, base
	return &cl
}
