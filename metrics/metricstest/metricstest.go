// Package metricstest reads Prometheus text output in tests.
package metricstest

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// Series maps every series of a scrape, as printed (name{labels}, label
// names sorted, a histogram's le last), to its value.
type Series map[string]float64

// Parse reads the Prometheus text format.
func Parse(t testing.TB, r io.Reader) Series {
	t.Helper()
	out := Series{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Scrape gets /metrics from h and parses it.
func Scrape(t testing.TB, h http.Handler) Series {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", w.Code, w.Body)
	}
	return Parse(t, w.Body)
}

// Has tells whether any series starts with prefix.
func (s Series) Has(prefix string) bool {
	for k := range s {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}
