package tests

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/models"
)

func (c *client) sinkPayload(seq, sleepMS int) map[string]any {
	return map[string]any{
		"method": "POST",
		"url":    shared.sink.URL + "/work",
		"body":   sinkCall{User: c.userID, Seq: seq, SleepMS: sleepMS},
	}
}

func TestE2E_EachUsersRequestsRunInSubmissionOrderWithoutOverlap(t *testing.T) {
	const users, perUser = 4, 8
	cs := make([]*client, users)
	for i := range cs {
		cs[i] = newUser(t)
	}
	ids := make([][]string, users)
	// Interleave the users' submissions; each 202 comes before the next
	// submission, so submission order is the order every user must see.
	for seq := range perUser {
		for u, c := range cs {
			var r request
			if seq%3 == 2 {
				r = c.submit("echo", map[string]int{"seq": seq})
			} else {
				r = c.submit("http", c.sinkPayload(seq, 15))
			}
			ids[u] = append(ids[u], r.ID)
		}
	}
	for u, c := range cs {
		done := c.waitFinal(ids[u]...)
		var wantSink []int
		for seq, r := range done {
			if r.Status != "succeeded" || r.Attempts != 1 {
				t.Fatalf("user %d request %d: %+v (error %v)", u, seq, r, r.Error)
			}
			if seq > 0 && r.StartedAt.Before(*done[seq-1].FinishedAt) {
				t.Fatalf("user %d: request %d started at %v before request %d finished at %v",
					u, seq, r.StartedAt, seq-1, done[seq-1].FinishedAt)
			}
			if seq%3 != 2 {
				wantSink = append(wantSink, seq)
			}
		}
		order, overlaps := shared.sink.report(c.userID)
		if fmt.Sprint(order) != fmt.Sprint(wantSink) || overlaps != 0 {
			t.Fatalf("user %d: sink saw order %v with %d overlaps, want %v and none", u, order, overlaps, wantSink)
		}
	}
	// Different users did run in parallel: the total time is far below the
	// serial sum would be only if sessions overlapped; we only assert that
	// every session is visible to Temporal with its UserId attribute.
	for _, c := range cs {
		var st models.SessionState
		c.mustDo("GET", "/v1/session", nil, 200, &st)
		if st.UserID != c.userID || st.Processed != perUser {
			t.Fatalf("session of %s: %+v", c.userID, st)
		}
	}
}

func TestE2E_AnotherUsersRequestIsNotFound(t *testing.T) {
	alice, bob := newUser(t), newUser(t)
	r := alice.submit("echo", "secret of alice")
	alice.waitFinal(r.ID)
	for _, m := range []string{"GET", "DELETE"} {
		resp := bob.do(m, "/v1/requests/"+r.ID, nil)
		if resp.status != 404 || resp.errorCode() != "not_found" || strings.Contains(string(resp.body), "alice") {
			t.Fatalf("bob %s alice's request: %d %s", m, resp.status, resp.body)
		}
	}
	if got := bob.list(""); len(got) != 0 {
		t.Fatalf("bob lists %d requests, want 0", len(got))
	}
	if got := alice.get(r.ID); got.Status != "succeeded" {
		t.Fatalf("alice's request after bob's attempts: %+v", got)
	}
}

func TestE2E_BadInputGetsClear4xxAndChangesNothing(t *testing.T) {
	c := newUser(t)
	other := newUser(t)
	forged := &auth.Tokens{Key: []byte("another-key-of-32-bytes-or-more!!!"), Issuer: "turnstile", Audience: "turnstile-api", TTL: time.Minute}
	forgedToken, _, err := forged.Issue(c.userID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	expired := &auth.Tokens{Key: testJWTKey, Issuer: "turnstile", Audience: "turnstile-api", TTL: time.Minute,
		Now: func() time.Time { return time.Now().Add(-time.Hour) }}
	expiredToken, _, err := expired.Issue(c.userID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"type":"echo","payload":"` + strings.Repeat("x", 20<<10) + `"}`

	cases := []struct {
		name     string
		method   string
		path     string
		body     any
		headers  []string
		status   int
		code     string
		noBearer bool
	}{
		{name: "malformed JSON", method: "POST", path: "/v1/requests", body: `{"type":"echo",`, status: 400, code: "bad_json"},
		{name: "empty body", method: "POST", path: "/v1/requests", body: ``, status: 400, code: "bad_json"},
		{name: "two JSON values", method: "POST", path: "/v1/requests", body: `{"type":"echo"}{"type":"echo"}`, status: 400, code: "bad_json"},
		{name: "unknown type", method: "POST", path: "/v1/requests", body: `{"type":"rm-rf","payload":{}}`, status: 400, code: "unknown_type"},
		{name: "missing type", method: "POST", path: "/v1/requests", body: `{"payload":{}}`, status: 400, code: "invalid_type"},
		{name: "client sets status", method: "POST", path: "/v1/requests", body: `{"type":"echo","status":"succeeded"}`, status: 400, code: "bad_json"},
		{name: "client sets owner", method: "POST", path: "/v1/requests", body: `{"type":"echo","user_id":"` + other.userID + `"}`, status: 400, code: "bad_json"},
		{name: "bad sleep payload", method: "POST", path: "/v1/requests", body: `{"type":"sleep","payload":{"ms":-5}}`, status: 400, code: "invalid_payload"},
		{name: "http host not allowlisted", method: "POST", path: "/v1/requests", body: `{"type":"http","payload":{"url":"http://169.254.169.254/latest"}}`, status: 400, code: "invalid_payload"},
		{name: "oversized body", method: "POST", path: "/v1/requests", body: big, status: 413, code: "too_large"},
		{name: "empty batch", method: "POST", path: "/v1/requests/batch", body: `{"requests":[]}`, status: 400, code: "invalid_batch"},
		{name: "batch with one bad item", method: "POST", path: "/v1/requests/batch", body: `{"requests":[{"type":"echo"},{"type":"nope"}]}`, status: 400, code: "unknown_type"},
		{name: "bad idempotency key", method: "POST", path: "/v1/requests", body: `{"type":"echo"}`, headers: []string{"Idempotency-Key", "has space"}, status: 400, code: "invalid_idempotency_key"},
		{name: "bad status filter", method: "GET", path: "/v1/requests?status=done", status: 400, code: "invalid_status"},
		{name: "bad limit", method: "GET", path: "/v1/requests?limit=100000", status: 400, code: "invalid_limit"},
		{name: "bad cursor", method: "GET", path: "/v1/requests?cursor=bm90LWEtdXVpZA", status: 400, code: "invalid_cursor"},
		{name: "missing token", method: "POST", path: "/v1/requests", body: `{"type":"echo"}`, noBearer: true, status: 401, code: "unauthorized"},
		{name: "not bearer", method: "POST", path: "/v1/requests", body: `{"type":"echo"}`, headers: []string{"Authorization", "Basic dXNlcjpwYXNz"}, status: 401, code: "unauthorized"},
		{name: "forged token", method: "POST", path: "/v1/requests", body: `{"type":"echo"}`, headers: []string{"Authorization", "Bearer " + forgedToken}, status: 401, code: "unauthorized"},
		{name: "expired token", method: "POST", path: "/v1/requests", body: `{"type":"echo"}`, headers: []string{"Authorization", "Bearer " + expiredToken}, status: 401, code: "unauthorized"},
		{name: "garbage token", method: "GET", path: "/v1/session", headers: []string{"Authorization", "Bearer a.b.c"}, status: 401, code: "unauthorized"},
		{name: "unknown route", method: "GET", path: "/v1/nope", status: 404, code: "not_found"},
		{name: "wrong method", method: "PUT", path: "/v1/requests", body: `{}`, status: 405, code: "method_not_allowed"},
		{name: "register bad email", method: "POST", path: "/v1/auth/register", body: `{"email":"not-an-email","password":"long enough pw"}`, status: 400, code: "invalid_email"},
		{name: "register short password", method: "POST", path: "/v1/auth/register", body: `{"email":"short@example.com","password":"x"}`, status: 400, code: "invalid_password"},
		{name: "register as admin", method: "POST", path: "/v1/auth/register", body: `{"email":"sneaky@example.com","password":"long enough pw","role":"admin"}`, status: 400, code: "bad_json"},
		{name: "register taken email", method: "POST", path: "/v1/auth/register", body: `{"email":"` + strings.ToUpper(c.email) + `","password":"long enough pw"}`, status: 409, code: "email_taken"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := *c
			cl.t = t
			if tc.noBearer {
				cl.token = ""
			}
			r := cl.do(tc.method, tc.path, tc.body, tc.headers...)
			if r.status != tc.status || r.errorCode() != tc.code {
				t.Fatalf("got %d %s, want %d with code %q", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	// Nothing changed: no request recorded, no session opened, and the
	// forged and expired tokens' owner still has nothing.
	if got := c.list(""); len(got) != 0 {
		t.Fatalf("%d requests recorded after bad input: %+v", len(got), got)
	}
	var st models.SessionState
	c.mustDo("GET", "/v1/session", nil, 200, &st)
	if st.State != models.SessionClosed {
		t.Fatalf("a session was opened by bad input: %+v", st)
	}
	anon := &client{t: t, base: shared.base}
	if r := anon.do("POST", "/v1/auth/login", map[string]string{"email": "sneaky@example.com", "password": "long enough pw"}); r.status != 401 {
		t.Fatalf("the rejected admin registration created an account: %d %s", r.status, r.body)
	}
}

func TestE2E_QueueCapAnswers429WithRetryAfter(t *testing.T) {
	c := newUser(t)
	blocker := c.submit("sleep", map[string]int{"ms": 3000})
	c.waitStatus(blocker.ID, "running") // the cap counts waiting requests
	items := make([]map[string]any, shared.cfg.MaxQueue)
	for i := range items {
		items[i] = map[string]any{"type": "echo", "payload": i}
	}
	var batch struct{ Requests []request }
	c.mustDo("POST", "/v1/requests/batch", map[string]any{"requests": items[:shared.cfg.MaxQueue-1]}, 202, &batch)
	r := c.do("POST", "/v1/requests", map[string]any{"type": "echo"})
	if r.status != 202 {
		t.Fatalf("filling the last slot: %d %s", r.status, r.body)
	}
	r = c.do("POST", "/v1/requests", map[string]any{"type": "echo"})
	if r.status != 429 || r.errorCode() != "queue_full" || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the cap: %d %s Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"))
	}
	if n := len(c.list("&status=queued")); n != shared.cfg.MaxQueue {
		t.Fatalf("%d queued, want %d", n, shared.cfg.MaxQueue)
	}
	c.waitFinal(blocker.ID)
}

func TestE2E_IdempotentResubmissionReturnsTheSameRequest(t *testing.T) {
	c := newUser(t)
	first := c.submit("http", c.sinkPayload(1, 0), "Idempotency-Key", "order-42")
	again := c.submit2xx("http", c.sinkPayload(1, 0), "Idempotency-Key", "order-42")
	if again.ID != first.ID {
		t.Fatalf("same key gave a second request: %s vs %s", again.ID, first.ID)
	}
	r := c.do("POST", "/v1/requests", map[string]any{"type": "echo", "payload": "different"}, "Idempotency-Key", "order-42")
	if r.status != 409 || r.errorCode() != "idempotency_key_reused" {
		t.Fatalf("same key, different body: %d %s", r.status, r.body)
	}
	// Concurrent resubmissions of one key all get one request.
	var wg sync.WaitGroup
	got := make([]string, 10)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := *c
			cl.t = t
			r := cl.do("POST", "/v1/requests", map[string]any{"type": "echo", "payload": "once"}, "Idempotency-Key", "burst-1")
			var v request
			if r.status == 202 {
				_ = json.Unmarshal(r.body, &v)
			}
			got[i] = fmt.Sprintf("%d:%s", r.status, v.ID)
		}()
	}
	wg.Wait()
	for _, g := range got[1:] {
		if g != got[0] || !strings.HasPrefix(g, "202:") {
			t.Fatalf("concurrent resubmissions: %v", got)
		}
	}
	c.waitFinal(first.ID)
	if n := len(c.list("")); n != 2 {
		t.Fatalf("%d requests recorded, want 2", n)
	}
	if n := shared.sink.calls(first.ID); n != 1 {
		t.Fatalf("sink called %d times with the request's key, want 1", n)
	}
	// After it finished, the key still answers with the same request.
	if again := c.submit2xx("http", c.sinkPayload(1, 0), "Idempotency-Key", "order-42"); again.ID != first.ID || again.Status != "succeeded" {
		t.Fatalf("resubmission after completion: %+v", again)
	}
}

// waitStatus polls until request id has the status.
func (c *client) waitStatus(id, status string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.get(id).Status != status {
		if time.Now().After(deadline) {
			c.t.Fatalf("request %s never became %s", id, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// submit2xx is submit for a replay, whose status need not be queued.
func (c *client) submit2xx(typ string, payload any, headers ...string) request {
	c.t.Helper()
	var r request
	c.mustDo("POST", "/v1/requests", map[string]any{"type": typ, "payload": payload}, 202, &r, headers...)
	return r
}

func TestE2E_RetriesThenFailureAndTheQueueMovesOn(t *testing.T) {
	c := newUser(t)
	serverErr := c.submit("http", map[string]any{"url": shared.sink.URL + "/x?status=503"})
	clientErr := c.submit("http", map[string]any{"url": shared.sink.URL + "/x?status=404"})
	ok := c.submit("echo", "after the failures")
	done := c.waitFinal(serverErr.ID, clientErr.ID, ok.ID)
	if r := done[0]; r.Status != "failed" || r.Attempts != 3 || r.Error == nil || !strings.Contains(*r.Error, "503") {
		t.Fatalf("5xx request: %+v", r)
	}
	if r := done[1]; r.Status != "failed" || r.Attempts != 1 || r.Error == nil || !strings.Contains(*r.Error, "404") {
		t.Fatalf("4xx request: %+v", r)
	}
	if r := done[2]; r.Status != "succeeded" || string(r.Result) != `"after the failures"` {
		t.Fatalf("request after failures: %+v", r)
	}
	var st models.SessionState
	c.mustDo("GET", "/v1/session", nil, 200, &st)
	if st.Failed != 2 || st.Processed != 3 {
		t.Fatalf("session counters: %+v", st)
	}
}

func TestE2E_CancelQueuedRequestAndCloseSession(t *testing.T) {
	c := newUser(t)
	long := c.submit("sleep", map[string]int{"ms": 1500})
	c.waitStatus(long.ID, "running")
	victim := c.submit("echo", "never runs")
	last := c.submit("echo", "runs")
	if victim.Position == nil || *victim.Position != 1 {
		t.Fatalf("position of the second request while the first runs: %v", victim.Position)
	}
	var cancelled request
	c.mustDo("DELETE", "/v1/requests/"+victim.ID, nil, 200, &cancelled)
	if cancelled.Status != "cancelled" {
		t.Fatalf("cancel: %+v", cancelled)
	}
	if r := c.do("DELETE", "/v1/requests/"+long.ID, nil); r.status != 409 || r.errorCode() != "not_queued" {
		t.Fatalf("cancel a running request: %d %s", r.status, r.body)
	}
	var st models.SessionState
	c.mustDo("DELETE", "/v1/session", nil, 202, &st)
	if st.State != models.SessionClosing {
		t.Fatalf("after close: %+v", st)
	}
	done := c.waitFinal(long.ID, victim.ID, last.ID)
	if done[0].Status != "succeeded" || done[1].Status != "cancelled" || done[1].StartedAt != nil || done[2].Status != "succeeded" {
		t.Fatalf("after drain: %+v", done)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mustDo("GET", "/v1/session", nil, 200, &st)
		if st.State == models.SessionClosed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still %s after draining", st.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A new request opens a new session run.
	again := c.submit("echo", "new session")
	c.waitFinal(again.ID)
}

func TestE2E_ListIsNewestFirstWithCursorPaging(t *testing.T) {
	c := newUser(t)
	var want []string
	for i := range 16 {
		want = append([]string{c.submit("echo", i).ID}, want...)
	}
	c.waitFinal(want...)
	got := c.list("")
	if len(got) != len(want) {
		t.Fatalf("listed %d, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i] {
			t.Fatalf("list[%d] = %s, want %s (newest first)", i, got[i].ID, want[i])
		}
	}
	if n := len(c.list("&status=queued")); n != 0 {
		t.Fatalf("%d queued after all finished", n)
	}
}

func TestE2E_RefreshRotatesAndReuseRevokesTheFamily(t *testing.T) {
	c := newUser(t)
	anon := &client{t: t, base: shared.base}
	var pair struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		ExpiresIn    int    `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
	}
	anon.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 200, &pair)
	if pair.TokenType != "Bearer" || pair.ExpiresIn <= 0 || pair.RefreshToken == "" {
		t.Fatalf("login answer: %+v", pair)
	}
	first := pair.RefreshToken
	anon.mustDo("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first}, 200, &pair)
	second := pair.RefreshToken
	if second == first {
		t.Fatal("refresh did not rotate the token")
	}
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first}); r.status != 401 {
		t.Fatalf("reusing a spent refresh token: %d %s", r.status, r.body)
	}
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": second}); r.status != 401 {
		t.Fatalf("the family was not revoked after reuse: %d %s", r.status, r.body)
	}
	// Wrong password and unknown user get the same answer.
	a := anon.do("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "wrong-password"})
	b := anon.do("POST", "/v1/auth/login", map[string]string{"email": "nobody-" + c.email, "password": "wrong-password"})
	if a.status != 401 || b.status != 401 || string(a.body) != string(b.body) {
		t.Fatalf("wrong password %d %s vs unknown user %d %s", a.status, a.body, b.status, b.body)
	}
	// Logout revokes refresh tokens.
	anon.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "s3cret-passw0rd"}, 200, &pair)
	c.mustDo("POST", "/v1/auth/logout", nil, 204, nil)
	if r := anon.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken}); r.status != 401 {
		t.Fatalf("refresh after logout: %d %s", r.status, r.body)
	}
}

func TestE2E_HealthReadinessAndSpec(t *testing.T) {
	anon := &client{t: t, base: shared.base}
	anon.mustDo("GET", "/healthz", nil, 200, nil)
	var ready struct {
		Checks map[string]string `json:"checks"`
	}
	anon.mustDo("GET", "/readyz", nil, 200, &ready)
	if ready.Checks["mongodb"] != "ok" || ready.Checks["temporal"] != "ok" {
		t.Fatalf("readyz: %+v", ready)
	}
	r := anon.mustDo("GET", "/openapi.yaml", nil, 200, nil)
	for _, path := range []string{"/v1/requests:", "/v1/requests/{id}:", "/v1/session:", "/v1/auth/login:"} {
		if !strings.Contains(string(r.body), path) {
			t.Fatalf("openapi.yaml lacks %s", path)
		}
	}
}

func TestE2E_UserRequeuesTheirCancelledRequest(t *testing.T) {
	c := newUser(t)
	long := c.submit("sleep", map[string]int{"ms": 800})
	x := c.submit("echo", map[string]string{"again": "yes"})
	c.mustDo("DELETE", "/v1/requests/"+x.ID, nil, 200, nil)
	c.waitStatus(long.ID, "succeeded")
	if got := c.get(x.ID); got.Status != "cancelled" {
		t.Fatalf("cancelled request ran: %+v", got)
	}
	var r request
	c.mustDo("POST", "/v1/requests/"+x.ID+"/requeue", nil, 202, &r)
	if r.Status != "queued" {
		t.Fatalf("requeued: %+v", r)
	}
	c.waitStatus(x.ID, "succeeded")
	if r := c.do("POST", "/v1/requests/"+x.ID+"/requeue", nil); r.status != 409 || r.errorCode() != "not_requeueable" {
		t.Errorf("requeue of a succeeded request: %d %s", r.status, r.body)
	}
	var types struct{ Types []string }
	c.mustDo("GET", "/v1/types", nil, 200, &types)
	if !slices.Contains(types.Types, "sleep") || !slices.Contains(types.Types, "echo") {
		t.Errorf("types %v", types.Types)
	}
}
