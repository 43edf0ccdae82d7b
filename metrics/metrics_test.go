package metrics

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// gather registers c alone and returns its families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func TestTemporalHandler_CountersTimersAndGaugesBecomePrometheusSeries(t *testing.T) {
	c := newSDKCollector()
	root := sdkHandler{c: c}.WithTags(map[string]string{"namespace": "default", "client_name": "temporal_go"})
	poll := root.WithTags(map[string]string{"task_queue": "turnstile", "poller_type": "workflow_task"})

	poll.Counter("temporal_workflow_task_queue_poll_succeed").Inc(2)
	// The same name and tags again is the same series.
	poll.Counter("temporal_workflow_task_queue_poll_succeed").Inc(1)
	poll.Counter("temporal_workflow_task_queue_poll_succeed").Inc(-5) // ignored: counters only grow
	poll.Timer("temporal_workflow_task_execution_latency").Record(30 * time.Millisecond)
	poll.Timer("temporal_workflow_task_execution_latency").Record(2 * time.Second)
	root.Gauge("temporal_num_pollers").Update(4)
	// One name with two tag sets, as the SDK does for temporal_request.
	root.Counter("temporal_request").Inc(1)
	root.WithTags(map[string]string{"operation": "PollWorkflowTaskQueue"}).Counter("temporal_request").Inc(1)
	// A counter whose name already ends in _total keeps it once.
	root.Counter("temporal_local_activity_total").Inc(1)
	// A name without the prefix and with characters Prometheus refuses.
	root.WithTags(map[string]string{"le": "x", "bad-key": "v"}).Counter("custom.thing").Inc(1)

	fams := gather(t, c)
	polls := fams["temporal_workflow_task_queue_poll_succeed_total"]
	if polls.GetType() != dto.MetricType_COUNTER || len(polls.Metric) != 1 {
		t.Fatalf("poll counter family: %v", polls)
	}
	m := polls.Metric[0]
	if got := m.GetCounter().GetValue(); got != 3 {
		t.Errorf("poll counter = %v, want 3", got)
	}
	want := map[string]string{"namespace": "default", "client_name": "temporal_go", "task_queue": "turnstile", "poller_type": "workflow_task"}
	if got := labels(m); len(got) != len(want) {
		t.Errorf("labels %v, want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("label %s = %q, want %q", k, got[k], v)
			}
		}
	}

	lat := fams["temporal_workflow_task_execution_latency_seconds"]
	if lat.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("timer family: %v", lat)
	}
	h := lat.Metric[0].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 2.02 || h.GetSampleSum() > 2.04 {
		t.Errorf("timer histogram count %d sum %v, want 2 and 2.03", h.GetSampleCount(), h.GetSampleSum())
	}

	if g := fams["temporal_num_pollers"]; g.GetType() != dto.MetricType_GAUGE || g.Metric[0].GetGauge().GetValue() != 4 {
		t.Errorf("gauge family: %v", g)
	}
	if n := len(fams["temporal_request_total"].GetMetric()); n != 2 {
		t.Errorf("temporal_request_total has %d series, want 2 (two tag sets)", n)
	}
	if fams["temporal_local_activity_total"] == nil {
		t.Errorf("temporal_local_activity_total missing; families: %v", keys(fams))
	}
	custom := fams["temporal_custom_thing_total"]
	if custom == nil {
		t.Fatalf("sanitized name missing; families: %v", keys(fams))
	}
	if got := labels(custom.Metric[0]); got["tag_le"] != "x" || got["bad_key"] != "v" {
		t.Errorf("sanitized labels: %v", got)
	}
}

func TestTemporalHandler_AKindConflictIsDroppedNotAScrapeFailure(t *testing.T) {
	c := newSDKCollector()
	h := sdkHandler{c: c}
	h.Gauge("temporal_x_total").Update(1)
	h.Counter("temporal_x").Inc(1) // same Prometheus name, another kind
	fams := gather(t, c)
	if f := fams["temporal_x_total"]; f.GetType() != dto.MetricType_GAUGE || len(f.Metric) != 1 {
		t.Fatalf("family: %v", f)
	}
}

func TestTemporalHandler_ConcurrentUse(t *testing.T) {
	c := newSDKCollector()
	h := sdkHandler{c: c}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			tagged := h.WithTags(map[string]string{"worker": string(rune('a' + i%2))})
			for range 100 {
				tagged.Counter("temporal_c").Inc(1)
				tagged.Timer("temporal_t").Record(time.Millisecond)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			_ = testutil.CollectAndCount(c)
		}
	}()
	wg.Wait()
	<-done
	var total float64
	for _, m := range gather(t, c)["temporal_c_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	if total != 800 {
		t.Fatalf("counted %v, want 800", total)
	}
}

func keys(m map[string]*dto.MetricFamily) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// fakeClock is a settable now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestGauge(clock *fakeClock, wait time.Duration) *cachedGauge {
	g := newCachedGauge(prometheus.NewDesc("test_open", "test", nil, nil), 10*time.Second, wait, time.Second)
	g.now = clock.now
	return g
}

func TestCachedGauge_QueriesAtMostOncePerMaxAge(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	g := newTestGauge(clock, time.Second)
	if n := testutil.CollectAndCount(g); n != 0 {
		t.Fatalf("without a source the gauge exports %d series, want none", n)
	}
	var calls atomic.Int64
	g.setSource(func(context.Context) (float64, error) { return float64(calls.Add(1) * 10), nil })

	if got := testutil.ToFloat64(g); got != 10 {
		t.Fatalf("first scrape = %v, want 10 (it waits for the first count)", got)
	}
	clock.add(5 * time.Second)
	for range 5 {
		if got := testutil.ToFloat64(g); got != 10 {
			t.Fatalf("cached scrape = %v, want 10", got)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("source called %d times within maxAge, want 1", n)
	}
	clock.add(6 * time.Second)
	if got := testutil.ToFloat64(g); got != 20 {
		t.Fatalf("scrape after maxAge = %v, want 20", got)
	}
}

func TestCachedGauge_ASlowSourceDoesNotHoldTheScrape(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	g := newTestGauge(clock, 50*time.Millisecond)
	release := make(chan struct{})
	var calls atomic.Int64
	g.setSource(func(ctx context.Context) (float64, error) {
		calls.Add(1)
		select {
		case <-release:
			return 7, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	start := time.Now()
	if n := testutil.CollectAndCount(g); n != 0 {
		t.Fatalf("no value yet, but %d series", n)
	}
	if n := testutil.CollectAndCount(g); n != 0 {
		t.Fatalf("no value yet, but %d series", n)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("two scrapes took %v; a slow count must not hold them", d)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("source called %d times; scrapes during a refresh must share it", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for testutil.CollectAndCount(g) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow count never showed up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(g); got != 7 {
		t.Fatalf("value = %v, want 7", got)
	}
}

func TestCachedGauge_AFailedCountDropsTheValue(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	g := newTestGauge(clock, time.Second)
	var fail atomic.Bool
	g.setSource(func(context.Context) (float64, error) {
		if fail.Load() {
			return 0, errors.New("visibility unavailable")
		}
		return 3, nil
	})
	if got := testutil.ToFloat64(g); got != 3 {
		t.Fatalf("value = %v, want 3", got)
	}
	fail.Store(true)
	clock.add(11 * time.Second)
	if n := testutil.CollectAndCount(g); n != 0 {
		t.Fatalf("after a failed count the gauge still exports %d series; want a gap, not a stale value", n)
	}
	fail.Store(false)
	clock.add(11 * time.Second)
	if got := testutil.ToFloat64(g); got != 3 {
		t.Fatalf("value after recovery = %v, want 3", got)
	}
}

func TestHandler_ServesTurnstileAndRuntimeMetrics(t *testing.T) {
	HTTPRequest("/v1/requests/:id", "GET", 200, 15*time.Millisecond)
	RequestsSubmitted("echo", "echo")
	RequestStarted("echo", -time.Second) // clock skew must not make a negative wait
	RequestExecuted("echo", time.Millisecond)
	RequestFinished("echo", StatusSucceeded, 1)
	RequestCancelled("echo")
	TemporalHandler().Counter("temporal_test_counter").Inc(1)

	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	for _, want := range []string{
		`turnstile_http_requests_total{code="200",method="GET",route="/v1/requests/:id"}`,
		`turnstile_http_request_duration_seconds_count{method="GET",route="/v1/requests/:id"}`,
		`turnstile_requests_submitted_total{type="echo"} 2`,
		`turnstile_requests_started_total{type="echo"} 1`,
		`turnstile_request_queue_wait_seconds_sum{type="echo"} 0`,
		`turnstile_request_execution_seconds_count{type="echo"} 1`,
		`turnstile_requests_finished_total{status="succeeded",type="echo"} 1`,
		`turnstile_requests_finished_total{status="cancelled",type="echo"} 1`,
		`turnstile_request_attempts_count{type="echo"} 1`,
		`temporal_test_counter_total 1`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, body)
	}
}
