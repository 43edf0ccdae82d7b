package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	_ "embed"

	"github.com/gin-gonic/gin"
)

func (s *server) handleGetSession() gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := backendCtx(c)
		defer cancel()
		st, err := s.sessionView(ctx, currentUser(c).ID)
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, st)
	}
}

func (s *server) handleCloseSession() gin.HandlerFunc {
	return func(c *gin.Context) {
		u := currentUser(c)
		if s.signalRateLimited(c, u.ID) {
			return
		}
		ctx, cancel := backendCtx(c)
		defer cancel()
		if err := s.closeSession(ctx, u.ID); err != nil {
			fail(c, fmt.Errorf("close session: %w", err))
			return
		}
		st, err := s.sessionView(ctx, u.ID)
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusAccepted, st)
	}
}

func (s *server) handleHealthz() gin.HandlerFunc {
	return func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }
}

// readinessTimeout bounds each dependency check of /readyz.
const readinessTimeout = 2 * time.Second

func (s *server) handleReadyz() gin.HandlerFunc {
	return func(c *gin.Context) {
		check := func(ping func(context.Context) error) string {
			ctx, cancel := context.WithTimeout(c.Request.Context(), readinessTimeout)
			defer cancel()
			if err := ping(ctx); err != nil {
				_ = c.Error(err)
				return "unavailable"
			}
			return "ok"
		}
		checks := gin.H{"mongodb": check(s.store.Ping), "temporal": check(s.sessions.Ping)}
		status := http.StatusOK
		if checks["mongodb"] != "ok" || checks["temporal"] != "ok" {
			status = http.StatusServiceUnavailable
		}
		c.JSON(status, gin.H{"status": http.StatusText(status), "checks": checks})
	}
}

//go:embed openapi.yaml
var openAPISpec []byte

func (s *server) handleOpenAPI() gin.HandlerFunc {
	return func(c *gin.Context) { c.Data(http.StatusOK, "application/yaml", openAPISpec) }
}

// closeSession closes userID's session once it holds every request
// accepted so far (deliveries are asynchronous: a close must not overtake
// them).
func (s *server) closeSession(ctx context.Context, userID string) error {
	through, err := s.inbox.Tail(ctx, userID)
	if err != nil {
		return err
	}
	s.inbox.Flush(userID) // entries held for a busy session go now
	if err := s.sessions.Close(ctx, userID, through); err != nil {
		return err
	}
	// Event streams tell the session closing from this mark and read the
	// session's state again: best effort (a stream also reads it now and
	// then), and off the answer's path.
	go func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backendTimeout)
		defer cancel()
		_ = s.store.Queues.Closing(tctx, userID, through, s.now())
	}()
	return nil
}
