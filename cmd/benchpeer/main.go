// Command benchpeer is the peer benchmark: the load shapes of cmd/bench run
// on the seed's own architecture, a RabbitMQ queue per user, so Turnstile's
// numbers have something to stand beside.
//
//	benchpeer [-amqp URL] [-scenarios many-users,one-user-burst,fan-in] [-scale 0.1] [-json out.json]
//
// Each user has a durable queue (peer-<run>-<scenario>-<user>) with one
// consumer (prefetch 1, manual ack). Messages are persistent and published
// with publisher confirms; a submission counts as accepted when its confirms
// are in (the enqueue latency). Executing a message is decoding its JSON body
// (an echo), then the ack; end-to-end latency is publish → ack. Every message
// carries its user and its index k, so the run checks that each user's
// messages were consumed once each and in the order published. A run that
// loses, duplicates or reorders a message exits 1. scripts/bench-peer.sh
// installs and starts a broker for it.
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
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// scenario is one named workload, as in cmd/bench.
type scenario struct {
	Name        string
	Users       int
	PerUser     int
	Batch       int // messages per submission: publish them all, then wait for their confirms
	Concurrency int // users publishing at once
}

// standard are cmd/bench's scenarios of the same names.
var standard = []scenario{
	{Name: "many-users", Users: 200, PerUser: 50, Batch: 1, Concurrency: 32},
	{Name: "one-user-burst", Users: 1, PerUser: 2000, Batch: 100, Concurrency: 1},
	{Name: "fan-in", Users: 2000, PerUser: 5, Batch: 1, Concurrency: 32},
}

// result is one scenario's outcome, in the JSON the brief fixes (plus the
// counts and problems behind lost, duplicated and out_of_order).
type result struct {
	Name       string   `json:"name"`
	Users      int      `json:"users"`
	PerUser    int      `json:"per_user"`
	Batch      int      `json:"batch"`
	Published  int      `json:"published"`
	Consumed   int      `json:"consumed"`
	Completed  float64  `json:"completed_per_s"` // consumed ÷ (last ack − first publish)
	Submitted  float64  `json:"submitted_per_s"` // published ÷ publishing time
	EnqueueP50 float64  `json:"enqueue_p50_ms"`  // publish → confirm, per submission
	EnqueueP99 float64  `json:"enqueue_p99_ms"`
	E2EP50     float64  `json:"e2e_p50_ms"` // publish → consumer's ack, per message
	E2EP99     float64  `json:"e2e_p99_ms"`
	Lost       int      `json:"lost"`
	Duplicated int      `json:"duplicated"`
	OutOfOrder int      `json:"out_of_order"`
	Problems   []string `json:"problems,omitempty"`

	enq, e2e [2]time.Duration // the same latencies, for the table
}

func (r result) failed() bool {
	return r.Lost > 0 || r.Duplicated > 0 || r.OutOfOrder > 0 || len(r.Problems) > 0
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchpeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	names := fs.String("scenarios", "many-users,one-user-burst,fan-in", "comma-separated scenarios: "+scenarioNames())
	scale := fs.Float64("scale", 1, "multiply the scenarios' user counts (e.g. 0.1 for a quick run)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	drain := fs.Duration("drain", 30*time.Second, "after publishing, stop waiting for the remaining messages (and count them lost) after this long without one consumed")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "benchpeer: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var todo []scenario
	for _, n := range strings.Split(*names, ",") {
		sc, ok := lookup(strings.TrimSpace(n))
		if !ok {
			fmt.Fprintf(stderr, "benchpeer: unknown scenario %q (know %s)\n", n, scenarioNames())
			return 2
		}
		if *scale != 1 && sc.Users > 1 {
			sc.Users = max(1, int(float64(sc.Users)**scale))
		}
		todo = append(todo, sc)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	at := time.Now().UTC()
	version, err := serverVersion(*url)
	if err != nil {
		fmt.Fprintf(stderr, "benchpeer: cannot reach RabbitMQ at %s (scripts/bench-peer.sh starts one): %v\n", redact(*url), err)
		return 1
	}
	runID := at.Format("20060102t150405")
	fmt.Fprintf(stderr, "run %s against RabbitMQ %s\n", runID, version)
	var results []result
	failed := false
	for _, sc := range todo {
		fmt.Fprintf(stderr, "== %s: %d users × %d messages (batch %d, %d publishing at once)\n", sc.Name, sc.Users, sc.PerUser, sc.Batch, sc.Concurrency)
		res, err := runScenario(ctx, *url, runID, sc, *drain, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "benchpeer: %s: %v\n", sc.Name, err)
			return 1
		}
		if res.failed() {
			failed = true
			for _, p := range res.Problems {
				fmt.Fprintf(stderr, "benchpeer: %s: %s\n", sc.Name, p)
			}
		}
		results = append(results, res)
	}
	printTable(stdout, results)
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(map[string]any{
			"peer": "rabbitmq", "version": version, "at": at.Format(time.RFC3339), "run": runID, "results": results,
		}, "", "  ")
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "benchpeer: %v\n", err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

// printTable mirrors cmd/bench's table where its columns apply: there is no
// pickup latency (the broker keeps no started time) and no 429s.
func printTable(w io.Writer, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tpeer\tusers×req\tcompleted/s\tsubmitted/s\tenqueue p50/p99 ms\tend-to-end p50/p99 ms\tlost\tdup\tout-of-order\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%d×%d\t%.0f\t%.0f\t%s / %s\t%s / %s\t%d\t%d\t%d\t\n",
			r.Name, "rabbitmq", r.Users, r.PerUser, r.Completed, r.Submitted,
			ms(r.enq[0]), ms(r.enq[1]), ms(r.e2e[0]), ms(r.e2e[1]), r.Lost, r.Duplicated, r.OutOfOrder)
	}
	tw.Flush()
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
