package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// ErrUserExists is returned by CreateAdmin for a taken email without promote.
var ErrUserExists = errors.New("a user with this email exists (use --promote to make it an admin)")

// CreateAdmin bootstraps an operator: it creates an admin account, or with
// promote turns an existing account into an admin (its password unchanged).
func CreateAdmin(ctx context.Context, st *store.Store, email, password string, promote bool) (*models.User, error) {
	email, err := auth.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if existing, err := st.Users.ByEmail(ctx, email); err == nil {
		if !promote {
			return nil, ErrUserExists
		}
		if err := st.Users.SetRole(ctx, existing.ID, models.RoleAdmin); err != nil {
			return nil, fmt.Errorf("promote: %w", err)
		}
		existing.Role = models.RoleAdmin
		return existing, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	if err := auth.ValidatePassword(password); err != nil {
		return nil, err
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	u := &models.User{Email: email, PasswordHash: hash, Role: models.RoleAdmin}
	if err := st.Users.Create(ctx, u); errors.Is(err, store.ErrDuplicate) {
		return nil, ErrUserExists
	} else if err != nil {
		return nil, fmt.Errorf("create admin: %w", err)
	}
	return u, nil
}
