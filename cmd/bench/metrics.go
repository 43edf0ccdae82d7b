package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// signalMetric is the product's counter of delivery signals sent to
// sessions (by the API right after acceptance and by the relay), whatever
// their outcome: each is one Temporal signal call.
const signalMetric = "turnstile_deliveries_total"

// signalsSent sums signalMetric over the Prometheus endpoints urls (the API
// and any worker processes, whose relays signal too).
func (c *client) signalsSent(ctx context.Context, urls []string) (float64, error) {
	var total float64
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return 0, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return 0, err
		}
		n, err := sumCounter(resp.Body, signalMetric)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
		}
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// sumCounter adds up every sample of metric name in a Prometheus text
// exposition.
func sumCounter(r io.Reader, name string) (float64, error) {
	var total float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		total += v
	}
	return total, sc.Err()
}
