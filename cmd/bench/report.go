package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one scenario's outcome.
type result struct {
	Scenario   scenario          `json:"scenario"`
	Requests   int               `json:"requests"`
	Completed  float64           `json:"completed_per_s"`     // requests / (last finished − first enqueued)
	SubmitRate float64           `json:"submitted_per_s"`     // requests / client submit time
	EnqueueP50 time.Duration     `json:"enqueue_p50"`         // client round trip of a submission
	EnqueueP99 time.Duration     `json:"enqueue_p99"`         //
	PickupP50  time.Duration     `json:"pickup_p50"`          // enqueued_at → started_at
	PickupP99  time.Duration     `json:"pickup_p99"`          //
	E2EP50     time.Duration     `json:"end_to_end_p50"`      // enqueued_at → finished_at
	E2EP99     time.Duration     `json:"end_to_end_p99"`      //
	Failed     int               `json:"failed"`              // submissions answered 503 or timed out
	Signals    float64           `json:"signals_per_request"` // delivery signals ÷ accepted requests, from the product's counters (-1: not read)
	Problems   []string          `json:"problems"`            // lost, out of order, overlapping
	Throttled  int64             `json:"throttled"`           // 429s waited out during submission
	RSS        map[string]string `json:"rss,omitempty"`       // pid → resident memory after the scenario
	// With -watch: the event streams open during the run, the running and
	// finished events they received and how long after the change, and
	// the median absolute error of each request's first estimated start.
	Streams         int           `json:"streams,omitempty"`
	StreamErrors    int           `json:"stream_errors,omitempty"`
	Events          int           `json:"events,omitempty"`
	EventP50        time.Duration `json:"event_latency_p50,omitempty"`
	EventP99        time.Duration `json:"event_latency_p99,omitempty"`
	ETAs            int           `json:"etas,omitempty"`
	ETAErrorP50     time.Duration `json:"eta_abs_error_p50,omitempty"`      // of the first estimate (at acceptance)
	ETALastErrorP50 time.Duration `json:"eta_last_abs_error_p50,omitempty"` // of the last before the start
}

// printEvents prints the event-stream figures of the runs that watched.
func printEvents(w io.Writer, results []result) {
	for _, r := range results {
		if r.Streams == 0 {
			continue
		}
		fmt.Fprintf(w, "events %s (%s): %d streams (%d failed), %d events, change→client p50 %s p99 %s; estimated start's median absolute error: first (at acceptance) %s, last before the start %s, over %d requests\n",
			r.Scenario.Name, r.Scenario.mode(), r.Streams, r.StreamErrors, r.Events,
			r.EventP50.Round(time.Millisecond), r.EventP99.Round(time.Millisecond),
			r.ETAErrorP50.Round(time.Millisecond), r.ETALastErrorP50.Round(time.Millisecond), r.ETAs)
	}
}

func analyse(sc scenario, users []*user, submitTime time.Duration) result {
	res := result{Scenario: sc}
	var enq, pick, e2e []time.Duration
	var first, last time.Time
	for ui, u := range users {
		enq = append(enq, u.enqueue...)
		res.Failed += len(u.failed)
		for k, r := range u.records {
			res.Requests++
			if r.Status != "succeeded" || r.StartedAt == nil || r.FinishedAt == nil {
				res.Problems = append(res.Problems, fmt.Sprintf("user %d request %d (%s) ended %q", ui, k, u.ids[k], r.Status))
				continue
			}
			if first.IsZero() || r.EnqueuedAt.Before(first) {
				first = r.EnqueuedAt
			}
			if r.FinishedAt.After(last) {
				last = *r.FinishedAt
			}
			pick = append(pick, r.StartedAt.Sub(r.EnqueuedAt))
			e2e = append(e2e, r.FinishedAt.Sub(r.EnqueuedAt))
			if k > 0 {
				prev := u.records[k-1]
				if prev.FinishedAt != nil && r.StartedAt.Before(*prev.FinishedAt) {
					res.Problems = append(res.Problems, fmt.Sprintf("user %d: request %d started before request %d finished (order or overlap)", ui, k, k-1))
				}
			}
		}
	}
	if span := last.Sub(first); span > 0 {
		res.Completed = float64(res.Requests) / span.Seconds()
	}
	if submitTime > 0 {
		res.SubmitRate = float64(res.Requests) / submitTime.Seconds()
	}
	res.EnqueueP50, res.EnqueueP99 = pct(enq, 50), pct(enq, 99)
	res.PickupP50, res.PickupP99 = pct(pick, 50), pct(pick, 99)
	res.E2EP50, res.E2EP99 = pct(e2e, 50), pct(e2e, 99)
	if len(res.Problems) > 10 {
		res.Problems = append(res.Problems[:10], fmt.Sprintf("… and %d more", len(res.Problems)-10))
	}
	return res
}

func printTable(w io.Writer, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmode\tusers×req\tcompleted/s\tsubmitted/s\tenqueue p50/p99 ms\tpickup p50/p99 ms\tend-to-end p50/p99 ms\tsignals/req\tfailed\tproblems\t429s\trss\t")
	for _, r := range results {
		var rss []string
		for pid, v := range r.RSS {
			rss = append(rss, pid+":"+v)
		}
		slices.Sort(rss)
		signals := "?"
		if r.Signals >= 0 {
			signals = strconv.FormatFloat(r.Signals, 'f', 3, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d×%d\t%.0f\t%.0f\t%s / %s\t%s / %s\t%s / %s\t%s\t%d\t%d\t%d\t%s\t\n",
			r.Scenario.Name, r.Scenario.mode(), r.Scenario.Users, r.Scenario.PerUser, r.Completed, r.SubmitRate,
			ms(r.EnqueueP50), ms(r.EnqueueP99), ms(r.PickupP50), ms(r.PickupP99), ms(r.E2EP50), ms(r.E2EP99),
			signals, r.Failed, len(r.Problems), r.Throttled, strings.Join(rss, " "))
	}
	tw.Flush()
}

// rssOf reads VmRSS of each pid in the comma-separated list.
func rssOf(pids string) map[string]string {
	if pids == "" {
		return nil
	}
	out := map[string]string{}
	for _, pid := range strings.Split(pids, ",") {
		pid = strings.TrimSpace(pid)
		data, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			out[pid] = "?"
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				out[pid] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out
}

// printRatios prints, for each scenario run in both modes, completed
// requests per second of the default path over the naive one.
func printRatios(w io.Writer, results []result) {
	naive := map[string]float64{}
	for _, r := range results {
		if r.Scenario.Mode == "naive" {
			naive[r.Scenario.Name] = r.Completed
		}
	}
	if len(naive) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tdefault completed/s\tnaive completed/s\tdefault ÷ naive\t")
	for _, r := range results {
		n, ok := naive[r.Scenario.Name]
		if r.Scenario.Mode != "" || !ok {
			continue
		}
		ratio := "–"
		if n > 0 {
			ratio = strconv.FormatFloat(r.Completed/n, 'f', 2, 64) + "×"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t\n", r.Scenario.Name, r.Completed, n, ratio)
	}
	tw.Flush()
}
