// Package api is Turnstile's HTTP API (gin). NewServer wires every route in
// routes.go to small handlers that close over their dependencies.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/inbox"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/store"
)

// Sessions is the Temporal side the API needs; *starter.Starter implements
// it, and handler tests may fake it.
type Sessions interface {
	Deliver(ctx context.Context, userID string, d models.Delivery) error
	State(ctx context.Context, userID string) (models.SessionState, error)
	// QueueLength is waiting + running as the session last recorded it.
	QueueLength(ctx context.Context, userID string) (int, error)
	// Running reports whether a run of the session is open, and its Paused
	// attribute, without asking the workflow (no worker involved).
	Running(ctx context.Context, userID string) (running, paused bool, err error)
	// Close closes the session once it holds everything through the
	// user's sequence number through.
	Close(ctx context.Context, userID string, through int64) error
	Cancel(ctx context.Context, userID, requestID string) error
	Ping(ctx context.Context) error

	// Operator actions, behind the admin role.
	Pause(ctx context.Context, userID string) error
	Resume(ctx context.Context, userID string) error
	SetPolicy(ctx context.Context, userID string, p models.FailurePolicy) error
	ListSessions(ctx context.Context, f starter.SessionFilter, limit int, cursor string) ([]starter.SessionSummary, string, error)
	CountSessions(ctx context.Context, f starter.SessionFilter) (int64, error)
}

// TypeValidator checks a request type and payload before they are queued
// and lists the types; *activities.Registry implements it.
type TypeValidator interface {
	Validate(typ string, payload json.RawMessage) error
	Types() []string
}

// Config holds the API's limits and collaborators. Zero limits take the
// defaults below.
type Config struct {
	Tokens     *auth.Tokens
	RefreshTTL time.Duration
	Types      TypeValidator
	Logger     *slog.Logger

	// MaxBodyBytes bounds a request body (413 beyond).
	MaxBodyBytes int64
	// MaxQueue bounds a user's queued requests (429 beyond).
	MaxQueue int
	// MaxBatch bounds the requests in one batch submission.
	MaxBatch int
	// QueueFullRetryAfter is the Retry-After sent with a full queue's 429.
	QueueFullRetryAfter time.Duration
	// MaxJSONDepth bounds how deeply a body's arrays and objects nest (400
	// too_deep beyond); the payload of a submission sits one level down,
	// of a batch item three.
	MaxJSONDepth int
	// MaxPayloadBytes bounds one request's payload, compacted (413 beyond).
	MaxPayloadBytes int
	// MaxPageSize bounds ?limit= of list routes.
	MaxPageSize int
	// SubmitRate and SubmitBurst are each user's token bucket for
	// submission calls (single or batch): SubmitBurst at once, then
	// SubmitRate per second (429 with Retry-After beyond).
	SubmitRate  float64
	SubmitBurst int
	// SignalRate and SignalBurst are each user's token bucket for the
	// calls that signal their session besides submissions: cancel, close,
	// and the operator routes that steer them (keyed by the user steered).
	// Every signal costs the session's history events; see
	// docs/architecture.md, "What bounds a session's history".
	SignalRate  float64
	SignalBurst int
	// AuthRate and AuthBurst are each client network's token bucket for
	// register, login and refresh: AuthBurst at once, then AuthRate per
	// minute. A client network is an IPv4 address or an IPv6 /64.
	AuthRate  float64
	AuthBurst int
	// LoginLockoutThreshold failed logins of one account from one client
	// network lock that pair out for LoginLockoutBase; every further
	// failure doubles the lock, up to LoginLockoutMax (429 with
	// Retry-After while locked).
	LoginLockoutThreshold int
	LoginLockoutBase      time.Duration
	LoginLockoutMax       time.Duration
	// TrustedProxies may set X-Forwarded-For; nil trusts none, so the
	// client IP is the peer address.
	TrustedProxies []string
	// AllowNaive lets a submission ask for the naive execution path with
	// the header Turnstile-Execution: naive (for make bench's ratio).
	AllowNaive bool
	// Now defaults to time.Now.
	Now func() time.Time
	// AfterAccept, when set, runs right after a submission's 202 is
	// written: a fault-injection point for the fault tests (an API crash
	// before any delivery; give such an API an Inbox without a
	// Dispatcher). Never set in production.
	AfterAccept func()
	// Events tunes the watchers behind GET /v1/events.
	Events events.Config
	// MaxStreams bounds each user's open event streams per API instance
	// (429 too_many_streams beyond).
	MaxStreams int
	// StreamHeartbeat is how often a quiet stream sends a comment.
	StreamHeartbeat time.Duration
	// Inbox accepts submissions. Nil: one on the store that delivers
	// through Sessions with no linger (handler tests).
	Inbox *inbox.Inbox
}

// Defaults.
const (
	DefaultRefreshTTL            = 30 * 24 * time.Hour
	DefaultMaxBodyBytes          = 256 << 10
	DefaultMaxQueue              = 1000
	DefaultMaxBatch              = 100
	DefaultQueueFullRetryAfter   = 5 * time.Second
	DefaultMaxJSONDepth          = 32
	DefaultMaxPayloadBytes       = 64 << 10
	DefaultMaxPageSize           = maxPageSize
	DefaultSubmitRate            = 50
	DefaultSubmitBurst           = 100
	DefaultSignalRate            = 5
	DefaultSignalBurst           = 20
	DefaultAuthRate              = 60
	DefaultAuthBurst             = 120
	DefaultLoginLockoutThreshold = 5
	DefaultLoginLockoutBase      = 30 * time.Second
	DefaultLoginLockoutMax       = 15 * time.Minute
	// backendTimeout bounds the MongoDB and Temporal calls of one API call.
	backendTimeout = 10 * time.Second
)

func (c Config) withDefaults() Config {
	if c.RefreshTTL <= 0 {
		c.RefreshTTL = DefaultRefreshTTL
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.QueueFullRetryAfter <= 0 {
		c.QueueFullRetryAfter = DefaultQueueFullRetryAfter
	}
	if c.MaxJSONDepth <= 0 {
		c.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if c.MaxPayloadBytes <= 0 {
		c.MaxPayloadBytes = DefaultMaxPayloadBytes
	}
	if c.MaxPageSize <= 0 {
		c.MaxPageSize = DefaultMaxPageSize
	}
	if c.SubmitRate <= 0 {
		c.SubmitRate = DefaultSubmitRate
	}
	if c.SubmitBurst <= 0 {
		c.SubmitBurst = DefaultSubmitBurst
	}
	if c.SignalRate <= 0 {
		c.SignalRate = DefaultSignalRate
	}
	if c.SignalBurst <= 0 {
		c.SignalBurst = DefaultSignalBurst
	}
	if c.AuthRate <= 0 {
		c.AuthRate = DefaultAuthRate
	}
	if c.AuthBurst <= 0 {
		c.AuthBurst = DefaultAuthBurst
	}
	if c.LoginLockoutThreshold <= 0 {
		c.LoginLockoutThreshold = DefaultLoginLockoutThreshold
	}
	if c.LoginLockoutBase <= 0 {
		c.LoginLockoutBase = DefaultLoginLockoutBase
	}
	if c.LoginLockoutMax <= 0 {
		c.LoginLockoutMax = DefaultLoginLockoutMax
	}
	c.LoginLockoutMax = max(c.LoginLockoutMax, c.LoginLockoutBase)
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.StreamHeartbeat <= 0 {
		c.StreamHeartbeat = DefaultStreamHeartbeat
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// server is what the handlers close over.
type server struct {
	cfg      Config
	store    *store.Store
	sessions Sessions
	log      *slog.Logger

	submitLimit *buckets  // per user
	signalLimit *buckets  // per user steered
	authLimit   *buckets  // per client network
	logins      *lockouts // per account and client network
	inbox       *inbox.Inbox
	streams     *streams // open event streams per user
	views       *events.Views
	hub         *events.Hub // the store's change feed, for the streams
}

// NewServer returns the API's http.Handler.
func NewServer(cfg Config, st *store.Store, sessions Sessions) (http.Handler, error) {
	cfg = cfg.withDefaults()
	if cfg.Tokens == nil || cfg.Types == nil {
		return nil, errors.New("api: Tokens and Types are required")
	}
	if err := cfg.Tokens.Validate(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("api: trusted proxies: %w", err)
	}
	s := &server{
		cfg: cfg, store: st, sessions: sessions, log: cfg.Logger,
		submitLimit: newBuckets(cfg.SubmitRate, cfg.SubmitBurst),
		signalLimit: newBuckets(cfg.SignalRate, cfg.SignalBurst),
		authLimit:   newBuckets(cfg.AuthRate/60, cfg.AuthBurst),
		logins:      newLockouts(cfg.LoginLockoutThreshold, cfg.LoginLockoutBase, cfg.LoginLockoutMax),
		inbox:       cfg.Inbox,
		streams:     &streams{open: map[string]int{}, max: cfg.MaxStreams},
		views:       events.NewViews(events.Config{Window: etaPlaces, Now: cfg.Now}, eventSource{st}, 0, 0),
		hub:         events.NewHub(st.Queues.Changes, st.Requests.Changes, 0),
	}
	if s.inbox == nil {
		d := inbox.NewDispatcher(context.Background(), inbox.DispatcherConfig{Linger: -1, Logger: cfg.Logger}, sessions, st.Queues)
		s.inbox = inbox.New(inbox.Config{MaxQueue: cfg.MaxQueue, Logger: cfg.Logger, Now: cfg.Now}, st, d)
	}
	s.routes(r)
	return r, nil
}

// now is millisecond-precise, as MongoDB stores times, so a response and a
// later read of the same request agree.
func (s *server) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Millisecond) }
