// Package events turns what the system of record holds about one user into
// a live stream of events: every status change of their requests, the
// positions and estimated start times of those waiting, and their
// session's state.
//
// A Watcher learns of changes from MongoDB, never from the memory of the
// process it runs in, so a stream sees the changes that any API instance
// or worker made. It polls the user's queue document (one read by _id);
// its change counters (store.Queue Rev, Scan, Steer) say when to read the
// requests again and which: only the head (the running and the next
// request) after a start or a finish, every waiting one after a cancel.
//
// Event IDs are cursors: "<floor>.<ms>", the lowest place in the user's
// sequence that was still waiting or running, and the time of the poll
// that produced the event. A stream resumed from one re-reads from that
// place and sends every request that changed since a little before that
// time (Grace), so a dropped connection loses no change; a change near the
// cut may arrive twice, and each event carries the request's whole state,
// so applying it again changes nothing.
package events

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// Kinds of event.
const (
	KindRequest   = "request"   // a request's state: Request, Position, ETA
	KindPositions = "positions" // positions and ETAs of waiting requests that moved
	KindSession   = "session"   // the session's state
)

// Event is one event of a user's stream.
type Event struct {
	ID   string
	Kind string

	Request  *models.Request
	Position int        // for a queued request: its place among the waiting, 1 = next
	ETA      *time.Time // queued: estimated start; running: estimated finish

	Positions []Position
	Session   *models.SessionState

	// Live: the event tells of a change the stream saw happen, not of the
	// state it found when it started or resumed.
	Live bool
}

// Position is where a waiting request stands.
type Position struct {
	ID       string     `json:"id"`
	Position int        `json:"position"`
	ETA      *time.Time `json:"eta"`
}

// Cursor is where a stream left off: the value of an event ID.
type Cursor struct {
	Floor int64
	At    time.Time
}

// String is the event ID form of c.
func (c Cursor) String() string { return fmt.Sprintf("%d.%d", c.Floor, c.At.UnixMilli()) }

// ParseCursor reads an event ID; ok is false for anything else.
func ParseCursor(s string) (c Cursor, ok bool) {
	f, ms, found := strings.Cut(s, ".")
	if !found {
		return Cursor{}, false
	}
	floor, err1 := strconv.ParseInt(f, 10, 64)
	at, err2 := strconv.ParseInt(ms, 10, 64)
	if err1 != nil || err2 != nil || floor < 1 || at <= 0 {
		return Cursor{}, false
	}
	return Cursor{Floor: floor, At: time.UnixMilli(at)}, true
}

// Store is what a watcher reads of the system of record.
type Store interface {
	Queue(ctx context.Context, userID string) (store.Queue, error)
	Window(ctx context.Context, userID string, from, hint int64, limit int) ([]store.Placed, int64, error)
}

// SessionState reads a user's session state: from Temporal, and for a
// closed session the steering its next run starts from.
type SessionState func(ctx context.Context, userID string) (models.SessionState, error)

// Defaults of Config.
const (
	DefaultPoll = 200 * time.Millisecond
	// DefaultLookAgain: a watcher reads the user's requests again after
	// this long even when the queue document did not move (a change whose
	// counter update failed is seen late, not never). The read examines
	// every place from the first live one, so it is rare: at 30 s, 200
	// streams of users with 40 waiting each read about 270 documents a
	// second, most of what the streams read under many-users. What it
	// alone catches is a cancel or requeue deeper in the queue whose
	// counter update failed; DefaultHeadAgain covers the head.
	DefaultLookAgain = 5 * time.Minute
	// DefaultHeadAgain: a watcher reads the head (the running request and
	// the next) this often even when the queue document did not move: a
	// start or a finish whose counter update failed shows within it.
	DefaultHeadAgain = 30 * time.Second
	// DefaultSessionEvery: the session state is read on every steering
	// change, when the queue of a session that is not open empties or
	// fills, and this often (what changes it unseen: an idle session
	// closing, an operator terminating a run).
	DefaultSessionEvery = 30 * time.Second
	// DefaultGrace covers how much later than its timestamp a change may
	// become visible (a slow write, clocks of other machines).
	DefaultGrace = 10 * time.Second
	// DefaultWindow bounds the places one read examines; it is above the
	// largest queue cap (app.MaxQueueLimit).
	DefaultWindow = 6000
	// DefaultQuiet: with a live Hub, a watcher still polls this often (a
	// safety net: the hub wakes it on every write it needs to see, and its
	// feeds say "all" when they cannot tell). At 5 s, 200 streams read 40
	// queue documents a second for nothing; the head read every
	// DefaultHeadAgain rides on these polls.
	DefaultQuiet = 30 * time.Second
	// historyPlaces is how many finished places before the waiting ones a
	// watcher reads at its start for the estimates.
	historyPlaces = 20
)

// Config tunes a Watcher; zero fields take the defaults.
type Config struct {
	Poll         time.Duration
	LookAgain    time.Duration
	HeadAgain    time.Duration
	SessionEvery time.Duration
	Grace        time.Duration
	Window       int
	// Hub, if set, wakes the watcher when its user's queue document
	// moved; while its feed works, the watcher polls on its own only
	// every Quiet.
	Hub   *Hub
	Quiet time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.LookAgain <= 0 {
		c.LookAgain = DefaultLookAgain
	}
	if c.HeadAgain <= 0 {
		c.HeadAgain = min(DefaultHeadAgain, c.LookAgain)
	}
	if c.SessionEvery <= 0 {
		c.SessionEvery = DefaultSessionEvery
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.Quiet <= 0 {
		c.Quiet = DefaultQuiet
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// item is what a watcher last told of one request.
type item struct {
	req      models.Request
	place    int64
	position int
	eta      *time.Time
}

func (it *item) live() bool { return !it.req.Status.Final() }

// Watcher follows one user's requests and session.
type Watcher struct {
	cfg     Config
	store   Store
	session SessionState
	userID  string

	items map[string]*item
	floor int64 // lowest place still live (or top+1)
	top   int64 // highest place read
	hint  int64 // highest place a write was told of (Places)
	q     store.Queue
	est   *Estimator

	sess     *models.SessionState
	sessAt   time.Time
	lookedAt time.Time
	headAt   time.Time // the last read of the head (a full read reads it too)
	hadLive  bool
	started  bool // start has sent the state it found
	emit     func(Event) error
	cursorAt time.Time
	// lean: a view for estimates (Views), with no stream: it keeps no
	// payloads, results or errors, and follows no more than Window places
	// from the floor.
	lean bool
}

// NewWatcher follows userID; session may be nil (no session events).
func NewWatcher(cfg Config, s Store, session SessionState, userID string) *Watcher {
	return &Watcher{cfg: cfg.withDefaults(), store: s, session: session, userID: userID,
		items: map[string]*item{}, est: NewEstimator()}
}

// Run sends events to emit until ctx ends or emit or a read fails. With a
// cursor (resume) it first sends every request that changed since it;
// without, the user's waiting and running requests and their session.
func (w *Watcher) Run(ctx context.Context, from *Cursor, emit func(Event) error) error {
	w.emit = emit
	var sub *Sub
	var wake <-chan struct{}
	if w.cfg.Hub != nil {
		s, done := w.cfg.Hub.Subscribe(w.userID) // before the first read: no move is missed
		defer done()
		sub, wake = s, s.C()
	}
	if err := w.start(ctx, from); err != nil {
		return err
	}
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	polled := w.cfg.Now()
	for {
		places := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
			queue, ids := sub.Take()
			places = w.cfg.Hub.PlacesLive()
			if places && len(ids) > 0 {
				if err := w.Places(ctx, ids); err != nil {
					return err
				}
			}
			if places && !queue {
				continue
			}
		case <-t.C:
			if w.cfg.Hub != nil && w.cfg.Hub.Live() && w.cfg.Now().Sub(polled) < w.cfg.Quiet {
				continue
			}
			places = w.cfg.Hub != nil && w.cfg.Hub.PlacesLive()
		}
		polled = w.cfg.Now()
		if err := w.poll(ctx, places); err != nil {
			return err
		}
	}
}

func (w *Watcher) cursor() string {
	return Cursor{Floor: max(w.floor, 1), At: w.cursorAt}.String()
}

func (w *Watcher) send(e Event) error {
	e.ID, e.Live = w.cursor(), w.started
	return w.emit(e)
}

// start reads the user's state once and sends the first events.
func (w *Watcher) start(ctx context.Context, from *Cursor) error {
	now := w.cfg.Now()
	q, err := w.store.Queue(ctx, w.userID)
	if err != nil {
		return fmt.Errorf("events: read queue: %w", err)
	}
	w.q, w.cursorAt, w.lookedAt, w.headAt = q, now, now, now
	floor := max(q.Low, 1) // nothing before low waits or runs
	var since time.Time
	if from != nil {
		floor, since = from.Floor, from.At.Add(-w.cfg.Grace)
	}
	// Finished requests before the floor feed the estimates.
	if hist, _, err := w.store.Window(ctx, w.userID, max(floor-historyPlaces, 1), floor-1, int(min(floor-1, historyPlaces))); err == nil {
		for _, p := range hist {
			w.est.Observe(p.Request)
		}
	}
	w.floor, w.top = floor, floor-1
	placed, top, err := w.store.Window(ctx, w.userID, floor, q.Tail, w.cfg.Window)
	if err != nil {
		return fmt.Errorf("events: read requests: %w", err)
	}
	w.top = max(w.top, top)
	var evs []Event
	for _, p := range placed {
		r := p.Request
		w.est.Observe(r)
		w.items[r.ID] = &item{req: w.keep(r), place: p.Place}
		if from == nil {
			if !r.Status.Final() {
				evs = append(evs, Event{Kind: KindRequest, Request: &r}) // a snapshot of what is live
			}
			continue
		}
		if !changedAt(r).Before(since) {
			// What changed while the client was away, each state it went
			// through.
			for _, st := range steps(nil, r, since) {
				evs = append(evs, Event{Kind: KindRequest, Request: &st})
			}
		} else if !r.Status.Final() {
			evs = append(evs, Event{Kind: KindRequest, Request: &r})
		}
	}
	w.settle()
	for i := range evs {
		if it := w.items[evs[i].Request.ID]; it != nil && evs[i].Request.Status == it.req.Status {
			evs[i].Position, evs[i].ETA = it.position, it.eta
		}
		if err := w.send(evs[i]); err != nil {
			return err
		}
	}
	w.hadLive = w.anyLive()
	if err := w.readSession(ctx, true, false); err != nil {
		return err
	}
	w.started = true
	return nil
}

// Poll reads the queue document and, if it moved, the requests it says
// may have changed, and sends what did.
func (w *Watcher) Poll(ctx context.Context) error { return w.poll(ctx, false) }

// poll is Poll; with places, the watcher hears of every write of its
// user's request documents (Places), so only the moves those do not show
// (a cancel's scan, the steering) and the timers make it read requests.
func (w *Watcher) poll(ctx context.Context, places bool) error {
	now := w.cfg.Now()
	q, err := w.store.Queue(ctx, w.userID)
	if err != nil {
		return fmt.Errorf("events: read queue: %w", err)
	}
	again := now.Sub(w.lookedAt) >= w.cfg.LookAgain
	headAgain := now.Sub(w.headAt) >= w.cfg.HeadAgain
	moved := q.Rev != w.q.Rev
	if places {
		moved = !sameSteering(q, w.q)
	}
	if !moved && !again && !headAgain {
		if now.Sub(w.sessAt) >= w.cfg.SessionEvery {
			return w.readSession(ctx, false, false)
		}
		return nil
	}
	prev := w.q
	w.q, w.cursorAt = q, now
	var changed []change
	if q.Scan != prev.Scan || again {
		w.lookedAt, w.headAt = now, now
		placed, top, err := w.store.Window(ctx, w.userID, w.floor, max(q.Tail, w.hint), w.cfg.Window)
		if err != nil {
			return fmt.Errorf("events: read requests: %w", err)
		}
		changed = w.apply(placed)
		w.top = max(w.top, top)
	} else {
		if (!places && headMoved(prev, q)) || headAgain {
			w.headAt = now
			if changed, err = w.readHead(ctx); err != nil {
				return err
			}
		}
		// New entries, once the tail hint moved past what was read (a
		// submission raises it before its 202; a hint that lags is made up
		// by the full read every LookAgain): exactly the places up to it,
		// not one past to find the end. With places, their inserts wake
		// the watcher with them (Places).
		if !places {
			more, err := w.readNew(ctx, q.Tail)
			if err != nil {
				return err
			}
			changed = append(changed, more...)
		}
	}
	return w.tell(ctx, changed, q.Steer != prev.Steer || q.Paused != prev.Paused)
}

// sameSteering: a and b agree on what only the queue document shows (the
// rest the request documents' writes show).
func sameSteering(a, b store.Queue) bool {
	return a.Scan == b.Scan && a.Steer == b.Steer && a.Paused == b.Paused && a.Policy == b.Policy && a.Closing == b.Closing
}

// Places reads the places of the request documents ids (written since the
// watcher last heard, as the hub tells it) and sends what changed: a
// request it follows is read at its place; one past what it read is a new
// entry, read with every place before it (a gap ends the read; the write
// that fills it is told too). No queue document read.
func (w *Watcher) Places(ctx context.Context, ids []string) error {
	var known []int64
	for _, id := range ids {
		if it := w.items[id]; it != nil {
			known = append(known, it.place)
			continue
		}
		if _, seq, ok := models.ParseRequestID(id); ok && seq > w.top {
			w.hint = max(w.hint, seq)
		}
	}
	if len(known) == 0 && w.hint <= w.top {
		return nil // a request the watcher no longer follows
	}
	w.cursorAt = w.cfg.Now()
	slices.Sort(known)
	known = slices.Compact(known)
	var changed []change
	for i := 0; i < len(known); {
		j := i
		for j+1 < len(known) && known[j+1] == known[j]+1 {
			j++
		}
		placed, _, err := w.store.Window(ctx, w.userID, known[i], known[j], int(known[j]-known[i]+1))
		if err != nil {
			return fmt.Errorf("events: read places: %w", err)
		}
		changed = append(changed, w.apply(placed)...)
		i = j + 1
	}
	more, err := w.readNew(ctx, w.hint)
	if err != nil {
		return err
	}
	return w.tell(ctx, append(changed, more...), false)
}

// readNew reads the places past the top through hint.
func (w *Watcher) readNew(ctx context.Context, hint int64) ([]change, error) {
	room := min(w.room(), int(max(hint, w.hint)-w.top))
	if room <= 0 {
		return nil, nil
	}
	placed, top, err := w.store.Window(ctx, w.userID, w.top+1, max(hint, w.hint), room)
	if err != nil {
		return nil, fmt.Errorf("events: read new requests: %w", err)
	}
	w.top = max(w.top, top)
	return w.apply(placed), nil
}

// tell works out positions afresh and sends the changes, the positions
// that moved and, when it may have moved (steered: the steering did), the
// session's state.
func (w *Watcher) tell(ctx context.Context, changed []change, steered bool) error {
	moved := w.settle()
	for _, ch := range changed {
		all := steps(ch.prev, ch.it.req, time.Time{})
		for i := range all {
			e := Event{Kind: KindRequest, Request: &all[i]}
			if i == len(all)-1 {
				e.Position, e.ETA = ch.it.position, ch.it.eta
			}
			if err := w.send(e); err != nil {
				return err
			}
		}
	}
	if len(moved) > 0 {
		if err := w.send(Event{Kind: KindPositions, Positions: moved}); err != nil {
			return err
		}
	}
	// A session read costs a Temporal call: only when the state may have
	// moved. An open session stays open as its queue empties and fills; a
	// closing one ends when it drains, a closed one opens on a submission.
	live := w.anyLive()
	open := w.sess != nil && w.sess.State == models.SessionOpen
	force := steered || (live != w.hadLive && !open)
	w.hadLive = live
	return w.readSession(ctx, force, force)
}

// headMoved: the running or next request may have changed since prev (a
// start, a finish, an attempt), not only the tail or what was delivered
// to the session. A move of rev that no counter explains (a writer that
// predates one) counts as the head's.
func headMoved(prev, q store.Queue) bool {
	if q.Started != prev.Started || q.Low != prev.Low || q.Head != prev.Head {
		return true
	}
	explained := q.Tail != prev.Tail || q.Delivered != prev.Delivered || q.Steer != prev.Steer ||
		q.Paused != prev.Paused || q.Policy != prev.Policy || q.Closing != prev.Closing
	return !explained
}

// headChunk is how many places past the floor one head read takes: the
// running request and the next, mostly.
const headChunk = 2

// readHead reads from the floor up to the first request still waiting as
// it was: starts and finishes happen in place order, so nothing after it
// changed without a cancel (which moves Scan and takes the full read).
func (w *Watcher) readHead(ctx context.Context) ([]change, error) {
	var changed []change
	for from := w.floor; from <= w.top; {
		placed, top, err := w.store.Window(ctx, w.userID, from, min(from+headChunk-1, w.top), headChunk)
		if err != nil {
			return nil, fmt.Errorf("events: read head: %w", err)
		}
		stillWaiting := false
		for _, p := range placed {
			if it := w.items[p.ID]; it != nil && it.req.Status == models.StatusQueued && p.Status == models.StatusQueued {
				stillWaiting = true
			}
		}
		changed = append(changed, w.apply(placed)...)
		if stillWaiting || top < from+headChunk-1 {
			break
		}
		from = top + 1
	}
	return changed, nil
}

// keep is r as the watcher remembers it.
func (w *Watcher) keep(r models.Request) models.Request {
	if w.lean {
		r.Payload, r.Result, r.Error = "", "", ""
	}
	return r
}

// room is how many places past the top a read of new entries may examine.
func (w *Watcher) room() int {
	if !w.lean {
		return w.cfg.Window
	}
	return w.cfg.Window - int(w.top-w.floor+1)
}

// change is a request whose state moved: prev is what was told of it
// before (nil if nothing).
type change struct {
	prev *models.Request
	it   *item
}

// apply records what was read and returns the requests whose state moved.
func (w *Watcher) apply(placed []store.Placed) []change {
	var changed []change
	for _, p := range placed {
		w.est.Observe(p.Request)
		it := w.items[p.ID]
		var prev *models.Request
		if it == nil {
			if p.Status.Final() && p.Place < w.floor {
				continue
			}
			it = &item{place: p.Place}
			w.items[p.ID] = it
		} else if it.req.Status == p.Status && it.req.Attempts == p.Attempts && it.place == p.Place {
			continue
		} else {
			r := it.req
			prev = &r
		}
		it.req, it.place = w.keep(p.Request), p.Place
		changed = append(changed, change{prev: prev, it: it})
	}
	return changed
}

// steps are the states cur went through since prev (nil: since it was
// accepted), at or after since (zero: all): a poll can miss a short-lived
// state (a request queued and started between two polls), and a client
// still learns of each. A step before cur has cur's fields as they were
// then, as far as the record tells (no result yet, no finish).
func steps(prev *models.Request, cur models.Request, since time.Time) []models.Request {
	var out []models.Request
	after := func(t *time.Time) bool { return t != nil && (since.IsZero() || !t.Before(since)) }
	if prev == nil && cur.Status != models.StatusQueued && after(&cur.EnqueuedAt) {
		q := cur
		q.Status, q.StartedAt, q.FinishedAt, q.Result, q.Error, q.Attempts = models.StatusQueued, nil, nil, "", "", 0
		out = append(out, q)
	}
	if cur.Status.Final() && cur.StartedAt != nil && (prev == nil || prev.Status == models.StatusQueued) && after(cur.StartedAt) {
		r := cur
		r.Status, r.FinishedAt, r.Result, r.Error = models.StatusRunning, nil, "", ""
		out = append(out, r)
	}
	return append(out, cur)
}

// settle moves the floor past finished requests, forgets them, and works
// out positions and ETAs afresh; it returns the waiting requests whose
// position or ETA moved (not those new or changed in this round, whose
// request event carries it).
func (w *Watcher) settle() []Position {
	live := make([]*item, 0, len(w.items))
	for _, it := range w.items {
		if it.live() {
			live = append(live, it)
		}
	}
	slices.SortFunc(live, func(a, b *item) int { return int(a.place - b.place) })
	w.floor = w.top + 1
	if len(live) > 0 {
		w.floor = live[0].place
	}
	// Finished ones stay known while a read of the window meets them.
	for id, it := range w.items {
		if !it.live() {
			it.position, it.eta = 0, nil
			if it.place < w.floor {
				delete(w.items, id)
			}
		}
	}
	now := w.cfg.Now()
	var moved []Position
	eta := now
	pos := 0
	for _, it := range live {
		switch it.req.Status {
		case models.StatusRunning:
			finish := w.est.Finish(it.req, now)
			it.eta, it.position = &finish, 0
			eta = finish
		case models.StatusQueued:
			pos++
			start := eta
			eta = eta.Add(w.est.Duration(it.req.Type))
			if it.position != pos || it.eta == nil || it.eta.Sub(start).Abs() >= etaStep {
				if it.position != 0 {
					moved = append(moved, Position{ID: it.req.ID, Position: pos, ETA: &start})
				}
				it.position, it.eta = pos, &start
			}
		}
	}
	return moved
}

// etaStep is the smallest change of an estimate worth an event.
const etaStep = time.Second

func (w *Watcher) anyLive() bool {
	for _, it := range w.items {
		if it.live() {
			return true
		}
	}
	return false
}

// readSession reads the session state when forced or due, and sends it if
// it changed; soon reads it again a second later (a steering signal, a
// session's end after its drain, may not have happened yet).
func (w *Watcher) readSession(ctx context.Context, force, soon bool) error {
	now := w.cfg.Now()
	if w.session == nil || (!force && now.Sub(w.sessAt) < w.cfg.SessionEvery) {
		return nil
	}
	w.sessAt = now
	if soon {
		w.sessAt = now.Add(min(time.Second, w.cfg.SessionEvery) - w.cfg.SessionEvery)
	}
	st, err := w.session(ctx, w.userID)
	if err != nil {
		return nil // Temporal may be down; the requests still stream
	}
	st.Queue = nil // the request events carry the queue
	if w.sess != nil && sameSession(*w.sess, st) {
		return nil
	}
	w.sess = &st
	return w.send(Event{Kind: KindSession, Session: &st})
}

// sameSession: the session event tells the state and the steering; the
// running request and the queue come in request events, so their counters
// (as of the read) ride along without causing one.
func sameSession(a, b models.SessionState) bool {
	return a.State == b.State && a.Paused == b.Paused && a.Policy == b.Policy
}

// changedAt is the time of r's last change.
func changedAt(r models.Request) time.Time {
	t := r.EnqueuedAt
	for _, p := range []*time.Time{r.StartedAt, r.FinishedAt} {
		if p != nil && p.After(t) {
			t = *p
		}
	}
	return t
}
