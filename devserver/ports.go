package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"
)

const defaultHost = "127.0.0.1"

// freePorts returns n distinct TCP ports that are currently free on host.
//
// All n sockets are held open together so the ports are distinct. On Linux
// each port is also put through one connect/accept/close cycle, closed from
// the server side, so that it sits in TIME_WAIT: the kernel then does not
// hand it out again to other bind(":0") callers for a while, yet a server
// can still bind it explicitly (Go sets SO_REUSEADDR). This narrows, but
// cannot close, the window between picking a port and the server binding it.
func freePorts(host string, n int) ([]int, error) {
	listeners := make([]*net.TCPListener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("pick free port on %s: %w", host, err)
		}
		tl := l.(*net.TCPListener)
		listeners = append(listeners, tl)
		ports = append(ports, tl.Addr().(*net.TCPAddr).Port)
	}
	if runtime.GOOS == "darwin" || runtime.GOOS == "windows" {
		return ports, nil // these allocate ephemeral ports sequentially
	}
	for i, l := range listeners {
		addr := net.JoinHostPort(dialHost(host), fmt.Sprint(ports[i]))
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue // best effort: the port is free either way
		}
		if s, err := l.Accept(); err == nil {
			_ = s.Close() // server side closes first: TIME_WAIT stays on this port
		}
		_ = c.Close()
	}
	return ports, nil
}

// checkPortFree reports an error when host:port cannot be bound right now.
func checkPortFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return fmt.Errorf("port %d on %s is not free: %w", port, host, err)
	}
	return l.Close()
}

// dialHost turns a bind host into one a local client can dial.
func dialHost(host string) string {
	switch host {
	case "", "0.0.0.0":
		return defaultHost
	case "::", "[::]":
		return "::1"
	}
	return host
}

// poll calls try every interval until it succeeds, ctx ends or timeout passes.
// It returns the last error of try when it gives up.
func poll(ctx context.Context, timeout, interval time.Duration, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
	}
}
