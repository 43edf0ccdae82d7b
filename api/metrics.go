package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/metrics"
	"github.com/turnstile/turnstile/models"
)

// unmatchedRoute labels calls to paths no route matches: the raw path would
// let any client mint new series.
const unmatchedRoute = "unmatched"

// knownMethods are the methods that get their own label value; anything else
// a client sends is "other", for the same reason.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// measure records every API call's route, method, status and latency. It
// runs first, so it sees the status a panic or an oversized body produced.
func measure() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = unmatchedRoute
		}
		method := c.Request.Method
		if !knownMethods[method] {
			method = "other"
		}
		metrics.HTTPRequest(route, method, c.Writer.Status(), time.Since(start))
	}
}

// handleMetrics serves the process's Prometheus metrics: the API's, and in a
// process that also runs a worker (turnstile dev, the tests) the worker's.
func handleMetrics() gin.HandlerFunc { return gin.WrapH(metrics.Handler()) }

// CountSubmissions returns s with every request it delivers to a session
// counted in turnstile_requests_submitted_total. Submit returns nil only once
// Temporal has recorded the signal, which is when the API accepts (202) a
// submission. A submission replayed by its Idempotency-Key while its
// requests are still queued is delivered, and so counted, again.
func CountSubmissions(s Sessions) Sessions { return countingSessions{s} }

type countingSessions struct{ Sessions }

func (s countingSessions) Submit(ctx context.Context, userID string, reqs []models.QueuedRequest) error {
	if err := s.Sessions.Submit(ctx, userID, reqs); err != nil {
		return err
	}
	for _, r := range reqs {
		metrics.RequestsSubmitted(r.Type)
	}
	return nil
}
