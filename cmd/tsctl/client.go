package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// defaultTimeout bounds one HTTP call; TSCTL_TIMEOUT overrides it. Every
// admin call is a single database or Temporal round trip on the server, so
// 30s is far past a healthy answer.
const defaultTimeout = 30 * time.Second

// maxResponseBytes caps what tsctl reads of one answer: a page of sessions or
// users is a few hundred KiB at most, and a request's payload and result are
// limited by TURNSTILE_MAX_BODY_BYTES; 64 MiB leaves room for large deployments
// while bounding a misbehaving server.
const maxResponseBytes = 64 << 20

// apiError is an answer of the API outside 2xx: its HTTP status and the
// {"error":{"code","message"}} body.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Code != "":
		return e.Code
	}
	return fmt.Sprintf("the API answered %d %s", e.Status, http.StatusText(e.Status))
}

// decodeAPIError reads the error body of a non-2xx answer; a body that is not
// the API's error shape still yields the status.
func decodeAPIError(status int, body []byte) *apiError {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e) // a foreign body (a proxy's HTML page) leaves e empty
	return &apiError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}

// tokenPair is the answer of /v1/auth/login and /v1/auth/refresh.
type tokenPair struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// client calls the Turnstile API at base with the tokens of cfg. On a 401 it
// refreshes the pair once, saves it to cfgPath and retries the call once.
type client struct {
	base    string
	hc      *http.Client
	cfgPath string
	cfg     config
	warn    io.Writer // where a non-fatal problem is reported
}

// newClient builds a client for base without tokens (login uses it as is).
func (c *cli) newClient(base, cfgPath string, cfg config) (*client, error) {
	timeout := defaultTimeout
	if s := c.getenv("TSCTL_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, usagef("", "TSCTL_TIMEOUT=%q is not a positive duration such as 30s", s)
		}
		timeout = d
	}
	return &client{base: base, hc: &http.Client{Timeout: timeout}, cfgPath: cfgPath, cfg: cfg, warn: c.stderr}, nil
}

// loggedIn returns a client with the saved login, or an authError when there
// is none for the API this invocation talks to.
func (c *cli) loggedIn() (*client, error) {
	path, cfg, err := c.savedConfig()
	if err != nil {
		return nil, err
	}
	base, err := c.apiURL(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.AccessToken == "" {
		return nil, &authError{fmt.Sprintf("not logged in to %s; run: tsctl login --api %s --email EMAIL", base, base)}
	}
	if cfg.API != base {
		// Tokens are sent only to the API that issued them.
		return nil, &authError{fmt.Sprintf("the saved login is for %s, not %s; run: tsctl login --api %s --email EMAIL", cfg.API, base, base)}
	}
	return c.newClient(base, path, cfg)
}

// call sends method path?query with in (when not nil) as the JSON body and
// returns the body of a 2xx answer; any other answer is an *apiError.
func (cl *client) call(ctx context.Context, method, path string, query url.Values, in any) ([]byte, error) {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = b
	}
	status, out, err := cl.send(ctx, method, path, query, body, cl.cfg.AccessToken)
	if err != nil {
		return nil, err
	}
	if status == http.StatusUnauthorized && cl.cfg.RefreshToken != "" {
		if err := cl.refresh(ctx); err != nil {
			return nil, err
		}
		if status, out, err = cl.send(ctx, method, path, query, body, cl.cfg.AccessToken); err != nil {
			return nil, err
		}
	}
	if status < 200 || status > 299 {
		ae := decodeAPIError(status, out)
		if status == http.StatusUnauthorized {
			return nil, fmt.Errorf("%w; log in again: tsctl login --email %s", ae, emailOr(cl.cfg.Email))
		}
		return nil, ae
	}
	return out, nil
}

// refresh trades the refresh token for a new pair and saves it.
func (cl *client) refresh(ctx context.Context) error {
	// Another tsctl may have refreshed since this one loaded the file: its
	// pair is the live one, and presenting the spent refresh token again would
	// make the API revoke the whole login.
	if disk, err := loadConfig(cl.cfgPath); err == nil && disk.API == cl.base &&
		disk.RefreshToken != "" && disk.RefreshToken != cl.cfg.RefreshToken {
		cl.cfg = disk
		return nil
	}
	body, _ := json.Marshal(map[string]string{"refresh_token": cl.cfg.RefreshToken})
	status, out, err := cl.send(ctx, http.MethodPost, "/v1/auth/refresh", nil, body, "")
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &authError{fmt.Sprintf("the saved login has expired (%v); log in again: tsctl login --email %s", decodeAPIError(status, out), emailOr(cl.cfg.Email))}
	case status != http.StatusOK:
		return decodeAPIError(status, out)
	}
	var pair tokenPair
	if err := json.Unmarshal(out, &pair); err != nil || pair.AccessToken == "" || pair.RefreshToken == "" {
		return fmt.Errorf("the API answered the token refresh with no token pair")
	}
	cl.cfg.AccessToken, cl.cfg.RefreshToken = pair.AccessToken, pair.RefreshToken
	if err := saveConfig(cl.cfgPath, cl.cfg); err != nil {
		// The old refresh token is spent: the next run will need a login.
		fmt.Fprintf(cl.warn, "tsctl: warning: could not save the refreshed tokens, the next command will need a login: %v\n", err)
	}
	return nil
}

// send makes one HTTP exchange and returns the status and body; err is only a
// transport failure.
func (cl *client) send(ctx context.Context, method, path string, query url.Values, body []byte, token string) (int, []byte, error) {
	u := cl.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tsctl")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already
		}
		return 0, nil, fmt.Errorf("cannot reach the Turnstile API at %s: %w", cl.base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("read the answer of %s %s: %w", method, path, err)
	}
	if len(out) > maxResponseBytes {
		return 0, nil, fmt.Errorf("the answer of %s %s is larger than %d bytes", method, path, maxResponseBytes)
	}
	return resp.StatusCode, out, nil
}

// callOn serves the commands that take one ID and make one call: it parses
// args as that ID (argName names it), logs in and sends method to the path
// pathFor builds from the ID.
func (c *cli) callOn(cmd *command, args []string, argName, method string, pathFor func(id string) string) ([]byte, error) {
	pos, err := c.parse(cmd, newFlags(cmd), args, argName)
	if err != nil {
		return nil, err
	}
	cl, err := c.loggedIn()
	if err != nil {
		return nil, err
	}
	return cl.call(context.Background(), method, pathFor(pos[0]), nil, nil)
}

// fetchList serves the list commands: it logs in and fetches one page of
// path, or all of them, and under --json prints the answer itself (printed).
func (c *cli) fetchList(path, key string, q url.Values, all bool) (items []json.RawMessage, next string, printed bool, err error) {
	cl, err := c.loggedIn()
	if err != nil {
		return nil, "", false, err
	}
	raw, items, next, err := cl.list(context.Background(), path, key, q, all)
	if err != nil {
		return nil, "", false, err
	}
	if c.json {
		return nil, "", true, c.printJSON(raw)
	}
	return items, next, false, nil
}

// get is call for a GET without a body.
func (cl *client) get(ctx context.Context, path string, query url.Values) ([]byte, error) {
	return cl.call(ctx, http.MethodGet, path, query, nil)
}

// pathOf joins escaped segments into an API path: pathOf("/v1/admin/users", id, "disable").
func pathOf(prefix string, segments ...string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// list fetches one page of a paginated admin list, or every page when all is
// set. raw is what --json prints: the page as the API sent it, or every page's
// items under key with a null next_cursor. next is the cursor of the page after
// the one fetched ("" at the end).
func (cl *client) list(ctx context.Context, path, key string, query url.Values, all bool) (raw []byte, items []json.RawMessage, next string, err error) {
	seen := map[string]bool{}
	for {
		body, err := cl.get(ctx, path, query)
		if err != nil {
			return nil, nil, "", err
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, nil, "", fmt.Errorf("the API's answer to GET %s is not a JSON object: %w", path, err)
		}
		var pageItems []json.RawMessage
		if err := json.Unmarshal(page[key], &pageItems); page[key] != nil && err != nil {
			return nil, nil, "", fmt.Errorf("the API's answer to GET %s has no list %q: %w", path, key, err)
		}
		var cursor *string
		if err := json.Unmarshal(page["next_cursor"], &cursor); page["next_cursor"] != nil && err != nil {
			return nil, nil, "", fmt.Errorf("the API's answer to GET %s has a bad next_cursor: %w", path, err)
		}
		items = append(items, pageItems...)
		next = ""
		if cursor != nil {
			next = *cursor
		}
		if !all {
			return body, items, next, nil
		}
		if next == "" {
			break
		}
		if seen[next] {
			return nil, nil, "", fmt.Errorf("the API returned cursor %q twice while paging %s", next, path)
		}
		seen[next] = true
		query = cloneValues(query)
		query.Set("cursor", next)
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	raw, err = json.Marshal(map[string]any{key: items, "next_cursor": nil})
	return raw, items, "", err
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func emailOr(email string) string {
	if email == "" {
		return "EMAIL"
	}
	return email
}
