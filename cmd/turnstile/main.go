// Command turnstile runs Turnstile's services:
//
//	turnstile dev      everything on one machine: embedded Temporal + Web UI, embedded MongoDB-compatible store, API, worker
//	turnstile api      the HTTP API against TURNSTILE_TEMPORAL_ADDRESS and TURNSTILE_MONGODB_URI
//	turnstile worker   a worker running session workflows and request handlers
//
// Configuration comes from TURNSTILE_* environment variables; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/turnstile/turnstile/app"
)

const usage = `usage: turnstile <command>

commands:
  dev      run everything on this machine (embedded Temporal with Web UI,
           embedded MongoDB-compatible store, API and worker); data in TURNSTILE_DATA_DIR.
           --services temporal,ui,mongo,api,worker picks a subset for this process
  api      run the HTTP API
  worker   run a worker
  admin    admin create --email EMAIL: bootstrap an operator account (password on stdin)

Configuration is read from TURNSTILE_* environment variables (see README.md).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "turnstile:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	cfg, err := app.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	startPprof(ctx, getenv("TURNSTILE_PPROF_ADDR"), log)
	switch args[0] {
	case "api":
		return runAPI(ctx, cfg, log.With("service", "api"))
	case "worker":
		return runWorker(ctx, cfg, log.With("service", "worker"))
	case "dev":
		return runDev(ctx, cfg, args[1:], getenv, stdout, stderr, log)
	case "admin":
		return runAdmin(ctx, cfg, args[1:], getenv, stdin, stdout, stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func runAPI(ctx context.Context, cfg app.Config, log *slog.Logger) error {
	if err := cfg.EnsureJWTKey(log); err != nil {
		return err
	}
	b, err := app.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	srv, err := app.NewAPIServer(cfg, b, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("api listening", "addr", ln.Addr().String())
	return app.Serve(ctx, srv, ln)
}

func runWorker(ctx context.Context, cfg app.Config, log *slog.Logger) error {
	b, err := app.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	stopMetrics, err := startMetrics(ctx, cfg.MetricsAddr, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	log.Info("worker starting", "temporal", cfg.TemporalAddress, "namespace", cfg.Namespace)
	defer app.StartRelay(ctx, cfg, b, log)()
	return app.RunWorker(ctx, app.NewWorker(cfg, b, log))
}

// startMetrics serves /metrics at addr in the background ("off" serves
// nothing). stop shuts the server down and waits for it.
func startMetrics(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	if addr == app.MetricsOff {
		log.Info("metrics server off")
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	log.Info("metrics listening", "url", "http://"+ln.Addr().String()+"/metrics")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := app.Serve(ctx, app.NewMetricsServer(addr, log), ln); err != nil {
			log.Warn("metrics server stopped", "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
