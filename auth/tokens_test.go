package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/turnstile/turnstile/models"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testTokens(now time.Time) *Tokens {
	return &Tokens{
		Key:      testKey,
		Issuer:   "turnstile",
		Audience: "turnstile-api",
		TTL:      15 * time.Minute,
		Now:      func() time.Time { return now },
	}
}

func TestTokensIssueParse(t *testing.T) {
	tok := testTokens(t0)
	signed, expiresIn, err := tok.Issue("user-1", models.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if expiresIn != 15*time.Minute {
		t.Errorf("expiresIn = %v, want 15m", expiresIn)
	}
	c, err := tok.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "user-1" || c.Role != models.RoleAdmin || c.Type != "access" ||
		c.Issuer != "turnstile" || len(c.Audience) != 1 || c.Audience[0] != "turnstile-api" {
		t.Errorf("claims = %+v", c)
	}
	if !c.ExpiresAt.Equal(t0.Add(15*time.Minute)) || !c.IssuedAt.Equal(t0) || !c.NotBefore.Equal(t0) {
		t.Errorf("times exp=%v iat=%v nbf=%v", c.ExpiresAt, c.IssuedAt, c.NotBefore)
	}
	if c.ID == "" {
		t.Error("no jti")
	}
	other, _, err := tok.Issue("user-1", models.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if c2, _ := tok.Parse(other); c2.ID == c.ID {
		t.Error("two tokens share a jti")
	}

	// Valid until exp plus leeway, not after.
	if _, err := testTokens(t0.Add(15*time.Minute + DefaultLeeway - time.Second)).Parse(signed); err != nil {
		t.Errorf("within leeway: %v", err)
	}
	if _, err := testTokens(t0.Add(15*time.Minute + DefaultLeeway + time.Second)).Parse(signed); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("past leeway: err = %v, want ErrInvalidToken", err)
	}
}

func TestTokensConfig(t *testing.T) {
	for name, mutate := range map[string]func(*Tokens){
		"short key":   func(tk *Tokens) { tk.Key = tk.Key[:31] },
		"no issuer":   func(tk *Tokens) { tk.Issuer = "" },
		"no audience": func(tk *Tokens) { tk.Audience = "" },
		"no TTL":      func(tk *Tokens) { tk.TTL = 0 },
	} {
		tk := testTokens(t0)
		mutate(tk)
		if _, _, err := tk.Issue("u", models.RoleUser); !errors.Is(err, ErrTokenConfig) {
			t.Errorf("%s: Issue err = %v, want ErrTokenConfig", name, err)
		}
		if _, err := tk.Parse("x.y.z"); !errors.Is(err, ErrTokenConfig) {
			t.Errorf("%s: Parse err = %v, want ErrTokenConfig", name, err)
		}
	}
	if _, _, err := testTokens(t0).Issue("u", "root"); err == nil {
		t.Error("Issue with an unknown role succeeded")
	}
	if _, _, err := testTokens(t0).Issue("", models.RoleUser); err == nil {
		t.Error("Issue without a user ID succeeded")
	}
}

func TestTokensParseRejects(t *testing.T) {
	tok := testTokens(t0)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(edit func(c *Claims)) Claims {
		c := Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer:    "turnstile",
				Subject:   "user-1",
				Audience:  jwt.ClaimStrings{"turnstile-api"},
				ExpiresAt: jwt.NewNumericDate(t0.Add(time.Minute)),
				NotBefore: jwt.NewNumericDate(t0),
				IssuedAt:  jwt.NewNumericDate(t0),
				ID:        "jti-1",
			},
			Type: "access",
			Role: models.RoleUser,
		}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	sign := func(t *testing.T, m jwt.SigningMethod, key any, c Claims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs := func(t *testing.T, c Claims) string { return sign(t, jwt.SigningMethodHS256, testKey, c) }

	// The control: the same construction, unmodified, is accepted.
	if _, err := tok.Parse(hs(t, claims(nil))); err != nil {
		t.Fatalf("control token rejected: %v", err)
	}

	cases := []struct {
		name  string
		token func(t *testing.T) string
	}{
		{"alg none", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))
		}},
		{"HS512 with the right key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS512, testKey, claims(nil))
		}},
		{"HS384 with the right key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS384, testKey, claims(nil))
		}},
		{"RS256", func(t *testing.T) string { return sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil)) }},
		{"other key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, []byte("another-key-another-key-another!!"), claims(nil))
		}},
		{"tampered signature", func(t *testing.T) string {
			s := hs(t, claims(nil))
			last := s[len(s)-2]
			flip := byte('A')
			if last == 'A' {
				flip = 'B'
			}
			return s[:len(s)-2] + string(flip) + s[len(s)-1:]
		}},
		{"tampered payload", func(t *testing.T) string {
			good := strings.Split(hs(t, claims(nil)), ".")
			admin := strings.Split(hs(t, claims(func(c *Claims) { c.Role = models.RoleAdmin })), ".")
			return good[0] + "." + admin[1] + "." + good[2]
		}},
		{"wrong iss", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Issuer = "evil" })) }},
		{"no iss", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Issuer = "" })) }},
		{"wrong aud", func(t *testing.T) string {
			return hs(t, claims(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other-api"} }))
		}},
		{"no aud", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Audience = nil })) }},
		{"missing exp", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.ExpiresAt = nil })) }},
		{"expired", func(t *testing.T) string {
			return hs(t, claims(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(t0.Add(-time.Minute)) }))
		}},
		{"not yet valid", func(t *testing.T) string {
			return hs(t, claims(func(c *Claims) { c.NotBefore = jwt.NewNumericDate(t0.Add(time.Minute)) }))
		}},
		{"issued in the future", func(t *testing.T) string {
			return hs(t, claims(func(c *Claims) { c.IssuedAt = jwt.NewNumericDate(t0.Add(time.Minute)) }))
		}},
		{"typ refresh", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Type = "refresh" })) }},
		{"no typ", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Type = "" })) }},
		{"no sub", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Subject = "" })) }},
		{"unknown role", func(t *testing.T) string { return hs(t, claims(func(c *Claims) { c.Role = "root" })) }},
		{"garbage", func(*testing.T) string { return "not-a-jwt" }},
		{"empty", func(*testing.T) string { return "" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tok.Parse(tc.token(t))
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Parse = %+v, %v; want ErrInvalidToken", c, err)
			}
			t.Log(err)
			if c.Subject != "" {
				t.Fatalf("rejected token still returned claims %+v", c)
			}
		})
	}
}
