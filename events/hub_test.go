package events

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// fakeFeed hands out the moves the test queues up (a unit-test fake; the
// store test runs the real feed through the gate).
type fakeFeed struct {
	mu    sync.Mutex
	moves [][]string
	all   bool
	err   error
	calls int
	// fields are what each move set (nil: any).
	fields []string
}

func (f *fakeFeed) read(_ context.Context, c store.ChangeCursor) ([]store.Written, bool, store.ChangeCursor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, false, c, f.err
	}
	next := store.ChangeCursor{Epoch: 1, Seq: c.Seq + 1}
	if c == (store.ChangeCursor{}) {
		return nil, false, next, nil
	}
	all := f.all
	f.all = false
	var ws []store.Written
	for _, m := range f.moves {
		for _, id := range m {
			ws = append(ws, store.Written{ID: id, Fields: f.fields})
		}
	}
	f.moves = nil
	return ws, all, next, nil
}

func (f *fakeFeed) move(users ...string) {
	f.mu.Lock()
	f.moves = append(f.moves, users)
	f.mu.Unlock()
}

func woken(s *Sub, within time.Duration) bool {
	select {
	case <-s.C():
		return true
	case <-time.After(within):
		return false
	}
}

func drain(s *Sub) {
	s.Take()
	for {
		select {
		case <-s.C():
		default:
			return
		}
	}
}

func TestHubWakesTheWatchersOfTheUsersThatMoved(t *testing.T) {
	f := &fakeFeed{}
	h := NewHub(f.read, nil, 5*time.Millisecond)
	a, doneA := h.Subscribe("a")
	b, doneB := h.Subscribe("b")
	if !woken(a, time.Second) || !woken(b, time.Second) {
		t.Fatal("a fresh feed wakes everyone (what moved before it is unknown)")
	}
	for deadline := time.Now().Add(time.Second); !h.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("hub not live")
		}
	}
	drain(a)
	drain(b)
	f.move("a")
	if !woken(a, time.Second) {
		t.Error("a moved: a not woken")
	}
	if woken(b, 50*time.Millisecond) {
		t.Error("a moved: b woken")
	}
	f.mu.Lock()
	f.all = true
	f.mu.Unlock()
	if !woken(a, time.Second) || !woken(b, time.Second) {
		t.Error("the feed could not tell: both woken")
	}
	doneA()
	doneB()
	f.mu.Lock()
	calls := f.calls
	f.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls != calls {
		t.Errorf("with nobody listening the hub still read the feed (%d → %d calls)", calls, f.calls)
	}
}

func TestHubWithoutAFeedIsNotLive(t *testing.T) {
	f := &fakeFeed{err: store.ErrNoFeed}
	h := NewHub(f.read, nil, time.Millisecond)
	_, done := h.Subscribe("a")
	defer done()
	time.Sleep(20 * time.Millisecond)
	if h.Live() {
		t.Error("live without a feed")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls != 1 {
		t.Errorf("%d feed reads, want 1 (no feed: stop asking)", f.calls)
	}
}

// lockedStore is fakeStore for a watcher that runs in its own goroutine,
// counting the queue reads.
type lockedStore struct {
	mu     sync.Mutex
	f      *fakeStore
	qreads int
}

func (l *lockedStore) Queue(ctx context.Context, u string) (store.Queue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.qreads++
	return l.f.Queue(ctx, u)
}

func (l *lockedStore) Window(ctx context.Context, u string, from, hint int64, limit int) ([]store.Placed, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Window(ctx, u, from, hint, limit)
}

// With a live hub a watcher reads the queue document when the hub says it
// moved, not on every tick.
func TestWatcherWithALiveHubPollsOnlyWhenWoken(t *testing.T) {
	l := &lockedStore{f: newFake()}
	l.f.add("echo", t0)
	feed := &fakeFeed{}
	h := NewHub(feed.read, nil, 2*time.Millisecond)
	w := NewWatcher(Config{Poll: time.Millisecond, Quiet: time.Hour, Hub: h}, l, nil, "u")
	evs := make(chan Event, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx, nil, func(e Event) error { evs <- e; return nil }) }()
	if e := <-evs; e.Kind != KindRequest || e.Request.Status != models.StatusQueued {
		t.Fatalf("first event %+v", e)
	}
	for deadline := time.Now().Add(time.Second); !h.Live(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("hub not live")
		}
	}
	time.Sleep(20 * time.Millisecond) // the wake of the fresh feed
	l.mu.Lock()
	before := l.qreads
	l.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // 50 ticks
	l.mu.Lock()
	quiet := l.qreads - before
	l.f.set(1, models.StatusRunning, t0, 1)
	l.f.q.Started = 2
	l.mu.Unlock()
	if quiet != 0 {
		t.Errorf("%d queue reads in 50 ticks with nothing moved, want 0", quiet)
	}
	feed.move("u")
	select {
	case e := <-evs:
		if e.Kind != KindRequest || e.Request.Status != models.StatusRunning {
			t.Errorf("after the move: %+v, want the start", e)
		}
	case <-time.After(time.Second):
		t.Error("the move was not seen within a second")
	}
}

func waitPlacesLive(t *testing.T, h *Hub) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !h.PlacesLive(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("hub's places not live")
		}
	}
}

// With the requests' feed, a request document's write wakes its user's
// watchers with its _id, and a move of the queue document that only the
// request writes explain (a start's counters) wakes nobody for the queue
// document; a steering move still does. Without that feed, every queue
// move wakes as before.
func TestHubWakesWithThePlacesWrittenAndSkipsTheCountersTheyExplain(t *testing.T) {
	qf, rf := &fakeFeed{}, &fakeFeed{}
	h := NewHub(qf.read, rf.read, 2*time.Millisecond)
	a, doneA := h.Subscribe("a")
	defer doneA()
	b, doneB := h.Subscribe("b")
	defer doneB()
	waitPlacesLive(t, h)
	time.Sleep(10 * time.Millisecond)
	drain(a)
	drain(b)

	rf.move(models.RequestID("a", 3), "not-an-entry")
	qf.mu.Lock()
	qf.fields = []string{"started", "rev", "updated_at"}
	qf.mu.Unlock()
	qf.move("a")
	if !woken(a, time.Second) {
		t.Fatal("a's request written: a not woken")
	}
	time.Sleep(10 * time.Millisecond) // both feeds read in that round
	if queue, ids := a.Take(); queue || fmt.Sprint(ids) != "["+models.RequestID("a", 3)+"]" {
		t.Errorf("a woken with queue %v, ids %v; want only its place 3", queue, ids)
	}
	if woken(b, 30*time.Millisecond) {
		t.Error("a's request written: b woken")
	}

	moveQueueFields(t, qf, a, "a's steering moved", "steer", "rev", "updated_at")

	rf.mu.Lock()
	rf.err = store.ErrNoFeed
	rf.mu.Unlock()
	for deadline := time.Now().Add(time.Second); h.PlacesLive(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("places still live without the requests' feed")
		}
	}
	if !h.Live() {
		t.Error("the queue feed still works: live")
	}
	drain(a)
	moveQueueFields(t, qf, a, "without the requests' feed, a start's counters moved", "started", "rev", "updated_at")
}

// moveQueueFields has qf report a write of fields to user a's queue document
// and checks that a's stream w is woken and told the queue document moved.
func moveQueueFields(t *testing.T, qf *fakeFeed, w *Sub, what string, fields ...string) {
	t.Helper()
	qf.mu.Lock()
	qf.fields = fields
	qf.mu.Unlock()
	qf.move("a")
	if !woken(w, time.Second) {
		t.Fatalf("%s: not woken", what)
	}
	if queue, _ := w.Take(); !queue {
		t.Errorf("%s: not told the queue document moved", what)
	}
}

// Told which request documents were written, a watcher reads just those
// places (and new ones up to the highest told), not the queue document; a
// new entry told before the one below it is read once that one is.
func TestWatcherReadsThePlacesItIsToldOf(t *testing.T) {
	f := newFake()
	now := t0
	for range 3 {
		f.add("echo", now)
	}
	w := NewWatcher(Config{Now: func() time.Time { return now }}, f, nil, "u")
	rec := &recorder{}
	w.emit = rec.emit
	if err := w.start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	rec.take()
	qreads := 0
	cs := &countingQueue{fakeStore: f, n: &qreads}
	w.store = cs

	f.set(1, models.StatusRunning, now, 1)
	f.reads = 0
	if err := w.Places(context.Background(), []string{models.RequestID("u", 1)}); err != nil {
		t.Fatal(err)
	}
	same(t, "1 started", describe(rec.take()), "1:running@0", "pos 2=1", "pos 3=2")
	if f.reads != 1 || qreads != 0 {
		t.Errorf("a start told: %d place reads, %d queue reads; want 1 and 0", f.reads, qreads)
	}

	// Place 5 is committed before 4 (concurrent submissions).
	f.add("echo", now)
	p4 := f.places[4]
	delete(f.places, 4)
	f.add("echo", now)
	f.reads = 0
	if err := w.Places(context.Background(), []string{models.RequestID("u", 5)}); err != nil {
		t.Fatal(err)
	}
	same(t, "5 told before 4 exists", describe(rec.take()))
	f.places[4] = p4
	if err := w.Places(context.Background(), []string{models.RequestID("u", 4)}); err != nil {
		t.Fatal(err)
	}
	same(t, "4 told", describe(rec.take()), "4:queued@3", "5:queued@4")

	f.set(1, models.StatusSucceeded, now, 1)
	f.set(2, models.StatusRunning, now, 1)
	f.reads = 0
	if err := w.Places(context.Background(), []string{models.RequestID("u", 2), models.RequestID("u", 1), "u-gone"}); err != nil {
		t.Fatal(err)
	}
	same(t, "1 done, 2 started", describe(rec.take()), "1:succeeded@0", "2:running@0", "pos 3=1", "pos 4=2", "pos 5=3")
	if f.reads != 2 || qreads != 0 {
		t.Errorf("a finish and a start told: %d place reads, %d queue reads; want 2 (one read of places 1-2) and 0", f.reads, qreads)
	}
	if err := w.Places(context.Background(), []string{models.RequestID("u", 1)}); err != nil {
		t.Fatal(err)
	}
	same(t, "a finished request told again, below the floor", describe(rec.take()))
}

// countingQueue is a fakeStore that counts the queue document's reads.
type countingQueue struct {
	*fakeStore
	n *int
}

func (c *countingQueue) Queue(ctx context.Context, u string) (store.Queue, error) {
	*c.n++
	return c.fakeStore.Queue(ctx, u)
}

// With a live hub on both feeds, a start reaches the stream from the
// request's write, with no read of the queue document.
func TestWatcherWithPlacesLiveSeesAStartWithoutAQueueRead(t *testing.T) {
	l := &lockedStore{f: newFake()}
	l.f.add("echo", t0)
	qf, rf := &fakeFeed{}, &fakeFeed{}
	h := NewHub(qf.read, rf.read, 2*time.Millisecond)
	w := NewWatcher(Config{Poll: time.Millisecond, Quiet: time.Hour, Hub: h}, l, nil, "u")
	evs := make(chan Event, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx, nil, func(e Event) error { evs <- e; return nil }) }()
	<-evs
	waitPlacesLive(t, h)
	time.Sleep(20 * time.Millisecond) // the wake of the fresh feeds
	l.mu.Lock()
	before := l.qreads
	l.f.set(1, models.StatusRunning, t0, 1)
	l.f.q.Started = 2
	l.mu.Unlock()
	rf.move(models.RequestID("u", 1))
	qf.mu.Lock()
	qf.fields = []string{"started", "rev", "updated_at"}
	qf.mu.Unlock()
	qf.move("u")
	select {
	case e := <-evs:
		if e.Kind != KindRequest || e.Request.Status != models.StatusRunning {
			t.Errorf("after the start: %+v, want it", e)
		}
	case <-time.After(time.Second):
		t.Fatal("the start was not seen within a second")
	}
	time.Sleep(20 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.qreads - before; n != 0 {
		t.Errorf("%d queue reads for a start told by its place, want 0", n)
	}
}
