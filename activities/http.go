package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HTTP calls an allowlisted HTTP endpoint. Payload:
//
//	{"method": "POST", "url": "http://host:port/path", "headers": {"K": "V"}, "body": <string or JSON>}
//
// It sends the request ID as the Idempotency-Key header so the receiver can
// drop the duplicate of a retried call. 5xx answers, 408, 429 and network
// errors or timeouts are retried; any other 4xx fails the request at once.
//
// The allowlist is enforced three times: on the URL at submission and
// before the call, on every redirect, and at connection time, after DNS
// resolution: the dialer resolves the host itself, checks every address and
// connects only to an address that passed, so a name cannot be re-pointed
// (DNS rebinding) at an internal service between check and use. An address
// that is not public (loopback, private, link-local, CGNAT, multicast,
// reserved…) is dialled only if that exact ip:port is itself on the
// allowlist; an allowlisted name that resolves to one is refused.
type HTTP struct {
	// Allow holds the permitted "host:port" pairs, lower case. A URL's port
	// defaults to 80 or 443 by scheme.
	Allow map[string]bool
	// Client makes the calls; NewHTTP sets timeouts, a redirect check and a
	// dialer that enforces the allowlist after resolution.
	Client *http.Client
	// MaxResponseBytes caps the response body kept as the result.
	MaxResponseBytes int64
	// Resolver looks hosts up; nil means net.DefaultResolver. Tests swap it.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
}

// HTTP defaults.
const (
	DefaultHTTPTimeout          = 30 * time.Second
	DefaultHTTPMaxResponseBytes = 1 << 20
	maxRedirects                = 5
	// maxResponseHeaderBytes bounds the response headers (the body has
	// MaxResponseBytes): generous for any API, small for memory.
	maxResponseHeaderBytes = 64 << 10
	// maxDialTimeout and maxTLSHandshakeTimeout bound one connection's
	// set-up, below the call's own timeout when that is shorter.
	maxDialTimeout         = 10 * time.Second
	maxTLSHandshakeTimeout = 10 * time.Second
	idleConnTimeout        = 90 * time.Second
)

// ParseAllowlist parses TURNSTILE_HTTP_ALLOWLIST: comma-separated host:port.
func ParseAllowlist(s string) (map[string]bool, error) {
	allow := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("allowlist entry %q is not host:port", item)
		}
		allow[net.JoinHostPort(host, port)] = true
	}
	return allow, nil
}

// NewHTTP returns the http handler for the given allowlist and timeout (the
// limit of one call, redirects included).
func NewHTTP(allow map[string]bool, timeout time.Duration) *HTTP {
	h := &HTTP{Allow: allow, MaxResponseBytes: DefaultHTTPMaxResponseBytes}
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	dialer := &net.Dialer{Timeout: min(timeout, maxDialTimeout), Control: h.controlDial}
	transport := &http.Transport{
		// Never a proxy from the environment: the dialer's checks would
		// then vet the proxy, not the target.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return h.dial(ctx, dialer, network, addr)
		},
		TLSHandshakeTimeout:    min(timeout, maxTLSHandshakeTimeout),
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		IdleConnTimeout:        idleConnTimeout,
	}
	h.Client = &http.Client{
		Timeout:   timeout,
		Transport: transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return redirectRefused{errors.New("too many redirects")}
			}
			if err := h.checkURL(req.URL); err != nil {
				return redirectRefused{err}
			}
			return nil
		},
	}
	return h
}

// dialRefused is a connection the allowlist forbids after resolution; no
// retry can make it acceptable.
type dialRefused struct{ err error }

func (e dialRefused) Error() string { return "connection refused by policy: " + e.err.Error() }
func (e dialRefused) Unwrap() error { return e.err }

// dial resolves addr's host, keeps the addresses the allowlist permits and
// connects to the first that answers, by IP, so what is dialled is exactly
// what was checked.
func (h *HTTP) dial(ctx context.Context, dialer *net.Dialer, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, dialRefused{err}
	}
	host = strings.ToLower(host)
	if !h.Allow[net.JoinHostPort(host, port)] {
		return nil, dialRefused{fmt.Errorf("%s is not on the allowlist (TURNSTILE_HTTP_ALLOWLIST)", net.JoinHostPort(host, port))}
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		var r interface {
			LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
		} = net.DefaultResolver
		if h.Resolver != nil {
			r = h.Resolver
		}
		if ips, err = r.LookupNetIP(ctx, "ip", host); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err) // DNS trouble may pass: retried
		}
	}
	var refused, dialErrs []error
	for _, ip := range ips {
		target := ip.Unmap().String()
		if err := h.permitIP(ip, port); err != nil {
			refused = append(refused, err)
			continue
		}
		conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(target, port))
		if err == nil {
			return conn, nil
		}
		dialErrs = append(dialErrs, err)
	}
	if len(dialErrs) > 0 {
		return nil, errors.Join(dialErrs...)
	}
	if len(refused) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	return nil, dialRefused{fmt.Errorf("%s resolves only to refused addresses: %w", host, errors.Join(refused...))}
}

// controlDial re-checks the address the socket is about to connect to: a
// last line that holds even if a future change dials a name.
func (h *HTTP) controlDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return dialRefused{fmt.Errorf("unexpected dial address %q", address)}
	}
	if err := h.permitIP(ap.Addr(), strconv.Itoa(int(ap.Port()))); err != nil {
		return dialRefused{err}
	}
	return nil
}

// permitIP allows a public address, and a non-public one only when ip:port
// is itself on the allowlist.
func (h *HTTP) permitIP(ip netip.Addr, port string) error {
	ip = ip.Unmap().WithZone("")
	if PublicIP(ip) || h.Allow[net.JoinHostPort(ip.String(), port)] {
		return nil
	}
	return fmt.Errorf("%s is not a public address; only an exact ip:port on the allowlist may reach it",
		net.JoinHostPort(ip.String(), port))
}

// nonPublic are the ranges PublicIP refuses beyond what netip classifies:
// shared, reserved, benchmarking and documentation space, and IPv6 prefixes
// that embed or translate to IPv4 (NAT64) and so could reach internal IPv4.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4, embeds an IPv4 address
}

// PublicIP reports whether ip is a global unicast address outside every
// private, loopback, link-local, multicast and special-purpose range.
func PublicIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// redirectRefused is a redirect that no retry can make acceptable.
type redirectRefused struct{ err error }

func (e redirectRefused) Error() string { return "redirect refused: " + e.err.Error() }
func (e redirectRefused) Unwrap() error { return e.err }

type httpPayload struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

func (h *HTTP) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url scheme must be http or https, not %q", u.Scheme)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if host == "" {
		return errors.New("url has no host")
	}
	if !h.Allow[net.JoinHostPort(host, port)] {
		return fmt.Errorf("host %s is not on the allowlist (TURNSTILE_HTTP_ALLOWLIST)", net.JoinHostPort(host, port))
	}
	return nil
}

func (h *HTTP) parse(payload json.RawMessage) (*httpPayload, *url.URL, error) {
	var p httpPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, nil, fmt.Errorf("http payload must be an object with method and url: %w", err)
	}
	if p.Method == "" {
		p.Method = http.MethodGet
	}
	p.Method = strings.ToUpper(p.Method)
	switch p.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return nil, nil, fmt.Errorf("http method %q is not supported", p.Method)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("http url: %w", err)
	}
	if err := h.checkURL(u); err != nil {
		return nil, nil, err
	}
	return &p, u, nil
}

// Validate rejects a malformed payload or a host off the allowlist.
func (h *HTTP) Validate(payload json.RawMessage) error {
	_, _, err := h.parse(payload)
	return err
}

// HTTPResult is the result of an http request.
type HTTPResult struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// Handle makes the call.
func (h *HTTP) Handle(ctx context.Context, job Job) (json.RawMessage, error) {
	p, u, err := h.parse(job.Payload)
	if err != nil {
		return nil, Permanent(err)
	}
	var body io.Reader
	isJSONBody := false
	if len(p.Body) > 0 && string(p.Body) != "null" {
		var s string
		if json.Unmarshal(p.Body, &s) == nil {
			body = strings.NewReader(s)
		} else {
			body = bytes.NewReader(p.Body)
			isJSONBody = true
		}
	}
	req, err := http.NewRequestWithContext(ctx, p.Method, u.String(), body)
	if err != nil {
		return nil, Permanent(fmt.Errorf("http request: %w", err))
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	if isJSONBody && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Idempotency-Key", job.ID)
	resp, err := h.Client.Do(req)
	var refused redirectRefused
	var dialRef dialRefused
	if errors.As(err, &refused) || errors.As(err, &dialRef) {
		return nil, Permanent(fmt.Errorf("http call: %w", err))
	}
	if err != nil {
		return nil, fmt.Errorf("http call: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, h.MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("http read: %w", err)
	}
	// Classify the status first: a 5xx with a large body is still retried.
	switch code := resp.StatusCode; {
	case code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return nil, fmt.Errorf("http %d: %s", code, snippet(data))
	case code >= 400:
		return nil, Permanent(fmt.Errorf("http %d: %s", code, snippet(data)))
	}
	if int64(len(data)) > h.MaxResponseBytes {
		return nil, Permanent(fmt.Errorf("http response larger than %d bytes", h.MaxResponseBytes))
	}
	res := HTTPResult{Status: resp.StatusCode, Headers: map[string]string{}, Body: string(data)}
	for k := range resp.Header {
		res.Headers[k] = resp.Header.Get(k)
	}
	return json.Marshal(res)
}

func snippet(b []byte) string {
	const maxSnippet = 200
	s := strings.TrimSpace(string(b))
	if len(s) > maxSnippet {
		s = s[:maxSnippet] + "…"
	}
	return s
}
