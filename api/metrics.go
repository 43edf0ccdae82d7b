package api

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/turnstile/turnstile/metrics"
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
