package metrics

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// temporalPrefix starts every SDK metric's name (the SDK's own names already
// do; a name that does not gets it).
const temporalPrefix = "temporal_"

// sdkTimerBuckets fit the SDK's timers: RPC and task latencies of
// milliseconds up to long polls of about a minute.
var sdkTimerBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// TemporalHandler returns a Temporal SDK metrics handler (for
// client.Options.MetricsHandler) that records into this package's registry,
// following Prometheus conventions as the SDK's tally adapter does: counters
// end in "_total", timers become histograms in seconds with a
// "_seconds" suffix, gauges keep their name. SDK tags become labels.
func TemporalHandler() client.MetricsHandler { return sdkHandler{c: sdk} }

// sdkHandler is one tag set of the SDK's metrics.
type sdkHandler struct {
	c    *sdkCollector
	tags prometheus.Labels
	sig  string // tags in a canonical form, part of a series' key
}

// WithTags implements client.MetricsHandler.
func (h sdkHandler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := make(prometheus.Labels, len(h.tags)+len(tags))
	maps.Copy(merged, h.tags)
	for k, v := range tags {
		merged[labelName(k)] = strings.ToValidUTF8(v, "?")
	}
	var sig strings.Builder
	for _, k := range slices.Sorted(maps.Keys(merged)) {
		sig.WriteString(k)
		sig.WriteByte('=')
		sig.WriteString(merged[k])
		sig.WriteByte(0)
	}
	return sdkHandler{c: h.c, tags: merged, sig: sig.String()}
}

// Counter implements client.MetricsHandler.
func (h sdkHandler) Counter(name string) client.MetricsCounter {
	name = metricName(name)
	if !strings.HasSuffix(name, "_total") { // temporal_local_activity_total
		name += "_total"
	}
	m, ok := h.c.series(name, kindCounter, h)
	if !ok {
		return client.MetricsNopHandler.Counter(name)
	}
	c := m.(prometheus.Counter)
	return counterFunc(func(d int64) {
		if d > 0 {
			c.Add(float64(d))
		}
	})
}

// Gauge implements client.MetricsHandler.
func (h sdkHandler) Gauge(name string) client.MetricsGauge {
	m, ok := h.c.series(metricName(name), kindGauge, h)
	if !ok {
		return client.MetricsNopHandler.Gauge(name)
	}
	return gaugeFunc(m.(prometheus.Gauge).Set)
}

// Timer implements client.MetricsHandler.
func (h sdkHandler) Timer(name string) client.MetricsTimer {
	m, ok := h.c.series(metricName(name)+"_seconds", kindTimer, h)
	if !ok {
		return client.MetricsNopHandler.Timer(name)
	}
	o := m.(prometheus.Observer)
	return timerFunc(func(d time.Duration) { o.Observe(d.Seconds()) })
}

type counterFunc func(int64)

func (f counterFunc) Inc(d int64) { f(d) }

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }

type kind int

const (
	kindCounter kind = iota + 1
	kindGauge
	kindTimer
)

// sdkCollector holds every series the SDK has used. The SDK gives one metric
// name different tag sets in different places, which a fixed-label
// prometheus vector cannot hold, so each series is its own metric with its
// tags as constant labels. It is an unchecked collector (it describes
// nothing up front), which lets one family hold several label sets.
type sdkCollector struct {
	mu     sync.Mutex
	kinds  map[string]kind // the kind a metric name was first used as
	byName map[string]prometheus.Collector
}

func newSDKCollector() *sdkCollector {
	return &sdkCollector{kinds: map[string]kind{}, byName: map[string]prometheus.Collector{}}
}

// series returns the series name{h.tags} of kind k, creating it on first
// use. A name already used as another kind yields false: a scrape must not
// fail over an inconsistent family.
func (c *sdkCollector) series(name string, k kind, h sdkHandler) (prometheus.Collector, bool) {
	key := name + "\x00" + h.sig
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.byName[key]; ok {
		return m, true
	}
	if prev, ok := c.kinds[name]; ok && prev != k {
		return nil, false
	}
	c.kinds[name] = k
	help := "Temporal Go SDK metric " + name + "."
	var m prometheus.Collector
	switch k {
	case kindCounter:
		m = prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: h.tags})
	case kindGauge:
		m = prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: h.tags})
	case kindTimer:
		m = prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: h.tags, Buckets: sdkTimerBuckets})
	}
	c.byName[key] = m
	return m, true
}

// Describe implements prometheus.Collector; it describes nothing, making
// this an unchecked collector.
func (c *sdkCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *sdkCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	all := slices.Collect(maps.Values(c.byName))
	c.mu.Unlock()
	for _, m := range all {
		m.Collect(ch)
	}
}

// metricName makes name a valid Prometheus name with the temporal_ prefix.
func metricName(name string) string {
	name = sanitize(name)
	if !strings.HasPrefix(name, temporalPrefix) {
		name = temporalPrefix + name
	}
	return name
}

// labelName makes k a valid Prometheus label name.
func labelName(k string) string {
	k = sanitize(k)
	// "le" and "quantile" are reserved for histogram and summary buckets.
	if k == "" || (k[0] >= '0' && k[0] <= '9') || strings.HasPrefix(k, "__") || k == "le" || k == "quantile" {
		k = "tag_" + k
	}
	return k
}

// sanitize replaces every character Prometheus does not allow in a name
// with an underscore.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, s)
}
