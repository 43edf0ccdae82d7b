package main

import (
	"fmt"
	"time"
)

// userLog is what one user's consumer saw. Only that user's consumer
// goroutine writes it while the scenario runs; it is read after the
// consumers have stopped.
type userLog struct {
	seen     []bool // seen[k]: message k was consumed (at least once)
	next     int    // the k expected next: one past the last consumed
	consumed int    // distinct messages consumed
	dup      int    // deliveries of a message already consumed
	ooo      int    // first deliveries whose k was not the one expected next
	problems []string
	e2e      []time.Duration // publish → ack, per distinct message
	lastAck  time.Duration   // since epoch, of the last ack
}

func newUserLog(perUser int) *userLog {
	return &userLog{seen: make([]bool, perUser), e2e: make([]time.Duration, 0, perUser)}
}

// observe records the consumption of message k and reports whether it was
// the first delivery of k. A message arrives out of order when its k is not
// one past the previous message consumed: a swap of two counts twice (each
// arrived where the other was expected), a gap once (for the message after
// it) and again if the missing one turns up late.
func (l *userLog) observe(k int) (first bool) {
	if k < 0 || k >= len(l.seen) {
		l.ooo++
		l.problem("k %d is outside 0..%d", k, len(l.seen)-1)
		return false
	}
	if l.seen[k] {
		l.dup++
		l.problem("message %d consumed again", k)
		return false
	}
	l.seen[k] = true
	l.consumed++
	if k != l.next {
		l.ooo++
		l.problem("message %d consumed when %d was expected", k, l.next)
	}
	l.next = k + 1
	return true
}

// lost counts messages 0..published-1 that were never consumed.
func (l *userLog) lost(published int) int {
	n := 0
	for k := 0; k < published && k < len(l.seen); k++ {
		if !l.seen[k] {
			n++
		}
	}
	return n
}

// problem keeps the first few problems of a user, to show where it went
// wrong without flooding the report.
func (l *userLog) problem(format string, args ...any) {
	if len(l.problems) < 3 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// tally is the loss/duplicate/order outcome of a scenario.
type tally struct {
	Published, Consumed, Lost, Duplicated, OutOfOrder int
	Problems                                          []string
	E2E                                               []time.Duration
	LastAck                                           time.Duration
}

// summarise adds up the users' logs; published[u] is how many of user u's
// messages the broker confirmed.
func summarise(logs []*userLog, published []int) tally {
	var t tally
	for u, l := range logs {
		t.Published += published[u]
		t.Consumed += l.consumed
		t.Duplicated += l.dup
		t.OutOfOrder += l.ooo
		if n := l.lost(published[u]); n > 0 {
			t.Lost += n
			l.problem("%d of %d published messages never consumed", n, published[u])
		}
		for _, p := range l.problems {
			t.Problems = append(t.Problems, fmt.Sprintf("user %d: %s", u, p))
		}
		t.E2E = append(t.E2E, l.e2e...)
		t.LastAck = max(t.LastAck, l.lastAck)
	}
	if len(t.Problems) > 10 {
		t.Problems = append(t.Problems[:10], fmt.Sprintf("… and %d more", len(t.Problems)-10))
	}
	return t
}
