package events

import (
	"context"
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
}

func (f *fakeFeed) read(_ context.Context, c store.ChangeCursor) ([]string, bool, store.ChangeCursor, error) {
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
	var users []string
	for _, m := range f.moves {
		users = append(users, m...)
	}
	f.moves = nil
	return users, all, next, nil
}

func (f *fakeFeed) move(users ...string) {
	f.mu.Lock()
	f.moves = append(f.moves, users)
	f.mu.Unlock()
}

func woken(ch <-chan struct{}, within time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(within):
		return false
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func TestHubWakesTheWatchersOfTheUsersThatMoved(t *testing.T) {
	f := &fakeFeed{}
	h := NewHub(f.read, 5*time.Millisecond)
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
	h := NewHub(f.read, time.Millisecond)
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
	h := NewHub(feed.read, 2*time.Millisecond)
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
