package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/api"
	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/inbox"
	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/store"
	"github.com/turnstile/turnstile/worker"
)

// HTTP server timeouts: slow clients cannot hold connections open.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 20 * time.Second
	retryEvery        = time.Second
)

// Backends are the connections a service holds.
type Backends struct {
	Store    *store.Store
	Temporal client.Client
}

// Close closes both connections.
func (b *Backends) Close() {
	if b.Temporal != nil {
		b.Temporal.Close()
	}
	if b.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Store.Close(ctx)
	}
}

// Connect opens MongoDB (creating indexes) and Temporal, retrying each until
// cfg.StartupTimeout so services can start in any order.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Backends, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	b := &Backends{}
	err := retry(ctx, log, "mongodb", func() error {
		st, err := store.ConnectWith(ctx, cfg.MongoURI, cfg.MongoDatabase, store.Options{
			AppName:      "turnstile",
			WriteConcern: cfg.MongoWriteConcern,
		})
		if err != nil {
			return err
		}
		if err := st.EnsureIndexes(ctx); err != nil {
			_ = st.Close(ctx)
			return err
		}
		b.Store = st
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = retry(ctx, log, "temporal", func() error {
		c, err := client.DialContext(ctx, client.Options{
			HostPort:  cfg.TemporalAddress,
			Namespace: cfg.Namespace,
			Logger:    sdklog.NewStructuredLogger(slog.New(sdkKeys{log.Handler()}).With("component", "temporal-sdk")),
			// The SDK's own metrics (task latencies, polls, RPCs) go to
			// the same registry as Turnstile's.
			MetricsHandler: metrics.TemporalHandler(),
		})
		if err != nil {
			return err
		}
		b.Temporal = c
		return nil
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		log.Warn("waiting for "+what, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect %s: %w", what, errors.Join(err, ctx.Err()))
		case <-time.After(retryEvery):
		}
	}
}

// Registry returns the request handlers: echo, sleep and http.
func Registry(cfg Config) *activities.Registry {
	r := activities.NewRegistry()
	r.Register("echo", activities.Echo{})
	r.Register("sleep", activities.Sleep{})
	r.Register("http", activities.NewHTTP(cfg.HTTPAllowlist, cfg.HTTPTimeout))
	return r
}

// NewAPIServer returns the API's http.Server (not yet serving). Its
// /metrics reports the open sessions too.
func NewAPIServer(cfg Config, b *Backends, log *slog.Logger) (*http.Server, error) {
	sessions := starter.New(b.Temporal, cfg.Session)
	sessions.HistoryBudget = int64(cfg.HistoryBudget)
	metrics.CountSessionsWith(func(ctx context.Context) (int64, error) {
		return sessions.CountSessions(ctx, starter.SessionFilter{State: "open"})
	})
	h, err := api.NewServer(api.Config{
		Tokens: &auth.Tokens{
			Key: cfg.JWTKey, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, TTL: cfg.AccessTTL,
		},
		RefreshTTL:            cfg.RefreshTTL,
		Types:                 Registry(cfg),
		Logger:                log,
		MaxBodyBytes:          cfg.MaxBodyBytes,
		MaxQueue:              cfg.MaxQueue,
		MaxBatch:              cfg.MaxBatch,
		TrustedProxies:        cfg.TrustedProxies,
		MaxJSONDepth:          cfg.MaxJSONDepth,
		MaxPayloadBytes:       cfg.MaxPayloadBytes,
		MaxPageSize:           cfg.MaxPageSize,
		SubmitRate:            float64(cfg.SubmitRate),
		SubmitBurst:           cfg.SubmitBurst,
		SignalRate:            float64(cfg.SignalRate),
		SignalBurst:           cfg.SignalBurst,
		AuthRate:              float64(cfg.AuthRate),
		AuthBurst:             cfg.AuthBurst,
		LoginLockoutThreshold: cfg.LoginLockoutThreshold,
		LoginLockoutBase:      cfg.LoginLockoutBase,
		LoginLockoutMax:       cfg.LoginLockoutMax,
		AfterAccept:           faultHook(cfg, log),
		AllowNaive:            cfg.BenchModes,
		Inbox:                 newInbox(cfg, b, sessions, log),
		Events:                events.Config{Poll: cfg.EventsPoll},
		MaxStreams:            cfg.MaxStreams,
		StreamHeartbeat:       cfg.StreamHeartbeat,
	}, b.Store, sessions)
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Addr:              cfg.APIAddr,
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}, nil
}

// newInbox is the API's inbox: accepted requests are delivered by this
// process right away, except with the crash-after-accept fault point, where
// only the workers' relays deliver.
func newInbox(cfg Config, b *Backends, sessions inbox.Sessions, log *slog.Logger) *inbox.Inbox {
	var d *inbox.Dispatcher
	if cfg.FaultPoint != FaultCrashAfterAccept {
		d = inbox.NewDispatcher(context.Background(), inbox.DispatcherConfig{Linger: cfg.DeliveryLinger, MaxHold: cfg.DeliveryMaxHold, Logger: log}, sessions, b.Store.Queues)
	}
	return inbox.New(inbox.Config{MaxQueue: cfg.MaxQueue, Logger: log}, b.Store, d)
}

// StartRelay runs the inbox relay beside a worker until ctx is done: it
// delivers accepted requests that no session holds (see inbox.Relay).
func StartRelay(ctx context.Context, cfg Config, b *Backends, log *slog.Logger) (stop func()) {
	sessions := starter.New(b.Temporal, cfg.Session)
	r := inbox.NewRelay(inbox.RelayConfig{Every: cfg.RelayEvery, Logger: log.With("component", "relay")}, b.Store, sessions, sessions)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// faultHook returns the API's AfterAccept hook for cfg.FaultPoint.
func faultHook(cfg Config, log *slog.Logger) func() {
	if cfg.FaultPoint != FaultCrashAfterAccept {
		return nil
	}
	log.Warn("fault injection enabled: the API exits after answering a submission 202, before delivering it")
	return func() {
		log.Warn("fault point reached: exiting", "fault", cfg.FaultPoint)
		// Exit once the handler has returned and net/http has finished the
		// response (a chunked body ends only then); this API delivers
		// nothing itself, so the exit still comes before any delivery.
		go func() {
			time.Sleep(faultExitDelay)
			os.Exit(faultExitCode)
		}()
	}
}

// faultExitDelay lets the 202 that reached the fault point reach its client.
const faultExitDelay = 200 * time.Millisecond

// faultExitCode is what a process killed by a fault point exits with.
const faultExitCode = 70

// Serve serves srv on ln until ctx is done, then shuts down gracefully,
// letting in-flight calls finish.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NewWorker returns a worker for session workflows and their activities.
func NewWorker(cfg Config, b *Backends, log *slog.Logger) sdkworker.Worker {
	return worker.New(b.Temporal, worker.Config{
		Requests:      b.Store.Requests,
		Queues:        b.Store.Queues,
		Handlers:      Registry(cfg),
		Logger:        log,
		AnnounceEvery: cfg.BatchAnnounceEvery,
		Options: sdkworker.Options{
			MaxConcurrentWorkflowTaskPollers: cfg.WorkflowPollers,
			MaxConcurrentActivityTaskPollers: cfg.ActivityPollers,
			WorkerStopTimeout:                cfg.WorkerStopTimeout,
		},
	})
}

// RunWorker runs a worker until ctx is done.
func RunWorker(ctx context.Context, w sdkworker.Worker) error {
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	<-ctx.Done()
	w.Stop()
	return nil
}

// MetricsOff is the TURNSTILE_METRICS_ADDR that turns the worker's metrics
// server off.
const MetricsOff = "off"

// NewMetricsServer returns an http.Server (not yet serving) with the
// process's Prometheus metrics on /metrics, for a worker, which has no API to
// serve them on.
func NewMetricsServer(addr string, log *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	return &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// sdkKeys renames the attributes the Temporal SDK's loggers add to the keys
// Turnstile's own lines use (WorkflowID → workflow_id, …), and adds user_id
// to lines of a session workflow, whose ID holds it, so every line of a
// request's life can be found by the same keys.
type sdkKeys struct{ slog.Handler }

var sdkKeyNames = map[string]string{
	"WorkflowID": "workflow_id", "RunID": "run_id", "WorkflowType": "workflow_type",
	"ActivityID": "activity_id", "ActivityType": "activity", "Attempt": "attempt",
	"Namespace": "namespace", "TaskQueue": "task_queue", "WorkerID": "worker_id",
}

// sessionPrefix starts every session workflow's ID; the rest is the user ID.
var sessionPrefix = models.SessionWorkflowID("")

func (h sdkKeys) rename(attrs []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, 0, len(attrs)+1)
	for _, a := range attrs {
		if k, ok := sdkKeyNames[a.Key]; ok {
			a.Key = k
		}
		out = append(out, a)
		if a.Key == "workflow_id" {
			if user, ok := strings.CutPrefix(a.Value.String(), sessionPrefix); ok && user != "" {
				out = append(out, slog.String("user_id", user))
			}
		}
	}
	return out
}

func (h sdkKeys) WithAttrs(attrs []slog.Attr) slog.Handler {
	return sdkKeys{h.Handler.WithAttrs(h.rename(attrs))}
}

func (h sdkKeys) WithGroup(name string) slog.Handler { return sdkKeys{h.Handler.WithGroup(name)} }

func (h sdkKeys) Handle(ctx context.Context, r slog.Record) error {
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(h.rename(attrs)...)
	return h.Handler.Handle(ctx, out)
}
