package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/inbox"
	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// Limits of the request routes. The page size limit is configurable
// (Config.MaxPageSize); maxPageSize is its default.
const (
	maxTypeLen        = 64
	maxIdempotencyKey = 255
	defaultPageSize   = 20
	maxPageSize       = 100
)

// submitItem is one request as a client submits it. Nothing else can be set:
// owner, status and attempts are the server's.
type submitItem struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// requestView is a request as a client reads it.
type requestView struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Payload  json.RawMessage `json:"payload"`
	Status   models.Status   `json:"status"`
	Position *int            `json:"position"`
	// ETA: a waiting request's estimated start, a running one's estimated
	// finish (events and GET /v1/requests/:id).
	ETA        *time.Time      `json:"eta,omitempty"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result"`
	Error      *string         `json:"error"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

func viewOf(r *models.Request, position int) requestView {
	v := requestView{
		ID: r.ID, Type: r.Type, Payload: rawOrNull(r.Payload), Status: r.Status, Attempts: r.Attempts,
		Result: rawOrNull(r.Result), EnqueuedAt: r.EnqueuedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}
	if position > 0 && r.Status == models.StatusQueued {
		v.Position = &position
	}
	if r.Error != "" {
		v.Error = &r.Error
	}
	return v
}

func rawOrNull(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// idempotencyKey reads and checks the Idempotency-Key header.
func idempotencyKey(c *gin.Context) (string, error) {
	return parseIdempotencyKey(c.GetHeader("Idempotency-Key"))
}

// parseIdempotencyKey checks an Idempotency-Key value: "" (none) or 1 to
// maxIdempotencyKey printable ASCII characters without spaces.
func parseIdempotencyKey(key string) (string, error) {
	if key == "" {
		return "", nil
	}
	if len(key) > maxIdempotencyKey {
		return "", errBadRequest("invalid_idempotency_key", fmt.Sprintf("Idempotency-Key is longer than %d characters", maxIdempotencyKey))
	}
	for _, ch := range []byte(key) {
		if ch < 0x21 || ch > 0x7e {
			return "", errBadRequest("invalid_idempotency_key", "Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return key, nil
}

// executionHeader picks a submission's execution path: "default" (or
// absent) or "naive", the straightforward one-activity-per-request path the
// benchmark compares against; naive only where Config.AllowNaive.
const executionHeader = "Turnstile-Execution"

func (s *server) executionMode(c *gin.Context) (naive bool, err error) {
	switch c.GetHeader(executionHeader) {
	case "", "default":
		return false, nil
	case "naive":
		if !s.cfg.AllowNaive {
			return false, errBadRequest("invalid_execution", executionHeader+": naive is not enabled on this server (TURNSTILE_BENCH_MODES)")
		}
		return true, nil
	default:
		return false, errBadRequest("invalid_execution", executionHeader+" must be default or naive")
	}
}

// validate checks one item and returns its compacted payload.
func (s *server) validate(it submitItem) (string, error) {
	if it.Type == "" || len(it.Type) > maxTypeLen {
		return "", errBadRequest("invalid_type", "type is required (at most 64 characters)")
	}
	payload := it.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, payload); err != nil {
		return "", errBadRequest("invalid_payload", "payload is not valid JSON")
	}
	if buf.Len() > s.cfg.MaxPayloadBytes {
		return "", apiError{http.StatusRequestEntityTooLarge, "payload_too_large",
			fmt.Sprintf("payload is larger than %d bytes", s.cfg.MaxPayloadBytes)}
	}
	if err := s.cfg.Types.Validate(it.Type, buf.Bytes()); errors.Is(err, activities.ErrUnknownType) {
		return "", errBadRequest("unknown_type", err.Error())
	} else if err != nil {
		return "", errBadRequest("invalid_payload", err.Error())
	}
	return buf.String(), nil
}

// submit validates items and accepts them as one unit through the inbox:
// all are accepted in order or none is. It returns the requests and the
// position of the first. replayed is true when an earlier submission with
// the same idempotency key is returned instead.
func (s *server) submit(c *gin.Context, items []submitItem) (reqs []models.Request, firstPos int, replayed bool, err error) {
	u := currentUser(c)
	key, err := idempotencyKey(c)
	if err != nil {
		return nil, 0, false, err
	}
	naive, err := s.executionMode(c)
	if err != nil {
		return nil, 0, false, err
	}
	sub := inbox.Submission{UserID: u.ID, Key: key, Naive: naive, Items: make([]inbox.Item, len(items))}
	for i, it := range items {
		payload, err := s.validate(it)
		if err != nil {
			if len(items) > 1 {
				err = prefixError(err, fmt.Sprintf("requests[%d]: ", i))
			}
			return nil, 0, false, err
		}
		sub.Items[i] = inbox.Item{Type: it.Type, Payload: payload}
	}
	// Once validated, finish the commit even if the client goes away, so
	// the outcome is all or nothing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), backendTimeout)
	defer cancel()
	acc, err := s.inbox.Submit(ctx, sub)
	var full *inbox.QueueFullError
	switch {
	case errors.As(err, &full):
		secs := int(s.cfg.QueueFullRetryAfter.Round(time.Second) / time.Second)
		c.Header("Retry-After", strconv.Itoa(max(secs, 1)))
		return nil, 0, false, apiError{http.StatusTooManyRequests, "queue_full", full.Error()}
	case errors.Is(err, inbox.ErrKeyReused):
		return nil, 0, false, errConflict("idempotency_key_reused", "Idempotency-Key was used for a different submission")
	case errors.Is(err, inbox.ErrKeyInUse):
		return nil, 0, false, errConflict("idempotency_key_in_use", "a submission with this Idempotency-Key is in progress; retry")
	case err != nil:
		return nil, 0, false, err
	}
	c.Set("request_id", acc.Requests[0].ID)
	c.Set("workflow_id", models.SessionWorkflowID(u.ID))
	return acc.Requests, acc.Position, acc.Replayed, nil
}

func prefixError(err error, prefix string) error {
	var ae apiError
	if errors.As(err, &ae) {
		ae.Message = prefix + ae.Message
		return ae
	}
	return err
}

func (s *server) handleSubmit() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.submitRateLimited(c) {
			return
		}
		var in submitItem
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		reqs, pos, _, err := s.submit(c, []submitItem{in})
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusAccepted, viewOf(&reqs[0], pos))
		s.afterAccept(c)
	}
}

func (s *server) handleSubmitBatch() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.submitRateLimited(c) {
			return
		}
		var in struct {
			Requests []submitItem `json:"requests"`
		}
		if err := decodeJSON(c, &in); err != nil {
			fail(c, err)
			return
		}
		if len(in.Requests) == 0 || len(in.Requests) > s.cfg.MaxBatch {
			fail(c, errBadRequest("invalid_batch", fmt.Sprintf("requests must hold 1 to %d items", s.cfg.MaxBatch)))
			return
		}
		reqs, pos, _, err := s.submit(c, in.Requests)
		if err != nil {
			fail(c, err)
			return
		}
		out := make([]requestView, len(reqs))
		for i := range reqs {
			p := 0
			if pos > 0 {
				p = pos + i
			}
			out[i] = viewOf(&reqs[i], p)
		}
		c.JSON(http.StatusAccepted, gin.H{"requests": out})
		s.afterAccept(c)
	}
}

// afterAccept runs the fault-injection hook, if any, once the 202 is on the
// wire.
func (s *server) afterAccept(c *gin.Context) {
	if s.cfg.AfterAccept != nil {
		c.Writer.Flush()
		s.cfg.AfterAccept()
	}
}

// view is r as GET answers it: a waiting request with its position and
// estimated start, the running one with its estimated finish. Both come
// from the user's sequence in the store, the order their session runs them
// in, as the user's view follows it (events.Views: a poll reads the queue
// document and what moved since), not from a query of the session: polling
// a request costs Temporal nothing. A request beyond the view's window
// gets the position its sequence number gives (an upper bound: cancelled
// ones ahead count until their session passes them) and no ETA.
func (s *server) view(ctx context.Context, r *models.Request) requestView {
	if r.Status != models.StatusQueued && r.Status != models.StatusRunning {
		return viewOf(r, 0)
	}
	est, q, err := s.views.Estimates(ctx, r.UserID)
	if err != nil {
		return viewOf(r, 0)
	}
	// The view may have read the request after r, or before: its estimate
	// counts only if it agrees that r waits (a position) or runs (0).
	if e, ok := est[r.ID]; ok && (e.Position == 0) == (r.Status == models.StatusRunning) {
		v := viewOf(r, e.Position)
		v.ETA = &e.ETA
		return v
	}
	if r.Status != models.StatusQueued || r.Seq == 0 {
		return viewOf(r, 0)
	}
	return viewOf(r, q.Position(r.Seq))
}

func (s *server) handleGetRequest() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.ownRequest(ctx, u.ID, c.Param("id"))
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, s.view(ctx, r))
	}
}

func (s *server) handleListRequests() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		status := models.Status(c.Query("status"))
		if status != "" && !status.Valid() {
			fail(c, errBadRequest("invalid_status", "status must be one of queued, running, succeeded, failed, cancelled"))
			return
		}
		limit, err := s.listLimit(c)
		if err != nil {
			fail(c, err)
			return
		}
		before, err := decodeCursor(c.Query("cursor"))
		if err != nil {
			fail(c, err)
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		if before != "" {
			owner, _, ok := models.ParseRequestID(before)
			if !ok || owner != u.ID {
				fail(c, errBadRequest("invalid_cursor", "cursor is not one this API returned"))
				return
			}
		}
		q, err := s.store.Queues.Get(ctx, u.ID)
		if err != nil {
			fail(c, fmt.Errorf("list requests: %w", err))
			return
		}
		_, beforeSeq, _ := models.ParseRequestID(before)
		reqs, nextSeq, err := s.store.Requests.ListOwn(ctx, q, status, limit, beforeSeq)
		if err != nil {
			fail(c, fmt.Errorf("list requests: %w", err))
			return
		}
		out := make([]requestView, len(reqs))
		for i := range reqs {
			out[i] = viewOf(&reqs[i], 0)
		}
		var next *string
		if nextSeq > 0 {
			cur := encodeCursor(models.RequestID(u.ID, nextSeq))
			next = &cur
		}
		c.JSON(http.StatusOK, gin.H{"requests": out, "next_cursor": next})
	}
}

// listLimit reads ?limit=: 1 to MaxPageSize, default defaultPageSize (or
// MaxPageSize when that is smaller).
func (s *server) listLimit(c *gin.Context) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return min(defaultPageSize, s.cfg.MaxPageSize), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > s.cfg.MaxPageSize {
		return 0, errBadRequest("invalid_limit", fmt.Sprintf("limit must be 1 to %d", s.cfg.MaxPageSize))
	}
	return n, nil
}

// Cursors are opaque to clients: the last request ID of a page, encoded.
func encodeCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeCursor(cur string) (string, error) {
	if cur == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cur)
	if err != nil {
		return "", errBadRequest("invalid_cursor", "cursor is not one this API returned")
	}
	if _, _, ok := models.ParseRequestID(string(raw)); !ok {
		return "", errBadRequest("invalid_cursor", "cursor is not one this API returned")
	}
	return string(raw), nil
}

func (s *server) handleCancelRequest() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.signalRateLimited(c, currentUser(c).ID) {
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.cancelQueued(ctx, currentUser(c).ID, c.Param("id"))
		if err != nil {
			fail(c, err)
			return
		}
		c.Set("request_id", r.ID)
		c.JSON(http.StatusOK, viewOf(r, 0))
	}
}

// ownRequest is userID's request id; anyone else's is 404, like a missing one.
func (s *server) ownRequest(ctx context.Context, userID, id string) (*models.Request, error) {
	r, err := s.store.Requests.Get(ctx, userID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound("no such request")
	} else if err != nil {
		return nil, fmt.Errorf("get request: %w", err)
	}
	return r, nil
}

func (s *server) handleRequeueRequest() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		if s.signalRateLimited(c, u.ID) {
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		r, err := s.ownRequest(ctx, u.ID, c.Param("id"))
		if err != nil {
			fail(c, err)
			return
		}
		if r, err = s.requeue(ctx, r); err != nil {
			fail(c, err)
			return
		}
		c.Set("request_id", r.ID)
		c.JSON(http.StatusAccepted, viewOf(r, 0))
	}
}

func (s *server) handleListTypes() gin.HandlerFunc {
	return func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"types": s.cfg.Types.Types()}) }
}

// cancelQueued cancels userID's queued request id.
func (s *server) cancelQueued(ctx context.Context, userID, id string) (*models.Request, error) {
	r, err := s.store.Requests.CancelQueued(ctx, userID, id, s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errNotFound("no such request")
	case errors.Is(err, store.ErrConflict):
		return nil, errConflict("not_queued", "only a queued request can be cancelled; this one is running or finished")
	case err != nil:
		return nil, fmt.Errorf("cancel request: %w", err)
	}
	metrics.RequestCancelled(r.Type)
	// MongoDB now says cancelled, which the session checks before it starts
	// a request; the signal only tidies its queue.
	if err := s.sessions.Cancel(ctx, userID, r.ID); err != nil {
		// Also when the session is busy (ErrSessionBusy): the cancel
		// stands all the same.
		s.log.Warn("cancel signal not sent; the session will skip the request when it reaches it",
			"request_id", r.ID, "user_id", userID, "error", err)
	}
	return r, nil
}
