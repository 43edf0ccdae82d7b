package main

import (
	"strings"
	"testing"
)

func TestSumCounter(t *testing.T) {
	text := `# HELP turnstile_deliveries_total Inbox deliveries.
# TYPE turnstile_deliveries_total counter
turnstile_deliveries_total{by="api",outcome="ok"} 12
turnstile_deliveries_total{by="relay",outcome="error"} 3
turnstile_deliveries_total_other 100
turnstile_delivered_entries_total{by="api"} 1000
`
	n, err := sumCounter(strings.NewReader(text), signalMetric)
	if err != nil || n != 15 {
		t.Fatalf("sum %v %v, want 15", n, err)
	}
}

func TestPrintPeerRatio(t *testing.T) {
	p := &peerRun{Peer: "rabbitmq", Version: "3.10.8"}
	p.Results = append(p.Results, struct {
		Name      string  `json:"name"`
		Users     int     `json:"users"`
		PerUser   int     `json:"per_user"`
		Completed float64 `json:"completed_per_s"`
	}{"many-users", 200, 50, 4000})
	var b strings.Builder
	printPeer(&b, []result{
		{Scenario: scenario{Name: "many-users", Users: 200, PerUser: 50}, Completed: 1000},
		{Scenario: scenario{Name: "many-users", Users: 200, PerUser: 50, Mode: "naive"}, Completed: 10},
	}, p)
	if out := b.String(); !strings.Contains(out, "0.250×") || !strings.Contains(out, "≥ 0.3×") || strings.Count(out, "many-users") != 1 {
		t.Fatalf("peer table:\n%s", out)
	}
}
