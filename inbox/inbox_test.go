package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/turnstile/turnstile/inbox"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// fakeSessions records deliveries (Temporal is faked here; the store is a
// real FerretDB over the wire; tests/ runs the real thing end to end).
type fakeSessions struct {
	mu   sync.Mutex
	down bool
	got  []models.Delivery
}

func (f *fakeSessions) Deliver(_ context.Context, _ string, d models.Delivery) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("temporal down")
	}
	f.got = append(f.got, d)
	return nil
}

func (f *fakeSessions) deliveries() []models.Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]models.Delivery(nil), f.got...)
}

// entries flattens deliveries, checking each covers (After, Through]
// contiguously after the previous one.
func entries(t *testing.T, ds []models.Delivery) []int64 {
	t.Helper()
	var out []int64
	for _, d := range ds {
		for _, e := range d.Entries {
			if e.Seq <= d.After || e.Seq > d.Through {
				t.Fatalf("entry %d outside its delivery (%d, %d]", e.Seq, d.After, d.Through)
			}
			out = append(out, e.Seq)
		}
	}
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func submitN(t *testing.T, in *inbox.Inbox, user string, n int) {
	t.Helper()
	for i := range n {
		if _, err := in.Submit(t.Context(), inbox.Submission{UserID: user, Items: []inbox.Item{{Type: "echo", Payload: fmt.Sprint(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// A burst costs about one signal per flush, and while Temporal is down the
// submissions are accepted and delivered, in order, once it is back.
func TestDispatcherCoalescesAndRetries(t *testing.T) {
	db := storetest.Open(t)
	sessions := &fakeSessions{down: true}
	d := inbox.NewDispatcher(t.Context(), inbox.DispatcherConfig{Linger: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}, sessions, db.Store.Queues)
	in := inbox.New(inbox.Config{MaxQueue: 100}, db.Store, d)
	submitN(t, in, "u1", 20)
	time.Sleep(100 * time.Millisecond)
	sessions.mu.Lock()
	sessions.down = false
	sessions.mu.Unlock()
	waitFor(t, func() bool { return len(entries(t, sessions.deliveries())) == 20 })
	got := entries(t, sessions.deliveries())
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("delivered %v, want 1..20 in order", got)
		}
	}
	if n := len(sessions.deliveries()); n > 3 {
		t.Fatalf("%d signals for 20 requests accepted while Temporal was down", n)
	}
	// The queue document is marked after the signal returns, so wait for it.
	var q store.Queue
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err = db.Store.Queues.Get(t.Context(), "u1")
		if err == nil && q.Delivered == 20 && q.Tail == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %+v %v, want delivered = tail = 20", q, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Requests accepted by a process that delivers nothing (it died after its
// 202s) are delivered by the relay, once.
func TestRelayDeliversOrphans(t *testing.T) {
	db := storetest.Open(t)
	in := inbox.New(inbox.Config{MaxQueue: 100}, db.Store, nil)
	submitN(t, in, "u1", 3)
	if _, err := in.Submit(t.Context(), inbox.Submission{UserID: "u2", Items: []inbox.Item{{Type: "echo", Payload: "1"}, {Type: "echo", Payload: "2"}}}); err != nil {
		t.Fatal(err)
	}
	sessions := &fakeSessions{}
	r := inbox.NewRelay(inbox.RelayConfig{Grace: time.Nanosecond}, db.Store, sessions, nil)
	if err := r.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, sessions.deliveries()); len(got) != 5 {
		t.Fatalf("relayed %v, want the 5 accepted entries", got)
	}
	if err := r.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(sessions.deliveries()); n != 2 {
		t.Fatalf("%d deliveries after a second pass, want the 2 of the first", n)
	}
}

func TestSubmitCapAndKey(t *testing.T) {
	db := storetest.Open(t)
	in := inbox.New(inbox.Config{MaxQueue: 3}, db.Store, nil)
	ctx := t.Context()
	sub := inbox.Submission{UserID: "u1", Key: "k", Items: []inbox.Item{{Type: "echo", Payload: "1"}, {Type: "echo", Payload: "2"}}}
	a, err := in.Submit(ctx, sub)
	if err != nil || len(a.Requests) != 2 || a.Requests[1].Seq != 2 || a.Position != 1 {
		t.Fatalf("first: %+v %v", a, err)
	}
	b, err := in.Submit(ctx, sub)
	if err != nil || !b.Replayed || b.Requests[0].ID != a.Requests[0].ID {
		t.Fatalf("replay: %+v %v", b, err)
	}
	sub.Items[1].Payload = "3"
	if _, err := in.Submit(ctx, sub); !errors.Is(err, inbox.ErrKeyReused) {
		t.Fatalf("other content, same key: %v", err)
	}
	// A client key that looks like a batch member's stored key is its own.
	if _, err := in.Submit(ctx, inbox.Submission{UserID: "u1", Key: "k#0", Items: []inbox.Item{{Type: "echo", Payload: "1"}}}); err != nil {
		t.Fatalf("key k#0: %v", err)
	}
	var full *inbox.QueueFullError
	if _, err := in.Submit(ctx, inbox.Submission{UserID: "u1", Items: []inbox.Item{{Type: "echo", Payload: "9"}}}); !errors.As(err, &full) || full.Queued != 3 {
		t.Fatalf("over the cap: %v", err)
	}
}

// A batch insert whose outcome was unknown is settled by a tombstone in its
// last member's place; the server may still land earlier members after
// that (the insert was in flight when the client gave up). Such members
// are void: a retry with the same key is accepted as a new submission,
// never answered "in use" for good, and the members count as queued
// nowhere. (Fault 9 found both under load.)
func TestSubmitAfterLateMembersOfAVoidedBatch(t *testing.T) {
	db := storetest.Open(t)
	raw, err := mongo.Connect(options.Client().ApplyURI(db.URI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Disconnect(context.Background()) })
	c := raw.Database(db.Name).Collection(store.RequestsCollection)
	ctx := t.Context()
	now := time.Now().UTC()
	// The tombstone that settled range 1..2, then member 1 landing late
	// with its idempotency key.
	if _, err := c.InsertOne(ctx, bson.D{
		{Key: "_id", Value: models.RequestID("u1", 2)}, {Key: "user_id", Value: "u1"}, {Key: "seq", Value: int64(2)},
		{Key: "status", Value: "void"}, {Key: "enqueued_at", Value: now}, {Key: "batch_start", Value: int64(1)}, {Key: "batch_end", Value: int64(2)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InsertOne(ctx, bson.D{
		{Key: "_id", Value: models.RequestID("u1", 1)}, {Key: "user_id", Value: "u1"}, {Key: "seq", Value: int64(1)},
		{Key: "type", Value: "echo"}, {Key: "payload", Value: "1"}, {Key: "status", Value: "queued"}, {Key: "enqueued_at", Value: now},
		{Key: "batch_start", Value: int64(1)}, {Key: "batch_end", Value: int64(2)}, {Key: "idem", Value: "u1\x00k 0"},
	}); err != nil {
		t.Fatal(err)
	}
	in := inbox.New(inbox.Config{MaxQueue: 10}, db.Store, nil)
	sub := inbox.Submission{UserID: "u1", Key: "k", Items: []inbox.Item{{Type: "echo", Payload: "1"}, {Type: "echo", Payload: "2"}}}
	a, err := in.Submit(ctx, sub)
	if err != nil || a.Replayed || len(a.Requests) != 2 || a.Requests[0].Seq != 3 {
		t.Fatalf("retry after a voided batch: %+v %v, want accepted anew at 3..4", a, err)
	}
	counts, err := db.Store.Requests.CountByStatus(ctx)
	if err != nil || counts[models.StatusQueued] != 2 {
		t.Fatalf("queued %v %v, want the 2 accepted (the late member is void)", counts, err)
	}
	b, err := in.Submit(ctx, sub)
	if err != nil || !b.Replayed || b.Requests[0].ID != a.Requests[0].ID {
		t.Fatalf("second retry: %+v %v, want the replay of the first", b, err)
	}
}

// While a user's session has delivered work it has not started, new
// entries are held for about half that work's time (capped by MaxHold), so
// submissions one at a time share a signal; a session with nothing waiting
// gets its entries after the linger alone, and a flush sends held entries
// at once.
func TestDispatcherHoldsEntriesForABusySession(t *testing.T) {
	db := storetest.Open(t)
	sessions := &fakeSessions{}
	d := inbox.NewDispatcher(t.Context(), inbox.DispatcherConfig{Linger: time.Millisecond, MaxHold: 2 * time.Second}, sessions, db.Store.Queues)
	in := inbox.New(inbox.Config{MaxQueue: 100}, db.Store, d)
	ctx := t.Context()
	// Idle: delivered at once.
	submitN(t, in, "u1", 1)
	waitFor(t, func() bool { return len(sessions.deliveries()) == 1 })
	// Busy: the session holds 1..20 and has started 1; a second reading
	// 200 ms later finds 5 started: 50 ms a request, 16 held, so about
	// 400 ms of hold.
	now := time.Now().UTC()
	if err := db.Store.Queues.Delivered(ctx, "u1", 20, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Store.Queues.Started(ctx, "u1", 1, now); err != nil {
		t.Fatal(err)
	}
	submitN(t, in, "u1", 1) // first reading of the pace: no hold yet
	waitFor(t, func() bool { return len(sessions.deliveries()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if err := db.Store.Queues.Started(ctx, "u1", 5, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	submitN(t, in, "u1", 3)
	waitFor(t, func() bool { return len(sessions.deliveries()) == 3 })
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("entries for a busy session were sent after %s, want them held", waited)
	}
	if got := entries(t, sessions.deliveries()[2:]); len(got) != 3 {
		t.Fatalf("held delivery carried %v, want the 3 submitted meanwhile in one signal", got)
	}
	// A flush sends what is held at once.
	submitN(t, in, "u1", 1)
	in.Flush("u1")
	start = time.Now()
	waitFor(t, func() bool { return len(sessions.deliveries()) == 4 })
	if waited := time.Since(start); waited > 300*time.Millisecond {
		t.Errorf("a flushed delivery waited %s", waited)
	}
}
