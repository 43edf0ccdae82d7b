package store_test

import (
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/turnstile/turnstile/store"
)

const ttl = 24 * time.Hour

func TestRefreshTokenStoredHashed(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	plain, err := s.Tokens.Issue(ctx, "alice", "", ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := base64.RawURLEncoding.DecodeString(plain); err != nil || len(b) != 32 {
		t.Fatalf("token %q: want 32 bytes of unpadded base64url (%v)", plain, err)
	}
	coll := raw.Collection(store.RefreshTokensCollection)
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: plain}}); n != 0 {
		t.Fatal("the plain token is stored")
	}
	var tok store.RefreshToken
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: store.HashToken(plain)}}).Decode(&tok); err != nil {
		t.Fatalf("no document under the token's SHA-256: %v", err)
	}
	if len(tok.Hash) != 64 || tok.UserID != "alice" || tok.Family == "" || tok.Parent != "" ||
		!tok.CreatedAt.Equal(t0) || !tok.ExpiresAt.Equal(t0.Add(ttl)) {
		t.Fatalf("stored token %+v", tok)
	}
}

func TestRefreshTokenRotation(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	first, err := s.Tokens.Issue(ctx, "alice", "", ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Tokens.Issue(ctx, "alice", "", ttl, t0) // a second login
	if err != nil {
		t.Fatal(err)
	}

	user, second, err := s.Tokens.Rotate(ctx, first, ttl, t0.Add(time.Hour))
	if err != nil || user != "alice" || second == "" || second == first {
		t.Fatalf("Rotate(first) = %q, %q, %v", user, second, err)
	}
	user, third, err := s.Tokens.Rotate(ctx, second, ttl, t0.Add(2*time.Hour))
	if err != nil || user != "alice" || third == second {
		t.Fatalf("Rotate(second) = %q, %q, %v", user, third, err)
	}

	// Someone replays the spent first token: the family dies.
	if _, _, err := s.Tokens.Rotate(ctx, first, ttl, t0.Add(3*time.Hour)); !errors.Is(err, store.ErrReused) {
		t.Fatalf("Rotate(spent) err = %v, want ErrReused", err)
	}
	if _, _, err := s.Tokens.Rotate(ctx, third, ttl, t0.Add(3*time.Hour)); !errors.Is(err, store.ErrInvalidToken) {
		t.Fatalf("Rotate(live token of the revoked family) err = %v, want ErrInvalidToken", err)
	}
	if _, _, err := s.Tokens.Rotate(ctx, second, ttl, t0.Add(3*time.Hour)); !errors.Is(err, store.ErrReused) {
		t.Fatalf("Rotate(another spent token) err = %v, want ErrReused", err)
	}
	// Another family (another login) is untouched.
	if user, _, err := s.Tokens.Rotate(ctx, other, ttl, t0.Add(3*time.Hour)); err != nil || user != "alice" {
		t.Fatalf("Rotate(other family) = %q, %v", user, err)
	}
}

func TestRefreshTokenInvalid(t *testing.T) {
	s, raw := open(t)
	ctx := testContext(t)
	if _, _, err := s.Tokens.Rotate(ctx, "no-such-token", ttl, t0); !errors.Is(err, store.ErrInvalidToken) {
		t.Fatalf("Rotate(unknown) err = %v, want ErrInvalidToken", err)
	}

	short, err := s.Tokens.Issue(ctx, "alice", "", time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Tokens.Rotate(ctx, short, ttl, t0.Add(time.Minute)); !errors.Is(err, store.ErrInvalidToken) {
		t.Fatalf("Rotate(expired) err = %v, want ErrInvalidToken", err)
	}
	// Still invalid, not "reused": the expired token was never spent.
	if _, _, err := s.Tokens.Rotate(ctx, short, ttl, t0.Add(time.Minute)); !errors.Is(err, store.ErrInvalidToken) {
		t.Fatalf("Rotate(expired) again err = %v, want ErrInvalidToken", err)
	}

	a, _ := s.Tokens.Issue(ctx, "alice", "", ttl, t0)
	b, _ := s.Tokens.Issue(ctx, "alice", "", ttl, t0)
	bob, _ := s.Tokens.Issue(ctx, "bob", "", ttl, t0)
	if err := s.Tokens.RevokeUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{a, b} {
		if _, _, err := s.Tokens.Rotate(ctx, tok, ttl, t0); !errors.Is(err, store.ErrInvalidToken) {
			t.Fatalf("Rotate(after RevokeUser) err = %v, want ErrInvalidToken", err)
		}
	}
	if user, _, err := s.Tokens.Rotate(ctx, bob, ttl, t0); err != nil || user != "bob" {
		t.Fatalf("RevokeUser(alice) touched bob's token: %q, %v", user, err)
	}

	n, err := s.Tokens.DeleteExpired(ctx, t0.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpired = %d, %v; want the one expired token", n, err)
	}
	// Its family is gone too; the others have tokens left.
	if n, err := raw.Collection(store.RefreshFamiliesCollection).CountDocuments(ctx, bson.D{}); err != nil || n != 3 {
		t.Fatalf("%d families left (%v), want 3", n, err)
	}
	if _, err := s.Tokens.Issue(ctx, "bob", "no-such-family", ttl, t0); !errors.Is(err, store.ErrInvalidToken) {
		t.Fatalf("Issue into an unknown family: err = %v, want ErrInvalidToken", err)
	}
}

func TestRefreshTokenConcurrentRotation(t *testing.T) {
	s, _ := open(t)
	ctx := testContext(t)
	tok, err := s.Tokens.Issue(ctx, "alice", "", ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	fresh := make([]string, racers)
	for i := range racers {
		wg.Go(func() { _, fresh[i], errs[i] = s.Tokens.Rotate(ctx, tok, ttl, t0) })
	}
	wg.Wait()
	var wins []string
	reused := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins = append(wins, fresh[i])
		case errors.Is(err, store.ErrReused):
			reused++
		case errors.Is(err, store.ErrInvalidToken):
			// The family was already revoked by another racer's detection.
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if len(wins) > 1 {
		t.Fatalf("%d concurrent rotations of one token succeeded", len(wins))
	}
	if reused == 0 {
		t.Fatalf("%d rotations of one token and no reuse detected", racers)
	}
	// The reuse revoked the family, including whatever the winner got.
	for _, w := range wins {
		if _, _, err := s.Tokens.Rotate(ctx, w, ttl, t0); !errors.Is(err, store.ErrInvalidToken) {
			t.Fatalf("the winner's token survived the reuse: %v", err)
		}
	}
}
