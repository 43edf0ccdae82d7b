package events

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// Feed reads which documents of a collection writes touched since a
// cursor (store.Queues.Changes, store.Requests.Changes); store.ErrNoFeed
// where the server has none.
type Feed func(ctx context.Context, c store.ChangeCursor) (changes []store.Written, all bool, next store.ChangeCursor, err error)

// DefaultFeedEvery is how often a hub asks the feeds.
const DefaultFeedEvery = 50 * time.Millisecond

// placeFields are the queue document's fields whose moves the request
// documents' own writes show (a submission, a delivery, a start, a
// finish, an attempt), so that while the requests' feed works a move of
// only these wakes no stream: the write of the request itself does, with
// its place.
var placeFields = []string{"tail", "delivered", "started", "low", "head", "rev", "updated_at"}

// Hub follows the store's change feeds for one API instance and wakes the
// watchers of the users whose documents moved: with it, a stream reads
// what moved, not everything on every poll tick (200 streams polling every
// 200 ms read 1,000 documents a second). It follows two feeds: the queue
// documents' (a steering change, a cancel's scan counter) and, if given,
// the request documents' (whose _ids name the user and the place), so a
// start or a finish wakes its user's streams with the very place that
// moved, at the request's own write, and they read just that place.
// While the feeds work, a watcher's own polls are only a safety net
// (Config.Quiet); where there are none (a real MongoDB, a FerretDB without
// the gate), or while they fail, watchers poll as before. It runs while
// anyone listens.
type Hub struct {
	queues, requests Feed
	every            time.Duration

	mu         sync.Mutex
	subs       map[string]map[*Sub]struct{}
	n          int
	live       bool
	placesLive bool
	stop       context.CancelFunc
	done       chan struct{}
	noFeed     bool
}

// NewHub follows the queue documents' feed queues and, if not nil, the
// request documents' feed requests, every every (<= 0: DefaultFeedEvery).
func NewHub(queues, requests Feed, every time.Duration) *Hub {
	if every <= 0 {
		every = DefaultFeedEvery
	}
	return &Hub{queues: queues, requests: requests, every: every, subs: map[string]map[*Sub]struct{}{}}
}

// Sub is one watcher's subscription: C receives (one pending wake at most,
// never blocking the hub) when something of its user's moved, and Take
// says what.
type Sub struct {
	c chan struct{}

	mu    sync.Mutex
	queue bool                // the queue document may have moved
	ids   map[string]struct{} // request documents that were written
}

// C is the wake channel.
func (s *Sub) C() <-chan struct{} { return s.c }

// Take returns and forgets what moved since the last Take: whether the
// queue document may have (or anything: the feed could not tell), and the
// request documents written.
func (s *Sub) Take() (queue bool, ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	queue, s.queue = s.queue, false
	for id := range s.ids {
		ids = append(ids, id)
	}
	clear(s.ids)
	return queue, ids
}

func (s *Sub) poke(queue bool, id string) {
	s.mu.Lock()
	if queue {
		s.queue = true
	}
	if id != "" {
		if s.ids == nil {
			s.ids = map[string]struct{}{}
		}
		s.ids[id] = struct{}{}
	}
	s.mu.Unlock()
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// Subscribe returns userID's subscription and the function that ends it.
func (h *Hub) Subscribe(userID string) (*Sub, func()) {
	s := &Sub{c: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[userID] == nil {
		h.subs[userID] = map[*Sub]struct{}{}
	}
	h.subs[userID][s] = struct{}{}
	h.n++
	if h.n == 1 && !h.noFeed {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.done = cancel, make(chan struct{})
		go h.run(ctx, h.done)
	}
	var once sync.Once
	return s, func() { once.Do(func() { h.unsubscribe(userID, s) }) }
}

func (h *Hub) unsubscribe(userID string, s *Sub) {
	h.mu.Lock()
	delete(h.subs[userID], s)
	if len(h.subs[userID]) == 0 {
		delete(h.subs, userID)
	}
	h.n--
	var stop context.CancelFunc
	var done chan struct{}
	if h.n == 0 && h.stop != nil {
		stop, done, h.stop, h.live, h.placesLive = h.stop, h.done, nil, false, false
	}
	h.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Live reports whether the queue documents' feed answers: watchers may
// then rest.
func (h *Hub) Live() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live
}

// PlacesLive reports whether the request documents' feed answers too:
// a start, a finish or a submission then wakes a watcher with its place,
// and a move of the queue document's counters alone does not.
func (h *Hub) PlacesLive() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live && h.placesLive
}

// follower is one feed as the hub reads it.
type follower struct {
	feed Feed
	cur  store.ChangeCursor
}

// read asks the feed; fresh means the cursor was new (what moved before
// it is unknown: treat as all).
func (f *follower) read(ctx context.Context) (changes []store.Written, all bool, err error) {
	changes, all, next, err := f.feed(ctx, f.cur)
	if err != nil {
		return nil, false, err
	}
	fresh := f.cur == (store.ChangeCursor{})
	f.cur = next
	return changes, all || fresh, nil
}

func (h *Hub) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	queues := &follower{feed: h.queues}
	var requests *follower
	if h.requests != nil {
		requests = &follower{feed: h.requests}
	}
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		// The requests first: a queue move seen in this round is then
		// either covered by a place read in it or woken for.
		var placed []store.Written
		placesAll, placesOK := false, false
		if requests != nil {
			var err error
			placed, placesAll, err = requests.read(ctx)
			switch {
			case errors.Is(err, store.ErrNoFeed):
				requests = nil
			case err == nil:
				placesOK = true
			}
		}
		moved, all, err := queues.read(ctx)
		switch {
		case errors.Is(err, store.ErrNoFeed):
			h.mu.Lock()
			h.noFeed, h.live, h.placesLive = true, false, false
			h.mu.Unlock()
			return
		case err != nil:
			// Watchers poll while the feed fails; asked again, the cursor
			// says whether anything was missed.
			h.setLive(false, false)
		default:
			h.setLive(true, placesOK)
			h.wake(moved, all || placesAll, placed, placesOK)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Hub) setLive(live, places bool) {
	h.mu.Lock()
	h.live, h.placesLive = live, places
	h.mu.Unlock()
}

// wake tells the watchers what moved: the users whose queue documents did
// (all: anyone's), and, with places, the request documents written (a
// queue move of placeFields only is then left to them).
func (h *Hub) wake(moved []store.Written, all bool, placed []store.Written, places bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if all {
		for _, subs := range h.subs {
			for s := range subs {
				s.poke(true, "")
			}
		}
	} else {
		for _, m := range moved {
			if places && m.Only(placeFields...) {
				continue
			}
			for s := range h.subs[m.ID] {
				s.poke(true, "")
			}
		}
	}
	for _, p := range placed {
		user, _, ok := models.ParseRequestID(p.ID)
		if !ok {
			continue // not an entry of a user's sequence
		}
		for s := range h.subs[user] {
			s.poke(false, p.ID)
		}
	}
}
