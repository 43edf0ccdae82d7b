package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	uioptions "github.com/temporalio/ui-server/v2/server/server_options"
)

// UIConfig configures an embedded Temporal Web UI server.
type UIConfig struct {
	// Host is the bind host; default "127.0.0.1".
	Host string
	// Port is the HTTP port; 0 picks a free port.
	Port int
	// TemporalAddress is the host:port of the Temporal frontend (required).
	TemporalAddress string
	// Namespace is the namespace the UI opens first; default "default".
	Namespace string
}

// UI is a running embedded Temporal Web UI (ui-server v2 with its embedded
// assets).
type UI struct {
	server *uiserver.Server
	url    string
	done   chan struct{}

	stopOnce sync.Once
}

// StartUI starts the Web UI in the background and returns once its HTTP port
// answers.
//
// ui-server exits the process (log.Fatal) when it cannot bind its port, so
// StartUI checks the port first; a port taken in the instant between that
// check and the bind still kills the process.
func StartUI(cfg UIConfig) (u *UI, err error) {
	if cfg.TemporalAddress == "" {
		return nil, errors.New("ui: TemporalAddress is required")
	}
	if cfg.Host == "" {
		cfg.Host = defaultHost
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.Port == 0 {
		ports, err := freePorts(cfg.Host, 1)
		if err != nil {
			return nil, fmt.Errorf("ui port: %w", err)
		}
		cfg.Port = ports[0]
	} else if err := checkPortFree(cfg.Host, cfg.Port); err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}

	defer func() { // NewServer panics on bad config
		if r := recover(); r != nil {
			u, err = nil, fmt.Errorf("ui: new server: %v", r)
		}
	}()
	srv := uiserver.NewServer(uioptions.WithConfigProvider(&uiconfig.Config{
		Host:                cfg.Host,
		Port:                cfg.Port,
		TemporalGRPCAddress: cfg.TemporalAddress,
		EnableUI:            true,
		DefaultNamespace:    cfg.Namespace,
		DisableNewsFetch:    true,
		CORS:                uiconfig.CORS{CookieInsecure: true}, // plain http on localhost
		HideLogs:            true,
	}))

	u = &UI{
		server: srv,
		url:    "http://" + net.JoinHostPort(dialHost(cfg.Host), strconv.Itoa(cfg.Port)),
		done:   make(chan struct{}),
	}
	go func() {
		defer close(u.done)
		_ = srv.Start() // blocks; returns nil once Stop closes it
	}()

	hc := &http.Client{Timeout: 2 * time.Second}
	err = poll(context.Background(), 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		_ = u.Stop()
		return nil, fmt.Errorf("ui %s not ready: %w", u.url, err)
	}
	return u, nil
}

// URL returns the base URL of the Web UI, e.g. http://127.0.0.1:8233.
func (u *UI) URL() string { return u.url }

// Stop closes the HTTP server and waits for it to return. It is safe to call
// more than once.
func (u *UI) Stop() error {
	u.stopOnce.Do(func() {
		u.server.Stop()
		select {
		case <-u.done:
		case <-time.After(5 * time.Second):
		}
	})
	return nil
}
