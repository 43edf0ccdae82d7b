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
	"net/url"
	"strings"
	"time"
)

// HTTP calls an allowlisted HTTP endpoint. Payload:
//
//	{"method": "POST", "url": "http://host:port/path", "headers": {"K": "V"}, "body": <string or JSON>}
//
// It sends the request ID as the Idempotency-Key header so the receiver can
// drop the duplicate of a retried call. 5xx answers, 408, 429 and network
// errors or timeouts are retried; any other 4xx fails the request at once.
type HTTP struct {
	// Allow holds the permitted "host:port" pairs, lower case. A URL's port
	// defaults to 80 or 443 by scheme.
	Allow map[string]bool
	// Client makes the calls; NewHTTP sets timeouts and a redirect check.
	Client *http.Client
	// MaxResponseBytes caps the response body kept as the result.
	MaxResponseBytes int64
}

// HTTP defaults.
const (
	DefaultHTTPTimeout          = 30 * time.Second
	DefaultHTTPMaxResponseBytes = 1 << 20
	maxRedirects                = 5
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

// NewHTTP returns the http handler for the given allowlist and timeout.
func NewHTTP(allow map[string]bool, timeout time.Duration) *HTTP {
	h := &HTTP{Allow: allow, MaxResponseBytes: DefaultHTTPMaxResponseBytes}
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	h.Client = &http.Client{
		Timeout: timeout,
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
	if errors.As(err, &refused) {
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
