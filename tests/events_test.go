package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/models"
)

// sse is one event read off GET /v1/events.
type sse struct {
	id, kind string
	data     json.RawMessage
}

// stream is an open GET /v1/events of one user.
type stream struct {
	t      *testing.T
	events chan sse
	resp   *http.Response
	cancel context.CancelFunc
	lastID string
}

// openStream opens the event stream of c (with Last-Event-ID lastID if
// set); it fails the test unless the answer is 200.
func (c *client) openStream(lastID string) *stream {
	c.t.Helper()
	s, status := c.tryStream(lastID)
	if status != http.StatusOK {
		c.t.Fatalf("GET /v1/events: status %d", status)
	}
	return s
}

func (c *client) tryStream(lastID string) (*stream, int) {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/events", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		c.t.Errorf("Content-Type %q", ct)
	}
	s := &stream{t: c.t, events: make(chan sse, 1024), resp: resp, cancel: cancel}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var e sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.kind != "" {
					s.events <- e
				}
				e = sse{}
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.kind = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = json.RawMessage(line[6:])
			}
		}
	}()
	c.t.Cleanup(s.close)
	return s, http.StatusOK
}

func (s *stream) close() { s.cancel(); s.resp.Body.Close() }

// next is the next event, failing the test after timeout or at the end.
func (s *stream) next(timeout time.Duration) sse {
	s.t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			s.t.Fatal("the event stream ended")
		}
		if e.id != "" {
			s.lastID = e.id
		}
		return e
	case <-time.After(timeout):
		s.t.Fatalf("no event within %v", timeout)
		return sse{}
	}
}

// until reads events until done reports true, and returns them all.
func (s *stream) until(timeout time.Duration, done func(e sse, r request) bool) []sse {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []sse
	for {
		left := time.Until(deadline)
		if left <= 0 {
			s.t.Fatalf("condition not met within %v; events: %s", timeout, describeEvents(got))
		}
		e := s.next(left)
		got = append(got, e)
		var r request
		if e.kind == "request" {
			_ = json.Unmarshal(e.data, &r)
		}
		if done(e, r) {
			return got
		}
	}
}

func describeEvents(evs []sse) string {
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.kind + " " + string(e.data) + "\n")
	}
	return b.String()
}

// statuses is the order of statuses each request went through in evs.
func statuses(evs []sse) map[string][]string {
	out := map[string][]string{}
	for _, e := range evs {
		if e.kind != "request" {
			continue
		}
		var r request
		if err := json.Unmarshal(e.data, &r); err != nil {
			continue
		}
		if l := out[r.ID]; len(l) == 0 || l[len(l)-1] != r.Status {
			out[r.ID] = append(l, r.Status)
		}
	}
	return out
}

func TestEvents_StreamShowsEveryChangeMadeThroughAnotherInstance(t *testing.T) {
	c := newUser(t)
	st := c.openStream("")
	// The requests go in through a second API instance: the stream's
	// instance learns of them, and of the worker's changes, from MongoDB.
	other := startAPI(t, nil)
	oc := c.asBase(t, other.base)
	a := oc.submit("sleep", map[string]int{"ms": 600})
	b := oc.submit("sleep", map[string]int{"ms": 300})
	d := oc.submit("sleep", map[string]int{"ms": 300})
	tail := oc.submit("sleep", map[string]int{"ms": 100})
	var positions int
	evs := st.until(20*time.Second, func(e sse, r request) bool {
		if e.kind == "request" && r.ID == d.ID && r.Status == "queued" {
			// d waits behind a and b: cancel it from the other instance.
			oc.mustDo("DELETE", "/v1/requests/"+d.ID, nil, 200, nil)
		}
		if e.kind == "positions" {
			positions++
		}
		return e.kind == "request" && r.ID == tail.ID && r.Status == "succeeded"
	})
	got := statuses(evs)
	want := map[string]string{
		a.ID:    "queued running succeeded",
		b.ID:    "queued running succeeded",
		d.ID:    "queued cancelled",
		tail.ID: "queued running succeeded",
	}
	for id, w := range want {
		if strings.Join(got[id], " ") != w {
			t.Errorf("%s went %v, want %s\n%s", id, got[id], w, describeEvents(evs))
		}
	}
	if positions == 0 {
		t.Errorf("no positions event as the queue moved:\n%s", describeEvents(evs))
	}
	// The first queued event of b said where it stood, with an estimate.
	for _, e := range evs {
		var r struct {
			request
			ETA *time.Time `json:"eta"`
		}
		_ = json.Unmarshal(e.data, &r)
		if e.kind == "request" && r.ID == b.ID && r.Status == "queued" {
			if r.Position == nil || *r.Position < 1 || r.ETA == nil {
				t.Errorf("b queued without position or eta: %s", e.data)
			}
			break
		}
	}
	var sawSession bool
	for _, e := range evs {
		if e.kind == "session" {
			sawSession = true
		}
		if e.id == "" && e.kind != "end" {
			t.Errorf("%s event without an id", e.kind)
		}
	}
	if !sawSession {
		t.Error("no session event")
	}
}

func TestEvents_ResumeAfterADroppedConnectionLosesNoChange(t *testing.T) {
	c := newUser(t)
	st := c.openStream("")
	first := c.submit("sleep", map[string]int{"ms": 200})
	st.until(10*time.Second, func(e sse, r request) bool { return r.ID == first.ID && r.Status == "queued" })
	cut := st.lastID
	st.close()

	// While away: three more requests run to the end, and one waits.
	var ids []string
	for range 3 {
		ids = append(ids, c.submit("sleep", map[string]int{"ms": 100}).ID)
	}
	for _, id := range ids {
		c.waitStatus(id, "succeeded")
	}
	waiting := c.submit("sleep", map[string]int{"ms": 1500})

	re := c.openStream(cut)
	evs := re.until(15*time.Second, func(e sse, r request) bool { return r.ID == waiting.ID && r.Status == "succeeded" })
	got := statuses(evs)
	for _, id := range append([]string{first.ID}, ids...) {
		if s := strings.Join(got[id], " "); !strings.HasSuffix(s, "running succeeded") {
			t.Errorf("%s: after the resume the stream told %q, want its run and its finish\n%s", id, s, describeEvents(evs))
		}
	}
}

func TestEvents_AnotherUsersChangesNeverAppear(t *testing.T) {
	alice, bob := newUser(t), newUser(t)
	bs := bob.openStream("")
	mine := bob.submit("echo", map[string]string{"who": "bob"})
	var theirs []string
	for range 5 {
		theirs = append(theirs, alice.submit("echo", map[string]string{"who": "alice"}).ID)
	}
	for _, id := range theirs {
		alice.waitStatus(id, "succeeded")
	}
	time.Sleep(time.Second) // a few polls after alice's last change
	last := bob.submit("echo", nil)
	evs := bs.until(10*time.Second, func(e sse, r request) bool { return r.ID == last.ID && r.Status == "succeeded" })
	for _, e := range evs {
		for _, id := range theirs {
			if strings.Contains(string(e.data), id) || strings.Contains(string(e.data), alice.userID) {
				t.Fatalf("bob's stream carried alice's data: %s %s", e.kind, e.data)
			}
		}
	}
	if _, ok := statuses(evs)[mine.ID]; !ok {
		t.Errorf("bob's own request missing from his stream:\n%s", describeEvents(evs))
	}
}

func TestEvents_AnExpiredOrRevokedTokenEndsTheStream(t *testing.T) {
	c := newUser(t)
	short := &auth.Tokens{Key: testJWTKey, Issuer: "turnstile", Audience: "turnstile-api", TTL: 2 * time.Second}
	tok, _, err := short.Issue(c.userID, models.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	st := c.asToken(t, tok).openStream("")
	evs := st.until(10*time.Second, func(e sse, _ request) bool { return e.kind == "end" })
	if end := evs[len(evs)-1]; !strings.Contains(string(end.data), "token_expired") {
		t.Errorf("end event %s, want token_expired", end.data)
	}

	u, _ := userAt(t, shared.base)
	us := u.openStream("")
	time.Sleep(100 * time.Millisecond) // logout's revocation is after the token's issue, at ms precision
	u.mustDo("POST", "/v1/auth/logout", nil, 204, nil)
	evs = us.until(15*time.Second, func(e sse, _ request) bool { return e.kind == "end" })
	if end := evs[len(evs)-1]; !strings.Contains(string(end.data), "token_revoked") {
		t.Errorf("end event %s, want token_revoked", end.data)
	}
}

func TestEvents_EachUserHasABoundedNumberOfStreams(t *testing.T) {
	c := newUser(t)
	var open []*stream
	for range 4 { // api.DefaultMaxStreams
		open = append(open, c.openStream(""))
	}
	if _, status := c.tryStream(""); status != http.StatusTooManyRequests {
		t.Fatalf("a fifth stream: status %d, want 429", status)
	}
	// Another user is not held back by c's streams.
	newUser(t).openStream("")
	open[0].close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, status := c.tryStream(""); status == http.StatusOK {
			s.close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a stream closed, but a new one is still refused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := c.do("GET", "/v1/events", nil, "Last-Event-ID", "not-an-id")
	if r.status != http.StatusBadRequest || r.errorCode() != "invalid_last_event_id" {
		t.Errorf("a junk Last-Event-ID: %d %s", r.status, r.body)
	}
}

func TestETA_RequestAndSessionShowEstimates(t *testing.T) {
	c := newUser(t)
	// History for the estimator: two 300 ms sleeps.
	for range 2 {
		c.waitStatus(c.submit("sleep", map[string]int{"ms": 300}).ID, "succeeded")
	}
	run := c.submit("sleep", map[string]int{"ms": 1500})
	c.waitStatus(run.ID, "running")
	c.submit("sleep", map[string]int{"ms": 300})
	w2 := c.submit("sleep", map[string]int{"ms": 300})
	var got struct {
		request
		ETA *time.Time `json:"eta"`
	}
	c.mustDo("GET", "/v1/requests/"+w2.ID, nil, 200, &got)
	if got.Status != "queued" || got.ETA == nil {
		t.Fatalf("queued request without an eta: %+v", got)
	}
	// Behind a 1.5 s run that an estimator of 300 ms runs takes as ending
	// at its start + 300 ms (or now), and one 300 ms request: within a
	// second or so from now.
	if d := time.Until(*got.ETA); d < 0 || d > 2*time.Second {
		t.Errorf("eta of the second waiting request %v from now", d)
	}
	var st models.SessionState
	c.mustDo("GET", "/v1/session", nil, 200, &st)
	if st.Running == nil || st.Running.ETA == nil {
		t.Errorf("session's running request without an eta: %+v", st.Running)
	}
	var etas []time.Time
	for _, e := range st.Queue {
		if e.ETA == nil {
			t.Errorf("queue entry %s without an eta", e.ID)
			continue
		}
		etas = append(etas, *e.ETA)
	}
	if len(etas) == 2 && !etas[0].Before(etas[1]) {
		t.Errorf("etas not in queue order: %v", etas)
	}
}
