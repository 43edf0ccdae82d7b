package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

func items(n int, key string) []models.Request {
	out := make([]models.Request, n)
	for i := range out {
		out[i] = models.Request{Type: "echo", Payload: fmt.Sprintf(`{"i":%d}`, i), EnqueuedAt: time.Now().UTC().Truncate(time.Millisecond)}
		if key != "" {
			out[i].IdempotencyKey = fmt.Sprintf("%s %d", key, i)
		}
	}
	return out
}

func seqs(entries []store.Entry) []int64 {
	out := make([]int64, len(entries))
	for i, e := range entries {
		out[i] = e.Seq
	}
	return out
}

func TestAppendSequencesAndIDs(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	user := newID(t)
	a, err := s.Requests.Append(ctx, user, 0, items(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	// A stale hint (0) still ends after what is committed.
	b, err := s.Requests.Append(ctx, user, 0, items(3, ""))
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Requests.Append(ctx, user, 0, items(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	got := []int64{a[0].Seq, b[0].Seq, b[1].Seq, b[2].Seq, c[0].Seq}
	if !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("sequence numbers %v, want 1..5", got)
	}
	if c[0].ID != models.RequestID(user, 5) {
		t.Fatalf("ID %q, want %q", c[0].ID, models.RequestID(user, 5))
	}
	if r := mustGet(t, s, b[1].ID); r.Seq != 3 || r.Status != models.StatusQueued || r.UserID != user {
		t.Fatalf("stored %+v", r)
	}
	page, err := s.Requests.Entries(ctx, user, 0, 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(page.Entries), []int64{1, 2, 3, 4, 5}) || page.Through != 5 || page.Blocked {
		t.Fatalf("entries %v through %d blocked %v", seqs(page.Entries), page.Through, page.Blocked)
	}
	page, err = s.Requests.Entries(ctx, user, 2, 2, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A batch is read whole, so a limit can be passed by its members.
	if !slices.Equal(seqs(page.Entries), []int64{3, 4}) || page.Through != 4 {
		t.Fatalf("entries after 2: %v through %d", seqs(page.Entries), page.Through)
	}
}

// Concurrent submitters of one user, all starting from a stale hint, get
// distinct consecutive numbers, and the sequence has no hole.
func TestAppendConcurrentNoDuplicatesNoGaps(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	user := newID(t)
	const workers, each = 6, 8
	var (
		mu  sync.Mutex
		all []int64
		wg  sync.WaitGroup
	)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := 1 + (w+i)%3 // singles and batches mixed
				got, err := s.Requests.Append(ctx, user, 0, items(n, ""))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, r := range got {
					all = append(all, r.Seq)
				}
				mu.Unlock()
				for k := 1; k < len(got); k++ {
					if got[k].Seq != got[k-1].Seq+1 {
						errs <- fmt.Errorf("batch not consecutive: %v", got)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(all)
	for i, v := range all {
		if v != int64(i+1) {
			t.Fatalf("sequence numbers %v: want 1..%d without holes or repeats", all, len(all))
		}
	}
	page, err := s.Requests.Entries(ctx, user, 0, 1000, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != len(all) {
		t.Fatalf("walk found %d entries, appended %d", len(page.Entries), len(all))
	}
}

func TestAppendIdempotencyKeyTaken(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	user := newID(t)
	first, err := s.Requests.Append(ctx, user, 0, items(2, "k"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Requests.Append(ctx, user, first[1].Seq, items(2, "k"))
	if !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("second append with the same keys: %v, want ErrDuplicate", err)
	}
	// A batch whose second key is taken is voided whole: nothing of it runs
	// or lists, and the next append goes after its range.
	mixed := items(2, "")
	mixed[1].IdempotencyKey = "k 1"
	if _, err := s.Requests.Append(ctx, user, first[1].Seq, mixed); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("batch with a taken key: %v, want ErrDuplicate", err)
	}
	next, err := s.Requests.Append(ctx, user, 0, items(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	if next[0].Seq != 5 {
		t.Fatalf("next seq %d, want 5 (after the voided 3..4)", next[0].Seq)
	}
	page, err := s.Requests.Entries(ctx, user, 0, 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(page.Entries), []int64{1, 2, 5}) {
		t.Fatalf("entries %v, want 1 2 5", seqs(page.Entries))
	}
	if _, err := s.Requests.Get(ctx, user, models.RequestID(user, 3)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a member of a voided batch: %v, want ErrNotFound", err)
	}
	// The voided member counts nowhere (it is not queued).
	counts, err := s.Requests.CountByStatus(ctx)
	if err != nil || counts[models.StatusQueued] != 3 {
		t.Fatalf("queued count %v %v, want 3 (the voided member is not queued)", counts, err)
	}

	q, _ := s.Queues.Get(ctx, user)
	list, _, err := s.Requests.ListOwn(ctx, q, "", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(list); !slices.Equal(got, []string{next[0].ID, first[1].ID, first[0].ID}) {
		t.Fatalf("list %v", got)
	}
	if err := s.Requests.RememberKey(ctx, user, "k", ids(first)); err != nil {
		t.Fatal(err)
	}
	prev, err := s.Requests.ByKey(ctx, user, "k")
	if err != nil || !slices.Equal(ids(prev), ids(first)) {
		t.Fatalf("by key: %v %v", ids(prev), err)
	}
}

// A batch left half-inserted (its submitter crashed) blocks what follows it
// until AbandonAfter, then is voided, and the walk goes on.
func TestEntriesHalfInsertedBatch(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	user := newID(t)
	if _, err := s.Requests.Append(ctx, user, 0, items(1, "")); err != nil {
		t.Fatal(err)
	}
	// Seq 2..4 as a crashed submitter leaves it: the head only.
	head := bson.D{
		{Key: "_id", Value: models.RequestID(user, 2)}, {Key: "user_id", Value: user}, {Key: "seq", Value: int64(2)},
		{Key: "type", Value: "echo"}, {Key: "payload", Value: "1"}, {Key: "status", Value: "queued"},
		{Key: "enqueued_at", Value: time.Now().UTC()}, {Key: "batch_start", Value: int64(2)}, {Key: "batch_end", Value: int64(4)},
	}
	if _, err := raw.Collection(store.RequestsCollection).InsertOne(ctx, head); err != nil {
		t.Fatal(err)
	}
	// A later submission goes after the batch's range.
	later, err := s.Requests.Append(ctx, user, 1, items(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	if later[0].Seq != 5 {
		t.Fatalf("later seq %d, want 5", later[0].Seq)
	}
	page, err := s.Requests.Entries(ctx, user, 0, 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(page.Entries), []int64{1}) || !page.Blocked || page.Through != 1 {
		t.Fatalf("young half batch: entries %v through %d blocked %v; want 1, blocked at 1", seqs(page.Entries), page.Through, page.Blocked)
	}
	page, err = s.Requests.Entries(ctx, user, 0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(page.Entries), []int64{1, 5}) || page.Blocked || page.Through != 5 {
		t.Fatalf("abandoned half batch: entries %v through %d blocked %v; want 1 5", seqs(page.Entries), page.Through, page.Blocked)
	}
	if _, err := s.Requests.Get(ctx, user, models.RequestID(user, 2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("head of a voided batch: %v, want ErrNotFound", err)
	}
}

func TestListOwnPagesAndFilters(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	user, other := newID(t), newID(t)
	var all []models.Request
	for i := range 7 {
		got, err := s.Requests.Append(ctx, user, 0, items(1+i%2, ""))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		if _, err := s.Requests.Append(ctx, other, 0, items(1, "")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Requests.CancelQueued(ctx, user, all[3].ID, t0); err != nil {
		t.Fatal(err)
	}
	q := store.Queue{UserID: user} // a stale hint: the list looks past it
	var got []string
	before := int64(0)
	for {
		page, next, err := s.Requests.ListOwn(ctx, q, "", 4, before)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(page)...)
		if next == 0 {
			break
		}
		before = next
	}
	want := ids(all)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("pages %v\nwant  %v", got, want)
	}
	cancelled, _, err := s.Requests.ListOwn(ctx, q, models.StatusCancelled, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(cancelled), []string{all[3].ID}) {
		t.Fatalf("cancelled: %v", ids(cancelled))
	}
}

func TestQueuesHints(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	user := newID(t)
	if err := s.Queues.Committed(ctx, user, 5, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Queues.Committed(ctx, user, 3, t0); err != nil { // never lowers
		t.Fatal(err)
	}
	if err := s.Queues.Handled(ctx, user, 3, t0); err != nil {
		t.Fatal(err)
	}
	q, err := s.Queues.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if q.Tail != 5 || q.Low != 3 || q.Pending() != 3 || q.Position(4) != 2 {
		t.Fatalf("queue %+v pending %d", q, q.Pending())
	}
	und, err := s.Queues.Undelivered(ctx)
	if err != nil || len(und) != 1 || und[0].UserID != user {
		t.Fatalf("undelivered %+v %v", und, err)
	}
	if err := s.Queues.Delivered(ctx, user, 5, t0); err != nil {
		t.Fatal(err)
	}
	if und, _ := s.Queues.Undelivered(ctx); len(und) != 0 {
		t.Fatalf("undelivered after delivery: %+v", und)
	}
}

// A member that lands after the tombstone voiding its batch (the insert
// was still running on the server) is voided again by the sweeps after the
// tombstone: it neither counts as queued nor holds its key.
func TestTombstoneSweepsLateMembers(t *testing.T) {
	defer store.SetSweepAfter(50*time.Millisecond, 200*time.Millisecond)()
	s, raw := open(t)
	ctx := testContext(t)
	user := newID(t)
	if _, err := s.Requests.Append(ctx, user, 0, items(1, "taken")); err != nil {
		t.Fatal(err)
	}
	// Seq 2..3: member 2 goes in, member 3's key is taken: the batch is
	// voided by a tombstone at 3.
	batch := items(2, "b")
	batch[1].IdempotencyKey = "taken 0"
	if _, err := s.Requests.Append(ctx, user, 1, batch); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("batch with a taken key: %v", err)
	}
	// Member 2 as a late landing leaves it: queued, with its key.
	if _, err := raw.Collection(store.RequestsCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: models.RequestID(user, 2)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "queued"}, {Key: "idem", Value: user + "\x00b 0"}}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		counts, err := s.Requests.CountByStatus(ctx)
		if err == nil && counts[models.StatusQueued] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queued %v %v, want 1: the late member was not swept", counts, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.Requests.ByIdempotencyKey(ctx, user, "b 0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the swept member's key: %v, want freed", err)
	}
}

// On the embedded store the gate's feed tells which users' queue documents
// moved; a server without it says ErrNoFeed.
func TestQueueChangesFromTheFeed(t *testing.T) {
	db := storetest.Open(t)
	s := db.Store
	ctx := testContext(t)
	cur := store.ChangeCursor{}
	_, _, cur, err := s.Queues.Changes(ctx, cur)
	if !db.Embedded {
		if !errors.Is(err, store.ErrNoFeed) {
			t.Fatalf("a server without the gate: %v, want ErrNoFeed", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	a, b := newID(t), newID(t)
	now := time.Now().UTC()
	if err := s.Queues.Started(ctx, a, 2, now); err != nil {
		t.Fatal(err)
	}
	if err := s.Queues.Touch(ctx, b, store.ChangeHead, now); err != nil {
		t.Fatal(err)
	}
	changes, all, next, err := s.Queues.Changes(ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	fields := map[string][]string{}
	for _, c := range changes {
		users = append(users, c.ID)
		fields[c.ID] = c.Fields
	}
	slices.Sort(users)
	want := []string{a, b}
	slices.Sort(want)
	if all || !slices.Equal(users, want) {
		t.Errorf("after a start of %s and a touch of %s: %v (all %v)", a, b, users, all)
	}
	// A start sets only its counters: a reader can tell it from a steer.
	for _, c := range changes {
		if c.ID == a && (!c.Only("started", "rev", "updated_at") || c.Only("rev", "updated_at")) {
			t.Errorf("the start's fields: %v, want started, rev, updated_at", c.Fields)
		}
	}
	if changes, all, _, err = s.Queues.Changes(ctx, next); err != nil || all || len(changes) != 0 {
		t.Errorf("nothing since: %v (all %v, %v)", changes, all, err)
	}
	// The requests' feed lists an accepted entry by its _id.
	rcur := store.ChangeCursor{}
	if _, _, rcur, err = s.Requests.Changes(ctx, rcur); err != nil {
		t.Fatal(err)
	}
	acc, err := s.Requests.Append(ctx, a, 0, items(1, ""))
	if err != nil {
		t.Fatal(err)
	}
	rch, all, _, err := s.Requests.Changes(ctx, rcur)
	if err != nil || all || !slices.ContainsFunc(rch, func(c store.Written) bool { return c.ID == acc[0].ID && c.Fields == nil }) {
		t.Errorf("after accepting %s: %+v (all %v, %v), want it listed, any field", acc[0].ID, rch, all, err)
	}
}
