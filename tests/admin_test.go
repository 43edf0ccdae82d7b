package tests

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/models"
)

// newAdmin bootstraps an admin the way `turnstile admin create` does and
// logs it in through the API.
func newAdmin(t *testing.T) *client {
	t.Helper()
	c := &client{t: t, base: shared.base}
	c.email = fmt.Sprintf("admin%d-%d@example.com", time.Now().UnixNano(), userSeq.Add(1))
	u, err := app.CreateAdmin(context.Background(), shared.backends.Store, c.email, "admin-passw0rd!", false)
	if err != nil {
		t.Fatal(err)
	}
	c.userID = u.ID
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	c.mustDo("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": "admin-passw0rd!"}, 200, &tok)
	c.token = tok.AccessToken
	return c
}

type adminSession struct {
	models.SessionState
	Email string `json:"email"`
}

func (a *client) session(userID string) adminSession {
	a.t.Helper()
	var st adminSession
	a.mustDo("GET", "/v1/admin/sessions/"+userID, nil, 200, &st)
	return st
}

// sinkOrder submits n http requests that record their order at the sink.
func (c *client) sinkRequests(first, n int) []string {
	var ids []string
	for seq := first; seq < first+n; seq++ {
		ids = append(ids, c.submit("http", c.sinkPayload(seq, 5)).ID)
	}
	return ids
}

func TestAdmin_PauseKeepsRequestsQueuedAndResumeRunsThemInOrder(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	long := u.submit("sleep", map[string]int{"ms": 400})
	u.waitStatus(long.ID, "running")
	st := adminSession{}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/pause", nil, 200, &st)
	if !st.Paused || st.Email != u.email {
		t.Fatalf("after pause: %+v", st)
	}
	ids := u.sinkRequests(1, 3)
	u.waitFinal(long.ID) // the running one finishes
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids {
		if r := u.get(id); r.Status != "queued" {
			t.Fatalf("request %s is %s while paused", id, r.Status)
		}
	}
	st = admin.session(u.userID)
	if st.QueueLength != 3 || st.Queue[0].ID != ids[0] || st.Queue[2].Position != 3 || st.Running != nil {
		t.Fatalf("paused session: %+v", st)
	}
	var paused struct {
		Sessions []struct {
			UserID string `json:"user_id"`
			Paused bool   `json:"paused"`
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for found := false; !found; {
		admin.mustDo("GET", "/v1/admin/sessions?paused=true&limit=100", nil, 200, &paused)
		for _, s := range paused.Sessions {
			found = found || (s.UserID == u.userID && s.Paused)
		}
		if !found && time.Now().After(deadline) {
			t.Fatalf("paused session not listed by visibility: %+v", paused)
		}
		time.Sleep(100 * time.Millisecond)
	}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil, 200, &st)
	u.waitFinal(ids...)
	if order, overlaps := shared.sink.report(u.userID); fmt.Sprint(order) != "[1 2 3]" || overlaps != 0 {
		t.Fatalf("after resume the sink saw %v (%d overlaps)", order, overlaps)
	}
}

func TestAdmin_PolicyPauseStopsAtPoisonAndRequeueAfterFixRunsInOrder(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	warm := u.submit("echo", "opens the session")
	u.waitFinal(warm.ID)
	admin.mustDo("PUT", "/v1/admin/sessions/"+u.userID+"/policy", map[string]string{"policy": "pause"}, 200, nil)

	shared.sink.poisoned.Store(true)
	defer shared.sink.poisoned.Store(false)
	poison := u.submit("http", map[string]any{"method": "POST", "url": shared.sink.URL + "/poison",
		"body": sinkCall{User: u.userID, Seq: 99}})
	rest := u.sinkRequests(1, 2)
	done := u.waitFinal(poison.ID)
	if done[0].Status != "failed" || done[0].Attempts != 3 {
		t.Fatalf("poison: %+v", done[0])
	}
	st := admin.session(u.userID)
	if !st.Paused || st.Policy != models.PolicyPause || st.QueueLength != 2 {
		t.Fatalf("after poison: %+v", st)
	}
	for _, id := range rest {
		if r := u.get(id); r.Status != "queued" {
			t.Fatalf("%s ran past the poison: %s", id, r.Status)
		}
	}
	// Fix the cause, requeue the poison (to the tail) and resume.
	shared.sink.poisoned.Store(false)
	var rq struct {
		request
		UserID string `json:"user_id"`
	}
	admin.mustDo("POST", "/v1/admin/requests/"+poison.ID+"/requeue", nil, 202, &rq)
	if rq.Status != "queued" || rq.UserID != u.userID || rq.Attempts != 3 {
		t.Fatalf("requeued: %+v", rq)
	}
	if r := admin.do("POST", "/v1/admin/requests/"+rest[0]+"/requeue", nil); r.status != 409 || r.errorCode() != "not_requeueable" {
		t.Fatalf("requeue of a queued request that never failed: %d %s", r.status, r.body)
	}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil, 200, nil)
	done = u.waitFinal(append(rest, poison.ID)...)
	if p := done[2]; p.Status != "succeeded" || p.Attempts != 4 {
		t.Fatalf("requeued poison after the fix: %+v", p)
	}
	if order, _ := shared.sink.report(u.userID); fmt.Sprint(order) != "[1 2 99]" {
		t.Fatalf("sink order %v, want the waiting requests then the requeued one", order)
	}
}

func TestAdmin_CancelRemovesAQueuedRequestAndTheRestKeepOrder(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	long := u.submit("sleep", map[string]int{"ms": 300})
	u.waitStatus(long.ID, "running")
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/pause", nil, 200, nil)
	ids := u.sinkRequests(1, 4)
	var c struct{ Status string }
	admin.mustDo("POST", "/v1/admin/requests/"+ids[1]+"/cancel", nil, 200, &c)
	if c.Status != "cancelled" {
		t.Fatalf("cancel: %+v", c)
	}
	st := admin.session(u.userID)
	if st.QueueLength != 3 || st.Queue[1].ID != ids[2] || st.Queue[1].Position != 2 {
		t.Fatalf("queue after cancel: %+v", st.Queue)
	}
	admin.mustDo("POST", "/v1/admin/sessions/"+u.userID+"/resume", nil, 200, nil)
	u.waitFinal(ids...)
	if order, _ := shared.sink.report(u.userID); fmt.Sprint(order) != "[1 3 4]" {
		t.Fatalf("sink order %v", order)
	}
}

func TestAdmin_EveryAdminRouteIsForbiddenToUsers(t *testing.T) {
	u := newUser(t)
	anon := &client{t: t, base: shared.base}
	routes := []struct{ method, path string }{
		{"GET", "/v1/admin/sessions"},
		{"GET", "/v1/admin/sessions/" + u.userID},
		{"POST", "/v1/admin/sessions/" + u.userID + "/pause"},
		{"POST", "/v1/admin/sessions/" + u.userID + "/resume"},
		{"POST", "/v1/admin/sessions/" + u.userID + "/close"},
		{"PUT", "/v1/admin/sessions/" + u.userID + "/policy"},
		{"GET", "/v1/admin/requests/x"},
		{"POST", "/v1/admin/requests/x/cancel"},
		{"POST", "/v1/admin/requests/x/requeue"},
		{"GET", "/v1/admin/users"},
		{"POST", "/v1/admin/users/" + u.userID + "/disable"},
		{"POST", "/v1/admin/users/" + u.userID + "/enable"},
		{"GET", "/v1/admin/stats"},
		{"DELETE", "/v1/admin/users"},      // wrong method
		{"GET", "/v1/admin/no-such-thing"}, // unknown route
		{"PATCH", "/v1/admin"},
	}
	for _, rt := range routes {
		if r := u.do(rt.method, rt.path, `{"policy":"pause"}`); r.status != http.StatusForbidden || r.errorCode() != "forbidden" {
			t.Errorf("user %s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
		if r := anon.do(rt.method, rt.path, nil); r.status != http.StatusUnauthorized {
			t.Errorf("anonymous %s %s: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}
	// Nothing changed: the user is still enabled and can submit.
	u.waitFinal(u.submit("echo", "still works").ID)
}

func TestAdmin_DisabledUsersTokenIsRejectedAtOnce(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	u.mustDo("GET", "/v1/session", nil, 200, nil)
	var du models.User
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/disable", nil, 200, &du)
	if !du.Disabled {
		t.Fatalf("disable answered %+v", du)
	}
	if r := u.do("GET", "/v1/session", nil); r.status != 401 {
		t.Fatalf("disabled user's token: %d %s", r.status, r.body)
	}
	if r := u.do("POST", "/v1/requests", map[string]any{"type": "echo"}); r.status != 401 {
		t.Fatalf("disabled user's submission: %d %s", r.status, r.body)
	}
	anon := &client{t: t, base: shared.base}
	if r := anon.do("POST", "/v1/auth/login", map[string]string{"email": u.email, "password": "s3cret-passw0rd"}); r.status != 401 {
		t.Fatalf("disabled user's login: %d %s", r.status, r.body)
	}
	admin.mustDo("POST", "/v1/admin/users/"+u.userID+"/enable", nil, 200, nil)
	u.mustDo("GET", "/v1/session", nil, 200, nil)
	if r := admin.do("POST", "/v1/admin/users/"+admin.userID+"/disable", nil); r.status != 409 {
		t.Fatalf("admin disabling itself: %d %s", r.status, r.body)
	}
}

func TestAdmin_UsersListAndStats(t *testing.T) {
	admin, u := newAdmin(t), newUser(t)
	u.waitFinal(u.submit("echo", 1).ID)
	var seen bool
	cursor := ""
	for pages := 0; pages < 100; pages++ {
		var page struct {
			Users []struct {
				ID, Email, Role string
				PasswordHash    string `json:"password_hash"`
			}
			NextCursor *string `json:"next_cursor"`
		}
		admin.mustDo("GET", "/v1/admin/users?limit=3&cursor="+cursor, nil, 200, &page)
		for _, x := range page.Users {
			if x.PasswordHash != "" {
				t.Fatal("users list leaks password hashes")
			}
			seen = seen || (x.ID == u.userID && x.Email == u.email && x.Role == "user")
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if !seen {
		t.Fatal("the new user is not listed")
	}
	var stats struct {
		Users    int64            `json:"users"`
		Requests map[string]int64 `json:"requests"`
		Sessions map[string]int64 `json:"sessions"`
	}
	admin.mustDo("GET", "/v1/admin/stats", nil, 200, &stats)
	if stats.Users < 2 || stats.Requests["succeeded"] < 1 {
		t.Fatalf("stats: %+v", stats)
	}
}
