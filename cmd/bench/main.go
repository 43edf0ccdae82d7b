// Command bench is Turnstile's load benchmark. It drives the real HTTP API of
// a running system (make run, or -api URL) with real users and tokens, then
// reads every request back to measure throughput and latency and to check
// that nothing was lost and each user's requests ran in order, one at a time.
//
//	bench [-api URL] [-scenarios one-user-burst,many-users,...] [-json out.json]
//	bench -users 20 -requests 100 -type sleep -batch 10      a custom run
//
// Latencies come from the server's own timestamps (enqueued_at, started_at,
// finished_at, millisecond precision) except enqueue latency, which is the
// client's round trip of the submission. A run that loses a request or runs
// one user's requests out of order or overlapping exits 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// scenario is one named workload.
type scenario struct {
	Name        string `json:"name"`
	Users       int    `json:"users"`
	PerUser     int    `json:"per_user"`
	Batch       int    `json:"batch"`       // requests per submission; 1 = one POST per request
	Sequential  bool   `json:"sequential"`  // wait for each request before the next (idle-queue pickup)
	Type        string `json:"type"`        // request type
	SleepMS     int    `json:"sleep_ms"`    // payload of type sleep
	Concurrency int    `json:"concurrency"` // users submitting at once
	// Rate, when set, offers submissions open-loop at this many a second in
	// all, round robin over the users (each user's own submissions stay one
	// at a time, so its order is known); Concurrency is then every user. A
	// submission's enqueue latency counts from when it was due, so a server
	// that falls behind shows it.
	Rate float64 `json:"rate,omitempty"`
	// Mode is the Turnstile-Execution header: "" (default) or "naive".
	Mode string `json:"mode,omitempty"`
	// SleepMix, for type sleep, cycles the requests' ms through these.
	SleepMix []int `json:"sleep_mix,omitempty"`
	// Watch keeps a GET /v1/events stream open for each of the first
	// Watch users while the scenario runs (-watch).
	Watch int `json:"watch,omitempty"`
}

func (s scenario) mode() string {
	if s.Mode == "" {
		return "default"
	}
	return s.Mode
}

// standard are the scenarios with stable names the issue defines, plus
// idle-pickup for the pickup latency of an idle queue.
var standard = []scenario{
	{Name: "one-user-burst", Users: 1, PerUser: 2000, Batch: 100, Type: "echo", Concurrency: 1},
	{Name: "many-users", Users: 200, PerUser: 50, Batch: 1, Type: "echo", Concurrency: 32},
	{Name: "fan-in", Users: 2000, PerUser: 5, Batch: 1, Type: "echo", Concurrency: 32},
	{Name: "idle-pickup", Users: 1, PerUser: 50, Batch: 1, Sequential: true, Type: "echo", Concurrency: 1},
	{Name: "idle-sessions", Users: 10000, PerUser: 1, Batch: 1, Type: "echo", Concurrency: 32},
	// The enqueue target: 500 submissions a second offered for 10 s.
	{Name: "enqueue-500", Users: 200, PerUser: 25, Batch: 1, Type: "echo", Concurrency: 32, Rate: 500},
	// ETA accuracy: one user's queue of mixed sleeps, watched.
	{Name: "eta-mixed", Users: 1, PerUser: 30, Batch: 1, Type: "sleep", SleepMix: []int{100, 300, 700}, Concurrency: 1, Watch: 1},
	// Per-user reads as the store grows to 100,000 requests (runStoreGrowth;
	// -scale scales the size; no naive run).
	{Name: "store-growth", Users: 50, PerUser: growthTarget / 50, Batch: 100, Type: "echo", Concurrency: 8},
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", "http://127.0.0.1:8080", "Turnstile API base URL")
	names := fs.String("scenarios", "one-user-burst,many-users,enqueue-500,fan-in,idle-pickup,store-growth", "comma-separated standard scenarios: "+scenarioNames())
	users := fs.Int("users", 0, "custom run: number of users (overrides -scenarios)")
	perUser := fs.Int("requests", 100, "custom run: requests per user")
	batch := fs.Int("batch", 1, "custom run: requests per submission (POST /v1/requests/batch when > 1)")
	typ := fs.String("type", "echo", "custom run: request type (echo or sleep)")
	sleepMS := fs.Int("sleep-ms", 10, "custom run: ms per sleep request")
	conc := fs.Int("concurrency", 16, "custom run: users submitting at once")
	rate := fs.Float64("rate", 0, "custom run: offer this many submissions a second, open loop (0: as fast as -concurrency allows)")
	scale := fs.Float64("scale", 1, "multiply the standard scenarios' user counts (e.g. 0.1 for a quick run)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	compare := fs.Bool("compare", true, "run each scenario again on the naive path (Turnstile-Execution: naive; the server must allow it, as make run does) and print the ratio")
	pids := fs.String("rss-pids", "", "comma-separated PIDs whose resident memory is reported after each scenario (e.g. the turnstile dev process)")
	reuse := fs.String("run-id", "", "reuse the users of an earlier run with this ID (printed at the start) instead of registering new ones")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	peerPath := fs.String("peer", "", "a peer run's JSON (make bench-peer writes bin/peer.json): print Turnstile's completed/s beside it, with the ratio; it must be from the last 2 hours")
	watchN := fs.Int("watch", 0, "keep a GET /v1/events stream open for each of the first N users of every scenario, and report event latency and ETA accuracy")
	metricsURLs := fs.String("metrics", "", "comma-separated Prometheus endpoints whose turnstile_deliveries_total counts the delivery signals (default: the API's /metrics; add each worker's when they run apart)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var todo []scenario
	if *users > 0 {
		todo = []scenario{{Name: "custom", Users: *users, PerUser: *perUser, Batch: *batch, Type: *typ, SleepMS: *sleepMS, Concurrency: *conc, Rate: *rate}}
	} else {
		for _, n := range strings.Split(*names, ",") {
			sc, ok := lookup(strings.TrimSpace(n))
			if !ok {
				fmt.Fprintf(stderr, "bench: unknown scenario %q (know %s)\n", n, scenarioNames())
				return 2
			}
			if *scale != 1 && sc.Users > 1 {
				sc.Users = max(1, int(float64(sc.Users)**scale))
			}
			sc.Watch = max(sc.Watch, *watchN)
			todo = append(todo, sc)
		}
	}
	if *compare {
		var both []scenario
		for _, sc := range todo {
			both = append(both, sc)
			if sc.Name != "store-growth" {
				naive := sc
				naive.Mode = "naive"
				both = append(both, naive)
			}
		}
		todo = both
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := newClient(*api)
	if *metricsURLs != "" {
		c.metrics = strings.Split(*metricsURLs, ",")
	}
	if err := c.ready(ctx); err != nil {
		fmt.Fprintf(stderr, "bench: %s is not ready (start it with make run): %v\n", *api, err)
		return 1
	}
	runID := time.Now().UTC().Format("20060102t150405")
	if *reuse != "" {
		runID = *reuse
	}
	fmt.Fprintf(stderr, "run %s\n", runID)
	var results []result
	var growth []growthPoint
	failed := false
	for _, sc := range todo {
		fmt.Fprintf(stderr, "== %s (%s): %d users × %d requests (%s, batch %d)\n", sc.Name, sc.mode(), sc.Users, sc.PerUser, sc.Type, sc.Batch)
		if sc.Name == "store-growth" {
			target := max(1000, int(growthTarget**scale))
			var err error
			if growth, err = runStoreGrowth(ctx, c, runID, target, stderr); err != nil {
				fmt.Fprintf(stderr, "bench: %s: %v\n", sc.Name, err)
				return 1
			}
			continue
		}
		res, err := runScenario(ctx, c, runID, sc, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", sc.Name, err)
			return 1
		}
		res.RSS = rssOf(*pids)
		if len(res.Problems) > 0 {
			failed = true
			for _, p := range res.Problems {
				fmt.Fprintf(stderr, "bench: %s: %s\n", sc.Name, p)
			}
		}
		results = append(results, res)
	}
	printTable(stdout, results)
	printRatios(stdout, results)
	printEvents(stdout, results)
	printGrowth(stdout, growth)
	if *peerPath != "" {
		if p, err := readPeer(*peerPath, 2*time.Hour); err != nil {
			fmt.Fprintf(stderr, "bench: no peer figures: %v\n", err)
		} else {
			printPeer(stdout, results, p)
		}
	}
	for _, r := range results {
		if r.Throttled > 0 {
			fmt.Fprintf(stderr, "bench: %s waited out %d 429 answers: raise TURNSTILE_MAX_QUEUE and TURNSTILE_SUBMIT_RATE/_BURST on the server to measure the engine rather than its limits (make bench-compare does)\n", r.Scenario.Name, r.Throttled)
		}
	}
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(map[string]any{"api": *api, "run": runID, "results": results, "store_growth": growth}, "", "  ")
		if err := os.WriteFile(*jsonOut, data, 0o644); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

func lookup(name string) (scenario, bool) {
	for _, s := range standard {
		if s.Name == name {
			return s, true
		}
	}
	return scenario{}, false
}

func scenarioNames() string {
	var n []string
	for _, s := range standard {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}
