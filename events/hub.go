package events

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/turnstile/turnstile/store"
)

// Feed reads which users' queue documents moved since a cursor
// (store.Queues.Changes); store.ErrNoFeed where the server has none.
type Feed func(ctx context.Context, c store.ChangeCursor) (users []string, all bool, next store.ChangeCursor, err error)

// DefaultFeedEvery is how often a hub asks the feed.
const DefaultFeedEvery = 50 * time.Millisecond

// Hub follows the store's change feed for one API instance and wakes the
// watchers of the users whose queue documents moved: with it, a stream
// reads its user's queue document when it moved, not on every poll tick
// (200 streams polling every 200 ms read 1,000 documents a second). While
// the feed works, a watcher's own polls are only a safety net (Config.Quiet);
// where there is none (a real MongoDB, a FerretDB without the gate), or
// while it fails, watchers poll as before. It runs while anyone listens.
type Hub struct {
	feed  Feed
	every time.Duration

	mu     sync.Mutex
	subs   map[string]map[chan struct{}]struct{}
	n      int
	live   bool
	stop   context.CancelFunc
	done   chan struct{}
	noFeed bool
}

// NewHub follows feed every every (<= 0: DefaultFeedEvery).
func NewHub(feed Feed, every time.Duration) *Hub {
	if every <= 0 {
		every = DefaultFeedEvery
	}
	return &Hub{feed: feed, every: every, subs: map[string]map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives (without blocking the hub:
// one pending wake at most) when userID's queue document may have moved,
// and the function that ends the subscription.
func (h *Hub) Subscribe(userID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[userID] == nil {
		h.subs[userID] = map[chan struct{}]struct{}{}
	}
	h.subs[userID][ch] = struct{}{}
	h.n++
	if h.n == 1 && !h.noFeed {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.done = cancel, make(chan struct{})
		go h.run(ctx, h.done)
	}
	var once sync.Once
	return ch, func() { once.Do(func() { h.unsubscribe(userID, ch) }) }
}

func (h *Hub) unsubscribe(userID string, ch chan struct{}) {
	h.mu.Lock()
	delete(h.subs[userID], ch)
	if len(h.subs[userID]) == 0 {
		delete(h.subs, userID)
	}
	h.n--
	var stop context.CancelFunc
	var done chan struct{}
	if h.n == 0 && h.stop != nil {
		stop, done, h.stop, h.live = h.stop, h.done, nil, false
	}
	h.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Live reports whether the feed answers: watchers may then rest.
func (h *Hub) Live() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live
}

func (h *Hub) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	var cur store.ChangeCursor
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		users, all, next, err := h.feed(ctx, cur)
		switch {
		case errors.Is(err, store.ErrNoFeed):
			h.mu.Lock()
			h.noFeed, h.live = true, false
			h.mu.Unlock()
			return
		case err != nil:
			// Watchers poll while the feed fails; asked again, the cursor
			// says whether anything was missed.
			h.setLive(false)
		case cur == (store.ChangeCursor{}):
			// A fresh cursor: what moved before it is unknown.
			cur = next
			h.setLive(true)
			h.wake(nil, true)
		default:
			cur = next
			h.setLive(true)
			h.wake(users, all)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Hub) setLive(live bool) {
	h.mu.Lock()
	h.live = live
	h.mu.Unlock()
}

func (h *Hub) wake(users []string, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	poke := func(subs map[chan struct{}]struct{}) {
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	if all {
		for _, subs := range h.subs {
			poke(subs)
		}
		return
	}
	for _, u := range users {
		poke(h.subs[u])
	}
}
