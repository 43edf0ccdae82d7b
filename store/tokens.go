package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Refresh token errors. Both mean 401 to a client; ErrReused also means the
// token's whole family was revoked, because someone holds a copy.
var (
	ErrInvalidToken = errors.New("invalid refresh token")
	ErrReused       = errors.New("refresh token reused")
)

// RefreshFamiliesCollection holds one document per login (token family).
const RefreshFamiliesCollection = "refresh_families"

// refreshTokenBytes is the entropy of a refresh token: 256 bits.
const refreshTokenBytes = 32

var refreshTokenIndexes = []mongo.IndexModel{
	// At most one token replaces any token: inserting the replacement is
	// what spends a token, atomically. Sparse: a login's first token has no
	// parent.
	{Keys: bson.D{{Key: "parent", Value: 1}}, Options: options.Index().SetName("parent_unique").SetUnique(true).SetSparse(true)},
	{Keys: bson.D{{Key: "family", Value: 1}}, Options: options.Index().SetName("family")},
	{Keys: bson.D{{Key: "expires_at", Value: 1}}, Options: options.Index().SetName("expires_at")},
}

var refreshFamilyIndexes = []mongo.IndexModel{
	{Keys: bson.D{{Key: "user_id", Value: 1}}, Options: options.Index().SetName("user_id")},
}

// RefreshToken is a stored refresh token. The token itself is never stored,
// only its SHA-256. Token documents never change after insertion: a token is
// spent when a token naming it as Parent exists, and revoked when its family
// is.
type RefreshToken struct {
	Hash      string    `bson:"_id"`
	UserID    string    `bson:"user_id"`
	Family    string    `bson:"family"`
	Parent    string    `bson:"parent,omitempty"` // hash of the token this one replaced
	ExpiresAt time.Time `bson:"expires_at"`
	CreatedAt time.Time `bson:"created_at"`
}

// RefreshFamily is one login: the chain of refresh tokens it rotates
// through. The only change it ever sees is Revoked becoming true.
type RefreshFamily struct {
	ID        string    `bson:"_id"`
	UserID    string    `bson:"user_id"`
	CreatedAt time.Time `bson:"created_at"`
	Revoked   bool      `bson:"revoked"`
}

// RefreshTokens are the "refresh_tokens" and "refresh_families" collections.
//
// The design needs no atomic read-modify-write, which FerretDB v1 does not
// provide (it evaluates an update's filter and writes the document back as
// two steps): spending a token is inserting its successor under a unique
// index on parent, and the only update, revoking a family, always writes the
// same value. Expired tokens stay until DeleteExpired removes them: FerretDB
// has no TTL indexes.
type RefreshTokens struct {
	c        *mongo.Collection
	families *mongo.Collection
}

// HashToken is the stored form of a refresh token: SHA-256, hex. The token
// has 256 random bits, so a fast hash suffices.
func HashToken(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(sum[:])
}

// Issue creates a refresh token for userID valid for ttl from now and returns
// it: 32 random bytes, base64url without padding. family "" starts a new
// family (a login); an existing family of userID that is not revoked gets
// another token, anything else is ErrInvalidToken.
func (r *RefreshTokens) Issue(ctx context.Context, userID, family string, ttl time.Duration, now time.Time) (string, error) {
	if userID == "" || ttl <= 0 {
		return "", errors.New("store: issue refresh token: empty user ID or non-positive TTL")
	}
	if family == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return "", fmt.Errorf("store: issue refresh token: %w", err)
		}
		family = id.String()
		if _, err := r.families.InsertOne(ctx, RefreshFamily{ID: family, UserID: userID, CreatedAt: now}); err != nil {
			return "", wrap("issue refresh token", err)
		}
	} else {
		f, err := r.family(ctx, family)
		if err != nil {
			return "", err
		}
		if f.UserID != userID {
			return "", fmt.Errorf("store: issue refresh token: %w: family of another user", ErrInvalidToken)
		}
	}
	return r.insert(ctx, userID, family, "", ttl, now)
}

func (r *RefreshTokens) insert(ctx context.Context, userID, family, parent string, ttl time.Duration, now time.Time) (string, error) {
	raw := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("store: issue refresh token: %w", err)
	}
	plain := base64.RawURLEncoding.EncodeToString(raw)
	_, err := r.c.InsertOne(ctx, RefreshToken{
		Hash:      HashToken(plain),
		UserID:    userID,
		Family:    family,
		Parent:    parent,
		ExpiresAt: now.Add(ttl),
		CreatedAt: now,
	})
	if err != nil {
		return "", wrap("issue refresh token", err)
	}
	return plain, nil
}

// family returns the live family id: missing or revoked is ErrInvalidToken.
func (r *RefreshTokens) family(ctx context.Context, id string) (*RefreshFamily, error) {
	var f RefreshFamily
	err := r.families.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&f)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("store: refresh token: %w: unknown family", ErrInvalidToken)
	}
	if err != nil {
		return nil, wrap("refresh token family", err)
	}
	if f.Revoked {
		return nil, fmt.Errorf("store: refresh token: %w: revoked", ErrInvalidToken)
	}
	return &f, nil
}

// Rotate spends the refresh token plain and returns its user and a new token
// in the same family, valid for ttl from now. Spending is atomic: of two
// rotations of one token only one succeeds. Presenting a spent token again is
// ErrReused and revokes the whole family (the thief's and the owner's tokens
// alike); an unknown, expired or revoked token is ErrInvalidToken. Whether
// the user may still log in is the caller's check.
func (r *RefreshTokens) Rotate(ctx context.Context, plain string, ttl time.Duration, now time.Time) (userID, newPlain string, err error) {
	hash := HashToken(plain)
	var tok RefreshToken
	err = r.c.FindOne(ctx, bson.D{{Key: "_id", Value: hash}}).Decode(&tok)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", "", fmt.Errorf("store: rotate: %w: unknown", ErrInvalidToken)
	}
	if err != nil {
		return "", "", wrap("rotate refresh token", err)
	}
	spent, err := r.spent(ctx, hash)
	if err != nil {
		return "", "", err
	}
	if spent {
		return "", "", r.reused(ctx, tok.Family)
	}
	if !now.Before(tok.ExpiresAt) {
		return "", "", fmt.Errorf("store: rotate: %w: expired", ErrInvalidToken)
	}
	if _, err := r.family(ctx, tok.Family); err != nil {
		return "", "", err
	}
	newPlain, err = r.insert(ctx, tok.UserID, tok.Family, hash, ttl, now)
	if errors.Is(err, ErrDuplicate) {
		// Another rotation of the same token got there first.
		return "", "", r.reused(ctx, tok.Family)
	}
	if err != nil {
		return "", "", err
	}
	// The family may have been revoked since we looked (a logout, or a reuse
	// elsewhere); then the new token is revoked with it, and not handed out.
	if _, err := r.family(ctx, tok.Family); err != nil {
		return "", "", err
	}
	return tok.UserID, newPlain, nil
}

// spent reports whether the token with hash has been replaced.
func (r *RefreshTokens) spent(ctx context.Context, hash string) (bool, error) {
	err := r.c.FindOne(ctx, bson.D{{Key: "parent", Value: hash}}).Err()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return false, nil
	}
	return false, wrap("rotate refresh token", err)
}

// reused revokes family and returns ErrReused.
func (r *RefreshTokens) reused(ctx context.Context, family string) error {
	if _, err := r.families.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: family}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "revoked", Value: true}}}}); err != nil {
		return wrap("revoke refresh token family", err)
	}
	return fmt.Errorf("store: rotate: %w", ErrReused)
}

// RevokeUser revokes every refresh token of userID (logout, disabling).
func (r *RefreshTokens) RevokeUser(ctx context.Context, userID string) error {
	_, err := r.families.UpdateMany(ctx,
		bson.D{{Key: "user_id", Value: userID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "revoked", Value: true}}}})
	if err != nil {
		return wrap("revoke user refresh tokens", err)
	}
	return nil
}

// DeleteExpired removes tokens that expired before before, then families
// created before before that have no tokens left, and returns how many
// tokens it removed. Run it periodically in place of a TTL index; keep a
// margin (before well in the past), since a deleted token can no longer
// reveal its reuse.
func (r *RefreshTokens) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	res, err := r.c.DeleteMany(ctx, bson.D{{Key: "expires_at", Value: bson.D{{Key: "$lt", Value: before}}}})
	if err != nil {
		return 0, wrap("delete expired refresh tokens", err)
	}
	// Not the distinct command: FerretDB v1 rejects the maxTimeMS field the
	// driver adds to it whenever ctx has a deadline.
	cur, err := r.c.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "family", Value: 1}}))
	if err != nil {
		return res.DeletedCount, wrap("delete empty refresh token families", err)
	}
	var tokens []RefreshToken
	if err := cur.All(ctx, &tokens); err != nil {
		return res.DeletedCount, wrap("delete empty refresh token families", err)
	}
	seen := make(map[string]bool, len(tokens))
	live := bson.A{}
	for _, t := range tokens {
		if !seen[t.Family] {
			seen[t.Family] = true
			live = append(live, t.Family)
		}
	}
	if _, err := r.families.DeleteMany(ctx, bson.D{
		{Key: "created_at", Value: bson.D{{Key: "$lt", Value: before}}},
		{Key: "_id", Value: bson.D{{Key: "$nin", Value: live}}},
	}); err != nil {
		return res.DeletedCount, wrap("delete empty refresh token families", err)
	}
	return res.DeletedCount, nil
}
