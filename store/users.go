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
type Users struct {
	c     *mongo.Collection
	locks docLocks
}

// normalizeEmail is the store's own canonical form, so lookups match however
// the caller spelled the address; full validation is the API's job.
func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// Create inserts u. It fills in what u leaves empty (ID: a UUIDv7, Role:
// RoleUser, CreatedAt: now) and normalizes u.Email, writing both back to u.
// A taken email is ErrDuplicate.
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
	if _, err := r.c.InsertOne(ctx, u); err != nil {
		return wrap("create user", err)
	}
	return nil
}

// ByEmail returns the user with email (compared trimmed and lower-case).
func (r *Users) ByEmail(ctx context.Context, email string) (*models.User, error) {
	var u models.User
	if err := r.c.FindOne(ctx, bson.D{{Key: "email", Value: normalizeEmail(email)}}).Decode(&u); err != nil {
		return nil, notFound("user by email", err)
	}
	return &u, nil
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
	defer r.locks.lock(id)()
	res, err := r.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: fields}})
	if err != nil {
		return wrap(op, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	return nil
}
