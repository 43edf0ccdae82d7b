package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// dashboardFile is the Grafana dashboard docker/compose.yaml provisions.
const dashboardFile = "../docker/grafana/dashboards/turnstile.json"

// metricContract is the fixed list of Turnstile's own metrics: the dashboard
// must chart every one and the API must export each with this type and
// exactly these labels.
var metricContract = map[string]struct {
	typ    string
	labels []string
}{
	"turnstile_http_requests_total":           {"counter", []string{"code", "method", "route"}},
	"turnstile_http_request_duration_seconds": {"histogram", []string{"method", "route"}},
	"turnstile_requests_submitted_total":      {"counter", []string{"type"}},
	"turnstile_requests_started_total":        {"counter", []string{"type"}},
	"turnstile_requests_finished_total":       {"counter", []string{"status", "type"}},
	"turnstile_request_queue_wait_seconds":    {"histogram", []string{"type"}},
	"turnstile_request_execution_seconds":     {"histogram", []string{"type"}},
	"turnstile_request_attempts":              {"histogram", []string{"type"}},
	"turnstile_sessions_open":                 {"gauge", nil},
	"turnstile_event_streams_open":            {"gauge", nil},
	"turnstile_events_sent_total":             {"counter", []string{"kind"}},
	"turnstile_event_documents_read_total":    {"counter", []string{"read"}},
	"turnstile_event_lag_seconds":             {"histogram", []string{"change"}},
}

// prometheusMade are series Prometheus itself adds for each target; no
// process exports them.
var prometheusMade = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// targetLabels are labels Prometheus attaches at scrape time.
var targetLabels = map[string]bool{"job": true, "instance": true}

func TestDashboard_EveryQueriedMetricIsExported(t *testing.T) {
	uses := dashboardMetricUses(t)
	if len(uses) == 0 {
		t.Fatal("found no metrics in the dashboard")
	}

	// Make every series move: submissions, starts, finishes, waits,
	// executions, attempts, sessions, HTTP calls,
	// and an event stream that sees them happen (events, lag, reads).
	c := newUser(t)
	st := c.openStream("")
	defer st.close()
	a := c.submit("echo", map[string]string{"dashboard": "one"})
	b := c.submit("echo", map[string]string{"dashboard": "two"})
	c.waitFinal(a.ID, b.ID)
	st.until(20*time.Second, func(e sse, r request) bool {
		return e.kind == "request" && r.ID == b.ID && r.Status == "succeeded"
	})
	c.mustDo("GET", "/v1/session", nil, 200, nil)

	// Recording a metric can trail the MongoDB write the test waited for.
	var exp exposition
	var missing []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		exp = scrape(t, shared.base+"/metrics")
		missing = missing[:0]
		for name := range uses {
			if !exp.samples[name] && !prometheusMade[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("the dashboard queries %s (panels: %s), but %s/metrics exports no such series", name, strings.Join(uses[name].panels, "; "), shared.base)
	}

	// Labels a panel selects or groups by exist on the series it reads.
	for name, u := range uses {
		if prometheusMade[name] || !exp.samples[name] {
			continue
		}
		fam := exp.family(name)
		for l, panels := range u.labels {
			if l != "le" && !targetLabels[l] && !exp.labels[fam][l] {
				t.Errorf("the dashboard uses label %q of %s (panels: %s); exported labels are %v", l, name, strings.Join(panels, "; "), keys(exp.labels[fam]))
			}
		}
		if strings.HasSuffix(name, "_bucket") && exp.types[fam] != "histogram" {
			t.Errorf("the dashboard reads %s as a histogram, but %s is a %s", name, fam, exp.types[fam])
		}
	}

	// Every contract metric is charted, and exported as agreed.
	charted := map[string]bool{}
	for name := range uses {
		charted[exp.family(name)] = true
	}
	for name, want := range metricContract {
		if !charted[name] {
			t.Errorf("contract metric %s is on no dashboard panel", name)
		}
		if got := exp.types[name]; got != want.typ {
			t.Errorf("%s is exported as %q, want %s", name, got, want.typ)
			continue
		}
		got := keys(exp.labels[name])
		got = slices.DeleteFunc(got, func(l string) bool { return l == "le" })
		if !slices.Equal(got, want.labels) {
			t.Errorf("%s has labels %v, want %v", name, got, want.labels)
		}
	}

	// The Temporal SDK's series, for whoever adds SDK panels next.
	var sdk []string
	for fam, typ := range exp.types {
		if strings.HasPrefix(fam, "temporal_") {
			sdk = append(sdk, fam+" ("+typ+")")
		}
	}
	sort.Strings(sdk)
	t.Logf("Temporal SDK metric families exported: %d\n  %s", len(sdk), strings.Join(sdk, "\n  "))
}

// TestDashboard_MetricExtraction pins the PromQL scan the dashboard test uses.
func TestDashboard_MetricExtraction(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (route, code) (rate(turnstile_http_requests_total{code=~"5..", route!="x"}[$__rate_interval]))`: `turnstile_http_requests_total[code route]`,
		`histogram_quantile(0.95, sum by (le) (rate(a_bucket{type=~"$type"}[5m]))) / clamp_min(b_count, 1e-9)`:  `a_bucket[le type] b_count[le]`,
		`count(up{job="turnstile-worker"} == 1) offset 1h30m - 1-x`:                                             `up[job] x[]`,
		`sum(rate(x_total[1h] @ end())) without (instance) > bool 0`:                                            `x_total[instance]`,
		`max(turnstile_sessions_open) and on(job) group_left(instance) foo`:                                     `foo[instance job] turnstile_sessions_open[instance job]`,
	} {
		var got []string
		uses, err := promqlMetrics(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		for _, name := range slices.Sorted(maps.Keys(uses)) {
			got = append(got, fmt.Sprintf("%s%v", name, keys(uses[name])))
		}
		if strings.Join(got, " ") != want {
			t.Errorf("promqlMetrics(%s) = %s, want %s", expr, strings.Join(got, " "), want)
		}
	}
	if _, err := promqlMetrics(`{__name__=~"turnstile_.*"}`); err == nil {
		t.Error("a selector without a metric name was accepted")
	}
}

// metricUse is how the dashboard uses one metric name.
type metricUse struct {
	panels []string
	labels map[string][]string // label → panels that select or group by it
}

// dashboardMetricUses reads every PromQL expression and label_values()
// variable query of the dashboard, including rows' nested panels.
func dashboardMetricUses(t *testing.T) map[string]*metricUse {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	uses := map[string]*metricUse{}
	add := func(where, name string, labels map[string]bool) {
		u := uses[name]
		if u == nil {
			u = &metricUse{labels: map[string][]string{}}
			uses[name] = u
		}
		for l := range labels {
			if !slices.Contains(u.labels[l], where) {
				u.labels[l] = append(u.labels[l], where)
			}
		}
		if !slices.Contains(u.panels, where) {
			u.panels = append(u.panels, where)
		}
	}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				found, err := promqlMetrics(tg.Expr)
				if err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
				}
				for name, labels := range found {
					add(p.Title, name, labels)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
	for _, v := range d.Templating.List {
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older plain-string form
		}
		if q.Query == "" {
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
			continue
		}
		add("variable $"+v.Name, m[1], map[string]bool{m[2]: true})
	}
	return uses
}

// promqlKeywords are words of PromQL that are not metric names when they are
// not followed by "(".
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true,
	"atan2": true,
	// Aggregations may put their grouping before the parenthesis: sum by (x) (…).
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlMetrics returns the metric names a PromQL expression selects, each
// with the labels it matches on or groups by. It is a scanner, not a parser:
// strings, range and subquery brackets and Grafana variables are skipped;
// an identifier followed by "(" is a function or aggregation; grouping
// labels (by, without, on, ignoring, group_left, group_right) count for every
// metric of the expression.
func promqlMetrics(expr string) (map[string]map[string]bool, error) {
	tokens := promqlTokens(expr)
	out := map[string]map[string]bool{}
	var grouping []string
	for i := 0; i < len(tokens); i++ {
		tok := tokens[i]
		next := ""
		if i+1 < len(tokens) {
			next = tokens[i+1]
		}
		switch {
		case tok == "{":
			return nil, fmt.Errorf("%q: a selector without a metric name", expr)
		case !isIdent(tok):
		case tok == "by" || tok == "without" || tok == "on" || tok == "ignoring" || tok == "group_left" || tok == "group_right":
			if next != "(" {
				continue
			}
			for i += 2; i < len(tokens) && tokens[i] != ")"; i++ {
				if isIdent(tokens[i]) {
					grouping = append(grouping, tokens[i])
				}
			}
		case next == "(" || promqlKeywords[strings.ToLower(tok)]:
		default:
			labels := out[tok]
			if labels == nil {
				labels = map[string]bool{}
				out[tok] = labels
			}
			if next != "{" {
				continue
			}
			for i += 2; i < len(tokens) && tokens[i] != "}"; i++ {
				if isIdent(tokens[i]) && i+1 < len(tokens) && slices.Contains([]string{"=", "!=", "=~", "!~"}, tokens[i+1]) {
					labels[tokens[i]] = true
				}
			}
		}
	}
	for _, labels := range out {
		for _, l := range grouping {
			labels[l] = true
		}
	}
	return out, nil
}

var promqlToken = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`" +
	`|\[[^\]]*\]|\$\{?[a-zA-Z_][a-zA-Z0-9_:]*\}?|[a-zA-Z_:][a-zA-Z0-9_:]*|[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?(?:[0-9]*(?:ms|[smhdwy]))*|=~|!~|!=|==|>=|<=|@|\S`)

// promqlTokens splits expr into tokens, dropping strings (label values),
// [range] brackets and $variables, which never name metrics.
func promqlTokens(expr string) []string {
	var out []string
	for _, tok := range promqlToken.FindAllString(expr, -1) {
		switch tok[0] {
		case '"', '\'', '`', '[', '$':
			out = append(out, "")
		default:
			out = append(out, tok)
		}
	}
	return out
}

func isIdent(s string) bool {
	return s != "" && (s[0] == '_' || s[0] == ':' || (s[0]|0x20 >= 'a' && s[0]|0x20 <= 'z'))
}

// exposition is one scrape in the Prometheus text format.
type exposition struct {
	samples map[string]bool            // sample names (x_bucket, x_sum, x_total, …)
	types   map[string]string          // family → counter, gauge, histogram, summary, untyped
	labels  map[string]map[string]bool // family → label names seen
}

// family is the metric family a sample name belongs to: x for x_bucket,
// x_sum and x_count of a histogram or summary x, else the name itself.
func (e exposition) family(sample string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(sample, suffix); ok {
			if typ := e.types[base]; typ == "histogram" || typ == "summary" {
				return base
			}
		}
	}
	return sample
}

func scrape(t *testing.T, url string) exposition {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("scrape %s: status %d: %s", url, resp.StatusCode, body)
	}
	e := exposition{samples: map[string]bool{}, types: map[string]string{}, labels: map[string]map[string]bool{}}
	var sampleLabels = map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			e.types[f[2]] = f[3]
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			t.Fatalf("scrape %s: malformed line %q", url, line)
		}
		name := line[:end]
		e.samples[name] = true
		if sampleLabels[name] == nil {
			sampleLabels[name] = map[string]bool{}
		}
		if line[end] == '{' {
			for _, m := range labelPair.FindAllStringSubmatch(line[end:], -1) {
				sampleLabels[name][m[1]] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	for name, labels := range sampleLabels {
		fam := e.family(name)
		if e.labels[fam] == nil {
			e.labels[fam] = map[string]bool{}
		}
		for l := range labels {
			e.labels[fam][l] = true
		}
	}
	return e
}

var labelPair = regexp.MustCompile(`[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
