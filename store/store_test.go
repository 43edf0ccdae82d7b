package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// open returns a Store on a fresh database and a raw handle on the same
// database, to check what is really stored.
func open(t *testing.T) (*store.Store, *mongo.Database) {
	t.Helper()
	db := storetest.Open(t)
	raw, err := mongo.Connect(options.Client().ApplyURI(db.URI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Disconnect(context.Background()) })
	return db.Store, raw.Database(db.Name)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// t0 has millisecond precision, which is what BSON dates keep.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newID(t *testing.T) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func queued(t *testing.T, userID string) models.Request {
	return models.Request{
		ID:         newID(t),
		UserID:     userID,
		Type:       "echo",
		Payload:    `{"n":1}`,
		Status:     models.StatusQueued,
		EnqueuedAt: t0,
	}
}

func keyed(t *testing.T, userID, key string) models.Request {
	r := queued(t, userID)
	r.IdempotencyKey = key
	return r
}

func mustInsert(t *testing.T, s *store.Store, reqs ...models.Request) {
	t.Helper()
	if err := s.Requests.Insert(testContext(t), reqs...); err != nil {
		t.Fatal(err)
	}
}

func mustGet(t *testing.T, s *store.Store, id string) *models.Request {
	t.Helper()
	r, err := s.Requests.Get(testContext(t), "", id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ids(reqs []models.Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.ID
	}
	return out
}

func TestConnectUnreachable(t *testing.T) {
	start := time.Now()
	_, err := store.ConnectWith(testContext(t), "mongodb://127.0.0.1:1/", "x",
		store.Options{ServerSelectionTimeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Connect took %v despite a 300ms server selection timeout", d)
	}
}

func TestConnectWithOperationTimeout(t *testing.T) {
	// With Options.Timeout the driver sends maxTimeMS on every command; the
	// server must accept it on everything the store does.
	uri := storetest.URI(t)
	ctx := testContext(t)
	s, err := store.ConnectWith(ctx, uri, storetest.DatabaseName(t), store.Options{Timeout: 10 * time.Second, AppName: "store-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.DropDatabase(context.Background())
		_ = s.Close(context.Background())
	})
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	r := queued(t, "alice")
	mustInsert(t, s, r)
	if _, err := s.Requests.MarkRunning(ctx, r.ID, "", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Requests.List(ctx, "alice", "", 10, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Requests.CountQueued(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	tok, err := s.Tokens.Issue(ctx, "alice", "", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tokens.Rotate(ctx, tok, time.Hour, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tokens.DeleteExpired(ctx, t0); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureIndexesIdempotent(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	// storetest.New ran it once already.
	for range 2 {
		if err := s.EnsureIndexes(ctx); err != nil {
			t.Fatalf("EnsureIndexes again: %v", err)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	specs, err := raw.Collection(store.RequestsCollection).Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var idem *mongo.IndexSpecification
	for _, spec := range specs {
		if spec.Name == "idem_unique" {
			idem = &spec
		}
	}
	// FerretDB v1 accepts but ignores "sparse" and does not report it; its
	// SQLite unique index lets documents without the field coexist anyway
	// (NULLs are distinct), which TestRequestsIdempotencyKey checks.
	if idem == nil || idem.Unique == nil || !*idem.Unique || (idem.Sparse != nil && !*idem.Sparse) {
		t.Fatalf("no sparse unique idem index among %+v", specs)
	}
}

func TestUsers(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)

	alice := &models.User{Email: "  Alice@Example.COM ", PasswordHash: "h1"}
	if err := s.Users.Create(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if alice.ID == "" || alice.Role != models.RoleUser || alice.CreatedAt.IsZero() || alice.Email != "alice@example.com" {
		t.Fatalf("Create did not fill in the user: %+v", alice)
	}
	var stored bson.M
	if err := raw.Collection(store.UsersCollection).FindOne(ctx, bson.D{{Key: "_id", Value: alice.ID}}).Decode(&stored); err != nil {
		t.Fatal(err)
	}
	if stored["email"] != "alice@example.com" {
		t.Errorf("stored email = %v, want it lower-cased and trimmed", stored["email"])
	}

	err := s.Users.Create(ctx, &models.User{Email: "ALICE@example.com", PasswordHash: "h2"})
	if !errors.Is(err, store.ErrDuplicate) || !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("second Create with the same email: err = %v, want ErrDuplicate wrapping the driver's error", err)
	}

	got, err := s.Users.ByEmail(ctx, "alice@EXAMPLE.com ")
	if err != nil || got.ID != alice.ID || got.PasswordHash != "h1" || !got.CreatedAt.Equal(alice.CreatedAt) {
		t.Fatalf("ByEmail = %+v, %v; want %+v", got, err, alice)
	}
	if _, err := s.Users.ByEmail(ctx, "bob@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ByEmail(unknown) err = %v, want ErrNotFound", err)
	}
	if _, err := s.Users.ByID(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ByID(unknown) err = %v, want ErrNotFound", err)
	}

	if err := s.Users.SetDisabled(ctx, alice.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Users.SetRole(ctx, alice.ID, models.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	got, err = s.Users.ByID(ctx, alice.ID)
	if err != nil || !got.Disabled || got.Role != models.RoleAdmin {
		t.Fatalf("after SetDisabled and SetRole: %+v, %v", got, err)
	}
	if err := s.Users.SetRole(ctx, alice.ID, "root"); err == nil {
		t.Error("SetRole(root) succeeded")
	}
	if err := s.Users.SetDisabled(ctx, "nope", true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetDisabled(unknown) err = %v, want ErrNotFound", err)
	}
	if err := s.Users.SetRole(ctx, "nope", models.RoleUser); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetRole(unknown) err = %v, want ErrNotFound", err)
	}
}

func TestUsersList(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	var want []string
	for i := range 5 {
		u := &models.User{Email: fmt.Sprintf("u%d@example.com", i), PasswordHash: "h"}
		if err := s.Users.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		want = append(want, u.ID) // UUIDv7: creation order is ID order
	}
	var got []string
	after := ""
	for page := 0; ; page++ {
		users, err := s.Users.List(ctx, 2, after)
		if err != nil {
			t.Fatal(err)
		}
		if len(users) == 0 {
			break
		}
		if len(users) > 2 || page > 3 {
			t.Fatalf("page %d has %d users", page, len(users))
		}
		for _, u := range users {
			got = append(got, u.ID)
		}
		after = users[len(users)-1].ID
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged IDs %v, want %v", got, want)
	}
}

func TestRequestsIdempotencyKey(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)

	a1 := keyed(t, "alice", "k1")
	mustInsert(t, s, a1)

	a2 := keyed(t, "alice", "k1")
	err := s.Requests.Insert(ctx, a2)
	if !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("same key, same user: err = %v, want ErrDuplicate", err)
	}
	if _, err := s.Requests.Get(ctx, "", a2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the rejected duplicate was stored: %v", err)
	}

	b1 := keyed(t, "bob", "k1")
	mustInsert(t, s, b1) // same key, other user: fine

	// Keys are per user even when user ID and key run together alike
	// ("alice"+"k1", "alicek"+"1").
	c1 := keyed(t, "alicek", "1")
	mustInsert(t, s, c1)

	// Requests without a key never collide (sparse index).
	mustInsert(t, s, queued(t, "alice"), queued(t, "alice"))

	got, err := s.Requests.ByIdempotencyKey(ctx, "alice", "k1")
	if err != nil || got.ID != a1.ID || got.IdempotencyKey != "k1" {
		t.Fatalf("ByIdempotencyKey(alice) = %+v, %v; want %s", got, err, a1.ID)
	}
	got, err = s.Requests.ByIdempotencyKey(ctx, "bob", "k1")
	if err != nil || got.ID != b1.ID {
		t.Fatalf("ByIdempotencyKey(bob) = %+v, %v; want %s", got, err, b1.ID)
	}
	if _, err := s.Requests.ByIdempotencyKey(ctx, "carol", "k1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ByIdempotencyKey(carol) err = %v, want ErrNotFound", err)
	}

	n, err := raw.Collection(store.RequestsCollection).CountDocuments(ctx, bson.D{{Key: "idem", Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil || n != 3 {
		t.Fatalf("%d documents carry an idem field (%v), want 3: only those with a key", n, err)
	}
}

func TestRequestsInsertBatchAllOrNone(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	taken := keyed(t, "alice", "taken")
	mustInsert(t, s, taken)

	batch := []models.Request{queued(t, "alice"), queued(t, "alice"), queued(t, "alice"), queued(t, "alice")}
	batch[2].IdempotencyKey = "taken"
	if err := s.Requests.Insert(ctx, batch...); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("batch with a taken key: err = %v, want ErrDuplicate", err)
	}
	for _, r := range batch {
		if _, err := s.Requests.Get(ctx, "", r.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("request %s of the rejected batch is stored (%v)", r.ID, err)
		}
	}

	// A batch that repeats a key within itself fails as a whole too.
	batch = []models.Request{queued(t, "alice"), queued(t, "alice")}
	batch[0].IdempotencyKey, batch[1].IdempotencyKey = "twice", "twice"
	if err := s.Requests.Insert(ctx, batch...); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("batch repeating a key: err = %v, want ErrDuplicate", err)
	}
	if _, err := s.Requests.ByIdempotencyKey(ctx, "alice", "twice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("first request of the rejected batch is stored (%v)", err)
	}

	// A good batch lands in order.
	batch = []models.Request{queued(t, "alice"), queued(t, "alice"), queued(t, "alice")}
	mustInsert(t, s, batch...)
	list, err := s.Requests.List(ctx, "alice", "", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 || list[0].ID != batch[2].ID || list[1].ID != batch[1].ID || list[2].ID != batch[0].ID {
		t.Fatalf("List = %v, want batch newest first, then the first request", ids(list))
	}

	if err := s.Requests.Insert(ctx, models.Request{UserID: "alice", Status: models.StatusQueued}); err == nil {
		t.Error("Insert without an ID succeeded")
	}
}

func TestRequestsOwnership(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	r := keyed(t, "alice", "k")
	mustInsert(t, s, r)

	got, err := s.Requests.Get(ctx, "alice", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != "alice" || got.Type != "echo" || got.Payload != `{"n":1}` || got.Status != models.StatusQueued ||
		!got.EnqueuedAt.Equal(t0) || got.StartedAt != nil || got.FinishedAt != nil {
		t.Fatalf("Get = %+v", got)
	}
	if _, err := s.Requests.Get(ctx, "mallory", r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get by another user: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Requests.Get(ctx, "alice", newID(t)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(missing): err = %v, want ErrNotFound", err)
	}
	if _, err := s.Requests.ByIdempotencyKey(ctx, "mallory", "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ByIdempotencyKey by another user: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Requests.CancelQueued(ctx, "mallory", r.ID, t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CancelQueued by another user: err = %v, want ErrNotFound", err)
	}
	if list, err := s.Requests.List(ctx, "mallory", "", 10, ""); err != nil || len(list) != 0 {
		t.Fatalf("List(mallory) = %v, %v; want nothing", ids(list), err)
	}
	if got := mustGet(t, s, r.ID); got.Status != models.StatusQueued {
		t.Fatalf("another user's cancel changed the request: %+v", got)
	}
}

func TestRequestsList(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	statuses := []models.Status{
		models.StatusSucceeded, models.StatusFailed, models.StatusQueued, models.StatusSucceeded,
		models.StatusRunning, models.StatusQueued, models.StatusQueued,
	}
	var alice []models.Request // in insertion order
	for i, st := range statuses {
		r := queued(t, "alice")
		r.Status = st
		alice = append(alice, r)
		mustInsert(t, s, r)
		if i%2 == 0 {
			mustInsert(t, s, queued(t, "bob"))
		}
	}
	newestFirst := func(filter func(models.Request) bool) []string {
		var out []string
		for i := len(alice) - 1; i >= 0; i-- {
			if filter(alice[i]) {
				out = append(out, alice[i].ID)
			}
		}
		return out
	}
	page := func(status models.Status, limit int) []string {
		var got []string
		before := ""
		for range 20 {
			list, err := s.Requests.List(ctx, "alice", status, limit, before)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) > limit {
				t.Fatalf("List returned %d > limit %d", len(list), limit)
			}
			if len(list) == 0 {
				return got
			}
			got = append(got, ids(list)...)
			before = list[len(list)-1].ID
		}
		t.Fatal("paging does not end")
		return nil
	}

	if got, want := page("", 3), newestFirst(func(models.Request) bool { return true }); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("all, pages of 3: %v, want %v", got, want)
	}
	if got, want := page(models.StatusQueued, 2), newestFirst(func(r models.Request) bool { return r.Status == models.StatusQueued }); fmt.Sprint(got) != fmt.Sprint(want) || len(want) != 3 {
		t.Errorf("queued, pages of 2: %v, want %v", got, want)
	}
	if got, want := page(models.StatusSucceeded, 10), newestFirst(func(r models.Request) bool { return r.Status == models.StatusSucceeded }); fmt.Sprint(got) != fmt.Sprint(want) || len(want) != 2 {
		t.Errorf("succeeded: %v, want %v", got, want)
	}
	if got := page(models.StatusCancelled, 10); len(got) != 0 {
		t.Errorf("cancelled: %v, want none", got)
	}
	all, err := s.Requests.List(ctx, "", "", 100, "")
	if err != nil || len(all) != len(alice)+4 {
		t.Fatalf("List(any user) = %d requests, %v; want %d", len(all), err, len(alice)+4)
	}
	n, err := s.Requests.CountQueued(ctx, "alice")
	if err != nil || n != 3 {
		t.Fatalf("CountQueued(alice) = %d, %v; want 3", n, err)
	}
	n, err = s.Requests.CountQueued(ctx, "bob")
	if err != nil || n != 4 {
		t.Fatalf("CountQueued(bob) = %d, %v; want 4", n, err)
	}
}

func TestRequestsCancelQueued(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	r := queued(t, "alice")
	running := queued(t, "alice")
	mustInsert(t, s, r, running)
	if st, err := markStatus(s.Requests.MarkRunning(ctx, running.ID, "", t0)); err != nil || st != models.StatusRunning {
		t.Fatalf("MarkRunning = %v, %v", st, err)
	}

	now := t0.Add(time.Minute)
	got, err := s.Requests.CancelQueued(ctx, "alice", r.ID, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != models.StatusCancelled || got.FinishedAt == nil || !got.FinishedAt.Equal(now) {
		t.Fatalf("CancelQueued = %+v", got)
	}
	got, err = s.Requests.CancelQueued(ctx, "alice", r.ID, now.Add(time.Minute))
	if !errors.Is(err, store.ErrConflict) || got == nil || got.Status != models.StatusCancelled || !got.FinishedAt.Equal(now) {
		t.Fatalf("second CancelQueued = %+v, %v; want the cancelled request and ErrConflict", got, err)
	}
	if _, err := s.Requests.CancelQueued(ctx, "alice", running.ID, now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CancelQueued(running) err = %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, running.ID); got.Status != models.StatusRunning {
		t.Fatalf("running request changed to %s", got.Status)
	}
	if _, err := s.Requests.CancelQueued(ctx, "alice", newID(t), now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CancelQueued(missing) err = %v, want ErrNotFound", err)
	}
	// An admin ("" owner) may cancel anyone's.
	other := queued(t, "bob")
	mustInsert(t, s, other)
	if got, err := s.Requests.CancelQueued(ctx, "", other.ID, now); err != nil || got.Status != models.StatusCancelled {
		t.Fatalf("admin CancelQueued = %+v, %v", got, err)
	}
}

func TestRequestsRequeue(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	r := queued(t, "alice")
	mustInsert(t, s, r)
	if err := s.Requests.Requeue(ctx, r.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Requeue(queued) err = %v, want ErrConflict", err)
	}
	if _, err := s.Requests.MarkRunning(ctx, r.ID, "", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Requeue(ctx, r.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Requeue(running) err = %v, want ErrConflict", err)
	}
	if err := s.Requests.Finish(ctx, r.ID, models.StatusFailed, "", "boom", 3, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Requeue(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, r.ID)
	if got.Status != models.StatusQueued || got.Error != "" || got.Result != "" || got.FinishedAt != nil || got.StartedAt != nil || got.Attempts != 3 {
		t.Fatalf("after Requeue: %+v; want queued, outcome cleared, attempts kept", got)
	}

	done := queued(t, "alice")
	mustInsert(t, s, done)
	if err := s.Requests.Finish(ctx, done.ID, models.StatusSucceeded, `"ok"`, "", 1, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Requeue(ctx, done.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Requeue(succeeded) err = %v, want ErrConflict", err)
	}
	if _, err := s.Requests.CancelQueued(ctx, "", r.ID, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Requeue(ctx, r.ID); err != nil {
		t.Fatalf("Requeue(cancelled): %v", err)
	}
	if err := s.Requests.Requeue(ctx, newID(t)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Requeue(missing) err = %v, want ErrNotFound", err)
	}
}

func TestRequestsWorkerUpdatesIdempotent(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	r := queued(t, "alice")
	mustInsert(t, s, r)

	start := t0.Add(time.Second)
	for i := range 2 { // a retried activity repeats the call, later
		st, err := markStatus(s.Requests.MarkRunning(ctx, r.ID, "", start.Add(time.Duration(i)*time.Minute)))
		if err != nil || st != models.StatusRunning {
			t.Fatalf("MarkRunning #%d = %v, %v", i+1, st, err)
		}
	}
	got := mustGet(t, s, r.ID)
	if got.Status != models.StatusRunning || got.StartedAt == nil || !got.StartedAt.Equal(start) {
		t.Fatalf("after two MarkRunning: %+v; want started_at from the first", got)
	}

	for range 2 {
		if err := s.Requests.SetAttempts(ctx, r.ID, 2); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustGet(t, s, r.ID); got.Attempts != 2 {
		t.Fatalf("attempts = %d after SetAttempts(2) twice, want 2", got.Attempts)
	}

	end := t0.Add(time.Hour)
	if err := s.Requests.Finish(ctx, r.ID, models.StatusSucceeded, `{"ok":true}`, "", 2, end); err != nil {
		t.Fatal(err)
	}
	// Retries of Finish with another outcome, and late worker calls, change nothing.
	if err := s.Requests.Finish(ctx, r.ID, models.StatusSucceeded, `{"ok":true}`, "", 2, end.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Finish(ctx, r.ID, models.StatusFailed, "", "late failure", 3, end.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st, err := markStatus(s.Requests.MarkRunning(ctx, r.ID, "", end.Add(time.Minute))); err != nil || st != models.StatusSucceeded {
		t.Fatalf("MarkRunning(succeeded) = %v, %v; want succeeded, nil", st, err)
	}
	if err := s.Requests.SetAttempts(ctx, r.ID, 5); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("SetAttempts(succeeded) err = %v, want ErrConflict", err)
	}
	got = mustGet(t, s, r.ID)
	if got.Status != models.StatusSucceeded || got.Result != `{"ok":true}` || got.Error != "" || got.Attempts != 2 ||
		!got.StartedAt.Equal(start) || got.FinishedAt == nil || !got.FinishedAt.Equal(end) {
		t.Fatalf("final request changed: %+v", got)
	}

	// A cancelled request is never started or finished by the worker.
	c := queued(t, "alice")
	mustInsert(t, s, c)
	if _, err := s.Requests.CancelQueued(ctx, "alice", c.ID, t0); err != nil {
		t.Fatal(err)
	}
	if st, err := markStatus(s.Requests.MarkRunning(ctx, c.ID, "", end)); err != nil || st != models.StatusCancelled {
		t.Fatalf("MarkRunning(cancelled) = %v, %v; want cancelled, nil", st, err)
	}
	if err := s.Requests.Finish(ctx, c.ID, models.StatusSucceeded, `1`, "", 1, end); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, c.ID); got.Status != models.StatusCancelled || got.StartedAt != nil || got.Result != "" {
		t.Fatalf("cancelled request changed: %+v", got)
	}

	// Finish from queued (a request that could not even start) works once.
	q := queued(t, "alice")
	mustInsert(t, s, q)
	if err := s.Requests.Finish(ctx, q.ID, models.StatusFailed, "", "unknown type", 0, end); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, q.ID); got.Status != models.StatusFailed || got.Error != "unknown type" {
		t.Fatalf("Finish from queued: %+v", got)
	}

	missing := newID(t)
	if _, err := s.Requests.MarkRunning(ctx, missing, "", end); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkRunning(missing) err = %v, want ErrNotFound", err)
	}
	if err := s.Requests.SetAttempts(ctx, missing, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetAttempts(missing) err = %v, want ErrNotFound", err)
	}
	if err := s.Requests.Finish(ctx, missing, models.StatusFailed, "", "x", 1, end); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Finish(missing) err = %v, want ErrNotFound", err)
	}
	if err := s.Requests.Finish(ctx, q.ID, models.StatusRunning, "", "", 1, end); err == nil {
		t.Error("Finish with a non-final status succeeded")
	}
}

func TestRequestsDelete(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	r := keyed(t, "alice", "k")
	mustInsert(t, s, r)
	if err := s.Requests.Delete(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Requests.Get(ctx, "", r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := s.Requests.Delete(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete err = %v, want ErrNotFound", err)
	}
	// The key is free again: the undone request never happened.
	again := keyed(t, "alice", "k")
	mustInsert(t, s, again)
}

// markStatus is the status MarkRunning reports.
func markStatus(r *models.Request, err error) (models.Status, error) {
	if err != nil {
		return "", err
	}
	return r.Status, nil
}

// The state machine, one transition at a time (the race tests race them).
func TestTransitions(t *testing.T) {
	s := storetest.New(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Millisecond)

	r := queued(t, "alice")
	mustInsert(t, s, r)
	if st, err := markStatus(s.Requests.MarkRunning(ctx, r.ID, "", t0)); err != nil || st != models.StatusRunning {
		t.Fatalf("MarkRunning = %v, %v", st, err)
	}
	again, err := s.Requests.MarkRunning(ctx, r.ID, "", t0.Add(time.Minute))
	if err != nil || again.Status != models.StatusRunning || !again.StartedAt.Equal(t0) {
		t.Fatalf("second MarkRunning = %+v, %v; want running with the first started_at", again, err)
	}
	if err := s.Requests.SetAttempts(ctx, r.ID, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Finish(ctx, r.ID, models.StatusFailed, "", "boom", 3, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Requests.Finish(ctx, r.ID, models.StatusSucceeded, `"late"`, "", 4, t0); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, r.ID); got.Status != models.StatusFailed || got.Attempts != 3 || got.Error != "boom" {
		t.Fatalf("a late Finish overwrote the outcome: %+v", got)
	}
	if err := s.Requests.SetAttempts(ctx, r.ID, 9); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("SetAttempts on a final request: %v", err)
	}
	if err := s.Requests.Requeue(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, r.ID); got.Status != models.StatusQueued || got.StartedAt != nil || got.Attempts != 3 {
		t.Fatalf("after requeue: %+v", got)
	}
	if _, err := s.Requests.CancelQueued(ctx, "bob", r.ID, t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancel by another owner: %v", err)
	}
	c, err := s.Requests.CancelQueued(ctx, "alice", r.ID, t0)
	if err != nil || c.Status != models.StatusCancelled {
		t.Fatalf("cancel: %+v, %v", c, err)
	}
	if st, err := markStatus(s.Requests.MarkRunning(ctx, r.ID, "", t0)); err != nil || st != models.StatusCancelled {
		t.Fatalf("MarkRunning after cancel = %v, %v", st, err)
	}
}

// Writes are acknowledged once journaled on a majority by default, so a
// 202 survives a replica-set failover; "1" and "uri" are the opt-outs
// (issue 12.4). The rest of this package's tests run with the default
// against FerretDB, which takes it.
func TestWriteConcernDefaultsToJournaledMajority(t *testing.T) {
	for mode, want := range map[string]any{"": "majority", "majority": "majority", "1": 1} {
		wc, err := store.WriteConcernOf(mode)
		if err != nil || wc == nil || wc.W != want || wc.Journal == nil || !*wc.Journal {
			t.Errorf("%q: %+v %v, want w %v journaled", mode, wc, err, want)
		}
	}
	if wc, err := store.WriteConcernOf("uri"); wc != nil || err != nil {
		t.Errorf("uri: %+v %v, want none set", wc, err)
	}
	if _, err := store.WriteConcernOf("2"); err == nil {
		t.Error("an unknown write concern was accepted")
	}
}
