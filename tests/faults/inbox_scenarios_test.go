//go:build linux

package faults

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// Scenarios of the accept-on-commit inbox (issue 11): a 202 means MongoDB
// has the request with its sequence number, and delivery to the session is
// owed whatever fails afterwards.

// longTemporalOutage is the outage of scenario 11: long enough that
// every API's dispatcher gives up its first tries and the relay's
// look-ups fail for many ticks.
const longTemporalOutage = 30 * time.Second

func TestFault11_TemporalDown30sWhileFiftyUsersSubmit(t *testing.T) {
	s := newStack(t, stackOptions{workers: 2})
	users := s.newUsers(50)
	// 50 users, each submitting every 2 s for about 50 s: the outage
	// falls in the middle of it.
	wait := s.start(t, users, load{perUser: 24, sleepMS: 20, pace: 2 * time.Second, retryFor: 2 * time.Minute})
	s.waitBusy(t, 30*time.Second)
	time.Sleep(5 * time.Second)
	s.must(s.temporal.kill())
	downAt := time.Now()
	t.Logf("Temporal SIGKILLed")
	time.Sleep(longTemporalOutage)
	restartAt := time.Now()
	s.must(s.temporal.start())
	t.Logf("Temporal restarted after %s", time.Since(downAt).Round(100*time.Millisecond))
	wait()
	s.waitDrained(drainAfterHeartbeat)
	s.check("11 Temporal down 30 s while 50 users keep submitting")
	during := count(s.hist.all(), func(a attempt) bool { return a.Send.After(downAt) && a.Send.Before(restartAt) })
	refused := count(s.hist.all(), func(a attempt) bool {
		return a.Send.After(downAt) && a.Send.Before(restartAt) && a.Status != http.StatusAccepted
	})
	t.Logf("%d submissions sent during the outage, %d not accepted", during, refused)
	if during < 50*10 {
		t.Errorf("only %d submissions during the outage; the load should have kept going", during)
	}
	if refused > 0 {
		t.Errorf("%d of %d submissions sent while Temporal was down were not accepted", refused, during)
	}
	// Everything accepted during the outage started within a bound of
	// Temporal being back (relay tick + dispatcher backoff + Temporal's own
	// recovery of its shard), logged for docs/faults.md.
	var firstStart time.Time
	for _, r := range s.records {
		if r.StartedAt != nil && r.StartedAt.After(restartAt) && (firstStart.IsZero() || r.StartedAt.Before(firstStart)) {
			firstStart = *r.StartedAt
		}
	}
	if !firstStart.IsZero() {
		t.Logf("first request started %s after Temporal's restart", firstStart.Sub(restartAt).Round(10*time.Millisecond))
	}
}

func TestFault12_TwoAPIsEveryUserAlternatesPerRequest(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, apis: 2})
	users := s.newUsers(10)
	// No pause between a user's submissions: each is sent right after the
	// 202 of the one before, through the other API, so an order inversion
	// between the instances' deliveries would show.
	s.run(t, users, load{perUser: 30, sleepMS: 10, bases: []string{s.api(0), s.api(1)}, alternate: true})
	s.waitDrained(2 * time.Minute)
	s.check("12 two API instances, every user alternating between them per request")
}

func TestFault13_ClientTimeoutRetriesSameKeyWhileTemporalSlow(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, apis: 2})
	users := s.newUsers(10)
	// Clients give up on an answer after 2 s and resubmit with the same
	// Idempotency-Key, to the other API. Temporal is frozen (SIGSTOP: it
	// holds its connections and answers nothing) for 6 s: acceptance does
	// not wait for it, so the clients should not even notice. Then MongoDB
	// is frozen for 4 s: now the clients time out with their inserts in
	// flight, which land after the thaw while the retries arrive.
	wait := s.start(t, users, load{perUser: 60, sleepMS: 20, pace: 300 * time.Millisecond, retryFor: 2 * time.Minute,
		bases: []string{s.api(0), s.api(1)}, attemptTimeout: 2 * time.Second})
	s.waitBusy(t, 30*time.Second)
	s.must(s.temporal.freeze())
	frozeAt := time.Now()
	time.Sleep(6 * time.Second)
	s.must(s.temporal.thaw())
	thawedAt := time.Now()
	time.Sleep(time.Second)
	s.must(s.mongo.freeze())
	time.Sleep(4 * time.Second)
	s.must(s.mongo.thaw())
	wait()
	s.waitDrained(drainAfterHeartbeat)
	r := s.check("13 clients with a 2 s timeout retry the same key while Temporal, then MongoDB, is slow")
	timeouts := count(s.hist.all(), func(a attempt) bool { return a.Status == 0 })
	whileTemporal := count(s.hist.all(), func(a attempt) bool { return a.Status == 0 && a.Send.After(frozeAt) && a.Send.Before(thawedAt) })
	t.Logf("%d client timeouts retried (%d while Temporal was frozen); %d duplicated requests", timeouts, whileTemporal, r.DupRequests)
	if timeouts == 0 {
		t.Errorf("no client timed out: the scenario did not exercise a retry with the same key")
	}
	if whileTemporal > 0 {
		t.Errorf("%d submissions timed out while only Temporal was frozen: acceptance waited for it", whileTemporal)
	}
	for _, o := range s.hist.all() {
		if ids := o.requestIDs(); len(ids) > 1 {
			t.Errorf("%s: request IDs %v, want one", o.Name, ids)
		}
	}
}

func TestFault14_SessionRunTerminatedWithRequestsQueued(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1})
	users := s.newUsers(3)
	// Each user queues 8 requests of 300 ms; while the first ones run, an
	// operator terminates every session run from the Temporal side.
	for _, u := range users {
		for range 8 {
			if _, a := s.submit(u, 300, expectSucceeded, time.Minute); a.status != http.StatusAccepted {
				t.Fatalf("submit: %s", a)
			}
		}
	}
	s.waitBusy(t, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range users {
		if err := s.temporalClient().TerminateWorkflow(ctx, "session-"+u.id, "", "fault 14: an operator terminates the run"); err != nil {
			t.Fatalf("terminate session-%s: %v", u.id, err)
		}
	}
	t.Logf("terminated %d session runs with requests queued", len(users))
	// The first user submits again after the termination (a fresh run
	// takes in the queued ones first); the others submit nothing, so only
	// the relay can reopen their sessions.
	s.submit(users[0], 50, expectSucceeded, time.Minute)
	s.waitDrained(drainAfterHeartbeat)
	s.check("14 session run terminated from the Temporal side with requests queued")
}
