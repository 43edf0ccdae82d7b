package auth

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Limits on what users may choose as credentials.
const (
	// MaxEmailLen is the longest address SMTP can carry (RFC 5321 path limit
	// minus the angle brackets).
	MaxEmailLen = 254
	// MinPasswordLen and MaxPasswordLen count characters (runes): the OWASP
	// minimum, and a maximum that allows passphrases.
	MinPasswordLen = 8
	MaxPasswordLen = 128
	// MaxPasswordBytes bounds the bytes of a password, whatever its runes.
	MaxPasswordBytes = 1024
)

// Validation errors; the returned errors wrap them with the reason.
var (
	ErrInvalidEmail    = errors.New("invalid email")
	ErrInvalidPassword = errors.New("invalid password")
)

// NormalizeEmail trims and lower-cases s and checks that it is one bare
// address (no display name, no angle brackets) of at most MaxEmailLen bytes.
func NormalizeEmail(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidEmail)
	}
	if len(s) > MaxEmailLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidEmail, MaxEmailLen)
	}
	addr, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidEmail, err)
	}
	if addr.Name != "" || addr.Address != s {
		return "", fmt.Errorf("%w: want a bare address such as user@example.com", ErrInvalidEmail)
	}
	return s, nil
}

// ValidatePassword checks the password policy: valid UTF-8, MinPasswordLen to
// MaxPasswordLen characters and at most MaxPasswordBytes bytes.
func ValidatePassword(pw string) error {
	if len(pw) > MaxPasswordBytes {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidPassword, MaxPasswordBytes)
	}
	if !utf8.ValidString(pw) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidPassword)
	}
	switch n := utf8.RuneCountInString(pw); {
	case n < MinPasswordLen:
		return fmt.Errorf("%w: shorter than %d characters", ErrInvalidPassword, MinPasswordLen)
	case n > MaxPasswordLen:
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidPassword, MaxPasswordLen)
	}
	return nil
}
