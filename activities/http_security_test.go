package activities

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeResolver answers every lookup from a fixed table and counts lookups.
type fakeResolver struct {
	hosts map[string][]string
	err   error
	calls atomic.Int32
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.calls.Add(1)
	if r.err != nil {
		return nil, r.err
	}
	var out []netip.Addr
	for _, s := range r.hosts[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

// portOf is the port of a test server.
func portOf(srv *httptest.Server) string {
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// namedHandler returns a handler whose allowlist holds entries and whose
// resolver answers from hosts.
func namedHandler(t *testing.T, hosts map[string][]string, entries ...string) (*HTTP, *fakeResolver) {
	t.Helper()
	allow, err := ParseAllowlist(strings.Join(entries, ","))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHTTP(allow, 2*time.Second)
	r := &fakeResolver{hosts: hosts}
	h.Resolver = r
	return h, r
}

func TestHTTPDialRefusesAllowlistedNameThatResolvesToLoopback(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "internal secret")
	port := portOf(srv.Server)
	// The name is allowlisted, but its DNS now points at this machine: a
	// rebinding attack on an allowed partner's domain.
	h, r := namedHandler(t, map[string][]string{"partner.example": {"127.0.0.1"}}, "partner.example:"+port)

	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": "http://partner.example:" + port + "/"}))
	if err == nil {
		t.Fatalf("call to a loopback address succeeded: %s", out)
	}
	if !IsPermanent(err) || !strings.Contains(err.Error(), "not a public address") {
		t.Errorf("err = %v, want a permanent refusal naming the address", err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("the loopback server was called %d times", n)
	}
	if r.calls.Load() == 0 {
		t.Error("the dialer never resolved the name: the check cannot have run after resolution")
	}
}

func TestHTTPDialAllowsNonPublicAddressOnlyWhenExactIPPortIsAllowlisted(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "ok")
	port := portOf(srv.Server)
	h, _ := namedHandler(t, map[string][]string{"orders.internal": {"127.0.0.1"}},
		"orders.internal:"+port, "127.0.0.1:"+port)

	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": "http://orders.internal:" + port + "/x"}))
	if err != nil {
		t.Fatal(err)
	}
	var res HTTPResult
	if err := json.Unmarshal(out, &res); err != nil || res.Status != 200 {
		t.Fatalf("result %s (%v)", out, err)
	}
	seen := srv.requests()
	if len(seen) != 1 || seen[0].Path != "/x" {
		t.Fatalf("server saw %+v", seen)
	}

	// The same address on another port is not allowlisted.
	other := newRecordingServer(t, http.StatusOK, "other")
	h2, _ := namedHandler(t, map[string][]string{"orders.internal": {"127.0.0.1"}},
		"orders.internal:"+portOf(other.Server), "127.0.0.1:"+port)
	if _, err := h2.Handle(context.Background(), httpJob(t, "req-2", map[string]any{"url": other.URL})); err == nil || !IsPermanent(err) {
		t.Errorf("IP literal off the allowlist: err = %v, want permanent", err)
	}
	if _, err := h2.Handle(context.Background(), httpJob(t, "req-3",
		map[string]any{"url": "http://orders.internal:" + portOf(other.Server) + "/"})); err == nil || !IsPermanent(err) {
		t.Errorf("name resolving to a loopback ip:port off the allowlist: err = %v, want permanent", err)
	}
	if n := len(other.requests()); n != 0 {
		t.Errorf("server off the allowlist called %d times", n)
	}
}

func TestHTTPDialSkipsRefusedAddressesAndDialsOnlyACheckedOne(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "ok")
	port := portOf(srv.Server)
	// A decoy on another loopback address, same port: the name resolves
	// to it first, but only 127.0.0.1:port is allowlisted. (Tests reach
	// loopback addresses only.)
	ln, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var decoyCalls atomic.Int32
	decoy := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		decoyCalls.Add(1)
	})}}
	decoy.Start()
	defer decoy.Close()
	h, _ := namedHandler(t, map[string][]string{"mixed.example": {"127.0.0.2", "::ffff:127.0.0.1"}},
		"mixed.example:"+port, "127.0.0.1:"+port)
	if _, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": "http://mixed.example:" + port})); err != nil {
		t.Fatal(err)
	}
	if decoyCalls.Load() != 0 || len(srv.requests()) != 1 {
		t.Errorf("decoy called %d times, allowlisted server %d times", decoyCalls.Load(), len(srv.requests()))
	}
}

func TestHTTPRedirectToAnAllowlistedNameThatResolvesToLoopbackIsRefused(t *testing.T) {
	target := newRecordingServer(t, http.StatusOK, "metadata")
	tport := portOf(target.Server)
	start := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://metadata.example:"+tport+"/latest", http.StatusFound)
	}))
	defer start.Close()
	h, _ := namedHandler(t, map[string][]string{"metadata.example": {"127.0.0.1"}},
		hostPort(start), "metadata.example:"+tport)

	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": start.URL}))
	if err == nil || !IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent refusal", err)
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target called %d times", n)
	}
}

func TestHTTPResolutionFailureIsRetryable(t *testing.T) {
	h, r := namedHandler(t, nil, "flaky.example:80")
	r.err = &net.DNSError{Err: "server misbehaving", Name: "flaky.example", IsTemporary: true}
	_, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": "http://flaky.example/"}))
	if err == nil || IsPermanent(err) {
		t.Errorf("err = %v, want a retryable error", err)
	}
}

func TestHTTPIgnoresProxyFromEnvironment(t *testing.T) {
	var proxied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		_, _ = io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	srv := newRecordingServer(t, http.StatusOK, "direct")
	h := handlerFor(t, 2*time.Second, srv.Server)
	out, err := h.Handle(context.Background(), httpJob(t, "req-1", map[string]any{"url": srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	if proxied.Load() != 0 || !strings.Contains(string(out), "direct") {
		t.Errorf("call went through the environment's proxy: %s", out)
	}
}

func TestHTTPControlRefusesNonPublicAddresses(t *testing.T) {
	h := NewHTTP(map[string]bool{"127.0.0.1:8080": true}, time.Second)
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080":        true, // exactly allowlisted
		"127.0.0.1:8081":        false,
		"[::1]:8080":            false,
		"169.254.169.254:80":    false,
		"10.0.0.1:443":          false, // checked only, never dialled
		"[fe80::1%lo]:80":       false,
		"8.8.8.8:443":           true,
		"[2606:4700::1111]:443": true,
		"not-an-address":        false,
	} {
		err := h.controlDial("tcp", addr, nil)
		if (err == nil) != ok {
			t.Errorf("controlDial(%s) = %v, want allowed=%v", addr, err, ok)
		}
		var refused dialRefused
		if err != nil && !errors.As(err, &refused) {
			t.Errorf("controlDial(%s) error %v is not a dialRefused", addr, err)
		}
	}
}

func TestPublicIP(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8":            true,
		"1.1.1.1":            true,
		"2606:4700::1111":    true,
		"::ffff:8.8.8.8":     true,
		"127.0.0.1":          false,
		"127.1.2.3":          false,
		"::1":                false,
		"::ffff:127.0.0.1":   false,
		"10.1.2.3":           false,
		"172.16.0.1":         false,
		"172.31.255.255":     false,
		"192.168.1.1":        false,
		"169.254.169.254":    false, // cloud metadata
		"fe80::1":            false,
		"fc00::1":            false,
		"fd12:3456::1":       false,
		"0.0.0.0":            false,
		"::":                 false,
		"0.1.2.3":            false,
		"100.64.0.1":         false,
		"192.0.0.1":          false,
		"192.0.2.1":          false,
		"198.18.0.1":         false,
		"224.0.0.1":          false,
		"239.255.255.250":    false,
		"255.255.255.255":    false,
		"240.0.0.1":          false,
		"ff02::1":            false,
		"64:ff9b::7f00:1":    false, // NAT64 of 127.0.0.1
		"2002:7f00:1::":      false, // 6to4 of 127.0.0.1
		"2001:db8::1":        false,
		"172.32.0.1":         true, // just outside 172.16/12
		"100.128.0.1":        true, // just outside 100.64/10
		"fe80::1%eth0":       false,
		"::ffff:169.254.1.1": false,
	} {
		if got := PublicIP(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PublicIP(%s) = %v, want %v", addr, got, want)
		}
	}
}

// The dialer's own check holds without the socket-level Control hook: each
// layer refuses on its own.
func TestHTTPDialChecksResolvedAddressesWithoutTheControlHook(t *testing.T) {
	srv := newRecordingServer(t, http.StatusOK, "ok")
	port := portOf(srv.Server)
	h, _ := namedHandler(t, map[string][]string{"partner.example": {"127.0.0.1"}}, "partner.example:"+port)
	conn, err := h.dial(context.Background(), &net.Dialer{}, "tcp", "partner.example:"+port)
	if err == nil {
		conn.Close()
		t.Fatal("dial reached a loopback address that is not allowlisted")
	}
	var refused dialRefused
	if !errors.As(err, &refused) {
		t.Errorf("err = %v, want dialRefused", err)
	}
	if _, err := h.dial(context.Background(), &net.Dialer{}, "tcp", "other.example:"+port); !errors.As(err, &refused) {
		t.Errorf("dial to a name off the allowlist: %v", err)
	}
}
