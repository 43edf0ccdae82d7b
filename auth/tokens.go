package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/turnstile/turnstile/models"
)

// TokenTypeAccess is the typ claim of access tokens. Parse accepts no other,
// so a token minted for another purpose with the same key never authorises
// an API call.
const TokenTypeAccess = "access"

// MinKeyLen is the shortest HS256 key Tokens accepts: 256 bits, the size of
// the hash (RFC 7518 §3.2).
const MinKeyLen = 32

// DefaultLeeway is the clock skew Parse tolerates on exp, nbf and iat when
// Tokens.Leeway is zero: small, since the API servers that issue and check
// tokens share a clock source.
const DefaultLeeway = 5 * time.Second

var (
	// ErrInvalidToken wraps every reason Parse rejects a token for.
	ErrInvalidToken = errors.New("invalid access token")
	// ErrTokenConfig reports Tokens fields that cannot issue or check tokens.
	ErrTokenConfig = errors.New("auth: bad token configuration")
)

// Claims are the claims of an access token: the registered ones (iss, aud,
// exp, iat, nbf, sub = user ID, jti) plus typ and role.
type Claims struct {
	jwt.RegisteredClaims
	Type string      `json:"typ"`
	Role models.Role `json:"role"`
	// IssuedAtMS is iat in milliseconds, so a logout can end the tokens
	// issued before it and spare one issued just after (iat has seconds).
	IssuedAtMS int64 `json:"iat_ms,omitempty"`
}

// Issued is when the token was issued: IssuedAtMS, or iat for a token
// without it (zero if neither).
func (c Claims) Issued() time.Time {
	if c.IssuedAtMS > 0 {
		return time.UnixMilli(c.IssuedAtMS)
	}
	if c.IssuedAt != nil {
		return c.IssuedAt.Time
	}
	return time.Time{}
}

// Validate is called by the jwt parser after the registered claims pass.
func (c Claims) Validate() error {
	if c.Type != TokenTypeAccess {
		return fmt.Errorf("typ %q is not %q", c.Type, TokenTypeAccess)
	}
	if c.Subject == "" {
		return errors.New("no sub")
	}
	if c.Role != models.RoleUser && c.Role != models.RoleAdmin {
		return fmt.Errorf("unknown role %q", c.Role)
	}
	return nil
}

// Tokens issues and checks HS256 access tokens. Key must hold at least
// MinKeyLen bytes; Issuer and Audience must be set. Now defaults to
// time.Now and Leeway to DefaultLeeway.
type Tokens struct {
	Key      []byte
	Issuer   string
	Audience string
	TTL      time.Duration
	Now      func() time.Time
	Leeway   time.Duration
}

// Validate reports whether t can issue and check tokens. Call it at startup.
func (t *Tokens) Validate() error {
	switch {
	case len(t.Key) < MinKeyLen:
		return fmt.Errorf("%w: key has %d bytes, want at least %d", ErrTokenConfig, len(t.Key), MinKeyLen)
	case t.Issuer == "":
		return fmt.Errorf("%w: no issuer", ErrTokenConfig)
	case t.Audience == "":
		return fmt.Errorf("%w: no audience", ErrTokenConfig)
	case t.TTL <= 0:
		return fmt.Errorf("%w: TTL %v is not positive", ErrTokenConfig, t.TTL)
	case t.Leeway < 0:
		return fmt.Errorf("%w: negative leeway", ErrTokenConfig)
	}
	return nil
}

// Issue returns a signed access token for userID with role, and how long it
// is valid.
func (t *Tokens) Issue(userID string, role models.Role) (token string, expiresIn time.Duration, err error) {
	if err := t.Validate(); err != nil {
		return "", 0, err
	}
	if userID == "" {
		return "", 0, errors.New("auth: issue: empty user ID")
	}
	now := t.now()
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.Issuer,
			Subject:   userID,
			Audience:  jwt.ClaimStrings{t.Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(t.TTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        uuid.NewString(),
		},
		Type:       TokenTypeAccess,
		Role:       role,
		IssuedAtMS: now.UnixMilli(),
	}
	if err := claims.Validate(); err != nil {
		return "", 0, fmt.Errorf("auth: issue: %w", err)
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.Key)
	if err != nil {
		return "", 0, fmt.Errorf("auth: sign: %w", err)
	}
	return signed, t.TTL, nil
}

// Parse checks token's signature (HS256 only), issuer, audience, expiry
// (required), not-before, issued-at and typ, and returns its claims. Every
// rejection wraps ErrInvalidToken.
func (t *Tokens) Parse(token string) (Claims, error) {
	if err := t.Validate(); err != nil {
		return Claims{}, err
	}
	leeway := t.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(t.Issuer),
		jwt.WithAudience(t.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(t.now),
	)
	var c Claims
	_, err := p.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.Key, nil })
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return c, nil
}

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}
