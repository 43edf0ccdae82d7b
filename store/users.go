package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/turnstile/turnstile/models"
)

var userIndexes = []mongo.IndexModel{
	{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetName("email_unique").SetUnique(true)},
}

// Users is the "users" collection. Emails are stored trimmed and lower-case
// and are unique.
//
// Each user also has a document in "user_emails" keyed by its email, so that
// looking a user up by email is a lookup by _id: on FerretDB v1 any other
// filter decodes the whole collection. The unique index on users.email stays
// as the last guard.
type Users struct {
	c      *mongo.Collection
	emails *mongo.Collection
}

// userEmail is a document of the "user_emails" collection: the user that
// owns an email. ClaimedAt tells an orphan (a Create that stopped between its
// two inserts) from a Create still in progress; documents written before it
// existed have none and count as old.
type userEmail struct {
	Email     string    `bson:"_id"`
	UserID    string    `bson:"user_id"`
	ClaimedAt time.Time `bson:"claimed_at,omitempty"`
}

// orphanEmailAge is how old an email document pointing at no user must be
// before Create takes it over. A Create's two inserts are seconds apart at
// most (the API gives a request's backend calls 10s), so a younger one may
// belong to a Create still under way; the margin also covers clock skew
// between processes. A crashed registration blocks its email this long.
const orphanEmailAge = 2 * time.Minute

// emailBackfillBatch is how many email documents the backfill inserts per
// command: few round trips, and small enough for any server's limits.
const emailBackfillBatch = 500

// normalizeEmail is the store's own canonical form, so lookups match however
// the caller spelled the address; full validation is the API's job.
func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// Create inserts u. It fills in what u leaves empty (ID: a UUIDv7, Role:
// RoleUser, CreatedAt: now) and normalizes u.Email, writing both back to u.
// A taken email is ErrDuplicate.
//
// It claims the email first (its user_emails document) and then inserts the
// user; if that fails, it gives the email back. An email document left by a
// crash between the two, pointing at no user, is taken over once it is
// orphanEmailAge old.
func (r *Users) Create(ctx context.Context, u *models.User) error {
	u.Email = normalizeEmail(u.Email)
	if u.Email == "" {
		return errors.New("store: create user: empty email")
	}
	if u.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("store: create user: %w", err)
		}
		u.ID = id.String()
	}
	if u.Role == "" {
		u.Role = models.RoleUser
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now().UTC().Truncate(time.Millisecond) // what BSON keeps
	}
	if err := r.claimEmail(ctx, u.Email, u.ID); err != nil {
		return err
	}
	if _, err := r.c.InsertOne(ctx, u); err != nil {
		err = wrap("create user", err)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensationTimeout)
		defer cancel()
		if derr := r.releaseEmail(cctx, u.Email, u.ID); derr != nil {
			return fmt.Errorf("%w (and releasing the email failed: %v)", err, derr)
		}
		return err
	}
	return nil
}

// claimEmail makes userID the owner of email: it inserts the email
// document, or takes over an orphan. A live owner, or a claim younger than
// orphanEmailAge, is ErrDuplicate wrapping the driver's duplicate-key error.
func (r *Users) claimEmail(ctx context.Context, email, userID string) error {
	now := time.Now().UTC()
	_, err := r.emails.InsertOne(ctx, userEmail{Email: email, UserID: userID, ClaimedAt: now})
	if err == nil {
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return wrap("create user: claim email", err)
	}
	taken := wrap("create user", err)
	var cur userEmail
	if ferr := r.emails.FindOne(ctx, bson.D{{Key: "_id", Value: email}}).Decode(&cur); ferr != nil {
		if errors.Is(ferr, mongo.ErrNoDocuments) {
			return taken // released meanwhile by a Create that failed
		}
		return wrap("create user: claim email", ferr)
	}
	if now.Sub(cur.ClaimedAt) < orphanEmailAge {
		return taken
	}
	if _, ferr := r.ByID(ctx, cur.UserID); ferr == nil {
		return taken
	} else if !errors.Is(ferr, ErrNotFound) {
		return ferr
	}
	swapped, serr := r.swapEmailOwner(ctx, email, cur.UserID, userID, now)
	if serr != nil {
		return serr
	}
	if !swapped {
		return taken // another Create took the orphan first
	}
	return nil
}

// swapEmailOwner points email's document at to if it points at from, and
// reports whether it did: one conditional update, like Requests.transition.
func (r *Users) swapEmailOwner(ctx context.Context, email, from, to string, now time.Time) (bool, error) {
	filter := bson.D{{Key: "_id", Value: email}, {Key: "user_id", Value: from}}
	res, err := r.emails.UpdateOne(ctx, filter, set(bson.E{Key: "user_id", Value: to}, bson.E{Key: "claimed_at", Value: now}))
	if err != nil {
		return false, wrap("swap email owner", err)
	}
	return res.MatchedCount == 1, nil
}

// releaseEmail deletes email's document if it still points at userID.
func (r *Users) releaseEmail(ctx context.Context, email, userID string) error {
	filter := bson.D{{Key: "_id", Value: email}, {Key: "user_id", Value: userID}}
	if _, err := r.emails.DeleteOne(ctx, filter); err != nil {
		return wrap("release email", err)
	}
	return nil
}

// ByEmail returns the user with email (compared trimmed and lower-case):
// two lookups by _id, its email document and then the user.
func (r *Users) ByEmail(ctx context.Context, email string) (*models.User, error) {
	var e userEmail
	if err := r.emails.FindOne(ctx, bson.D{{Key: "_id", Value: normalizeEmail(email)}}).Decode(&e); err != nil {
		return nil, notFound("user by email", err)
	}
	u, err := r.ByID(ctx, e.UserID)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("store: user by email: %w", ErrNotFound) // an orphan
	}
	return u, err
}

// ensureEmails creates the user_emails collection and gives every user an
// email document (users created before it existed have none). It is
// idempotent, and once done it only compares the two collections' counts
// (on FerretDB v1 a count still reads every document: about 0.2 s for
// 10,000 users). It walks them when the counts differ: after an upgrade,
// while a crash's orphan waits to be taken over, or when a user came in
// some other way (an older version still running).
func (r *Users) ensureEmails(ctx context.Context) error {
	var ce mongo.CommandError
	if err := r.emails.Database().CreateCollection(ctx, r.emails.Name()); err != nil &&
		!(errors.As(err, &ce) && ce.HasErrorCode(errNamespaceExists)) {
		return fmt.Errorf("store: create %s: %w", r.emails.Name(), err)
	}
	users, err := r.c.CountDocuments(ctx, bson.D{})
	if err != nil {
		return wrap("backfill emails: count users", err)
	}
	emails, err := r.emails.CountDocuments(ctx, bson.D{})
	if err != nil {
		return wrap("backfill emails: count emails", err)
	}
	if users == emails {
		return nil
	}
	return r.backfillEmails(ctx)
}

// errNamespaceExists is the server's code for creating a collection that
// exists.
const errNamespaceExists = 48

// backfillEmails inserts the missing email document of every user. It never
// overwrites one pointing at another user that exists; one pointing at no
// user is repointed, since the user that has the email owns it (the unique
// index on users.email says so).
func (r *Users) backfillEmails(ctx context.Context) error {
	owners, err := r.emailOwners(ctx)
	if err != nil {
		return err
	}
	cur, err := r.c.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "email", Value: 1}}))
	if err != nil {
		return wrap("backfill emails: read users", err)
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	now := time.Now().UTC()
	var missing []any
	for cur.Next(ctx) {
		var u struct {
			ID    string `bson:"_id"`
			Email string `bson:"email"`
		}
		if err := cur.Decode(&u); err != nil {
			return wrap("backfill emails: read users", err)
		}
		email := normalizeEmail(u.Email)
		switch owner := owners[email]; {
		case email == "" || owner == u.ID:
			// nothing to do
		case owner == "":
			missing = append(missing, userEmail{Email: email, UserID: u.ID, ClaimedAt: now})
			if len(missing) == emailBackfillBatch {
				if err := r.insertEmails(ctx, missing); err != nil {
					return err
				}
				missing = missing[:0]
			}
		default:
			if _, err := r.ByID(ctx, owner); err == nil {
				continue // another live user: leave it
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
			if _, err := r.swapEmailOwner(ctx, email, owner, u.ID, now); err != nil {
				return err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return wrap("backfill emails: read users", err)
	}
	return r.insertEmails(ctx, missing)
}

// emailOwners reads the whole user_emails collection: email → user ID.
func (r *Users) emailOwners(ctx context.Context) (map[string]string, error) {
	cur, err := r.emails.Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap("backfill emails: read emails", err)
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()
	owners := map[string]string{}
	for cur.Next(ctx) {
		var e userEmail
		if err := cur.Decode(&e); err != nil {
			return nil, wrap("backfill emails: read emails", err)
		}
		owners[e.Email] = e.UserID
	}
	if err := cur.Err(); err != nil {
		return nil, wrap("backfill emails: read emails", err)
	}
	return owners, nil
}

// insertEmails inserts docs, skipping any whose email has a document by now
// (a Create got there first).
func (r *Users) insertEmails(ctx context.Context, docs []any) error {
	if len(docs) == 0 {
		return nil
	}
	_, err := r.emails.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0 {
		for _, we := range bwe.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				return wrap("backfill emails: insert", err)
			}
		}
		return nil
	}
	if err != nil {
		return wrap("backfill emails: insert", err)
	}
	return nil
}

// ByID returns the user with id.
func (r *Users) ByID(ctx context.Context, id string) (*models.User, error) {
	var u models.User
	if err := r.c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&u); err != nil {
		return nil, notFound("user by id", err)
	}
	return &u, nil
}

// List returns up to limit users in ID order, starting after afterID ("" =
// from the first). Pass the last ID of a page to get the next.
func (r *Users) List(ctx context.Context, limit int, afterID string) ([]models.User, error) {
	filter := bson.D{}
	if afterID != "" {
		filter = bson.D{{Key: "_id", Value: bson.D{{Key: "$gt", Value: afterID}}}}
	}
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(clampLimit(limit))
	cur, err := r.c.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap("list users", err)
	}
	users := []models.User{}
	if err := cur.All(ctx, &users); err != nil {
		return nil, wrap("list users", err)
	}
	return users, nil
}

// Count counts all users.
func (r *Users) Count(ctx context.Context) (int64, error) {
	n, err := r.c.CountDocuments(ctx, bson.D{})
	if err != nil {
		return 0, wrap("count users", err)
	}
	return n, nil
}

// RevokeAccessBefore refuses from now on the access tokens of the user
// with id that were issued before t (a logout).
func (r *Users) RevokeAccessBefore(ctx context.Context, id string, t time.Time) error {
	return r.set(ctx, "revoke access tokens", id, bson.D{{Key: "tokens_valid_after", Value: t}})
}

// SetDisabled disables or re-enables the user with id.
func (r *Users) SetDisabled(ctx context.Context, id string, disabled bool) error {
	return r.set(ctx, "set disabled", id, bson.D{{Key: "disabled", Value: disabled}})
}

// SetRole changes the role of the user with id.
func (r *Users) SetRole(ctx context.Context, id string, role models.Role) error {
	if role != models.RoleUser && role != models.RoleAdmin {
		return fmt.Errorf("store: set role: unknown role %q", role)
	}
	return r.set(ctx, "set role", id, bson.D{{Key: "role", Value: role}})
}

func (r *Users) set(ctx context.Context, op, id string, fields bson.D) error {
	res, err := r.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: fields}})
	if err != nil {
		return wrap(op, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return nil
}
