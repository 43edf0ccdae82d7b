package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"
)

// peerRun is what cmd/benchpeer wrote (make bench-peer): the same load
// shapes on a durable RabbitMQ queue per user.
type peerRun struct {
	At      time.Time `json:"at"`
	Peer    string    `json:"peer"`
	Version string    `json:"version"`
	Results []struct {
		Name      string  `json:"name"`
		Users     int     `json:"users"`
		PerUser   int     `json:"per_user"`
		Completed float64 `json:"completed_per_s"`
	} `json:"results"`
}

// peerTargets are the floors of Turnstile ÷ peer completed/s.
var peerTargets = map[string]float64{"many-users": 0.3, "one-user-burst": 0.6}

// readPeer reads a peer run from path; a run older than maxAge is not the
// same run's and is refused.
func readPeer(path string, maxAge time.Duration) (*peerRun, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p peerRun
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if age := time.Since(p.At); age > maxAge {
		return nil, fmt.Errorf("%s was measured %s ago (more than %s): run make bench-peer again", path, age.Round(time.Minute), maxAge)
	}
	return &p, nil
}

// printPeer prints Turnstile's completed/s beside the peer's for each
// scenario both ran with the same shape, and the ratio.
func printPeer(w io.Writer, results []result, p *peerRun) {
	if p == nil {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "scenario\tturnstile completed/s\t%s %s completed/s\tturnstile ÷ peer\ttarget\t\n", p.Peer, p.Version)
	for _, r := range results {
		if r.Scenario.Mode != "" {
			continue
		}
		for _, pr := range p.Results {
			if pr.Name != r.Scenario.Name {
				continue
			}
			ratio, target := "–", "–"
			if pr.Users != r.Scenario.Users || pr.PerUser != r.Scenario.PerUser {
				ratio = fmt.Sprintf("shapes differ (peer %d×%d)", pr.Users, pr.PerUser)
			} else if pr.Completed > 0 {
				ratio = strconv.FormatFloat(r.Completed/pr.Completed, 'f', 3, 64) + "×"
			}
			if t, ok := peerTargets[pr.Name]; ok {
				target = fmt.Sprintf("≥ %.1f×", t)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t\n", r.Scenario.Name, r.Completed, pr.Completed, ratio, target)
		}
	}
	tw.Flush()
}
