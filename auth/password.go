// Package auth holds what proves who a caller is: argon2id password hashes,
// HS256 access tokens, and the validation of the credentials users choose.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new hashes: the OWASP Password Storage Cheat Sheet
// minimum for argon2id (19 MiB of memory, two passes, one lane). Each hash
// allocates Memory KiB, so at most hashSlots run at once (see argon2ID).
const (
	Argon2Memory  uint32 = 19 * 1024 // KiB
	Argon2Time    uint32 = 2
	Argon2Threads uint8  = 1
	SaltLen              = 16
	KeyLen               = 32
)

// Bounds on the parameters CheckPassword accepts from a stored hash, so a
// corrupted or hostile hash string cannot make a check allocate gigabytes or
// spin for minutes.
const (
	maxArgon2Memory  = 256 * 1024 // KiB
	maxArgon2Time    = 16
	maxArgon2Threads = 16
	minSaltLen       = 8
	maxSaltLen       = 64
	minKeyLen        = 16
	maxKeyLen        = 64
)

// ErrInvalidHash reports a stored hash that is not an argon2id PHC string
// this package can verify.
var ErrInvalidHash = errors.New("auth: invalid password hash")

// b64 is the PHC string format's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding

type argon2Params struct {
	memory  uint32
	time    uint32
	threads uint8
}

var defaultParams = argon2Params{memory: Argon2Memory, time: Argon2Time, threads: Argon2Threads}

// dummyHash has the current parameters and arbitrary salt and key; nothing
// hashes to it in practice. DummyCheck verifies against it so that an unknown
// user costs one full argon2id computation, like a wrong password does.
var dummyHash = encodeHash(defaultParams,
	[]byte("turnstile-dummy!"),
	[]byte("turnstile-dummy-key-0123456789ab"))

// HashPassword returns the argon2id hash of pw, with a fresh random salt, in
// the PHC string format: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	return encodeHash(defaultParams, salt, argon2Key(pw, salt, defaultParams)), nil
}

// CheckPassword reports whether pw matches hash, a string from HashPassword.
// The parameters come from the hash, so hashes made with older parameters
// keep working. A malformed hash is an error wrapping ErrInvalidHash, never a
// match.
func CheckPassword(hash, pw string) (bool, error) {
	p, salt, want, err := decodeHash(hash)
	if err != nil {
		return false, err
	}
	got := argon2ID(pw, salt, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// DummyCheck costs what CheckPassword costs with a real hash, and proves
// nothing. Call it when the user is unknown, so that "no such user" and
// "wrong password" take the same time.
func DummyCheck(pw string) {
	_, _ = CheckPassword(dummyHash, pw)
}

func encodeHash(p argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func decodeHash(hash string) (p argon2Params, salt, key []byte, err error) {
	invalid := func(why string) (argon2Params, []byte, []byte, error) {
		return argon2Params{}, nil, nil, fmt.Errorf("%w: %s", ErrInvalidHash, why)
	}
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" {
		return invalid("want $argon2id$v=..$m=..,t=..,p=..$salt$key")
	}
	if parts[1] != "argon2id" {
		return invalid("algorithm is not argon2id")
	}
	var version int
	if n, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || n != 1 || parts[2] != fmt.Sprintf("v=%d", version) {
		return invalid("bad version field")
	}
	if version != argon2.Version {
		return invalid(fmt.Sprintf("unsupported version %d", version))
	}
	var m, t, threads uint64
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &threads); err != nil || n != 3 ||
		parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", m, t, threads) {
		return invalid("bad parameter field")
	}
	if threads < 1 || threads > maxArgon2Threads || t < 1 || t > maxArgon2Time ||
		m < 8*threads || m > maxArgon2Memory {
		return invalid("parameters out of range")
	}
	salt, err = b64.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return invalid("bad salt")
	}
	key, err = b64.Strict().DecodeString(parts[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return invalid("bad key")
	}
	return argon2Params{memory: uint32(m), time: uint32(t), threads: uint8(threads)}, salt, key, nil
}

func argon2Key(pw string, salt []byte, p argon2Params) []byte {
	return argon2ID(pw, salt, p, KeyLen)
}

// hashSlots bounds the argon2id computations running at once. They are
// CPU-bound, so more than a couple per CPU only adds memory: 32 concurrent
// logins held 608 MiB of hash memory (a benchmark's registrations left the
// process at 1.46 GB resident). Callers past the bound wait their turn.
var hashSlots = make(chan struct{}, max(2, 2*runtime.GOMAXPROCS(0)))

// hashing and hashingPeak count the computations in progress and the most
// seen at once (tests read them).
var hashing, hashingPeak atomic.Int32

// argon2ID is argon2.IDKey within a hash slot.
func argon2ID(pw string, salt []byte, p argon2Params, keyLen uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	n := hashing.Add(1)
	defer hashing.Add(-1)
	for {
		peak := hashingPeak.Load()
		if n <= peak || hashingPeak.CompareAndSwap(peak, n) {
			break
		}
	}
	return argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, keyLen)
}
