package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// throttled counts 429 answers (queue full, submission rate): a run that
// saw many measured the limits, not the engine.
var throttled atomic.Int64

// client calls the Turnstile API.
type client struct {
	base    string
	http    *http.Client
	metrics []string // Prometheus endpoints counting delivery signals
}

func newClient(base string) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	return &client{base: base, http: &http.Client{Timeout: time.Minute, Transport: tr}, metrics: []string{base + "/metrics"}}
}

// apiError is a non-2xx answer.
type apiError struct {
	Status     int
	Body       string
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// call sends body as JSON and decodes a 2xx answer into out.
func (c *client) call(ctx context.Context, method, path, token string, body, out any) error {
	return c.callWith(ctx, method, path, token, "", body, out)
}

// callWith is call with the Turnstile-Execution header set to mode, if any.
func (c *client) callWith(ctx context.Context, method, path, token, mode string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if mode != "" {
		req.Header.Set("Turnstile-Execution", mode)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &apiError{Status: resp.StatusCode, Body: string(data)}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (c *client) ready(ctx context.Context) error {
	return c.call(ctx, "GET", "/readyz", "", nil, nil)
}

// login registers email (if new) and returns an access and a refresh token.
func (c *client) login(ctx context.Context, email string) (token, refresh string, err error) {
	creds := map[string]string{"email": email, "password": "bench-password-1"}
	var reg struct{ ID string }
	if err := c.call(ctx, "POST", "/v1/auth/register", "", creds, &reg); err != nil {
		if e, ok := err.(*apiError); !ok || e.Status != http.StatusConflict {
			return "", "", fmt.Errorf("register: %w", err)
		}
	}
	var tok tokens
	if err := c.call(ctx, "POST", "/v1/auth/login", "", creds, &tok); err != nil {
		return "", "", fmt.Errorf("login: %w", err)
	}
	return tok.AccessToken, tok.RefreshToken, nil
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// renew trades a refresh token for new tokens: registering thousands of
// users (two argon2id hashes each) can outlast an access token.
func (c *client) renew(ctx context.Context, refresh string) (token, newRefresh string, err error) {
	var tok tokens
	if err := c.call(ctx, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": refresh}, &tok); err != nil {
		return "", "", fmt.Errorf("refresh: %w", err)
	}
	return tok.AccessToken, tok.RefreshToken, nil
}

// record is a request as the API reports it.
type record struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	EnqueuedAt time.Time  `json:"enqueued_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

func (r record) final() bool {
	return r.Status == "succeeded" || r.Status == "failed" || r.Status == "cancelled"
}

// submit posts items (one request or a batch) and returns their IDs, waiting
// out 429s as the API asks.
func (c *client) submit(ctx context.Context, token, mode string, items []map[string]any) ([]string, error) {
	for {
		var err error
		var ids []string
		if len(items) == 1 {
			var r record
			err = c.callWith(ctx, "POST", "/v1/requests", token, mode, items[0], &r)
			ids = []string{r.ID}
		} else {
			var b struct{ Requests []record }
			err = c.callWith(ctx, "POST", "/v1/requests/batch", token, mode, map[string]any{"requests": items}, &b)
			for _, r := range b.Requests {
				ids = append(ids, r.ID)
			}
		}
		if e, ok := err.(*apiError); ok && e.Status == http.StatusTooManyRequests {
			throttled.Add(1)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(max(e.RetryAfter/10, 100*time.Millisecond)):
			}
			continue
		}
		return ids, err
	}
}

func (c *client) get(ctx context.Context, token, id string) (record, error) {
	var r record
	err := c.call(ctx, "GET", "/v1/requests/"+id, token, nil, &r)
	return r, err
}
