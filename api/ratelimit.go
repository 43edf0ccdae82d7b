package api

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// The limiters here keep their state in memory: each API instance limits on
// its own, so with N instances behind a balancer a client gets up to N times
// the configured rates. That bounds abuse well enough for login throttling
// and flood control; a shared store would be needed for exact global limits.

// maxLimiterKeys bounds the keys a limiter remembers, so a flood of distinct
// client addresses cannot grow memory without end. Far more than the active
// clients of one instance.
const maxLimiterKeys = 1 << 16

// sweepEvery is how often a limiter drops entries that carry no state any
// more (a full bucket, an expired lockout).
const sweepEvery = time.Minute

// buckets is a token bucket per key: a key may spend burst tokens at once and
// earns rate tokens per second back. A key with a full bucket is forgotten,
// since it behaves exactly like a new one.
type buckets struct {
	rate  float64 // tokens per second
	burst float64

	mu        sync.Mutex
	m         map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

func newBuckets(perSecond float64, burst int) *buckets {
	return &buckets{rate: perSecond, burst: float64(burst), m: map[string]*bucket{}}
}

// take spends one token of key at now. When the bucket is empty it reports
// false and how long until a token is back.
func (b *buckets) take(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	bk := b.m[key]
	if bk == nil {
		evictOne(b.m)
		bk = &bucket{tokens: b.burst, at: now}
		b.m[key] = bk
	}
	if elapsed := now.Sub(bk.at).Seconds(); elapsed > 0 {
		bk.tokens = math.Min(b.burst, bk.tokens+elapsed*b.rate)
	}
	bk.at = now
	if bk.tokens >= 1 {
		bk.tokens--
		return true, 0
	}
	wait := time.Duration((1 - bk.tokens) / b.rate * float64(time.Second))
	return false, wait
}

func (b *buckets) sweep(now time.Time) {
	if now.Sub(b.lastSweep) < sweepEvery {
		return
	}
	b.lastSweep = now
	refill := time.Duration(b.burst / b.rate * float64(time.Second))
	for k, bk := range b.m {
		if now.Sub(bk.at) >= refill {
			delete(b.m, k)
		}
	}
}

// evictOne makes room in a full map by dropping an arbitrary entry (Go's map
// order is random, so an attacker cannot aim at a particular key).
func evictOne[V any](m map[string]V) {
	if len(m) < maxLimiterKeys {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}

// lockouts throttles failed logins per key (account and client network, see
// loginKey). Every attempt counts as a failure until it succeeds, so
// concurrent guesses cannot slip past the count; the threshold-th failure
// locks the key for base, and each further failure doubles the lock, up to
// max. A success forgets the key; so does a quiet period of forget.
type lockouts struct {
	threshold int
	base, max time.Duration
	forget    time.Duration

	mu        sync.Mutex
	m         map[string]*failures
	lastSweep time.Time
}

type failures struct {
	count       int
	last        time.Time
	lockedUntil time.Time
}

func newLockouts(threshold int, base, max time.Duration) *lockouts {
	// Forget a key only well after its longest lock could have ended, so
	// waiting out one lock does not restore a fresh set of tries.
	return &lockouts{threshold: threshold, base: base, max: max, forget: 4 * max, m: map[string]*failures{}}
}

// begin records an attempt for key at now, or reports how long key is still
// locked (and records nothing).
func (l *lockouts) begin(key string, now time.Time) (locked time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	f := l.m[key]
	if f == nil {
		evictOne(l.m)
		f = &failures{}
		l.m[key] = f
	}
	if now.Before(f.lockedUntil) {
		return f.lockedUntil.Sub(now)
	}
	f.count++
	f.last = now
	if f.count >= l.threshold {
		f.lockedUntil = now.Add(l.lockFor(f.count - l.threshold))
	}
	return 0
}

// lockFor is base doubled n times, capped at max.
func (l *lockouts) lockFor(n int) time.Duration {
	d := l.base
	for range n {
		if d >= l.max/2 {
			return l.max
		}
		d *= 2
	}
	return min(d, l.max)
}

// cancel takes back the attempt begin recorded, for an attempt that ended
// without a verdict (a backend failure).
func (l *lockouts) cancel(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.m[key]
	if f == nil || f.count == 0 {
		return
	}
	f.count--
	if f.count < l.threshold {
		f.lockedUntil = time.Time{}
	}
}

// succeed forgets key's failures.
func (l *lockouts) succeed(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, key)
}

func (l *lockouts) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for k, f := range l.m {
		if now.Sub(f.last) >= l.forget && !now.Before(f.lockedUntil) {
			delete(l.m, k)
		}
	}
}

// clientNetwork is the rate-limit key of a client address: the IP itself for
// IPv4, its /64 for IPv6, since one IPv6 host usually controls a whole /64
// and could otherwise rotate addresses to dodge every limit.
func clientNetwork(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.WithZone("").Prefix(64)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

// loginKey keys lockouts by account and client network together: a guesser
// locks only their own network out of an account, never its owner
// elsewhere. The key exists for unknown emails too, so a lockout tells
// nothing about which accounts exist.
func loginKey(email, ip string) string {
	return email + "|" + clientNetwork(ip)
}

// tooMany answers 429 with Retry-After (whole seconds, at least 1).
func tooMany(c *gin.Context, code, msg string, retryAfter time.Duration) {
	secs := int(math.Ceil(retryAfter.Seconds()))
	c.Header("Retry-After", strconv.Itoa(max(secs, 1)))
	fail(c, apiError{429, code, msg})
}

// authRateLimited spends one of the client network's auth tokens; when there
// is none it answers 429 and reports true. The client IP is the peer address
// unless the peer is a configured trusted proxy (gin's ClientIP with
// SetTrustedProxies).
func (s *server) authRateLimited(c *gin.Context) bool {
	ok, wait := s.authLimit.take(clientNetwork(c.ClientIP()), s.cfg.Now())
	if ok {
		return false
	}
	tooMany(c, "rate_limited", "too many authentication calls from your address; slow down", wait)
	return true
}

// submitRateLimited spends one of the current user's submission tokens;
// when there is none it answers 429 and reports true.
func (s *server) submitRateLimited(c *gin.Context) bool {
	ok, wait := s.submitLimit.take(currentUser(c).ID, s.cfg.Now())
	if ok {
		return false
	}
	tooMany(c, "rate_limited", "you are submitting faster than the allowed rate; slow down", wait)
	return true
}

// signalRateLimited spends one of userID's signal tokens (cancel, close and
// the operator's steering of that user); when there is none it answers 429
// and reports true.
func (s *server) signalRateLimited(c *gin.Context, userID string) bool {
	ok, wait := s.signalLimit.take(userID, s.cfg.Now())
	if ok {
		return false
	}
	tooMany(c, "rate_limited", "too many cancel, close or steering calls for this session; slow down", wait)
	return true
}
