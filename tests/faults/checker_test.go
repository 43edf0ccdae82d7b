package faults

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// The checker judges one scenario's history: the clients' submission
// attempts (history), the sink's call log and the requests as the API shows
// them at the end. It counts, per the rules in docs/faults.md:
//
//   lost               accepted (a 202 was received) but never final; or no
//                      record at all; or final "succeeded" without an effect
//                      at the sink
//   duplicated effects one op with effects under more than one request ID
//   duplicate requests one op recorded as more than one request
//   inversions         pairs A, B of one user where A was accepted before B
//                      was sent (or A precedes B in one batch) but B began
//                      executing at the sink first
//   overlaps           two of one user's requests executing at the sink at
//                      once (redeliveries excluded: see below)
//   phantoms           effects of ops every submission of which was refused
//   wrong outcomes     final status other than the op expected
//   not drained        requests not final when the scenario ended
//   cancelled ran      a request recorded cancelled that executed at the
//                      sink (a cancel and a start that both won)
//
// A request's execution at the sink is the interval from its first call to
// the end of its effect (or of its last failed call, if it never succeeded).
// Calls that repeat a key after its effect are redeliveries — a retry after
// a worker was presumed dead, a zombie waking up — which the sink absorbs
// because they carry the same Idempotency-Key; they are reported, not
// counted as executions.

type report struct {
	Scenario string

	Ops, Accepted, Refused, Unknown int
	Records                         int
	Effects, FailedCalls            int
	Redeliveries, LateRedeliveries  int

	Lost, DupEffects, DupRequests, Inversions, Overlaps int
	Phantoms, WrongOutcomes, NotDrained, CancelledRan   int

	Latency latencyStats

	examples map[string][]string
}

type latencyStats struct {
	N        int
	P50, P99 time.Duration
	Max      time.Duration
}

func (l latencyStats) String() string {
	if l.N == 0 {
		return "n=0"
	}
	return fmt.Sprintf("p50 %s  p99 %s  max %s  (n=%d)", round(l.P50), round(l.P99), round(l.Max), l.N)
}

func round(d time.Duration) time.Duration {
	if d > 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// maxExamples bounds the example lines per category in a report.
const maxExamples = 5

func (r *report) add(category string, count *int, format string, a ...any) {
	*count++
	if r.examples == nil {
		r.examples = map[string][]string{}
	}
	if len(r.examples[category]) < maxExamples {
		r.examples[category] = append(r.examples[category], fmt.Sprintf(format, a...))
	}
}

// ok reports whether every invariant held.
func (r *report) ok() bool {
	return r.Lost == 0 && r.DupEffects == 0 && r.DupRequests == 0 && r.Inversions == 0 &&
		r.Overlaps == 0 && r.Phantoms == 0 && r.WrongOutcomes == 0 && r.NotDrained == 0 && r.CancelledRan == 0
}

func (r *report) String() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.ok() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "checker report: %s — %s\n", r.Scenario, verdict)
	fmt.Fprintf(&b, "  ops %d: accepted %d, refused %d, unknown %d; requests recorded %d\n",
		r.Ops, r.Accepted, r.Refused, r.Unknown, r.Records)
	fmt.Fprintf(&b, "  sink: effects %d, failed calls %d, redeliveries absorbed %d (late %d)\n",
		r.Effects, r.FailedCalls, r.Redeliveries, r.LateRedeliveries)
	fmt.Fprintf(&b, "  lost %d | duplicated effects %d | duplicate requests %d | inversions %d | overlaps %d\n",
		r.Lost, r.DupEffects, r.DupRequests, r.Inversions, r.Overlaps)
	fmt.Fprintf(&b, "  phantoms %d | wrong outcomes %d | not drained %d | cancelled ran %d\n", r.Phantoms, r.WrongOutcomes, r.NotDrained, r.CancelledRan)
	fmt.Fprintf(&b, "  latency enqueue→finish: %s\n", r.Latency)
	cats := make([]string, 0, len(r.examples))
	for c := range r.examples {
		cats = append(cats, c)
	}
	sort.Strings(cats)
	for _, c := range cats {
		for _, e := range r.examples[c] {
			fmt.Fprintf(&b, "  %s: %s\n", c, e)
		}
	}
	return b.String()
}

// execution is one request's run as the sink saw it.
type execution struct {
	key, user, op string
	start, end    time.Time
	effect        bool
}

// check builds the report. records maps user ID → that user's requests as
// the API lists them at the end.
func check(scenario string, ops []*op, calls []sinkCall, records map[string][]requestView) *report {
	r := &report{Scenario: scenario}

	// Executions and redeliveries from the sink's log. An operator's
	// requeue starts a new execution of the same request.
	requeuedAt := map[string]time.Time{}
	for _, o := range ops {
		if o.Requeued != nil {
			requeuedAt[o.Name] = o.Requeued.Send
		}
	}
	byRun := map[string]*execution{}
	var runs []string
	var redeliveries []sinkCall
	for _, c := range calls {
		switch c.Outcome {
		case outcomeRedelivery:
			redeliveries = append(redeliveries, c)
			r.Redeliveries++
			continue
		case outcomeEffect:
			r.Effects++
		case outcomeFailed:
			r.FailedCalls++
		}
		run := c.Key
		if t, ok := requeuedAt[c.Op]; ok && !c.Start.Before(t) {
			run += "#requeued"
		}
		e := byRun[run]
		if e == nil {
			e = &execution{key: c.Key, user: c.User, op: c.Op, start: c.Start, end: c.End}
			byRun[run] = e
			runs = append(runs, run)
		}
		if c.Start.Before(e.start) {
			e.start = c.Start
		}
		if !e.effect && c.End.After(e.end) {
			e.end = c.End
		}
		if c.Outcome == outcomeEffect {
			e.effect, e.end = true, c.End
		}
	}
	execsByUser := map[string][]*execution{}
	effectsByOp := map[string][]*execution{}
	firstExecByOp := map[string]*execution{}
	firstExecByKey := map[string]*execution{}
	for _, k := range runs {
		e := byRun[k]
		execsByUser[e.user] = append(execsByUser[e.user], e)
		if e.effect {
			effectsByOp[e.op] = append(effectsByOp[e.op], e)
		}
		if f := firstExecByKey[e.key]; f == nil || e.start.Before(f.start) {
			firstExecByKey[e.key] = e
		}
		// The order rule places a requeued op by its run after the requeue.
		if t, ok := requeuedAt[e.op]; ok && e.start.Before(t) {
			continue
		}
		if f := firstExecByOp[e.op]; f == nil || e.start.Before(f.start) {
			firstExecByOp[e.op] = e
		}
	}

	// Records, by ID and by op.
	recByID := map[string]requestView{}
	recsByOp := map[string][]requestView{}
	for _, list := range records {
		for _, v := range list {
			r.Records++
			recByID[v.ID] = v
			if name := v.op(); name != "" {
				recsByOp[name] = append(recsByOp[name], v)
			}
			if !isFinal(v.Status) {
				r.add("not drained", &r.NotDrained, "request %s (op %q) is %s", v.ID, v.op(), v.Status)
			}
			if e := firstExecByKey[v.ID]; v.Status == "cancelled" && e != nil {
				r.add("cancelled ran", &r.CancelledRan, "request %s (op %q) is cancelled but executed at the sink at %s",
					v.ID, v.op(), e.start.Format("15:04:05.000"))
			}
		}
	}

	// Per op: accepted, lost, duplicates, phantoms, outcomes, latency.
	var lat []time.Duration
	for _, o := range ops {
		r.Ops++
		effects := effectsByOp[o.Name]
		if len(effects) > 1 {
			ids := make([]string, len(effects))
			for i, e := range effects {
				ids[i] = e.key
			}
			r.DupEffects += len(effects) - 1
			r.example("duplicated effects", "op %s took effect %d times, under request IDs %v", o.Name, len(effects), ids)
		}
		ids := map[string]bool{}
		for _, id := range o.requestIDs() {
			ids[id] = true
		}
		for _, v := range recsByOp[o.Name] {
			ids[v.ID] = true
		}
		if len(ids) > 1 {
			r.DupRequests += len(ids) - 1
			r.example("duplicate requests", "op %s has %d request IDs: %v", o.Name, len(ids), sortedKeys(ids))
		}
		if _, ok := o.accepted(); !ok {
			if o.refusedOnly() {
				r.Refused++
				if len(effects) > 0 {
					r.add("phantoms", &r.Phantoms, "op %s was refused on every submission (%s) but took effect as %s",
						o.Name, o.lastDetail(), effects[0].key)
				}
			} else {
				r.Unknown++
			}
			continue
		}
		r.Accepted++
		var final *requestView
		for id := range ids {
			if v, ok := recByID[id]; ok {
				if final == nil || isFinal(v.Status) {
					final = &v
				}
			}
		}
		switch {
		case final == nil:
			r.add("lost", &r.Lost, "op %s was accepted as %v but the API has no such request", o.Name, o.requestIDs())
			continue
		case !isFinal(final.Status):
			r.add("lost", &r.Lost, "op %s (request %s) was accepted but is still %s", o.Name, final.ID, final.Status)
			continue
		case final.Status == "succeeded" && len(effects) == 0:
			r.add("lost", &r.Lost, "op %s (request %s) is succeeded but never took effect at the sink", o.Name, final.ID)
		}
		if o.Expect != "" && final.Status != string(o.Expect) {
			msg := ""
			if final.Error != nil {
				msg = ": " + shortErr(*final.Error)
			}
			r.add("wrong outcomes", &r.WrongOutcomes, "op %s (request %s) ended %s after %d attempts, want %s%s",
				o.Name, final.ID, final.Status, final.Attempts, o.Expect, msg)
		}
		if final.FinishedAt != nil {
			lat = append(lat, final.FinishedAt.Sub(final.EnqueuedAt))
		}
	}
	r.Latency = percentiles(lat)

	// Overlaps: per user, executions by start; each must begin after every
	// earlier one ended.
	for u, execs := range execsByUser {
		sort.Slice(execs, func(i, j int) bool { return execs[i].start.Before(execs[j].start) })
		var last *execution
		for _, e := range execs {
			if last != nil && e.start.Before(last.end) {
				r.add("overlaps", &r.Overlaps, "user %s: %s (op %s) began %s before %s (op %s) ended",
					short(u), e.key, e.op, last.end.Sub(e.start).Round(time.Millisecond), last.key, last.op)
			}
			if last == nil || e.end.After(last.end) {
				last = e
			}
		}
		execsByUser[u] = execs
	}

	// Late redeliveries: a redelivery of a key after the user's next
	// request had begun — what a zombie worker produces. Informational.
	for _, c := range redeliveries {
		for _, e := range execsByUser[c.User] {
			if e.key != c.Key && e.start.After(firstExecByKey[c.Key].start) && e.start.Before(c.Start) {
				r.LateRedeliveries++
				break
			}
		}
	}

	// Inversions: A accepted before B was sent (or A before B in a batch)
	// must begin executing before B.
	type ordered struct {
		o            *op
		sent, acked  time.Time
		firstExecKey string
		start        time.Time
	}
	byUser := map[string][]ordered{}
	for _, o := range ops {
		sent, acked, ok := o.orderTimes()
		e := firstExecByOp[o.Name]
		if !ok || e == nil {
			continue
		}
		byUser[o.User] = append(byUser[o.User], ordered{o: o, sent: sent, acked: acked, firstExecKey: e.key, start: e.start})
	}
	for _, list := range byUser {
		for _, a := range list {
			for _, b := range list {
				if a.o == b.o {
					continue
				}
				inBatch := a.o.Batch != "" && a.o.Batch == b.o.Batch && a.o.Requeued == nil && b.o.Requeued == nil
				precedes := (inBatch && a.o.Index < b.o.Index) || (!inBatch && a.acked.Before(b.sent))
				if precedes && b.start.Before(a.start) {
					r.add("inversions", &r.Inversions, "op %s was accepted before op %s was sent, but %s began %s earlier",
						a.o.Name, b.o.Name, b.o.Name, a.start.Sub(b.start).Round(time.Millisecond))
				}
			}
		}
	}
	return r
}

// example records an example line without counting.
func (r *report) example(category, format string, a ...any) {
	var n int
	r.add(category, &n, format, a...)
}

func (o *op) lastDetail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.Attempts) == 0 {
		return ""
	}
	a := o.Attempts[len(o.Attempts)-1]
	return fmt.Sprintf("%d %s", a.Status, a.Detail)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// short abbreviates an ID for report lines.
func short(id string) string {
	if len(id) > 13 {
		return id[:13] + "…"
	}
	return id
}

// percentiles returns nearest-rank p50 and p99 of ds.
func percentiles(ds []time.Duration) latencyStats {
	if len(ds) == 0 {
		return latencyStats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return latencyStats{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}
