package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/devserver"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// devPorts are the embedded servers' ports: each tool's usual one, so
// mongosh, Compass and the Temporal CLI work against them as they are.
type devPorts struct {
	host                string
	temporal, ui, mongo int
}

func readDevPorts(getenv func(string) string, cfg app.Config) (devPorts, error) {
	p := devPorts{host: "127.0.0.1", temporal: 7233, ui: 8233, mongo: 27017}
	if h := getenv("TURNSTILE_DEV_HOST"); h != "" {
		p.host = h
	}
	for _, v := range []struct {
		key string
		dst *int
	}{{"TURNSTILE_TEMPORAL_PORT", &p.temporal}, {"TURNSTILE_UI_PORT", &p.ui}, {"TURNSTILE_MONGODB_PORT", &p.mongo}} {
		if s := getenv(v.key); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 65535 {
				return p, fmt.Errorf("%s=%q: want a port number", v.key, s)
			}
			*v.dst = n
		}
	}
	return p, nil
}

// selfName is how the user ran this binary, for printed hints.
func selfName() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "turnstile"
}

// devServices are the parts "turnstile dev" can run; all by default.
var devServices = []string{"temporal", "ui", "mongo", "api", "worker"}

// parseServices reads --services (comma-separated names from devServices).
func parseServices(args []string, stderr io.Writer) (map[string]bool, error) {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	list := fs.String("services", strings.Join(devServices, ","),
		"comma-separated services to run in this process: "+strings.Join(devServices, ", ")+
			" (the rest are expected at TURNSTILE_TEMPORAL_ADDRESS / TURNSTILE_MONGODB_URI)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	want := map[string]bool{}
	for _, name := range strings.Split(*list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(devServices, name) {
			return nil, fmt.Errorf("--services: unknown service %q (want some of %s)", name, strings.Join(devServices, ","))
		}
		want[name] = true
	}
	if want["ui"] && !want["temporal"] {
		return nil, errors.New("--services: ui needs temporal in the same process")
	}
	return want, nil
}

// runDev runs the selected services in this process until ctx is done, then
// stops them in reverse order. With every service (the default, what make
// run does) it is the whole system on one machine; the fault tests run the
// services as separate processes to kill them one at a time.
func runDev(ctx context.Context, cfg app.Config, args []string, getenv func(string) string, stdout, stderr io.Writer, log *slog.Logger) error {
	want, err := parseServices(args, stderr)
	if err != nil {
		return err
	}
	ports, err := readDevPorts(getenv, cfg)
	if err != nil {
		return err
	}
	if want["api"] {
		if err := cfg.EnsureJWTKey(log); err != nil {
			return err
		}
	}
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			if err := stops[i](); err != nil {
				log.Warn("stop", "error", err)
			}
		}
	}()
	var lines []string
	line := func(format string, a ...any) { lines = append(lines, fmt.Sprintf(format, a...)) }

	if want["temporal"] {
		temporal, err := devserver.StartTemporal(ctx, devserver.TemporalConfig{
			DataDir: filepath.Join(cfg.DataDir, "temporal"), Host: ports.host, Port: ports.temporal,
			Namespace: cfg.Namespace, Logger: log.With("service", "temporal"), Synchronous: cfg.DevSync,
		})
		if err != nil {
			return fmt.Errorf("temporal: %w", err)
		}
		stops = append(stops, temporal.Stop)
		cfg.TemporalAddress = temporal.Address()
		if want["ui"] {
			ui, err := devserver.StartUI(devserver.UIConfig{Host: ports.host, Port: ports.ui, TemporalAddress: temporal.Address(), Namespace: cfg.Namespace})
			if err != nil {
				return fmt.Errorf("web ui: %w", err)
			}
			stops = append(stops, ui.Stop)
			line("  Temporal UI  %s", ui.URL())
		}
		line("  Temporal     %s  namespace %q", temporal.Address(), cfg.Namespace)
	}
	var mongo *devserver.Mongo
	if want["mongo"] {
		mongo, err = devserver.StartMongo(ctx, devserver.MongoConfig{
			DataDir: filepath.Join(cfg.DataDir, "mongo"), Host: ports.host, Port: ports.mongo,
			Logger: log.With("service", "mongodb"), Synchronous: cfg.DevSync,
		})
		if err != nil {
			return fmt.Errorf("mongodb: %w", err)
		}
		stops = append(stops, mongo.Stop)
		cfg.MongoURI = mongo.URI()
		line("  MongoDB      %s  database %q", mongo.URI(), cfg.MongoDatabase)
		// Collections and indexes exist before the _id expression index
		// goes on, whoever connects first.
		st, err := store.Connect(ctx, cfg.MongoURI, cfg.MongoDatabase)
		if err != nil {
			return err
		}
		err = st.EnsureIndexes(ctx)
		_ = st.Close(ctx)
		if err != nil {
			return err
		}
		if err := mongo.IndexIDs(ctx, cfg.MongoDatabase); err != nil {
			log.Warn("could not add the _id expression index; updates will be slower", "error", err)
		}
	}

	var serve func() error
	if want["api"] || want["worker"] {
		b, err := app.Connect(ctx, cfg, log)
		if err != nil {
			return err
		}
		stops = append(stops, func() error { b.Close(); return nil })
		if want["worker"] {
			w := app.NewWorker(cfg, b, log.With("service", "worker"))
			if err := w.Start(); err != nil {
				return fmt.Errorf("worker: %w", err)
			}
			stops = append(stops, func() error { w.Stop(); return nil })
			stopRelay := app.StartRelay(ctx, cfg, b, log.With("service", "worker"))
			stops = append(stops, func() error { stopRelay(); return nil })
			line("  Worker       task queue %q", models.TaskQueue)
			if !want["api"] {
				// Alone, the worker serves its metrics itself; beside the
				// API they are on the API's /metrics.
				stopMetrics, err := startMetrics(ctx, cfg.MetricsAddr, log.With("service", "worker"))
				if err != nil {
					return err
				}
				stops = append(stops, func() error { stopMetrics(); return nil })
			}
		}
		if want["api"] {
			srv, err := app.NewAPIServer(cfg, b, log.With("service", "api"))
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", cfg.APIAddr)
			if err != nil {
				return fmt.Errorf("api listen: %w", err)
			}
			api := "http://" + ln.Addr().String()
			lines = append([]string{fmt.Sprintf("  API          %s        try: curl %s/healthz", api, api)}, lines...)
			line("")
			line("First operator (in another terminal):")
			line("  printf '%%s\\n' 'a long admin password' | %s admin create --email ops@example.com", selfName())
			line("  tsctl login --api %s --email ops@example.com     (make tsctl builds bin/tsctl)", api)
			serve = func() error { return app.Serve(ctx, srv, ln) }
		}
	}

	fmt.Fprintf(stdout, "\nTurnstile is running (development mode; data in %s)\n%s\nPress Ctrl-C to stop.\n\n",
		cfg.DataDir, strings.Join(lines, "\n"))
	if serve != nil {
		err = serve()
	} else {
		<-ctx.Done()
	}
	log.Info("shutting down")
	return err
}
