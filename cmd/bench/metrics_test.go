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
