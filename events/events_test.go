package events

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// fakeStore is an in-memory Store (a unit-test fake; the end-to-end tests in
// tests/ run the watcher on the real store).
type fakeStore struct {
	q      store.Queue
	places map[int64]store.Placed
	reads  int
}

func newFake() *fakeStore {
	return &fakeStore{q: store.Queue{UserID: "u"}, places: map[int64]store.Placed{}}
}

func (f *fakeStore) Queue(context.Context, string) (store.Queue, error) { return f.q, nil }

func (f *fakeStore) Window(_ context.Context, _ string, from, hint int64, limit int) ([]store.Placed, int64, error) {
	from = max(from, 1)
	top := from - 1
	var out []store.Placed
	for s := from; s < from+int64(limit); s++ {
		f.reads++
		p, ok := f.places[s]
		if !ok {
			break
		}
		out = append(out, p)
		top = s
	}
	return out, top, nil
}

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func (f *fakeStore) add(typ string, at time.Time) string {
	seq := f.q.Tail + 1
	id := models.RequestID("u", seq)
	f.places[seq] = store.Placed{Place: seq, Request: models.Request{ID: id, UserID: "u", Seq: seq, Type: typ, Status: models.StatusQueued, EnqueuedAt: at}}
	f.q.Tail = seq
	f.q.Rev++
	return id
}

func (f *fakeStore) set(seq int64, st models.Status, at time.Time, attempts int) {
	p := f.places[seq]
	p.Status, p.Attempts = st, attempts
	switch {
	case st == models.StatusRunning:
		p.StartedAt = &at
	case st.Final():
		p.FinishedAt = &at
	}
	f.places[seq] = p
	f.q.Rev++
}

type recorder struct{ evs []Event }

func (r *recorder) emit(e Event) error { r.evs = append(r.evs, e); return nil }

func (r *recorder) take() []Event { e := r.evs; r.evs = nil; return e }

func describe(evs []Event) []string {
	var out []string
	for _, e := range evs {
		switch e.Kind {
		case KindRequest:
			out = append(out, fmt.Sprintf("%d:%s@%d", e.Request.Seq, e.Request.Status, e.Position))
		case KindPositions:
			for _, p := range e.Positions {
				out = append(out, fmt.Sprintf("pos %s=%d", p.ID[len(p.ID)-1:], p.Position))
			}
		case KindSession:
			out = append(out, "session "+e.Session.State)
		}
	}
	return out
}

func same(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

func TestWatcherFollowsStartsFinishesAndCancels(t *testing.T) {
	f := newFake()
	now := t0
	for range 4 {
		f.add("sleep", now)
	}
	f.set(1, models.StatusRunning, now, 1)
	w := NewWatcher(Config{Now: func() time.Time { return now }}, f, func(context.Context, string) (models.SessionState, error) {
		return models.SessionState{State: models.SessionOpen}, nil
	}, "u")
	rec := &recorder{}
	w.emit = rec.emit
	if err := w.start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	first := rec.take()
	same(t, "first", describe(first), "1:running@0", "2:queued@1", "3:queued@2", "4:queued@3", "session open")
	for _, e := range first {
		if e.Live {
			t.Errorf("the state found at the start is told as live: %+v", e)
		}
	}

	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	same(t, "nothing moved", describe(rec.take()))

	now = now.Add(time.Second)
	f.set(1, models.StatusSucceeded, now, 1)
	f.set(2, models.StatusRunning, now, 1)
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	moved := rec.take()
	same(t, "a finish and a start", describe(moved), "1:succeeded@0", "2:running@0", "pos 3=1", "pos 4=2")
	for _, e := range moved {
		if !e.Live {
			t.Errorf("a change seen is not told as live: %+v", e)
		}
	}

	// A cancel of the last: only Scan says it may be anywhere.
	f.set(4, models.StatusCancelled, now, 0)
	f.q.Scan++
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	same(t, "a cancel", describe(rec.take()), "4:cancelled@0")

	f.add("echo", now)
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	same(t, "a new request", describe(rec.take()), "5:queued@2")

	// Attempts of the running one.
	f.set(2, models.StatusRunning, now, 2)
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	same(t, "a retry", describe(rec.take()), "2:running@0")

	// Requests started and finished between two polls: each state told.
	f.set(2, models.StatusSucceeded, now, 2)
	f.set(3, models.StatusRunning, now, 1)
	f.set(3, models.StatusSucceeded, now, 1)
	f.set(5, models.StatusRunning, now, 1)
	f.set(5, models.StatusSucceeded, now, 1)
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	same(t, "between polls", describe(rec.take()), "2:succeeded@0", "3:running@0", "3:succeeded@0", "5:running@0", "5:succeeded@0")
}

func TestResumeSendsWhatChangedWhileAway(t *testing.T) {
	f := newFake()
	now := t0
	for range 3 {
		f.add("echo", now)
	}
	w := NewWatcher(Config{Now: func() time.Time { return now }, Grace: time.Second}, f, nil, "u")
	rec := &recorder{}
	w.emit = rec.emit
	if err := w.start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	evs := rec.take()
	last, ok := ParseCursor(evs[len(evs)-1].ID)
	if !ok || last.Floor != 1 {
		t.Fatalf("cursor %q", evs[len(evs)-1].ID)
	}
	// Away for a minute: 1 ran and finished, 2 runs.
	now = now.Add(time.Minute)
	f.set(1, models.StatusRunning, now.Add(-30*time.Second), 1)
	f.set(1, models.StatusSucceeded, now.Add(-20*time.Second), 1)
	f.set(2, models.StatusRunning, now.Add(-10*time.Second), 1)

	// The client's last event came 5 s after the requests were accepted.
	last.At = t0.Add(5 * time.Second)
	w2 := NewWatcher(Config{Now: func() time.Time { return now }, Grace: time.Second}, f, nil, "u")
	w2.emit = rec.emit
	if err := w2.start(context.Background(), &last); err != nil {
		t.Fatal(err)
	}
	same(t, "resumed", describe(rec.take()), "1:running@0", "1:succeeded@0", "2:running@0", "3:queued@1")

	// A cursor after everything: only what is live again, nothing finished.
	cur, _ := ParseCursor(Cursor{Floor: 2, At: now.Add(time.Hour)}.String())
	w3 := NewWatcher(Config{Now: func() time.Time { return now }, Grace: time.Second}, f, nil, "u")
	w3.emit = rec.emit
	if err := w3.start(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}
	same(t, "resumed late", describe(rec.take()), "2:running@0", "3:queued@1")
}

func TestCursorRoundTripsAndRejectsJunk(t *testing.T) {
	c := Cursor{Floor: 42, At: time.UnixMilli(1764756000123)}
	got, ok := ParseCursor(c.String())
	if !ok || got.Floor != 42 || !got.At.Equal(c.At) {
		t.Fatalf("round trip %v %v", got, ok)
	}
	for _, s := range []string{"", "1", "x.1", "1.x", "0.5", "-1.5", "1.0"} {
		if _, ok := ParseCursor(s); ok {
			t.Errorf("%q parsed", s)
		}
	}
}

func TestEstimatorTakesTheMedianPerTypeThenOverall(t *testing.T) {
	e := NewEstimator()
	if d := e.Duration("sleep"); d != DefaultEstimate {
		t.Fatalf("empty: %v", d)
	}
	for i, ms := range []int{100, 300, 200, 5000} {
		start := t0
		end := start.Add(time.Duration(ms) * time.Millisecond)
		r := models.Request{ID: fmt.Sprint(i), Type: "sleep", Status: models.StatusSucceeded, StartedAt: &start, FinishedAt: &end}
		e.Observe(r)
		e.Observe(r) // counted once
	}
	if d := e.Duration("sleep"); d != 250*time.Millisecond {
		t.Errorf("median of 100,200,300,5000 = %v, want 250ms", d)
	}
	if d := e.Duration("echo"); d != 250*time.Millisecond {
		t.Errorf("unseen type takes the overall median: %v", d)
	}
}

// A session read costs a Temporal call (the API's is a Describe; it was a
// workflow query, a task for the worker, when this test was written): a
// watcher reads the session at its start, after a steering change, when
// the queue empties or fills while the session is not plainly open (a
// closing session ends when it drains, a closed one opens on a
// submission), and every SessionEvery — not on every start and finish.
func TestWatcherReadsTheSessionOnlyWhenItMayHaveChanged(t *testing.T) {
	f := newFake()
	now := t0
	state := models.SessionOpen
	reads := 0
	w := NewWatcher(Config{Now: func() time.Time { return now }}, f, func(context.Context, string) (models.SessionState, error) {
		reads++
		return models.SessionState{State: state, QueueLength: reads}, nil
	}, "u")
	rec := &recorder{}
	w.emit = rec.emit
	ctx := context.Background()
	if err := w.start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	same(t, "first", describe(rec.take()), "session open")
	poll := func() {
		t.Helper()
		now = now.Add(200 * time.Millisecond)
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An open session's queue fills and empties ten times in four seconds.
	for i := int64(1); i <= 10; i++ {
		f.add("echo", now)
		poll()
		f.set(i, models.StatusSucceeded, now, 1)
		poll()
	}
	if reads != 1 {
		t.Errorf("an open session whose queue filled and emptied was read %d times, want 1 (at the start)", reads)
	}
	rec.take()

	// A steering change (a close) is read, and so is the drain that ends it.
	state = models.SessionClosing
	f.add("echo", now)
	f.q.Steer++
	f.q.Rev++
	poll()
	same(t, "close", describe(rec.take()), "11:queued@1", "session closing")
	state = models.SessionClosed
	f.set(11, models.StatusSucceeded, now, 1)
	poll()
	same(t, "drained", describe(rec.take()), "11:succeeded@0", "session closed")
	// A submission to the closed session opens a new run.
	state = models.SessionOpen
	f.add("echo", now)
	poll()
	same(t, "reopened", describe(rec.take()), "12:queued@1", "session open")

	// Only the counters moved: no event; past SessionEvery a read happens.
	before := reads
	now = now.Add(DefaultSessionEvery)
	poll()
	if reads != before+1 {
		t.Errorf("no session read after SessionEvery (%d reads, had %d)", reads, before)
	}
	for _, e := range rec.take() {
		if e.Kind == KindSession {
			t.Errorf("a session event when only its counters moved: %+v", e.Session)
		}
	}
}

// A client polling a waiting request: each Estimates after the first reads
// only what moved (the head on a start or finish, the new entries on a
// submission), not every place ahead of it again.
func TestViewsReadOnlyWhatMovedSinceTheLastCall(t *testing.T) {
	f := newFake()
	now := t0
	for range 50 {
		f.add("sleep", now)
	}
	v := NewViews(Config{Window: 200, Now: func() time.Time { return now }}, f, 0, 0)
	ctx := context.Background()
	check := func(what string, maxReads int, id string, pos int) {
		t.Helper()
		f.reads = 0
		est, q, err := v.Estimates(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		if q.Rev != f.q.Rev {
			t.Errorf("%s: queue rev %d, want %d", what, q.Rev, f.q.Rev)
		}
		if e, ok := est[id]; !ok || e.Position != pos {
			t.Errorf("%s: %s at %+v (known %v), want position %d", what, id, e, ok, pos)
		}
		if f.reads > maxReads {
			t.Errorf("%s: %d place reads, want at most %d", what, f.reads, maxReads)
		}
	}
	last := models.RequestID("u", 50)
	check("first", 51+historyPlaces, last, 50)
	for i := range 10 {
		now = now.Add(100 * time.Millisecond)
		check(fmt.Sprintf("poll %d, nothing moved", i), 0, last, 50)
	}
	f.set(1, models.StatusRunning, now, 1)
	check("first started", 2*headChunk, last, 49)
	now = now.Add(time.Second)
	f.set(1, models.StatusSucceeded, now, 1)
	f.set(2, models.StatusRunning, now, 1)
	check("first finished, second started", 2*headChunk, last, 48)
	id := f.add("sleep", now)
	check("one more submitted", 2*headChunk+2, id, 49)
	if est, _, _ := v.Estimates(ctx, "u"); est[models.RequestID("u", 2)].Position != 0 || est[models.RequestID("u", 1)] != (Estimate{}) {
		t.Errorf("running and finished: %+v, %+v", est[models.RequestID("u", 2)], est[models.RequestID("u", 1)])
	}
}

// Views keep at most their bound of users, dropping the least recently
// read, and drop a view unread for their idle time.
func TestViewsAreBounded(t *testing.T) {
	f := newFake()
	f.add("sleep", t0)
	now := t0
	v := NewViews(Config{Now: func() time.Time { return now }}, f, 2, time.Minute)
	ctx := context.Background()
	for _, u := range []string{"a", "b", "a", "c"} {
		now = now.Add(time.Second)
		if _, _, err := v.Estimates(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := v.views["b"]; ok || len(v.views) != 2 {
		t.Errorf("after a, b, a, c with room for 2: %d views, b kept %v; want a and c", len(v.views), ok)
	}
	now = now.Add(2 * time.Minute)
	if _, _, err := v.Estimates(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if len(v.views) != 1 {
		t.Errorf("after two idle minutes: %d views, want only d's", len(v.views))
	}
}

// A poll reads the head only when the queue document says it may have
// moved (started, low or head moved, or rev without any counter that
// explains it): a delivery to the session reads nothing, a submission
// only the new entry.
// startedWatcher is a watcher of f on the clock *now, past its start (its
// first events taken).
func startedWatcher(t *testing.T, f *fakeStore, now *time.Time) (*Watcher, *recorder) {
	t.Helper()
	w := NewWatcher(Config{Now: func() time.Time { return *now }}, f, nil, "u")
	rec := &recorder{}
	w.emit = rec.emit
	if err := w.start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	rec.take()
	return w, rec
}

func TestWatcherReadsTheHeadOnlyWhenItMayHaveMoved(t *testing.T) {
	f := newFake()
	now := t0
	for range 3 {
		f.add("sleep", now)
	}
	w, rec := startedWatcher(t, f, &now)
	ctx := context.Background()
	poll := func(what string, wantReads int, want ...string) {
		t.Helper()
		f.reads = 0
		now = now.Add(200 * time.Millisecond)
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		same(t, what, describe(rec.take()), want...)
		if f.reads != wantReads {
			t.Errorf("%s: %d place reads, want %d", what, f.reads, wantReads)
		}
	}
	f.q.Delivered, f.q.Rev = 3, f.q.Rev+1
	poll("delivered", 0)
	f.add("sleep", now)
	poll("submitted", 1, "4:queued@4") // the new entry only
	f.set(1, models.StatusRunning, now, 1)
	f.q.Started = 2
	poll("started", headChunk, "1:running@0", "pos 2=1", "pos 3=2", "pos 4=3")
	f.set(1, models.StatusRunning, now, 2) // an attempt: rev and head move
	f.q.Head++
	poll("attempt", headChunk, "1:running@0")
	f.set(1, models.StatusRunning, now, 3) // rev alone: a writer without head
	poll("unexplained rev", headChunk, "1:running@0")
}

// A change whose queue-document update failed moves nothing a watcher
// polls: a start or finish at the head is seen within HeadAgain by a read
// of the head alone, a cancel deeper in the queue within LookAgain by the
// full read; before either, nothing is read but the queue document.
func TestWatcherCatchesUnannouncedChangesHeadFirst(t *testing.T) {
	f := newFake()
	now := t0
	for range 6 {
		f.add("sleep", now)
	}
	w, rec := startedWatcher(t, f, &now)
	ctx := context.Background()
	// Positions (ETAs) may move as time passes the running request's
	// estimate; only what happened to requests counts here.
	poll := func(what string, after time.Duration, wantReads int, want ...string) {
		t.Helper()
		f.reads = 0
		now = now.Add(after)
		if err := w.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range rec.take() {
			if e.Kind != KindPositions {
				got = append(got, describe([]Event{e})...)
			}
		}
		same(t, what, got, want...)
		if f.reads != wantReads {
			t.Errorf("%s: %d place reads, want %d", what, f.reads, wantReads)
		}
	}
	rev := f.q.Rev
	f.set(1, models.StatusRunning, now, 1)
	f.set(5, models.StatusCancelled, now, 0)
	f.q.Rev = rev // neither write's counter update made it
	for i := range 5 {
		poll(fmt.Sprintf("quiet %d", i), DefaultHeadAgain/6, 0)
	}
	poll("head again", DefaultHeadAgain/6, headChunk, "1:running@0")
	for now.Add(DefaultHeadAgain).Sub(t0) < DefaultLookAgain {
		poll("head only", DefaultHeadAgain, headChunk)
	}
	poll("look again", DefaultHeadAgain, 7, "5:cancelled@0") // six places and the end
}
