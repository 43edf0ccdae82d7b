package auth

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHashPasswordRoundTrip(t *testing.T) {
	hash, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q lacks the PHC prefix with OWASP parameters", hash)
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || len(parts[4]) != 22 || len(parts[5]) != 43 {
		t.Fatalf("hash %q: want 16-byte salt and 32-byte key in unpadded base64", hash)
	}

	ok, err := CheckPassword(hash, "correct horse battery staple")
	if err != nil || !ok {
		t.Fatalf("CheckPassword(right) = %v, %v; want true, nil", ok, err)
	}
	ok, err = CheckPassword(hash, "correct horse battery stapler")
	if err != nil || ok {
		t.Fatalf("CheckPassword(wrong) = %v, %v; want false, nil", ok, err)
	}

	again, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if again == hash {
		t.Fatal("two hashes of one password are equal: salt is not random")
	}
}

func TestCheckPasswordOtherParameters(t *testing.T) {
	// A hash made with cheaper parameters (as an older deployment might have
	// stored) still verifies: parameters come from the hash.
	salt := []byte("0123456789abcdef")
	p := argon2Params{memory: 64, time: 1, threads: 1}
	hash := encodeHash(p, salt, argon2Key("pw-pw-pw", salt, p))
	ok, err := CheckPassword(hash, "pw-pw-pw")
	if err != nil || !ok {
		t.Fatalf("CheckPassword = %v, %v; want true, nil", ok, err)
	}
}

func TestCheckPasswordBadHash(t *testing.T) {
	good, err := HashPassword("password1")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	for name, hash := range map[string]string{
		"empty":            "",
		"bcrypt":           "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":          "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"no leading $":     "argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"missing key":      "$argon2id$v=19$m=19456,t=2,p=1$" + salt,
		"extra field":      good + "$x",
		"version 16":       "$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key,
		"version junk":     "$argon2id$v=19x$m=19456,t=2,p=1$" + salt + "$" + key,
		"params reordered": "$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + key,
		"params trailing":  "$argon2id$v=19$m=19456,t=2,p=1,k=3$" + salt + "$" + key,
		"negative memory":  "$argon2id$v=19$m=-1,t=2,p=1$" + salt + "$" + key,
		"zero time":        "$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + key,
		"zero threads":     "$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key,
		"huge memory":      "$argon2id$v=19$m=4194304,t=2,p=1$" + salt + "$" + key,
		"huge time":        "$argon2id$v=19$m=19456,t=1000,p=1$" + salt + "$" + key,
		"padded salt":      "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key,
		"salt not base64":  "$argon2id$v=19$m=19456,t=2,p=1$!!!!!!!!!!!!$" + key,
		"short salt":       "$argon2id$v=19$m=19456,t=2,p=1$AAAA$" + key,
		"short key":        "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$AAAA",
		"empty key":        "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$",
	} {
		t.Run(name, func(t *testing.T) {
			ok, err := CheckPassword(hash, "password1")
			if ok || !errors.Is(err, ErrInvalidHash) {
				t.Fatalf("CheckPassword(%q) = %v, %v; want false, ErrInvalidHash", hash, ok, err)
			}
		})
	}
}

func TestDummyCheckCostsLikeCheckPassword(t *testing.T) {
	if _, _, _, err := decodeHash(dummyHash); err != nil {
		t.Fatalf("dummy hash does not parse: %v", err)
	}
	if !strings.HasPrefix(dummyHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("dummy hash %q does not use the current parameters", dummyHash)
	}
	hash, err := HashPassword("password1")
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 3
	measure := func(f func()) time.Duration {
		best := time.Duration(1<<63 - 1)
		for range rounds {
			start := time.Now()
			f()
			best = min(best, time.Since(start))
		}
		return best
	}
	check := measure(func() { _, _ = CheckPassword(hash, "password2") })
	dummy := measure(func() { DummyCheck("password2") })
	// Loose bounds: this guards against DummyCheck becoming free (or
	// doubling), not against scheduler noise.
	if dummy < check/3 || dummy > check*3 {
		t.Fatalf("DummyCheck took %v, CheckPassword %v: want about the same", dummy, check)
	}
}

// Each argon2id computation holds 19 MiB: however many logins arrive at once,
// only hashSlots compute together, and more than one may.
func TestPasswordHashingIsBoundedInConcurrency(t *testing.T) {
	hash, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	hashingPeak.Store(0)
	var wg sync.WaitGroup
	for range 4 * cap(hashSlots) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := CheckPassword(hash, "correct horse battery staple"); !ok || err != nil {
				t.Errorf("CheckPassword = %v, %v", ok, err)
			}
		}()
	}
	wg.Wait()
	if peak := hashingPeak.Load(); peak > int32(cap(hashSlots)) || peak < 2 {
		t.Fatalf("%d hashes ran at once, want 2..%d", peak, cap(hashSlots))
	}
}
