// Package metrics holds Turnstile's Prometheus metrics: one registry that the
// API's /metrics and the worker's metrics server both serve, the collectors
// the API and the activities update, the cached sessions-open gauge, and an
// adapter that turns the Temporal SDK's metrics into Prometheus series.
//
// No metric carries a per-user label: a label set grows with routes, request
// types, statuses and Temporal's own task queues and operations, never with
// users or requests.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Finished-request statuses, the values of the status label.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Bucket layouts. Queue waits range from milliseconds (an idle queue) to
// hours (a long queue behind slow calls); one attempt of a handler from
// microseconds (echo) to TURNSTILE_EXEC_TIMEOUT (5m by default).
var (
	httpBuckets      = prometheus.DefBuckets
	queueWaitBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	executionBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	attemptBuckets   = []float64{1, 2, 3, 4, 5, 7, 10, 15, 20}
	eventLagBuckets  = []float64{.01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2.5, 5, 10}
)

var (
	registry = prometheus.NewRegistry()

	httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_http_requests_total",
		Help: "API calls by route (the route pattern, \"unmatched\" for unknown paths), method and status code.",
	}, []string{"route", "method", "code"})
	httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnstile_http_request_duration_seconds",
		Help:    "API call latency by route and method.",
		Buckets: httpBuckets,
	}, []string{"route", "method"})

	submitted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_requests_submitted_total",
		Help: "Requests the API accepted (each request of a batch counts), by type.",
	}, []string{"type"})
	started = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_requests_started_total",
		Help: "Requests a worker moved from queued to running, by type.",
	}, []string{"type"})
	finished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_requests_finished_total",
		Help: "Requests that reached a final status (succeeded, failed, cancelled), by type.",
	}, []string{"type", "status"})
	queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnstile_request_queue_wait_seconds",
		Help:    "Time from a request's acceptance to its start, by type.",
		Buckets: queueWaitBuckets,
	}, []string{"type"})
	execution = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnstile_request_execution_seconds",
		Help:    "Duration of one attempt of a request's handler, by type.",
		Buckets: executionBuckets,
	}, []string{"type"})
	attempts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnstile_request_attempts",
		Help:    "Attempts a request took by the time it finished, by type.",
		Buckets: attemptBuckets,
	}, []string{"type"})

	deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_deliveries_total",
		Help: "Inbox deliveries signalled to sessions, by who sent them (api: right after acceptance; relay: found undelivered) and outcome (ok, error).",
	}, []string{"by", "outcome"})
	deliveredEntries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_delivered_entries_total",
		Help: "Inbox entries carried by successful deliveries, by who sent them.",
	}, []string{"by"})

	eventStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "turnstile_event_streams_open",
		Help: "Event streams (GET /v1/events) this API instance holds open.",
	})
	eventReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_event_documents_read_total",
		Help: "Documents the event streams and the request/session views got from the store, by what they were (queue: a user's queue document; requests: their requests; a read that found nothing is not counted).",
	}, []string{"read"})
	eventsSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnstile_events_sent_total",
		Help: "Events written to event streams, by kind (request, positions, session).",
	}, []string{"kind"})

	eventLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnstile_event_lag_seconds",
		Help:    "From a request's start or finish as it recorded it (started_at, finished_at: taken before the store write) to its event written to a stream, by what changed (started, finished); a client adds its network.",
		Buckets: eventLagBuckets,
	}, []string{"change"})

	sessionsOpen = newCachedGauge(prometheus.NewDesc("turnstile_sessions_open",
		"Open session workflows, from Temporal visibility (refreshed at most every 10s).", nil, nil),
		sessionsMaxAge, sessionsScrapeWait, sessionsCountTimeout)

	sdk = newSDKCollector()
)

// The sessions-open count is a visibility query: cache it so scrapes from
// several Prometheus servers cost one query per sessionsMaxAge, and never
// hold a scrape longer than sessionsScrapeWait (a slow count is reported by
// the next scrape instead).
const (
	sessionsMaxAge       = 10 * time.Second
	sessionsScrapeWait   = time.Second
	sessionsCountTimeout = 5 * time.Second
)

func init() {
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		httpRequests, httpDuration,
		submitted, started, finished, queueWait, execution, attempts,
		deliveries, deliveredEntries, eventStreams, eventReads, eventsSent, eventLag, sessionsOpen, sdk,
	)
}

// Registry is the registry every Turnstile metric is in.
func Registry() *prometheus.Registry { return registry }

// Handler serves the registry in the Prometheus text format. A collector
// that fails does not take the others down with it.
func Handler() http.Handler {
	return promhttp.HandlerFor(registry, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            registry,
		Timeout:             10 * time.Second,
		MaxRequestsInFlight: 4,
	})
}

// HTTPRequest records one API call. route must be a route pattern, never a
// raw path.
func HTTPRequest(route, method string, code int, d time.Duration) {
	httpRequests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
}

// RequestsSubmitted counts accepted requests, one per type given.
func RequestsSubmitted(types ...string) {
	for _, t := range types {
		submitted.WithLabelValues(t).Inc()
	}
}

// RequestStarted counts a request that starts running after waiting
// queueWait since it was accepted.
func RequestStarted(typ string, wait time.Duration) {
	started.WithLabelValues(typ).Inc()
	queueWait.WithLabelValues(typ).Observe(max(wait, 0).Seconds())
}

// RequestExecuted records one attempt of a request's handler.
func RequestExecuted(typ string, d time.Duration) {
	execution.WithLabelValues(typ).Observe(d.Seconds())
}

// RequestFinished counts a request a worker finished with status
// (succeeded or failed) after n attempts.
func RequestFinished(typ, status string, n int) {
	finished.WithLabelValues(typ, status).Inc()
	attempts.WithLabelValues(typ).Observe(float64(n))
}

// RequestCancelled counts a queued request cancelled through the API.
func RequestCancelled(typ string) {
	finished.WithLabelValues(typ, StatusCancelled).Inc()
}

// Delivered counts one delivery signal sent by by ("api" or "relay") and, if
// it succeeded, the entries it carried.
func Delivered(by string, entries int, err error) {
	if err != nil {
		deliveries.WithLabelValues(by, "error").Inc()
		return
	}
	deliveries.WithLabelValues(by, "ok").Inc()
	deliveredEntries.WithLabelValues(by).Add(float64(entries))
}

// Values of EventRead's read label.
const (
	ReadQueue    = "queue"
	ReadRequests = "requests"
)

// EventStreamOpened and EventStreamClosed track the open event streams.
func EventStreamOpened() { eventStreams.Inc() }

// EventStreamClosed: see EventStreamOpened.
func EventStreamClosed() { eventStreams.Dec() }

// EventRead counts n documents read from the store for the event streams or
// the views (read is ReadQueue or ReadRequests).
func EventRead(read string, n int) { eventReads.WithLabelValues(read).Add(float64(n)) }

// EventSent counts one event of kind written to a stream.
func EventSent(kind string) { eventsSent.WithLabelValues(kind).Inc() }

// EventLag records how long after its change (at, the request's own
// started_at or finished_at) an event went to a stream; change is
// "started" or "finished".
func EventLag(change string, at time.Time) {
	eventLag.WithLabelValues(change).Observe(time.Since(at).Seconds())
}
