package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeEmail(t *testing.T) {
	for in, want := range map[string]string{
		"user@example.com":         "user@example.com",
		"  User@Example.COM \t":    "user@example.com",
		"first.last+tag@sub.ex.io": "first.last+tag@sub.ex.io",
		"root@localhost":           "root@localhost",
	} {
		got, err := NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q, nil", in, got, err, want)
		}
	}
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + ".com" // 255 bytes
	for _, in := range []string{
		"",
		"   ",
		"plainaddress",
		"@example.com",
		"user@",
		"a@b@c",
		"User <user@example.com>",
		"<user@example.com>",
		"user@example.com, other@example.com",
		"us er@example.com",
		"user@exa mple.com",
		"user@example.com\r\nBcc: x@y.z",
		long,
	} {
		got, err := NormalizeEmail(in)
		if !errors.Is(err, ErrInvalidEmail) {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want ErrInvalidEmail", in, got, err)
		}
	}
	if got, err := NormalizeEmail(long[1:]); err != nil || len(got) != MaxEmailLen {
		t.Errorf("NormalizeEmail(254 bytes) = %q, %v; want it accepted", got, err)
	}
}

func TestValidatePassword(t *testing.T) {
	for _, pw := range []string{
		"12345678",
		strings.Repeat("x", MaxPasswordLen),
		"pässwörd",                                     // 8 runes, 10 bytes
		strings.Repeat("密", MaxPasswordLen),            // 128 runes, 384 bytes
		"correct horse battery staple, with spaces ok", // passphrase
	} {
		if err := ValidatePassword(pw); err != nil {
			t.Errorf("ValidatePassword(%q) = %v; want nil", pw, err)
		}
	}
	for name, pw := range map[string]string{
		"empty":         "",
		"7 chars":       "1234567",
		"7 runes":       "pässwö", // 8 bytes but 6 runes
		"129 chars":     strings.Repeat("x", MaxPasswordLen+1),
		"over 1024 B":   strings.Repeat("😀", 257), // 257 runes, 1028 bytes
		"invalid UTF-8": "abcdefgh\xff",
	} {
		if err := ValidatePassword(pw); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("ValidatePassword(%s) = %v; want ErrInvalidPassword", name, err)
		}
	}
}
