package faults

import (
	"net/http"
	"testing"
	"time"
)

// The checker is only as good as the violations it catches: these feed it
// small made-up histories, each with one fault, and need no servers.

// fixture builds a history of one user: ops accepted one after another at
// 100ms steps, each executed at the sink in order for 50ms and succeeded.
type fixture struct {
	t0      time.Time
	ops     []*op
	calls   []sinkCall
	records map[string][]requestView
}

const fixtureUser = "user-1"

func at(t0 time.Time, ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func newFixture(n int) *fixture {
	f := &fixture{t0: time.Now(), records: map[string][]requestView{}}
	u := &user{tag: "u0", id: fixtureUser}
	h := newHistory()
	for i := range n {
		o := h.newOp(u, i, expectSucceeded)
		id := "req-" + o.Name
		o.record(attempt{Send: at(f.t0, 100*i), Answer: at(f.t0, 100*i+10), Status: http.StatusAccepted, ReqID: id})
		start := at(f.t0, 1000+100*i)
		f.calls = append(f.calls, sinkCall{Key: id, User: fixtureUser, Op: o.Name, Start: start, End: start.Add(50 * time.Millisecond), Outcome: outcomeEffect})
		fin := start.Add(60 * time.Millisecond)
		f.records[fixtureUser] = append(f.records[fixtureUser], requestView{
			ID: id, Type: "http", Status: "succeeded", Attempts: 1, EnqueuedAt: at(f.t0, 100*i), FinishedAt: &fin,
			Payload: []byte(`{"body":{"user":"` + fixtureUser + `","op":"` + o.Name + `"}}`),
		})
		f.ops = append(f.ops, o)
	}
	return f
}

func (f *fixture) check() *report { return check("fixture", f.ops, f.calls, f.records) }

func TestChecker_CleanHistoryPasses(t *testing.T) {
	r := newFixture(5).check()
	if !r.ok() || r.Effects != 5 || r.Accepted != 5 || r.Latency.N != 5 {
		t.Fatalf("clean history:\n%s", r)
	}
}

func TestChecker_CatchesEachViolation(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(f *fixture)
		count  func(r *report) int
	}{
		{"lost: still queued", func(f *fixture) {
			f.records[fixtureUser][2].Status, f.records[fixtureUser][2].FinishedAt = "queued", nil
		}, func(r *report) int { return r.Lost }},
		{"lost: no record", func(f *fixture) {
			f.records[fixtureUser] = f.records[fixtureUser][:4]
		}, func(r *report) int { return r.Lost }},
		{"lost: succeeded without effect", func(f *fixture) {
			f.calls = append(f.calls[:1], f.calls[2:]...)
		}, func(r *report) int { return r.Lost }},
		{"duplicated effect under a second request ID", func(f *fixture) {
			c := f.calls[1]
			c.Key, c.Start, c.End = "req-other", c.Start.Add(10*time.Second), c.End.Add(10*time.Second)
			f.calls = append(f.calls, c)
		}, func(r *report) int { return r.DupEffects }},
		{"duplicate request for one op", func(f *fixture) {
			f.ops[1].record(attempt{Send: at(f.t0, 500), Answer: at(f.t0, 510), Status: http.StatusAccepted, ReqID: "req-second"})
		}, func(r *report) int { return r.DupRequests }},
		{"inversion", func(f *fixture) {
			f.calls[1].Start, f.calls[3].Start = f.calls[3].Start, f.calls[1].Start
			f.calls[1].End, f.calls[3].End = f.calls[1].Start.Add(50*time.Millisecond), f.calls[3].Start.Add(50*time.Millisecond)
		}, func(r *report) int { return r.Inversions }},
		{"overlap", func(f *fixture) {
			f.calls[2].End = f.calls[3].Start.Add(time.Millisecond)
		}, func(r *report) int { return r.Overlaps }},
		{"phantom: refused but ran", func(f *fixture) {
			f.ops[4].Attempts = []attempt{{Send: at(f.t0, 400), Answer: at(f.t0, 410), Status: http.StatusServiceUnavailable}}
		}, func(r *report) int { return r.Phantoms }},
		{"wrong outcome", func(f *fixture) {
			f.records[fixtureUser][0].Status = "failed"
		}, func(r *report) int { return r.WrongOutcomes }},
		{"cancelled ran", func(f *fixture) {
			f.records[fixtureUser][3].Status = "cancelled"
			f.ops[3].Expect = ""
		}, func(r *report) int { return r.CancelledRan }},
		{"not drained", func(f *fixture) {
			f.records[fixtureUser] = append(f.records[fixtureUser], requestView{ID: "stray", Status: "running"})
		}, func(r *report) int { return r.NotDrained }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(5)
			tc.break_(f)
			r := f.check()
			if r.ok() || tc.count(r) == 0 {
				t.Fatalf("not caught:\n%s", r)
			}
		})
	}
}

func TestChecker_RedeliveriesAndZombiesAreNotExecutions(t *testing.T) {
	f := newFixture(4)
	// A retry of op 1 after its effect, and a zombie's copy of it arriving
	// while op 3 executes: same key, absorbed by the sink.
	c := f.calls[1]
	c.Outcome = outcomeRedelivery
	c.Start, c.End = f.calls[3].Start.Add(10*time.Millisecond), f.calls[3].Start.Add(11*time.Millisecond)
	f.calls = append(f.calls, c)
	r := f.check()
	if !r.ok() || r.Redeliveries != 1 || r.LateRedeliveries != 1 {
		t.Fatalf("a late redelivery should pass and be reported:\n%s", r)
	}
}

func TestChecker_OrderRuleIsAcceptedBeforeSent(t *testing.T) {
	f := newFixture(2)
	// Op 1 was sent before op 0's 202 came back: concurrent, either order
	// is right.
	f.ops[1].Attempts[0].Send = at(f.t0, 5)
	f.calls[0].Start, f.calls[1].Start = f.calls[1].Start, f.calls[0].Start
	f.calls[0].End, f.calls[1].End = f.calls[0].Start.Add(50*time.Millisecond), f.calls[1].Start.Add(50*time.Millisecond)
	if r := f.check(); !r.ok() {
		t.Fatalf("concurrent submissions may run in either order:\n%s", r)
	}
	// A refused first attempt does not count as sent; an unanswered one does.
	g := newFixture(2)
	g.ops[1].Attempts = append([]attempt{{Send: at(g.t0, 1), Answer: at(g.t0, 2), Status: 0}}, g.ops[1].Attempts...)
	g.calls[0].Start, g.calls[1].Start = g.calls[1].Start, g.calls[0].Start
	g.calls[0].End, g.calls[1].End = g.calls[0].Start.Add(50*time.Millisecond), g.calls[1].Start.Add(50*time.Millisecond)
	if r := g.check(); !r.ok() {
		t.Fatalf("an unanswered earlier attempt makes op 1 concurrent with op 0:\n%s", r)
	}
	g.ops[1].Attempts[0].Status = http.StatusServiceUnavailable
	if r := g.check(); r.Inversions != 1 {
		t.Fatalf("a refused attempt took nothing; op 1 was sent after op 0's 202:\n%s", r)
	}
}

func TestChecker_RequeuedOpOrdersFromItsRequeue(t *testing.T) {
	f := newFixture(3)
	// Op 0 failed (two failed calls), was requeued after op 2 was accepted
	// and succeeded last.
	first := f.calls[0]
	f.calls[0].Outcome = outcomeFailed
	f.calls[0].End = f.calls[0].Start.Add(5 * time.Millisecond)
	requeue := at(f.t0, 5000)
	f.ops[0].Requeued = &attempt{Send: requeue, Answer: requeue.Add(5 * time.Millisecond), Status: http.StatusAccepted}
	first.Start, first.End = requeue.Add(100*time.Millisecond), requeue.Add(150*time.Millisecond)
	f.calls = append(f.calls, first)
	if r := f.check(); !r.ok() {
		t.Fatalf("a requeued op runs after the ops accepted before its requeue:\n%s", r)
	}
}

func TestChecker_Percentiles(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := percentiles(ds)
	if l.P50 != 50*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond || l.N != 100 {
		t.Fatalf("percentiles: %+v", l)
	}
}
