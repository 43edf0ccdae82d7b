package store_test

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

	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/store/storetest"
)

// forEachUpdatePath runs f on a Store on a fresh database with a raw
// handle on it.
func forEachUpdatePath(t *testing.T, f func(t *testing.T, s *store.Store, raw *mongo.Database)) {
	db := storetest.Open(t)
	raw, err := mongo.Connect(options.Client().ApplyURI(db.URI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Disconnect(context.Background()) })
	f(t, db.Store, raw.Database(db.Name))
}

// emailOwner returns the user_id of email's document in user_emails, "" when
// there is none.
func emailOwner(t *testing.T, raw *mongo.Database, email string) string {
	t.Helper()
	var doc struct {
		UserID string `bson:"user_id"`
	}
	err := raw.Collection(store.UserEmailsCollection).FindOne(testContext(t), bson.D{{Key: "_id", Value: email}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return doc.UserID
}

func count(t *testing.T, raw *mongo.Database, coll string) int64 {
	t.Helper()
	n, err := raw.Collection(coll).CountDocuments(testContext(t), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustCreate(t *testing.T, s *store.Store, email string) *models.User {
	t.Helper()
	u := &models.User{Email: email, PasswordHash: "h"}
	if err := s.Users.Create(testContext(t), u); err != nil {
		t.Fatalf("Create(%q): %v", email, err)
	}
	return u
}

// insertRaw stores docs in coll directly, as data from before user_emails or
// a crash would have left them.
func insertRaw(t *testing.T, raw *mongo.Database, coll string, docs ...any) {
	t.Helper()
	if _, err := raw.Collection(coll).InsertMany(testContext(t), docs); err != nil {
		t.Fatal(err)
	}
}

func wantByEmail(t *testing.T, s *store.Store, email, wantID string) {
	t.Helper()
	got, err := s.Users.ByEmail(testContext(t), email)
	if err != nil || got.ID != wantID {
		t.Fatalf("ByEmail(%q) = %+v, %v; want user %s", email, got, err, wantID)
	}
}

func TestUsersByEmailGoesThroughUserEmails(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	alice := mustCreate(t, s, " Alice@Example.com")
	if got := emailOwner(t, raw, "alice@example.com"); got != alice.ID {
		t.Fatalf("user_emails[alice@example.com] = %q, want %s", got, alice.ID)
	}
	for _, spelling := range []string{"alice@example.com", "ALICE@EXAMPLE.COM", "  aLiCe@example.COM\t"} {
		wantByEmail(t, s, spelling, alice.ID)
	}
	// The lookup is the email document, not a filter on users.email.
	if _, err := raw.Collection(store.UserEmailsCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: "alice@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Users.ByEmail(ctx, "alice@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ByEmail without an email document: err = %v, want ErrNotFound", err)
	}
}

func TestUsersDuplicateEmail(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	alice := mustCreate(t, s, "alice@example.com")
	for _, email := range []string{"alice@example.com", "ALICE@example.com", " Alice@Example.COM "} {
		err := s.Users.Create(ctx, &models.User{Email: email, PasswordHash: "h2"})
		if !errors.Is(err, store.ErrDuplicate) || !mongo.IsDuplicateKeyError(err) {
			t.Fatalf("Create(%q) again: err = %v, want ErrDuplicate wrapping the driver's error", email, err)
		}
	}
	if n := count(t, raw, store.UsersCollection); n != 1 {
		t.Fatalf("%d users, want 1", n)
	}
	if got := emailOwner(t, raw, "alice@example.com"); got != alice.ID {
		t.Fatalf("a refused Create changed the email's owner to %q", got)
	}
	wantByEmail(t, s, "alice@example.com", alice.ID)
}

func TestUsersCreateFailureReleasesEmail(t *testing.T) {
	forEachUpdatePath(t, func(t *testing.T, s *store.Store, raw *mongo.Database) {
		ctx := testContext(t)
		alice := mustCreate(t, s, "alice@example.com")

		// The email is free but the user insert fails (the ID is taken): the
		// email must be free again afterwards.
		err := s.Users.Create(ctx, &models.User{ID: alice.ID, Email: "bob@example.com", PasswordHash: "h"})
		if !errors.Is(err, store.ErrDuplicate) {
			t.Fatalf("Create with a taken ID: err = %v, want ErrDuplicate", err)
		}
		if got := emailOwner(t, raw, "bob@example.com"); got != "" {
			t.Fatalf("the failed Create left user_emails[bob@example.com] = %q", got)
		}
		bob := mustCreate(t, s, "bob@example.com")
		wantByEmail(t, s, "bob@example.com", bob.ID)

		// A user stored before user_emails existed still holds its email: the
		// unique index on users refuses the second one, and the claim goes.
		insertRaw(t, raw, store.UsersCollection, models.User{ID: "legacy", Email: "carol@example.com", Role: models.RoleUser, CreatedAt: t0})
		err = s.Users.Create(ctx, &models.User{Email: "Carol@example.com", PasswordHash: "h"})
		if !errors.Is(err, store.ErrDuplicate) {
			t.Fatalf("Create over a user without an email document: err = %v, want ErrDuplicate", err)
		}
		if got := emailOwner(t, raw, "carol@example.com"); got != "" {
			t.Fatalf("the refused Create left user_emails[carol@example.com] = %q", got)
		}
	})
}

func TestUsersOrphanEmail(t *testing.T) {
	forEachUpdatePath(t, func(t *testing.T, s *store.Store, raw *mongo.Database) {
		ctx := testContext(t)

		// A Create that crashed between its two inserts, long ago (documents
		// without claimed_at count as old).
		insertRaw(t, raw, store.UserEmailsCollection,
			bson.D{{Key: "_id", Value: "old@example.com"}, {Key: "user_id", Value: "ghost"}},
			bson.D{{Key: "_id", Value: "older@example.com"}, {Key: "user_id", Value: "ghost2"}, {Key: "claimed_at", Value: time.Now().Add(-time.Hour)}},
		)
		for _, email := range []string{"Old@example.com", "older@example.com"} {
			u := mustCreate(t, s, email)
			wantByEmail(t, s, email, u.ID)
			if got := emailOwner(t, raw, u.Email); got != u.ID {
				t.Fatalf("user_emails[%s] = %q after the takeover, want %s", u.Email, got, u.ID)
			}
		}

		// A fresh claim may be a Create still between its inserts: not an orphan yet.
		insertRaw(t, raw, store.UserEmailsCollection,
			bson.D{{Key: "_id", Value: "young@example.com"}, {Key: "user_id", Value: "in-flight"}, {Key: "claimed_at", Value: time.Now()}})
		if err := s.Users.Create(ctx, &models.User{Email: "young@example.com", PasswordHash: "h"}); !errors.Is(err, store.ErrDuplicate) {
			t.Fatalf("Create over a fresh claim: err = %v, want ErrDuplicate", err)
		}
		if got := emailOwner(t, raw, "young@example.com"); got != "in-flight" {
			t.Fatalf("user_emails[young@example.com] = %q, want the fresh claim left alone", got)
		}
		if _, err := s.Users.ByEmail(ctx, "young@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ByEmail of an email whose user does not exist: err = %v, want ErrNotFound", err)
		}
	})
}

func TestUsersBackfill(t *testing.T) {
	forEachUpdatePath(t, func(t *testing.T, s *store.Store, raw *mongo.Database) {
		ctx := testContext(t)
		alice := mustCreate(t, s, "alice@example.com")
		// Users stored before user_emails existed; one spelled the old way.
		insertRaw(t, raw, store.UsersCollection,
			models.User{ID: "u-bob", Email: "bob@example.com", Role: models.RoleUser, CreatedAt: t0},
			models.User{ID: "u-carol", Email: " Carol@Example.com", Role: models.RoleUser, CreatedAt: t0},
			models.User{ID: "u-dave", Email: "dave@example.com", Role: models.RoleUser, CreatedAt: t0},
			models.User{ID: "u-erin", Email: "erin@example.com", Role: models.RoleUser, CreatedAt: t0},
		)
		insertRaw(t, raw, store.UserEmailsCollection,
			// dave's email points at a user that does not exist: dave owns it.
			bson.D{{Key: "_id", Value: "dave@example.com"}, {Key: "user_id", Value: "ghost"}},
			// erin's points at another live user: left alone.
			bson.D{{Key: "_id", Value: "erin@example.com"}, {Key: "user_id", Value: alice.ID}},
		)
		if _, err := s.Users.ByEmail(ctx, "bob@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ByEmail before the backfill: err = %v, want ErrNotFound", err)
		}

		for range 2 { // the second run finds nothing to do
			if err := s.EnsureIndexes(ctx); err != nil {
				t.Fatal(err)
			}
			wantByEmail(t, s, "alice@example.com", alice.ID)
			wantByEmail(t, s, "BOB@example.com", "u-bob")
			wantByEmail(t, s, "carol@example.com", "u-carol")
			wantByEmail(t, s, "dave@example.com", "u-dave")
			if got := emailOwner(t, raw, "erin@example.com"); got != alice.ID {
				t.Fatalf("the backfill overwrote an email document of another live user with %q", got)
			}
			if n := count(t, raw, store.UserEmailsCollection); n != 5 {
				t.Fatalf("%d email documents, want 5", n)
			}
		}
	})
}

func TestUsersBackfillMany(t *testing.T) {
	// More users than one backfill batch, and a few already done.
	s, raw := open(t)
	ctx := testContext(t)
	const n = 1234
	docs := make([]any, n)
	for i := range docs {
		docs[i] = models.User{ID: fmt.Sprintf("u%04d", i), Email: fmt.Sprintf("u%04d@example.com", i), Role: models.RoleUser, CreatedAt: t0}
	}
	insertRaw(t, raw, store.UsersCollection, docs...)
	insertRaw(t, raw, store.UserEmailsCollection,
		bson.D{{Key: "_id", Value: "u0007@example.com"}, {Key: "user_id", Value: "u0007"}},
		bson.D{{Key: "_id", Value: "u0999@example.com"}, {Key: "user_id", Value: "u0999"}},
	)
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(t, raw, store.UserEmailsCollection); got != n {
		t.Fatalf("%d email documents, want %d", got, n)
	}
	for _, i := range []int{0, 7, 499, 500, 999, n - 1} {
		wantByEmail(t, s, fmt.Sprintf("u%04d@example.com", i), fmt.Sprintf("u%04d", i))
	}
}

func TestUsersCreateSameEmailConcurrently(t *testing.T) {
	forEachUpdatePath(t, func(t *testing.T, s *store.Store, raw *mongo.Database) {
		ctx := testContext(t)
		const creators = 10
		for round := range 10 {
			email := fmt.Sprintf("race%d@example.com", round)
			var (
				wg   sync.WaitGroup
				errs [creators]error
				ids  [creators]string
			)
			for i := range creators {
				wg.Go(func() {
					u := &models.User{Email: email, PasswordHash: "h"}
					errs[i], ids[i] = s.Users.Create(ctx, u), u.ID
				})
			}
			wg.Wait()
			winner := ""
			for i, err := range errs {
				switch {
				case err == nil && winner != "":
					t.Fatalf("round %d: two Creates of %s succeeded", round, email)
				case err == nil:
					winner = ids[i]
				case !errors.Is(err, store.ErrDuplicate):
					t.Fatalf("round %d: Create: %v, want success or ErrDuplicate", round, err)
				}
			}
			if winner == "" {
				t.Fatalf("round %d: no Create of %s succeeded", round, email)
			}
			wantByEmail(t, s, email, winner)
		}
		if n := count(t, raw, store.UsersCollection); n != 10 {
			t.Fatalf("%d users, want 10", n)
		}
	})
}
