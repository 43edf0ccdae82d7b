package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The clients talk to the API over HTTP exactly as users do, and write down
// every submission attempt with the times it was sent and answered: the
// history the checker judges.

// httpTimeout bounds one API call; a call that runs into it counts as an
// answer never received (outcome unknown).
const httpTimeout = 20 * time.Second

var apiHTTP = &http.Client{Timeout: httpTimeout, Transport: &http.Transport{
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     30 * time.Second,
}}

// apiAnswer is one HTTP answer; status 0 means none came (connection refused
// or reset, timeout): the call's outcome is unknown.
type apiAnswer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (a apiAnswer) String() string {
	if a.status == 0 {
		return "no answer: " + a.err.Error()
	}
	return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body))
}

// errorCode is the code of an API error body.
func (a apiAnswer) errorCode() string {
	var e struct {
		Error struct{ Code string }
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

// call sends one API call. body is marshalled; headers are pairs.
func call(ctx context.Context, method, url, token string, body any, headers ...string) apiAnswer {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{err: err}
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return apiAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := apiHTTP.Do(req)
	if err != nil {
		return apiAnswer{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiAnswer{err: fmt.Errorf("read answer: %w", err)}
	}
	return apiAnswer{status: resp.StatusCode, header: resp.Header, body: data}
}

// user is one registered, logged-in account.
type user struct {
	tag   string // short name for op names and logs: u0, u1, …
	id    string
	email string
	token string
}

// requestView is a request as the API shows it.
type requestView struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Payload    json.RawMessage `json:"payload"`
	Status     string          `json:"status"`
	Attempts   int             `json:"attempts"`
	Error      *string         `json:"error"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

func isFinal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "cancelled"
}

// op reads the client's op name out of an http request's payload.
func (r requestView) op() string {
	var p struct {
		Body sinkBody `json:"body"`
	}
	_ = json.Unmarshal(r.Payload, &p)
	return p.Body.Op
}

// expectation is the final status an op must end in.
type expectation string

const (
	expectSucceeded expectation = "succeeded"
	expectFailed    expectation = "failed"
)

// attempt is one submission of an op: sent, answered (or not).
type attempt struct {
	Send, Answer time.Time
	Status       int    // HTTP status; 0 = no answer, outcome unknown
	ReqID        string // from a 202
	Detail       string // error code or transport error, for reports
}

// op is one logical operation a user wants done once: one http request to
// the sink, named uniquely, submitted (and resubmitted with the same
// Idempotency-Key) until accepted.
type op struct {
	Name   string
	User   string // user ID
	Expect expectation
	// Batch and Index place an op in a batch submission: items of one
	// batch are accepted in their order.
	Batch string
	Index int

	mu       sync.Mutex
	Attempts []attempt
	// Requeued is when an operator sent the op back to the end of its
	// queue: from then on it orders as if submitted at that time.
	Requeued *attempt
}

func (o *op) record(a attempt) {
	o.mu.Lock()
	o.Attempts = append(o.Attempts, a)
	o.mu.Unlock()
}

// accepted returns the first 202 answer.
func (o *op) accepted() (attempt, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var first attempt
	ok := false
	for _, a := range o.Attempts {
		if a.Status == http.StatusAccepted && (!ok || a.Answer.Before(first.Answer)) {
			first, ok = a, true
		}
	}
	return first, ok
}

// orderTimes are the times the order rule uses: sent is the first attempt
// that may have been taken (202 or no answer; an answered refusal took
// nothing), acked the first 202. A requeue replaces both.
func (o *op) orderTimes() (sent, acked time.Time, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Requeued != nil {
		return o.Requeued.Send, o.Requeued.Answer, true
	}
	for _, a := range o.Attempts {
		if a.Status == http.StatusAccepted || a.Status == 0 {
			if sent.IsZero() || a.Send.Before(sent) {
				sent = a.Send
			}
		}
		if a.Status == http.StatusAccepted && (acked.IsZero() || a.Answer.Before(acked)) {
			acked = a.Answer
		}
	}
	return sent, acked, !acked.IsZero()
}

// requestIDs are the distinct request IDs the API answered for the op.
func (o *op) requestIDs() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []string
	seen := map[string]bool{}
	for _, a := range o.Attempts {
		if a.ReqID != "" && !seen[a.ReqID] {
			seen[a.ReqID] = true
			ids = append(ids, a.ReqID)
		}
	}
	return ids
}

// refusedOnly reports whether every attempt got an answer and none was 202.
func (o *op) refusedOnly() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range o.Attempts {
		if a.Status == 0 || a.Status == http.StatusAccepted {
			return false
		}
	}
	return len(o.Attempts) > 0
}

// history holds a scenario's ops.
type history struct {
	mu    sync.Mutex
	ops   []*op
	byKey map[string]*op
}

func newHistory() *history { return &history{byKey: map[string]*op{}} }

// newOp registers an op of u named <tag>-<n>.
func (h *history) newOp(u *user, n int, expect expectation) *op {
	o := &op{Name: u.tag + "-" + strconv.Itoa(n), User: u.id, Expect: expect}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byKey[o.Name] != nil {
		panic("op " + o.Name + " registered twice")
	}
	h.byKey[o.Name] = o
	h.ops = append(h.ops, o)
	return o
}

func (h *history) all() []*op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*op(nil), h.ops...)
}

// payload is the http request an op submits: one call to the sink.
func payload(s *sink, u *user, o *op, sleepMS int) map[string]any {
	return map[string]any{
		"type": "http",
		"payload": map[string]any{
			"method": "POST",
			"url":    s.url(),
			"body":   sinkBody{User: u.id, Op: o.Name, SleepMS: sleepMS},
		},
	}
}

// submitOnce sends op o once to the API at base, with the op's name as its
// Idempotency-Key, and records the attempt.
func submitOnce(ctx context.Context, base string, u *user, o *op, body map[string]any) apiAnswer {
	send := time.Now()
	a := call(ctx, "POST", base+"/v1/requests", u.token, body, "Idempotency-Key", o.Name)
	at := attempt{Send: send, Answer: time.Now(), Status: a.status}
	if a.status == http.StatusAccepted {
		var v requestView
		if err := json.Unmarshal(a.body, &v); err == nil {
			at.ReqID = v.ID
		}
	} else if a.status == 0 {
		at.Detail = a.err.Error()
	} else {
		at.Detail = a.errorCode()
	}
	o.record(at)
	return a
}

// retryable reports whether a client should resubmit after this answer: no
// answer, an outage (5xx), a full queue or a concurrent twin in progress.
func retryable(a apiAnswer) bool {
	return a.status == 0 || a.status >= 500 || a.status == http.StatusTooManyRequests ||
		(a.status == http.StatusConflict && a.errorCode() == "idempotency_key_in_use")
}

// submitUntilAccepted resubmits o (same Idempotency-Key) until a 202, a
// final refusal or the deadline. bases are tried in turn.
func submitUntilAccepted(ctx context.Context, bases []string, u *user, o *op, body map[string]any, deadline time.Time) apiAnswer {
	return submitUntilAcceptedWithin(ctx, bases, u, o, body, deadline, 0)
}

// submitUntilAcceptedWithin is submitUntilAccepted with a client timeout on
// each attempt (0: none); an attempt that times out is retried.
func submitUntilAcceptedWithin(ctx context.Context, bases []string, u *user, o *op, body map[string]any, deadline time.Time, attemptTimeout time.Duration) apiAnswer {
	var a apiAnswer
	for i := 0; ; i++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, attemptTimeout)
		}
		a = submitOnce(actx, bases[i%len(bases)], u, o, body)
		cancel()
		if !retryable(a) || time.Now().After(deadline) || ctx.Err() != nil {
			return a
		}
		select {
		case <-ctx.Done():
			return a
		case <-time.After(backoff(i)):
		}
	}
}

// backoff is the pause before resubmission i+1: exponential from 50ms to
// 2s, with jitter so that many clients do not retry in step.
func backoff(i int) time.Duration {
	d := min(50*time.Millisecond<<min(i, 6), 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// submitBatch submits ops as one batch (one Idempotency-Key for the batch)
// until accepted or the deadline, and records the attempts on every op.
func submitBatch(ctx context.Context, base string, u *user, batch string, ops []*op, bodies []map[string]any, deadline time.Time) apiAnswer {
	for i, o := range ops {
		o.Batch, o.Index = batch, i
	}
	var a apiAnswer
	for i := 0; ; i++ {
		send := time.Now()
		a = call(ctx, "POST", base+"/v1/requests/batch", u.token, map[string]any{"requests": bodies}, "Idempotency-Key", batch)
		answered := time.Now()
		var views struct{ Requests []requestView }
		if a.status == http.StatusAccepted {
			if err := json.Unmarshal(a.body, &views); err != nil || len(views.Requests) != len(ops) {
				a.status, a.err = 0, fmt.Errorf("batch answer with %d requests for %d items: %v", len(views.Requests), len(ops), err)
			}
		}
		for j, o := range ops {
			at := attempt{Send: send, Answer: answered, Status: a.status, Detail: a.errorCode()}
			if a.status == http.StatusAccepted {
				at.ReqID = views.Requests[j].ID
			}
			o.record(at)
		}
		if !retryable(a) || time.Now().After(deadline) || ctx.Err() != nil {
			return a
		}
		select {
		case <-ctx.Done():
			return a
		case <-time.After(backoff(i)):
		}
	}
}

// listAll reads every request of u through the API, page by page.
func listAll(ctx context.Context, base string, u *user) ([]requestView, error) {
	var all []requestView
	cursor := ""
	for range 10000 { // far above any scenario's page count
		path := "/v1/requests?limit=100"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var a apiAnswer
		for try := range 5 {
			if a = call(ctx, "GET", base+path, u.token, nil); a.status == http.StatusOK {
				break
			}
			time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
		}
		if a.status != http.StatusOK {
			return nil, fmt.Errorf("list requests of %s: %s", u.tag, a)
		}
		var page struct {
			Requests   []requestView `json:"requests"`
			NextCursor *string       `json:"next_cursor"`
		}
		if err := json.Unmarshal(a.body, &page); err != nil {
			return nil, fmt.Errorf("list requests of %s: %w", u.tag, err)
		}
		all = append(all, page.Requests...)
		if page.NextCursor == nil || len(page.Requests) == 0 {
			return all, nil
		}
		cursor = *page.NextCursor
	}
	return nil, errors.New("list requests: too many pages")
}

// getRequest reads one request of u.
func getRequest(ctx context.Context, base string, u *user, id string) (requestView, apiAnswer) {
	a := call(ctx, "GET", base+"/v1/requests/"+id, u.token, nil)
	var v requestView
	if a.status == http.StatusOK {
		_ = json.Unmarshal(a.body, &v)
	}
	return v, a
}

// sessionState is GET /v1/session.
type sessionState struct {
	State       string `json:"state"`
	Paused      bool   `json:"paused"`
	Policy      string `json:"policy"`
	QueueLength int    `json:"queue_length"`
	Running     *struct {
		ID string `json:"id"`
	} `json:"running"`
	Processed int64 `json:"processed"`
	Failed    int64 `json:"failed"`
}

func getSession(ctx context.Context, base string, u *user) (sessionState, apiAnswer) {
	a := call(ctx, "GET", base+"/v1/session", u.token, nil)
	var st sessionState
	if a.status == http.StatusOK {
		_ = json.Unmarshal(a.body, &st)
	}
	return st, a
}

// shortErr trims an error for a report line.
func shortErr(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
