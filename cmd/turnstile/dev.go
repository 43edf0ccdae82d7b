package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/devserver"
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

// runDev runs everything in this process until ctx is done, then stops it
// all in reverse order.
func runDev(ctx context.Context, cfg app.Config, getenv func(string) string, stdout io.Writer, log *slog.Logger) error {
	ports, err := readDevPorts(getenv, cfg)
	if err != nil {
		return err
	}
	if err := cfg.EnsureJWTKey(log); err != nil {
		return err
	}
	var stops []func() error
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			if err := stops[i](); err != nil {
				log.Warn("stop", "error", err)
			}
		}
	}()

	temporal, err := devserver.StartTemporal(ctx, devserver.TemporalConfig{
		DataDir: filepath.Join(cfg.DataDir, "temporal"), Host: ports.host, Port: ports.temporal,
		Namespace: cfg.Namespace, Logger: log.With("service", "temporal"),
	})
	if err != nil {
		return fmt.Errorf("temporal: %w", err)
	}
	stops = append(stops, temporal.Stop)
	ui, err := devserver.StartUI(devserver.UIConfig{Host: ports.host, Port: ports.ui, TemporalAddress: temporal.Address(), Namespace: cfg.Namespace})
	if err != nil {
		return fmt.Errorf("web ui: %w", err)
	}
	stops = append(stops, ui.Stop)
	mongo, err := devserver.StartMongo(ctx, devserver.MongoConfig{
		DataDir: filepath.Join(cfg.DataDir, "mongo"), Host: ports.host, Port: ports.mongo,
		Logger: log.With("service", "mongodb"),
	})
	if err != nil {
		return fmt.Errorf("mongodb: %w", err)
	}
	stops = append(stops, mongo.Stop)

	cfg.TemporalAddress, cfg.MongoURI = temporal.Address(), mongo.URI()
	cfg.SerializeStoreUpdates = true // API and worker share this process and the FerretDB store
	b, err := app.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	stops = append(stops, func() error { b.Close(); return nil })
	if err := mongo.IndexIDs(ctx, cfg.MongoDatabase); err != nil {
		log.Warn("could not add the _id expression index; updates will be slower", "error", err)
	}

	srv, err := app.NewAPIServer(cfg, b, log.With("service", "api"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	w := app.NewWorker(cfg, b, log.With("service", "worker"))
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	stops = append(stops, func() error { w.Stop(); return nil })

	api := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, `
Turnstile is running (development mode; data in %s)
  API          %s        try: curl %s/healthz
  Temporal UI  %s
  Temporal     %s  namespace %q
  MongoDB      %s  database %q

First operator (in another terminal):
  printf '%%s\n' 'a long admin password' | %s admin create --email ops@example.com
  tsctl login --api %s --email ops@example.com     (make tsctl builds bin/tsctl)
Press Ctrl-C to stop.

`, cfg.DataDir, api, api, ui.URL(), temporal.Address(), cfg.Namespace, mongo.URI(), cfg.MongoDatabase, selfName(), api)

	err = app.Serve(ctx, srv, ln)
	log.Info("shutting down")
	return err
}
