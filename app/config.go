// Package app wires configuration, MongoDB, Temporal, the API and the worker
// into runnable services. cmd/turnstile is a thin main over it, and the
// end-to-end tests run the same code in-process.
package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/api"
	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/inbox"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/worker"
	"github.com/turnstile/turnstile/workflows"
)

// FaultCrashAfterAccept is the fault point that kills the API right after
// it wrote a submission's 202, before any delivery to the session (such an
// API delivers nothing itself: the relay must).
const FaultCrashAfterAccept = "crash-after-accept"

// DefaultLocalTypes are the request types run as local activities unless
// TURNSTILE_LOCAL_TYPES says otherwise: echo is instant and side-effect
// free. sleep and http heartbeat, so they stay regular activities.
const DefaultLocalTypes = "echo"

// Environments.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// Config is every setting, read from TURNSTILE_* environment variables by
// FromEnv. The defaults run everything on one machine (make run).
type Config struct {
	Env string // TURNSTILE_ENV: development (default) or production

	APIAddr         string // TURNSTILE_API_ADDR, default 127.0.0.1:8080
	TemporalAddress string // TURNSTILE_TEMPORAL_ADDRESS, default 127.0.0.1:7233
	Namespace       string // TURNSTILE_TEMPORAL_NAMESPACE, default "default"
	MongoURI        string // TURNSTILE_MONGODB_URI, default mongodb://127.0.0.1:27017/
	MongoDatabase   string // TURNSTILE_MONGODB_DATABASE, default "turnstile"

	JWTKey      []byte        // TURNSTILE_JWT_KEY: at least 32 bytes; required in production
	JWTIssuer   string        // TURNSTILE_JWT_ISSUER, default "turnstile"
	JWTAudience string        // TURNSTILE_JWT_AUDIENCE, default "turnstile-api"
	AccessTTL   time.Duration // TURNSTILE_ACCESS_TOKEN_TTL, default 15m
	RefreshTTL  time.Duration // TURNSTILE_REFRESH_TOKEN_TTL, default 720h

	HTTPAllowlist map[string]bool // TURNSTILE_HTTP_ALLOWLIST: host:port,host:port
	HTTPTimeout   time.Duration   // TURNSTILE_HTTP_TIMEOUT, default 30s

	MaxBodyBytes   int64    // TURNSTILE_MAX_BODY_BYTES, default 262144
	MaxQueue       int      // TURNSTILE_MAX_QUEUE, default 1000 per user
	MaxBatch       int      // TURNSTILE_MAX_BATCH, default 100
	TrustedProxies []string // TURNSTILE_TRUSTED_PROXIES: CIDRs or IPs, default none

	MaxJSONDepth    int // TURNSTILE_MAX_JSON_DEPTH, default 32 levels of nesting in a body
	MaxPayloadBytes int // TURNSTILE_MAX_PAYLOAD_BYTES, default 65536 per request payload
	MaxPageSize     int // TURNSTILE_MAX_PAGE_SIZE, default 100 (at most store.MaxListLimit)
	SubmitRate      int // TURNSTILE_SUBMIT_RATE, default 50 submission calls per second per user
	SubmitBurst     int // TURNSTILE_SUBMIT_BURST, default 100 calls at once per user
	SignalRate      int // TURNSTILE_SIGNAL_RATE, default 5 cancel/close/steering calls per second per user
	SignalBurst     int // TURNSTILE_SIGNAL_BURST, default 20 such calls at once per user
	// HistoryBudget is the session run history length (events) at which
	// cancel, close and steering signals wait for the run to continue as
	// new (TURNSTILE_SESSION_HISTORY_BUDGET, default 8000, 100 to 20000).
	HistoryBudget int
	// BenchModes lets submissions ask for the naive execution path
	// (Turnstile-Execution: naive), so make bench can show the ratio on one
	// running system (TURNSTILE_BENCH_MODES=on|off; on in development, off
	// in production unless set).
	BenchModes bool
	AuthRate   int // TURNSTILE_AUTH_RATE, default 60 register/login/refresh calls per minute per client IP (60000 in development)
	AuthBurst  int // TURNSTILE_AUTH_BURST, default 120 calls at once per client IP (2000 in development)

	LoginLockoutThreshold int           // TURNSTILE_LOGIN_LOCKOUT_THRESHOLD, default 5 failures per account and client IP
	LoginLockoutBase      time.Duration // TURNSTILE_LOGIN_LOCKOUT_BASE, default 30s, doubling per further failure
	LoginLockoutMax       time.Duration // TURNSTILE_LOGIN_LOCKOUT_MAX, default 15m

	// Session: TURNSTILE_IDLE_TIMEOUT, TURNSTILE_MAX_ATTEMPTS,
	// TURNSTILE_EXEC_TIMEOUT, TURNSTILE_HEARTBEAT_TIMEOUT,
	// TURNSTILE_RETRY_INITIAL, TURNSTILE_RETRY_MAX, TURNSTILE_LOCAL_TYPES
	// (default "echo"; "none" runs every type as a regular activity, the
	// naive path), TURNSTILE_LOCAL_TIMEOUT, TURNSTILE_BATCH_SIZE (default
	// 100 local-type requests per batch; 1 = one local activity each) and
	// TURNSTILE_BATCH_BUDGET (default 250ms).
	Session workflows.Config

	// WorkflowPollers and ActivityPollers are the worker's concurrent polls
	// of the task queue (TURNSTILE_WORKFLOW_POLLERS, TURNSTILE_ACTIVITY_POLLERS,
	// default 2 each, the SDK's). See docs/performance.md for why 2 is kept.
	WorkflowPollers, ActivityPollers int
	// WorkerStopTimeout is how long a stopping worker lets its running
	// requests finish before it cancels them (TURNSTILE_WORKER_STOP_TIMEOUT,
	// default 30s).
	WorkerStopTimeout time.Duration
	// BatchAnnounceEvery: a worker's batch records its progress this often
	// as it runs, not only at its end (TURNSTILE_BATCH_ANNOUNCE_EVERY,
	// default 0: at its end). Set 100ms where the API's event streams poll
	// a MongoDB without the embedded store's change feed, so a finish early
	// in a batch reaches them sooner, at a queue write per 100 ms of batch.
	BatchAnnounceEvery time.Duration
	// MetricsAddr is where a worker serves /metrics
	// (TURNSTILE_METRICS_ADDR, default 127.0.0.1:9464; "off" disables). The
	// API serves /metrics on its own address.
	MetricsAddr string

	LogLevel slog.Level // TURNSTILE_LOG_LEVEL: debug, info (default), warn, error
	DataDir  string     // TURNSTILE_DATA_DIR (dev only), default .data
	// DevSync is the embedded stores' SQLite synchronous setting
	// (TURNSTILE_DEV_SYNC, dev only): full (default) fsyncs every commit,
	// normal does not (faster; a power loss may drop recent commits).
	DevSync string
	// FaultPoint enables a fault-injection point for the fault tests
	// (TURNSTILE_FAULT_POINT): "crash-after-accept" makes the API exit
	// right after answering a submission 202, before delivering it.
	// Production refuses it.
	FaultPoint string
	// DeliveryLinger (TURNSTILE_DELIVERY_LINGER, default 5ms) is how long
	// the API holds a user's accepted requests for more before signalling
	// them to the session in one delivery.
	DeliveryLinger time.Duration
	// DeliveryMaxHold (TURNSTILE_DELIVERY_MAX_HOLD, default 3s) bounds how
	// long new entries wait for more while their session still has work it
	// has not started (about half of that work's time, up to this).
	DeliveryMaxHold time.Duration
	// RelayEvery (TURNSTILE_RELAY_EVERY, default 1s) is how often each
	// worker's relay looks for accepted requests no session holds.
	RelayEvery time.Duration
	// EventsPoll (TURNSTILE_EVENTS_POLL, default 200ms) is how often each
	// event stream reads its user's queue document for changes.
	EventsPoll time.Duration
	// MaxStreams (TURNSTILE_EVENTS_MAX_STREAMS, default 4) bounds each
	// user's open event streams per API instance.
	MaxStreams int
	// StreamHeartbeat (TURNSTILE_EVENTS_HEARTBEAT, default 15s) is how often
	// a quiet event stream sends a comment, so proxies keep it open.
	StreamHeartbeat time.Duration
	// MongoWriteConcern: TURNSTILE_MONGODB_WRITE_CONCERN, majority (default:
	// journaled on a majority, so a 202 survives a replica-set failover), 1,
	// or uri (the connection string's w/journal).
	MongoWriteConcern string
	// StartupTimeout bounds how long a service waits for MongoDB and
	// Temporal at start (TURNSTILE_STARTUP_TIMEOUT, default 60s).
	StartupTimeout time.Duration
}

// DevAuthRate and DevAuthBurst are the auth rate limit's defaults in
// development: a local make run serves one developer, and make bench
// registers and logs in thousands of users from one address. Production
// keeps api.DefaultAuthRate/Burst (60 a minute, 120 at once). The per-account
// login lockout is the same in both.
const (
	DevAuthRate  = 60000
	DevAuthBurst = 2000
)

// authDefault picks the production or development default by TURNSTILE_ENV.
func authDefault(getenv func(string) string, prod, dev int) int {
	if strings.TrimSpace(getenv("TURNSTILE_ENV")) == EnvProduction {
		return prod
	}
	return dev
}

// maxNum bounds integer settings: far above any sane limit, far below overflow.
const maxNum = 1 << 30

// FromEnv reads the configuration. It fails on malformed values; Validate
// then checks that they are safe for the environment.
func FromEnv(getenv func(string) string) (Config, error) {
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	dur := func(key string, def time.Duration) time.Duration {
		v := get(key, "")
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 30s", key, v))
			return def
		}
		return d
	}
	// num reads a positive integer of at most maxNum, which keeps every
	// value inside the int32 and int64 fields it lands in.
	num := func(key string, def int) int {
		v := get(key, "")
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > maxNum {
			errs = append(errs, fmt.Errorf("%s=%q: want an integer from 1 to %d", key, v, maxNum))
			return def
		}
		return n
	}
	c := Config{
		Env:               get("TURNSTILE_ENV", EnvDevelopment),
		APIAddr:           get("TURNSTILE_API_ADDR", "127.0.0.1:8080"),
		TemporalAddress:   get("TURNSTILE_TEMPORAL_ADDRESS", "127.0.0.1:7233"),
		Namespace:         get("TURNSTILE_TEMPORAL_NAMESPACE", "default"),
		MongoURI:          get("TURNSTILE_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
		MongoDatabase:     get("TURNSTILE_MONGODB_DATABASE", "turnstile"),
		MongoWriteConcern: get("TURNSTILE_MONGODB_WRITE_CONCERN", "majority"),
		JWTKey:            []byte(getenv("TURNSTILE_JWT_KEY")),
		JWTIssuer:         get("TURNSTILE_JWT_ISSUER", "turnstile"),
		JWTAudience:       get("TURNSTILE_JWT_AUDIENCE", "turnstile-api"),
		AccessTTL:         dur("TURNSTILE_ACCESS_TOKEN_TTL", 15*time.Minute),
		RefreshTTL:        dur("TURNSTILE_REFRESH_TOKEN_TTL", api.DefaultRefreshTTL),
		HTTPTimeout:       dur("TURNSTILE_HTTP_TIMEOUT", activities.DefaultHTTPTimeout),
		MaxBodyBytes:      int64(num("TURNSTILE_MAX_BODY_BYTES", api.DefaultMaxBodyBytes)),
		MaxQueue:          num("TURNSTILE_MAX_QUEUE", api.DefaultMaxQueue),
		MaxBatch:          num("TURNSTILE_MAX_BATCH", api.DefaultMaxBatch),
		MaxJSONDepth:      num("TURNSTILE_MAX_JSON_DEPTH", api.DefaultMaxJSONDepth),
		MaxPayloadBytes:   num("TURNSTILE_MAX_PAYLOAD_BYTES", api.DefaultMaxPayloadBytes),
		MaxPageSize:       num("TURNSTILE_MAX_PAGE_SIZE", api.DefaultMaxPageSize),
		SubmitRate:        num("TURNSTILE_SUBMIT_RATE", api.DefaultSubmitRate),
		SubmitBurst:       num("TURNSTILE_SUBMIT_BURST", api.DefaultSubmitBurst),
		SignalRate:        num("TURNSTILE_SIGNAL_RATE", api.DefaultSignalRate),
		SignalBurst:       num("TURNSTILE_SIGNAL_BURST", api.DefaultSignalBurst),
		HistoryBudget:     num("TURNSTILE_SESSION_HISTORY_BUDGET", starter.DefaultHistoryBudget),
		AuthRate:          num("TURNSTILE_AUTH_RATE", authDefault(getenv, api.DefaultAuthRate, DevAuthRate)),
		AuthBurst:         num("TURNSTILE_AUTH_BURST", authDefault(getenv, api.DefaultAuthBurst, DevAuthBurst)),

		LoginLockoutThreshold: num("TURNSTILE_LOGIN_LOCKOUT_THRESHOLD", api.DefaultLoginLockoutThreshold),
		LoginLockoutBase:      dur("TURNSTILE_LOGIN_LOCKOUT_BASE", api.DefaultLoginLockoutBase),
		LoginLockoutMax:       dur("TURNSTILE_LOGIN_LOCKOUT_MAX", api.DefaultLoginLockoutMax),

		DataDir:            get("TURNSTILE_DATA_DIR", ".data"),
		DevSync:            get("TURNSTILE_DEV_SYNC", "full"),
		FaultPoint:         get("TURNSTILE_FAULT_POINT", ""),
		MetricsAddr:        get("TURNSTILE_METRICS_ADDR", "127.0.0.1:9464"),
		WorkflowPollers:    num("TURNSTILE_WORKFLOW_POLLERS", 2),
		WorkerStopTimeout:  dur("TURNSTILE_WORKER_STOP_TIMEOUT", worker.DefaultStopTimeout),
		BatchAnnounceEvery: dur("TURNSTILE_BATCH_ANNOUNCE_EVERY", 0),
		ActivityPollers:    num("TURNSTILE_ACTIVITY_POLLERS", 2),
		StartupTimeout:     dur("TURNSTILE_STARTUP_TIMEOUT", time.Minute),
		DeliveryLinger:     dur("TURNSTILE_DELIVERY_LINGER", inbox.DefaultLinger),
		DeliveryMaxHold:    dur("TURNSTILE_DELIVERY_MAX_HOLD", inbox.DefaultMaxHold),
		RelayEvery:         dur("TURNSTILE_RELAY_EVERY", inbox.DefaultRelayEvery),
		EventsPoll:         dur("TURNSTILE_EVENTS_POLL", events.DefaultPoll),
		MaxStreams:         num("TURNSTILE_EVENTS_MAX_STREAMS", api.DefaultMaxStreams),
		StreamHeartbeat:    dur("TURNSTILE_EVENTS_HEARTBEAT", api.DefaultStreamHeartbeat),
		Session: workflows.Config{
			IdleTimeout:      dur("TURNSTILE_IDLE_TIMEOUT", workflows.DefaultIdleTimeout),
			MaxAttempts:      int32(num("TURNSTILE_MAX_ATTEMPTS", workflows.DefaultMaxAttempts)),
			ExecTimeout:      dur("TURNSTILE_EXEC_TIMEOUT", workflows.DefaultExecTimeout),
			RetryInitial:     dur("TURNSTILE_RETRY_INITIAL", workflows.DefaultRetryInitial),
			RetryMax:         dur("TURNSTILE_RETRY_MAX", workflows.DefaultRetryMax),
			HeartbeatTimeout: dur("TURNSTILE_HEARTBEAT_TIMEOUT", workflows.DefaultHeartbeatTimeout),
			LocalTimeout:     dur("TURNSTILE_LOCAL_TIMEOUT", workflows.DefaultLocalTimeout),
			BatchSize:        num("TURNSTILE_BATCH_SIZE", workflows.DefaultBatchSize),
			BatchBudget:      dur("TURNSTILE_BATCH_BUDGET", workflows.DefaultBatchBudget),
		},
	}
	switch v := get("TURNSTILE_BENCH_MODES", ""); v {
	case "on":
		c.BenchModes = true
	case "off":
	case "":
		c.BenchModes = c.Env == EnvDevelopment
	default:
		errs = append(errs, fmt.Errorf("TURNSTILE_BENCH_MODES=%q: want on or off", v))
	}
	switch v := get("TURNSTILE_LOCAL_TYPES", DefaultLocalTypes); v {
	case "none":
	default:
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				c.Session.LocalTypes = append(c.Session.LocalTypes, t)
			}
		}
	}
	allow, err := activities.ParseAllowlist(getenv("TURNSTILE_HTTP_ALLOWLIST"))
	if err != nil {
		errs = append(errs, fmt.Errorf("TURNSTILE_HTTP_ALLOWLIST: %w", err))
	}
	c.HTTPAllowlist = allow
	for _, p := range strings.Split(getenv("TURNSTILE_TRUSTED_PROXIES"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.TrustedProxies = append(c.TrustedProxies, p)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("TURNSTILE_LOG_LEVEL", "info"))); err != nil {
		errs = append(errs, fmt.Errorf("TURNSTILE_LOG_LEVEL: %w", err))
	}
	if c.FaultPoint != "" && c.FaultPoint != FaultCrashAfterAccept {
		errs = append(errs, fmt.Errorf("TURNSTILE_FAULT_POINT=%q: the only fault point is %s", c.FaultPoint, FaultCrashAfterAccept))
	}
	if _, err := store.WriteConcernOf(c.MongoWriteConcern); err != nil {
		errs = append(errs, fmt.Errorf("TURNSTILE_MONGODB_WRITE_CONCERN=%q: want majority, 1 or uri", c.MongoWriteConcern))
	}
	if c.MaxQueue < 1 || c.MaxQueue > MaxQueueLimit {
		errs = append(errs, fmt.Errorf("TURNSTILE_MAX_QUEUE=%d: want 1 to %d (a session carries every waiting request across continue-as-new, within Temporal's 2 MB input limit)", c.MaxQueue, MaxQueueLimit))
	}
	if c.HistoryBudget < 100 || c.HistoryBudget > MaxHistoryBudget {
		errs = append(errs, fmt.Errorf("TURNSTILE_SESSION_HISTORY_BUDGET=%d: want 100 to %d (Temporal ends a run at 51,200 events; deliveries may add up to 5 events per queued request past the budget)", c.HistoryBudget, MaxHistoryBudget))
	}
	if c.DevSync != "full" && c.DevSync != "normal" {
		errs = append(errs, fmt.Errorf("TURNSTILE_DEV_SYNC=%q: want full or normal", c.DevSync))
	}
	if c.MaxPageSize > store.MaxListLimit {
		errs = append(errs, fmt.Errorf("TURNSTILE_MAX_PAGE_SIZE=%d: at most %d", c.MaxPageSize, store.MaxListLimit))
	}
	if c.LoginLockoutBase > c.LoginLockoutMax {
		errs = append(errs, fmt.Errorf("TURNSTILE_LOGIN_LOCKOUT_BASE=%v is longer than TURNSTILE_LOGIN_LOCKOUT_MAX=%v", c.LoginLockoutBase, c.LoginLockoutMax))
	}
	if c.Env != EnvDevelopment && c.Env != EnvProduction {
		errs = append(errs, fmt.Errorf("TURNSTILE_ENV=%q: want development or production", c.Env))
	}
	return c, errors.Join(errs...)
}

// MaxQueueLimit bounds TURNSTILE_MAX_QUEUE. A session's continue-as-new
// input holds an entry for every waiting request, up to ~205 bytes of JSON
// each (a 64-character type): 5,000 is ~1 MB, half of Temporal's 2 MB
// payload limit, leaving room for the rest of the input.
const MaxQueueLimit = 5000

// MaxHistoryBudget bounds TURNSTILE_SESSION_HISTORY_BUDGET: past the budget
// only deliveries reach a run, at most MaxQueueLimit of them at up to 5
// events each while one request holds the run open, so budget + 25,000
// stays under Temporal's 51,200-event limit with room to spare.
const MaxHistoryBudget = 20000

// Validate refuses settings that are unsafe where they would run. In
// production the JWT key must be set and at least auth.MinKeyLen bytes.
func (c Config) Validate() error {
	if len(c.JWTKey) > 0 && len(c.JWTKey) < auth.MinKeyLen {
		return fmt.Errorf("TURNSTILE_JWT_KEY has %d bytes; it needs at least %d", len(c.JWTKey), auth.MinKeyLen)
	}
	if c.Env == EnvProduction && c.FaultPoint != "" {
		return errors.New("TURNSTILE_FAULT_POINT is for fault tests and is refused in production")
	}
	if c.Env == EnvProduction && len(c.JWTKey) == 0 {
		return errors.New("TURNSTILE_JWT_KEY is required in production (at least 32 random bytes)")
	}
	return nil
}

// EnsureJWTKey gives a development setup without TURNSTILE_JWT_KEY a random
// key kept in DataDir, so tokens survive restarts. Production never gets
// here: Validate already refused it.
func (c *Config) EnsureJWTKey(log *slog.Logger) error {
	if len(c.JWTKey) > 0 || c.Env == EnvProduction {
		return nil
	}
	path := filepath.Join(c.DataDir, "jwt.key")
	if b, err := os.ReadFile(path); err == nil && len(b) >= auth.MinKeyLen {
		c.JWTKey = b
		return nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return fmt.Errorf("generate JWT key: %w", err)
	}
	key := []byte(hex.EncodeToString(buf))
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return fmt.Errorf("write JWT key: %w", err)
	}
	log.Warn("TURNSTILE_JWT_KEY not set; generated a development key", "path", path)
	c.JWTKey = key
	return nil
}

// NewLogger returns the JSON logger every service uses.
func NewLogger(w *os.File, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
