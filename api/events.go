package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/auth"
	"github.com/turnstile/turnstile/events"
	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store"
)

// Defaults of the event streams.
const (
	DefaultMaxStreams = 4
	// DefaultStreamHeartbeat keeps proxies from closing a quiet stream
	// (most close after 60 s without a byte).
	DefaultStreamHeartbeat = 15 * time.Second
	// streamAuthRecheck is how often a stream checks that its user may
	// still read: a logout or a disable ends it within this.
	streamAuthRecheck = 5 * time.Second
)

// eventSource is the store as a watcher reads it.
type eventSource struct{ st *store.Store }

func (e eventSource) Queue(ctx context.Context, userID string) (store.Queue, error) {
	metrics.EventRead(metrics.ReadQueue, 1)
	return e.st.Queues.Get(ctx, userID)
}

func (e eventSource) Window(ctx context.Context, userID string, from, hint int64, limit int) ([]store.Placed, int64, error) {
	placed, top, err := e.st.Requests.Window(ctx, userID, from, hint, limit)
	metrics.EventRead(metrics.ReadRequests, len(placed))
	return placed, top, err
}

// streams counts each user's open event streams on this instance.
type streams struct {
	mu   sync.Mutex
	open map[string]int
	max  int
}

func (s *streams) acquire(userID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[userID] >= s.max {
		return false
	}
	s.open[userID]++
	return true
}

func (s *streams) release(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[userID]--; s.open[userID] <= 0 {
		delete(s.open, userID)
	}
}

// Why a stream ends, sent as its last event.
const (
	endTokenExpired = "token_expired"
	endTokenRevoked = "token_revoked"
)

func (s *server) handleEvents() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		claims := c.MustGet(ctxClaims).(auth.Claims)
		var from *events.Cursor
		if id := c.GetHeader("Last-Event-ID"); id != "" {
			cur, ok := events.ParseCursor(id)
			if !ok {
				fail(c, errBadRequest("invalid_last_event_id", "Last-Event-ID is not an ID this stream sent"))
				return
			}
			from = &cur
		}
		if !s.streams.acquire(u.ID) {
			c.Header("Retry-After", "5")
			fail(c, apiError{http.StatusTooManyRequests, "too_many_streams",
				fmt.Sprintf("at most %d open event streams per user", s.cfg.MaxStreams)})
			return
		}
		defer s.streams.release(u.ID)
		metrics.EventStreamOpened()
		defer metrics.EventStreamClosed()

		ctx, cancel := context.WithCancelCause(c.Request.Context())
		defer cancel(nil)
		if exp := claims.ExpiresAt; exp != nil {
			t := time.AfterFunc(time.Until(exp.Time), func() { cancel(errors.New(endTokenExpired)) })
			defer t.Stop()
		}
		go s.recheckStreamAuth(ctx, cancel, u.ID, claims.Issued())

		// A stream outlives the server's write timeout.
		_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
		h := c.Writer.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
		c.Status(http.StatusOK)
		c.Writer.Flush()

		var mu sync.Mutex // the watcher and the heartbeat both write
		write := func(b []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if _, err := c.Writer.Write(b); err != nil {
				return err
			}
			c.Writer.Flush()
			return nil
		}
		go func() {
			t := time.NewTicker(s.cfg.StreamHeartbeat)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if write([]byte(": heartbeat\n\n")) != nil {
						cancel(nil)
						return
					}
				}
			}
		}()

		ecfg := s.cfg.Events
		ecfg.Hub = s.hub
		w := events.NewWatcher(ecfg, eventSource{s.store}, s.streamSession, u.ID)
		var lag lagClock
		err := w.Run(ctx, from, func(e events.Event) error {
			frame, err := sseFrame(e)
			if err != nil {
				return err
			}
			metrics.EventSent(e.Kind)
			err = write(frame)
			if change, at, ok := lag.observe(e); ok && err == nil {
				metrics.EventLag(change, at)
			}
			return err
		})
		if reason := context.Cause(ctx); reason != nil && !errors.Is(reason, context.Canceled) {
			_ = write(endFrame(reason.Error()))
		} else if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("event stream ended", "user_id", u.ID, "err", err)
			_ = write(endFrame("unavailable"))
		}
	}
}

// lagClock times a stream's live events against the changes they tell
// of: a request's finish, or its start. The start of a run is timed once:
// a running event for a retry of it carries the run's first started_at,
// and it or the state sent when a stream starts or resumes (not live) is
// not a change the clock can time. A user's requests run one at a time,
// so the clock keeps one request ID: the one it last saw running.
type lagClock struct{ running string }

// observe returns the change e tells of and when the worker recorded it;
// ok is false when e is not one to time.
func (c *lagClock) observe(e events.Event) (change string, at time.Time, ok bool) {
	r := e.Request
	if r == nil {
		return "", time.Time{}, false
	}
	if r.Status != models.StatusRunning {
		if r.ID == c.running {
			c.running = ""
		}
		if e.Live && r.Status.Final() && r.FinishedAt != nil {
			return "finished", *r.FinishedAt, true
		}
		return "", time.Time{}, false
	}
	again := r.ID == c.running
	c.running = r.ID
	if !e.Live || again || r.StartedAt == nil {
		return "", time.Time{}, false
	}
	return "started", *r.StartedAt, true
}

// recheckStreamAuth ends the stream (cancel) once its user is disabled or
// deleted or logged out after the token was issued.
func (s *server) recheckStreamAuth(ctx context.Context, cancel context.CancelCauseFunc, userID string, issued time.Time) {
	t := time.NewTicker(streamAuthRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, rcancel := context.WithTimeout(ctx, backendTimeout)
			u, err := s.store.Users.ByID(rctx, userID)
			rcancel()
			if errors.Is(err, store.ErrNotFound) || (err == nil && accessEnded(u, issued) != "") {
				cancel(errors.New(endTokenRevoked))
				return
			}
		}
	}
}

// sseFrame is e in the text/event-stream format.
func sseFrame(e events.Event) ([]byte, error) {
	var data any
	switch e.Kind {
	case events.KindRequest:
		v := viewOf(e.Request, e.Position)
		v.ETA = e.ETA
		data = v
	case events.KindPositions:
		data = gin.H{"positions": e.Positions}
	case events.KindSession:
		data = sessionEvent(*e.Session)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", e.Kind, err)
	}
	return fmt.Appendf(nil, "id: %s\nevent: %s\ndata: %s\n\n", e.ID, e.Kind, b), nil
}

// sessionEvent is the data of a session event: its state and steering
// (the request events carry the queue and the running request).
func sessionEvent(st models.SessionState) gin.H {
	return gin.H{"state": st.State, "paused": st.Paused, "policy": st.Policy}
}

// streamSession is the session's state as the event streams tell it,
// without the state query (a workflow task for Temporal and the worker on
// every read; 200 streams made those queries many-users' bottleneck):
// whether a run is open and its Paused attribute (Describe, which the
// server answers alone), and from the user's queue document the stored
// steering and whether a close covers everything accepted (closing: the
// run drains, then ends). A session closing because it sat idle shows open
// until its run ends.
func (s *server) streamSession(ctx context.Context, userID string) (models.SessionState, error) {
	running, paused, err := s.sessions.Running(ctx, userID)
	if err != nil {
		return models.SessionState{}, fmt.Errorf("session state: %w", err)
	}
	q, err := s.store.Queues.Get(ctx, userID)
	if err != nil {
		return models.SessionState{}, fmt.Errorf("session steering: %w", err)
	}
	st := models.SessionState{UserID: userID, State: models.SessionClosed, Paused: q.Paused, Policy: models.PolicyContinue}
	if q.Policy.Valid() {
		st.Policy = q.Policy
	}
	if running {
		st.State, st.Paused = models.SessionOpen, paused
		if q.Closing > 0 && q.Closing >= q.Tail {
			st.State = models.SessionClosing
		}
	}
	return st, nil
}

func endFrame(reason string) []byte {
	return fmt.Appendf(nil, "event: end\ndata: {\"reason\":%q}\n\n", reason)
}
