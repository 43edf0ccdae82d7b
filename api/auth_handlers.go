package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

func backendCtx(c *gin.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request.Context(), backendTimeout)
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type tokenPair struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// maxRefreshTokenLen is far above the 43 characters of the refresh tokens
// the store issues; anything longer is refused without a lookup.
const maxRefreshTokenLen = 256

var errBadCredentials = errUnauthorized("email or password is wrong")

func (s *server) handleRegister() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.authRateLimited(c) {
			return
		}
		var in credentials
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		email, err := auth.NormalizeEmail(in.Email)
		if err != nil {
			fail(c, errBadRequest("invalid_email", err.Error()))
			return
		}
		if err := auth.ValidatePassword(in.Password); err != nil {
			fail(c, errBadRequest("invalid_password", err.Error()))
			return
		}
		hash, err := auth.HashPassword(in.Password)
		if err != nil {
			fail(c, fmt.Errorf("hash password: %w", err))
			return
		}
		u := &models.User{ID: uuid.Must(uuid.NewV7()).String(), Email: email, PasswordHash: hash, Role: models.RoleUser, CreatedAt: s.now()}
		ctx, cancel := backendCtx(c)
		defer cancel()
		if err := s.store.Users.Create(ctx, u); errors.Is(err, store.ErrDuplicate) {
			fail(c, errConflict("email_taken", "an account with this email exists"))
			return
		} else if err != nil {
			fail(c, fmt.Errorf("create user: %w", err))
			return
		}
		s.log.Info("user registered", "user_id", u.ID)
		c.JSON(http.StatusCreated, gin.H{"id": u.ID, "email": u.Email, "role": u.Role})
	}
}

func (s *server) handleLogin() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.authRateLimited(c) {
			return
		}
		var in credentials
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		email, emailErr := auth.NormalizeEmail(in.Email)
		// The lockout counts this attempt as failed until the password
		// checks out; it is keyed the same way for accounts that do not
		// exist, so a 429 reveals nothing either.
		account := email
		if emailErr != nil {
			account = "(invalid email)" // bounded key size; no account has one
		}
		lockKey := loginKey(account, c.ClientIP())
		if wait := s.logins.begin(lockKey, s.cfg.Now()); wait > 0 {
			s.log.Warn("login locked out", "client_ip", c.ClientIP(), "retry_after_s", int(wait.Seconds()))
			tooMany(c, "login_locked", "too many failed logins for this account from your address; try again later", wait)
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		var u *models.User
		err := emailErr
		if err == nil {
			u, err = s.store.Users.ByEmail(ctx, email)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) && emailErr == nil {
			s.logins.cancel(lockKey) // a backend failure is not a failed guess
			fail(c, fmt.Errorf("load user: %w", err))
			return
		}
		if u == nil {
			// Same work and same answer as a wrong password, so the answer
			// does not tell which emails have accounts.
			auth.DummyCheck(in.Password)
			fail(c, errBadCredentials)
			return
		}
		ok, err := auth.CheckPassword(u.PasswordHash, in.Password)
		if err != nil {
			s.logins.cancel(lockKey)
			fail(c, fmt.Errorf("check password: %w", err))
			return
		}
		if !ok || u.Disabled {
			s.log.Info("login refused", "user_id", u.ID, "disabled", u.Disabled)
			fail(c, errBadCredentials)
			return
		}
		s.logins.succeed(lockKey)
		pair, err := s.issuePair(ctx, u, "")
		if err != nil {
			fail(c, err)
			return
		}
		s.log.Info("user logged in", "user_id", u.ID)
		c.JSON(http.StatusOK, pair)
	}
}

// issuePair issues an access token and a refresh token of family ("" = new).
func (s *server) issuePair(ctx context.Context, u *models.User, family string) (tokenPair, error) {
	access, ttl, err := s.cfg.Tokens.Issue(u.ID, u.Role)
	if err != nil {
		return tokenPair{}, fmt.Errorf("issue access token: %w", err)
	}
	refresh, err := s.store.Tokens.Issue(ctx, u.ID, family, s.cfg.RefreshTTL, s.now())
	if err != nil {
		return tokenPair{}, fmt.Errorf("issue refresh token: %w", err)
	}
	return tokenPair{AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), RefreshToken: refresh}, nil
}

func (s *server) handleRefresh() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.authRateLimited(c) {
			return
		}
		var in struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		if in.RefreshToken == "" {
			fail(c, errBadRequest("invalid_refresh_token", "refresh_token is required"))
			return
		}
		if len(in.RefreshToken) > maxRefreshTokenLen {
			// Not one of ours (an access token, say); no need to look.
			fail(c, errUnauthorized("invalid or expired refresh token"))
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		userID, newRefresh, err := s.store.Tokens.Rotate(ctx, in.RefreshToken, s.cfg.RefreshTTL, s.now())
		switch {
		case errors.Is(err, store.ErrReused):
			s.log.Warn("refresh token reused; family revoked", "user_id", userID)
			fail(c, errUnauthorized("refresh token was already used; all sessions of this login are revoked"))
			return
		case errors.Is(err, store.ErrInvalidToken):
			fail(c, errUnauthorized("invalid or expired refresh token"))
			return
		case err != nil:
			fail(c, fmt.Errorf("rotate refresh token: %w", err))
			return
		}
		u, err := s.store.Users.ByID(ctx, userID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && u.Disabled) {
			fail(c, errUnauthorized("invalid or expired refresh token"))
			return
		} else if err != nil {
			fail(c, fmt.Errorf("load user: %w", err))
			return
		}
		access, ttl, err := s.cfg.Tokens.Issue(u.ID, u.Role)
		if err != nil {
			fail(c, fmt.Errorf("issue access token: %w", err))
			return
		}
		c.JSON(http.StatusOK, tokenPair{AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), RefreshToken: newRefresh})
	}
}

func (s *server) handleLogout() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		ctx, cancel := backendCtx(c)
		defer cancel()
		// Every session of the account ends: its refresh tokens, and its
		// access tokens at once (authenticate compares their issue time).
		if err := s.store.Users.RevokeAccessBefore(ctx, u.ID, s.now()); err != nil {
			fail(c, fmt.Errorf("revoke access tokens: %w", err))
			return
		}
		if err := s.store.Tokens.RevokeUser(ctx, u.ID); err != nil {
			fail(c, fmt.Errorf("revoke tokens: %w", err))
			return
		}
		c.Status(http.StatusNoContent)
	}
}
