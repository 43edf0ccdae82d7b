package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPct(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    int
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}, {0, time.Millisecond}} {
		if got := pct(d, c.p); got != c.want {
			t.Errorf("pct(1..100 ms, %d) = %v, want %v", c.p, got, c.want)
		}
	}
	if d[0] != 100*time.Millisecond {
		t.Errorf("pct sorted its argument in place")
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("pct(nil) = %v, want 0", got)
	}
	one := []time.Duration{7 * time.Millisecond}
	if pct(one, 50) != 7*time.Millisecond || pct(one, 99) != 7*time.Millisecond {
		t.Errorf("pct of one sample is not that sample")
	}
	// Three samples: p50 is the 2nd (nearest rank ⌈1.5⌉), p99 the 3rd.
	three := []time.Duration{3, 1, 2}
	if pct(three, 50) != 2 || pct(three, 99) != 3 {
		t.Errorf("pct(1,2,3) p50/p99 = %v/%v, want 2/3", pct(three, 50), pct(three, 99))
	}
}

func TestMS(t *testing.T) {
	if got := ms(1500 * time.Microsecond); got != "1.5" {
		t.Errorf("ms(1.5ms) = %q", got)
	}
	if got := msf(2250 * time.Microsecond); got != 2.25 {
		t.Errorf("msf(2.25ms) = %v", got)
	}
}

// feed observes ks in turn on a fresh log of perUser messages.
func feed(perUser int, ks ...int) *userLog {
	l := newUserLog(perUser)
	for _, k := range ks {
		l.observe(k)
	}
	return l
}

func TestUserLog(t *testing.T) {
	for _, c := range []struct {
		name                    string
		perUser, published      int
		ks                      []int
		consumed, lost, dup, oo int
	}{
		{"in order", 5, 5, []int{0, 1, 2, 3, 4}, 5, 0, 0, 0},
		{"nothing yet", 5, 0, nil, 0, 0, 0, 0},
		{"tail lost", 5, 5, []int{0, 1, 2}, 3, 2, 0, 0},
		{"unpublished tail is not lost", 5, 3, []int{0, 1, 2}, 3, 0, 0, 0},
		{"gap", 5, 5, []int{0, 2, 3, 4}, 4, 1, 0, 1},
		{"swap", 4, 4, []int{0, 2, 1, 3}, 4, 0, 0, 3}, // 2 early, 1 late, 3 after 1
		{"redelivered", 3, 3, []int{0, 1, 1, 2}, 3, 0, 1, 0},
		{"duplicate after the end", 3, 3, []int{0, 1, 2, 0}, 3, 0, 1, 0},
		{"out of range", 2, 2, []int{0, 1, 2, -1}, 2, 0, 0, 2},
		{"starts late", 3, 3, []int{1, 2}, 2, 1, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := feed(c.perUser, c.ks...)
			if l.consumed != c.consumed || l.lost(c.published) != c.lost || l.dup != c.dup || l.ooo != c.oo {
				t.Errorf("consumed/lost/dup/ooo = %d/%d/%d/%d, want %d/%d/%d/%d (problems %q)",
					l.consumed, l.lost(c.published), l.dup, l.ooo, c.consumed, c.lost, c.dup, c.oo, l.problems)
			}
			// Loss is a problem only once summarise knows what was published.
			if wantNone := c.dup == 0 && c.oo == 0; wantNone != (len(l.problems) == 0) {
				t.Errorf("problems %q, want none: %v", l.problems, wantNone)
			}
		})
	}
}

func TestObserveFirst(t *testing.T) {
	l := newUserLog(2)
	if !l.observe(0) || l.observe(0) || !l.observe(1) || l.observe(5) {
		t.Errorf("observe reports a first delivery wrongly")
	}
}

func TestSummarise(t *testing.T) {
	a := feed(3, 0, 1, 2)
	a.e2e = []time.Duration{1, 2, 3}
	a.lastAck = 10
	b := feed(3, 0, 2, 2)
	b.e2e = []time.Duration{4, 5}
	b.lastAck = 20
	tl := summarise([]*userLog{a, b}, []int{3, 3})
	if tl.Published != 6 || tl.Consumed != 5 || tl.Lost != 1 || tl.Duplicated != 1 || tl.OutOfOrder != 1 {
		t.Errorf("tally %+v, want published 6 consumed 5 lost 1 dup 1 ooo 1", tl)
	}
	if len(tl.E2E) != 5 || tl.LastAck != 20 {
		t.Errorf("e2e %v last ack %v", tl.E2E, tl.LastAck)
	}
	joined := strings.Join(tl.Problems, "\n")
	for _, want := range []string{"user 1: message 2 consumed when 1 was expected", "user 1: message 2 consumed again", "user 1: 1 of 3 published messages never consumed"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems %q lack %q", tl.Problems, want)
		}
	}
	if strings.Contains(joined, "user 0") {
		t.Errorf("a clean user has problems: %q", tl.Problems)
	}

	// Many broken users: the list is cut at 10 and says how many more.
	var logs []*userLog
	var pub []int
	for range 20 {
		logs = append(logs, feed(2, 1))
		pub = append(pub, 2)
	}
	tl = summarise(logs, pub)
	if len(tl.Problems) != 11 || !strings.HasPrefix(tl.Problems[10], "… and ") {
		t.Errorf("problems not cut: %d, last %q", len(tl.Problems), tl.Problems[len(tl.Problems)-1])
	}
	if tl.Lost != 20 || tl.OutOfOrder != 20 {
		t.Errorf("lost %d ooo %d, want 20 and 20", tl.Lost, tl.OutOfOrder)
	}
}

func TestFailedAndTable(t *testing.T) {
	ok := result{Name: "many-users", Users: 20, PerUser: 50, Completed: 1234.4, Submitted: 99.6,
		enq: [2]time.Duration{1500 * time.Microsecond, 3 * time.Millisecond}}
	if ok.failed() {
		t.Errorf("clean result counts as failed")
	}
	for _, bad := range []result{{Lost: 1}, {Duplicated: 1}, {OutOfOrder: 1}, {Problems: []string{"x"}}} {
		if !bad.failed() {
			t.Errorf("%+v does not count as failed", bad)
		}
	}
	var buf bytes.Buffer
	printTable(&buf, []result{ok})
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("table %q", buf.String())
	}
	for _, want := range []string{"many-users", "rabbitmq", "20×50", "1234", "100", "1.5 / 3.0"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if len(lines[0]) != len(lines[1]) {
		t.Errorf("header and row are not aligned:\n%s", buf.String())
	}
}

func TestRunFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"-scenarios", "nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown scenario") {
		t.Errorf("unknown scenario: exit %d, stderr %q", code, errb.String())
	}
}
