//go:build linux

package faults

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// load describes work the users submit: each user submits its ops one after
// another (waiting for each answer, so every op is accepted before the next
// is sent), all users at once.
type load struct {
	perUser int
	sleepMS int           // how long the sink takes per call
	pace    time.Duration // pause between one user's submissions
	// retryFor bounds how long one op is resubmitted through an outage.
	retryFor time.Duration
	// bases are the APIs to use (in turn on retries); default API 0.
	bases []string
	// alternate starts each of a user's ops on the next of bases in turn
	// (op i on bases[i % len]), so consecutive requests go to different
	// API instances.
	alternate bool
	// attemptTimeout, if set, is the client's timeout of each submission
	// attempt; one that times out is retried with the same key.
	attemptTimeout time.Duration
	// poison names ops (by index) whose calls the sink fails.
	poison map[int]bool
}

// opCounter numbers each user's ops, so every op name is unique.
type opCounter struct {
	mu   sync.Mutex
	next map[string]int
}

var counters = opCounter{next: map[string]int{}}

// newOp registers the user's next op in s's history.
func (s *stack) newOp(u *user, expect expectation) *op {
	counters.mu.Lock()
	key := s.dir + "/" + u.tag
	n := counters.next[key]
	counters.next[key] = n + 1
	counters.mu.Unlock()
	return s.hist.newOp(u, n, expect)
}

// submit submits one new op of u to the sink (sleepMS per call), resubmitting
// it until accepted or retryFor has passed. It returns the op and the last
// answer.
func (s *stack) submit(u *user, sleepMS int, expect expectation, retryFor time.Duration, bases ...string) (*op, apiAnswer) {
	return s.submitWith(u, sleepMS, expect, retryFor, 0, bases...)
}

// submitWith is submit with a client timeout on each attempt (0: none).
func (s *stack) submitWith(u *user, sleepMS int, expect expectation, retryFor, attemptTimeout time.Duration, bases ...string) (*op, apiAnswer) {
	if len(bases) == 0 {
		bases = []string{s.api(0)}
	}
	o := s.newOp(u, expect)
	if expect == expectFailed {
		s.sink.poison(o.Name)
	}
	a := submitUntilAcceptedWithin(context.Background(), bases, u, o, payload(s.sink, u, o, sleepMS), time.Now().Add(retryFor), attemptTimeout)
	return o, a
}

// run carries out l for users and returns when every op is accepted or has
// given up; an op never accepted fails the test.
func (s *stack) run(t *testing.T, users []*user, l load) {
	t.Helper()
	if l.retryFor == 0 {
		l.retryFor = time.Minute
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range l.perUser {
				expect := expectSucceeded
				if l.poison[i] {
					expect = expectFailed
				}
				bases := l.bases
				if l.alternate && len(bases) > 1 {
					bases = append(slices.Clone(bases[i%len(bases):]), bases[:i%len(bases)]...)
				}
				o, a := s.submitWith(u, l.sleepMS, expect, l.retryFor, l.attemptTimeout, bases...)
				if a.status != http.StatusAccepted {
					mu.Lock()
					failures = append(failures, o.Name+": "+a.String())
					mu.Unlock()
				}
				if l.pace > 0 {
					time.Sleep(l.pace)
				}
			}
		}()
	}
	wg.Wait()
	for i, f := range failures {
		if i == maxExamples {
			t.Errorf("… and %d more ops never accepted", len(failures)-i)
			break
		}
		t.Errorf("op never accepted: %s", f)
	}
}

// start runs l in the background; the returned func waits for it.
func (s *stack) start(t *testing.T, users []*user, l load) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(t, users, l)
	}()
	return func() { <-done }
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitBusy waits until the sink is executing a call: a request is
// mid-flight in some worker.
func (s *stack) waitBusy(t *testing.T, timeout time.Duration) {
	t.Helper()
	if !waitFor(timeout, s.sink.busy) {
		t.Fatalf("no request reached the sink within %s\n%s", timeout, s.logTails(20))
	}
}
