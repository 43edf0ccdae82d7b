//go:build linux

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
)

// heartbeatTimeout is how long Temporal waits before it presumes a silent
// worker dead and retries its request elsewhere
// (TURNSTILE_HEARTBEAT_TIMEOUT; the default is 30s). Workers heartbeat
// every 5s, and the sink answers within half a second.
const heartbeatTimeout = 10 * time.Second

// drainAfterHeartbeat bounds a drain that includes one heartbeat timeout.
const drainAfterHeartbeat = heartbeatTimeout + 2*time.Minute

func TestFault1_WorkerKilledMidRequestAndRestarted(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1})
	users := s.newUsers(4)
	wait := s.start(t, users, load{perUser: 12, sleepMS: 300, pace: 20 * time.Millisecond})

	s.waitBusy(t, 30*time.Second)
	w := s.workers[0]
	s.must(w.kill())
	t.Logf("worker SIGKILLed while a request was mid-flight at the sink")
	time.Sleep(time.Second)
	s.must(w.start())
	wait()
	s.waitDrained(drainAfterHeartbeat)
	r := s.check("1 worker SIGKILL mid-request, restarted")
	if r.Redeliveries == 0 {
		t.Errorf("the kill did not bite: no request was retried after it")
	}
}

func TestFault2_FrozenWorkerIsRetriedElsewhereAndItsZombieDoesNotOverlap(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1})
	users := s.newUsers(4)
	wait := s.start(t, users, load{perUser: 12, sleepMS: 300, pace: 20 * time.Millisecond})

	s.waitBusy(t, 30*time.Second)
	zombie := s.workers[0]
	s.must(zombie.freeze())
	frozenAt := time.Now()
	t.Logf("worker SIGSTOPped while a request was mid-flight; starting a second worker")
	s.addWorker()
	// Past the heartbeat timeout the frozen worker's request is retried on
	// the live one: the sink sees its key again.
	if !waitFor(heartbeatTimeout+time.Minute, func() bool { return s.sink.count(outcomeRedelivery) > 0 }) {
		t.Fatalf("no retry of the frozen worker's request within %s\n%s", heartbeatTimeout+time.Minute, s.logTails(20))
	}
	if d := time.Since(frozenAt); d < heartbeatTimeout {
		t.Errorf("a request was retried %s after the freeze, before the %s heartbeat timeout", d, heartbeatTimeout)
	}
	time.Sleep(2 * time.Second) // the live worker moves on to later requests
	s.must(zombie.thaw())
	t.Logf("zombie worker SIGCONTed after %s", time.Since(frozenAt).Round(time.Second))
	wait()
	s.waitDrained(2 * time.Minute)
	if !zombie.running() {
		t.Errorf("the thawed worker died: %v\n%s", zombie.exitErr(), zombie.tail(20))
	}
	s.check("2 worker SIGSTOP past the heartbeat timeout, then SIGCONT")
}

func TestFault3_TemporalKilledAndRestartedOnItsFile(t *testing.T) {
	s := newStack(t, stackOptions{workers: 2})
	users := s.newUsers(5)
	// Users must still be submitting when Temporal goes down and through
	// the outage: 48 ops 150 ms apart is ~8 s of submissions per user,
	// while the kill comes a second after the first request reaches the
	// sink. (With 16 ops 50 ms apart, and in CI even with 48, the load
	// could end before the kill once submissions got faster.)
	wait := s.start(t, users, load{perUser: 48, sleepMS: 50, pace: 150 * time.Millisecond, retryFor: 2 * time.Minute})

	s.waitBusy(t, 30*time.Second)
	time.Sleep(time.Second)
	s.must(s.temporal.kill())
	downAt := time.Now()
	t.Logf("Temporal SIGKILLed")
	time.Sleep(temporalOutage)
	restartAt := time.Now()
	s.must(s.temporal.start())
	t.Logf("Temporal restarted on the same SQLite file after %s", time.Since(downAt).Round(100*time.Millisecond))
	wait()
	s.waitDrained(drainAfterHeartbeat)
	s.check("3 Temporal SIGKILL and restart on the same SQLite file")
	// Since 2026-12-02 a 202 means MongoDB has the request: submissions
	// sent while Temporal was down are accepted, and they ran (check above).
	during := count(s.hist.all(), func(a attempt) bool { return a.Send.After(downAt) && a.Send.Before(restartAt) })
	if during == 0 {
		t.Errorf("the outage did not bite: no submission was sent while Temporal was down")
	}
	if n := count(s.hist.all(), func(a attempt) bool {
		return a.Send.After(downAt) && a.Send.Before(restartAt) && a.Status != http.StatusAccepted
	}); n > 0 {
		t.Errorf("%d of %d submissions sent while Temporal was down were not accepted", n, during)
	}
	if n := count(s.hist.all(), func(a attempt) bool {
		return a.Status == http.StatusAccepted && a.Answer.After(downAt.Add(time.Second)) && a.Answer.Before(restartAt)
	}); n == 0 {
		t.Errorf("no submission was answered 202 while Temporal was down")
	}
}

// temporalOutage is how long Temporal stays down.
const temporalOutage = 5 * time.Second

// count counts the attempts of ops that match.
func count(ops []*op, match func(attempt) bool) int {
	n := 0
	for _, o := range ops {
		o.mu.Lock()
		for _, a := range o.Attempts {
			if match(a) {
				n++
			}
		}
		o.mu.Unlock()
	}
	return n
}

func TestFault4_APICrashRightAfterItsAcceptance(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, apis: 2, apiEnv: map[int]map[string]string{
		1: {"TURNSTILE_FAULT_POINT": "crash-after-accept"},
	}})
	users := s.newUsers(3)
	faulty := s.api(1)
	for _, u := range users {
		for range 3 {
			s.submit(u, 50, expectSucceeded, time.Minute)
		}
		// The faulty API commits the request, answers 202 and dies before
		// any delivery to the session. The client does not retry.
		o := s.newOp(u, expectSucceeded)
		body := payload(s.sink, u, o, 50)
		a := submitOnce(context.Background(), faulty, u, o, body)
		if a.status != http.StatusAccepted {
			t.Fatalf("the faulty API answered %s; it should have answered 202, then died", a)
		}
		if !s.apis[1].waitExit(10*time.Second) || !strings.Contains(fmt.Sprint(s.apis[1].exitErr()), "exit status 70") {
			t.Fatalf("the faulty API did not exit at its fault point: %v\n%s", s.apis[1].exitErr(), s.apis[1].tail(10))
		}
		// Later requests through the healthy API run after it.
		for range 2 {
			s.submit(u, 50, expectSucceeded, time.Minute)
		}
		s.must(s.apis[1].start())
	}
	s.waitDrained(time.Minute)
	s.check("4 API killed right after its 202, before any delivery")
}

// findOp reads u's request for op through the API.
func findOp(t *testing.T, s *stack, u *user, name string) requestView {
	t.Helper()
	list, err := listAll(context.Background(), s.api(0), u)
	if err != nil {
		t.Fatal(err)
	}
	var found []requestView
	for _, v := range list {
		if v.op() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("op %s has %d records, want 1: %+v", name, len(found), found)
	}
	return found[0]
}

// storeOutage is how long the store stays down: longer than one MongoDB
// write's 10s timeout (workflows' recordTimeout), so the session's writes
// must survive failed attempts, not just a slow one.
const storeOutage = 15 * time.Second

func TestFault5_StoreDownSubmissionsRefusedRunningWorkResumes(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1})
	users := s.newUsers(4)
	// A backlog: every user has work queued and one request running when
	// the store goes down.
	s.run(t, users, load{perUser: 6, sleepMS: 400})
	s.waitBusy(t, 30*time.Second)
	s.must(s.mongo.kill())
	downAt := time.Now()
	t.Logf("MongoDB-compatible store SIGKILLed")

	// While it is down, every submission is refused (503), none accepted.
	var refused []*op
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				o := s.newOp(u, expectSucceeded)
				a := submitOnce(context.Background(), s.api(0), u, o, payload(s.sink, u, o, 50))
				mu.Lock()
				refused = append(refused, o)
				mu.Unlock()
				if a.status != http.StatusServiceUnavailable {
					t.Errorf("submission while the store is down: %s, want 503", a)
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	time.Sleep(time.Until(downAt.Add(storeOutage)))
	effectsBefore := s.sink.count(outcomeEffect)
	s.must(s.mongo.start())
	t.Logf("store restarted after %s", time.Since(downAt).Round(100*time.Millisecond))

	// The refused ops are resubmitted with their keys, as a client would.
	for _, o := range refused {
		u := userByID(s, o.User)
		a := submitUntilAccepted(context.Background(), []string{s.api(0)}, u, o, payload(s.sink, u, o, 50), time.Now().Add(time.Minute))
		if a.status != http.StatusAccepted {
			t.Errorf("resubmission of %s after the outage: %s", o.Name, a)
		}
	}
	s.waitDrained(2 * time.Minute)
	r := s.check("5 MongoDB store down: 503s, running work resumes")
	if s.sink.count(outcomeEffect) == effectsBefore || r.Effects == 0 {
		t.Errorf("no work completed after the store came back")
	}
}

func userByID(s *stack, id string) *user {
	for _, u := range s.users {
		if u.id == id {
			return u
		}
	}
	s.t.Fatalf("no user %s", id)
	return nil
}

func TestFault6_SameIdempotencyKeyConcurrentlyAndAfterRestart(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, apis: 2})
	users := s.newUsers(3)
	bases := []string{s.api(0), s.api(1)}
	const twins = 20
	burst := func(u *user, o *op, n int) {
		body := payload(s.sink, u, o, 100)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				a := submitUntilAccepted(context.Background(), []string{bases[i%2], bases[(i+1)%2]}, u, o, body, time.Now().Add(time.Minute))
				if a.status != http.StatusAccepted {
					t.Errorf("twin submission of %s: %s", o.Name, a)
				}
			}()
		}
		close(gate)
		wg.Wait()
	}
	keyed := map[*user]*op{}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.submit(u, 100, expectSucceeded, time.Minute)
			o := s.newOp(u, expectSucceeded)
			keyed[u] = o
			burst(u, o, twins)
			s.submit(u, 100, expectSucceeded, time.Minute)
		}()
	}
	wg.Wait()
	for _, u := range users {
		if ids := keyed[u].requestIDs(); len(ids) != 1 {
			t.Errorf("%d concurrent submissions of %s got request IDs %v, want one", twins, keyed[u].Name, ids)
		}
	}
	// Both APIs die and come back; the same keys again, concurrently.
	for _, p := range s.apis {
		s.must(p.restart())
	}
	t.Logf("both APIs SIGKILLed and restarted")
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			burst(u, keyed[u], twins/2)
			s.submit(u, 100, expectSucceeded, time.Minute)
		}()
	}
	wg.Wait()
	s.waitDrained(time.Minute)
	r := s.check("6 same Idempotency-Key concurrently, and again after an API restart")
	for _, u := range users {
		if ids := keyed[u].requestIDs(); len(ids) != 1 {
			t.Errorf("%s after the restart: request IDs %v, want one", keyed[u].Name, ids)
		}
	}
	if r.Redeliveries != 0 {
		t.Logf("note: %d redeliveries (a resubmission re-signalled a queued request; the session deduplicated it)", r.Redeliveries)
	}
}

func TestFault7_PoisonRequestUnderBothPolicies(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1})
	users := s.newUsers(3)
	cont, paused, bystander := users[0], users[1], users[2]

	// continue (the default): the poison fails after its attempts and the
	// queue moves on.
	wait := s.start(t, []*user{cont, bystander}, load{perUser: 8, sleepMS: 50, poison: map[int]bool{3: true}})

	// pause: open the session, set the policy, then submit with a poison.
	first, _ := s.submit(paused, 10, expectSucceeded, time.Minute)
	waitFinal(t, s, paused, first)
	s.adminDo("PUT", "/v1/admin/sessions/"+paused.id+"/policy", map[string]string{"policy": "pause"}, http.StatusOK)
	var ops []*op
	for i := range 8 {
		expect := expectSucceeded
		if i == 2 {
			expect = expectFailed
		}
		o, a := s.submit(paused, 50, expect, time.Minute)
		if a.status != http.StatusAccepted {
			t.Fatalf("submit %s: %s", o.Name, a)
		}
		ops = append(ops, o)
	}
	poison := ops[2]
	poison.Expect = expectSucceeded // after the operator heals and requeues it
	if !waitFor(30*time.Second, func() bool {
		st, _ := getSession(context.Background(), s.api(0), paused)
		return st.Paused && st.QueueLength == 5 && st.Running == nil
	}) {
		st, a := getSession(context.Background(), s.api(0), paused)
		t.Fatalf("session did not pause after the poison failed: %+v (%s)", st, a)
	}
	effects := s.sink.count(outcomeEffect)
	time.Sleep(2 * time.Second)
	if got := s.sink.count(outcomeEffect); got != effects {
		// Only the other users' work may have run.
		for _, c := range s.sink.snapshot() {
			if c.User == paused.id && c.Start.After(time.Now().Add(-2*time.Second)) {
				t.Fatalf("the paused queue ran %s", c.Op)
			}
		}
	}
	// The operator fixes the downstream, requeues the poison (to the end of
	// the queue) and resumes.
	s.sink.heal(poison.Name)
	pid := poison.requestIDs()[0]
	send := time.Now()
	s.adminDo("POST", "/v1/admin/requests/"+pid+"/requeue", nil, http.StatusAccepted)
	poison.mu.Lock()
	poison.Requeued = &attempt{Send: send, Answer: time.Now(), Status: http.StatusAccepted, ReqID: pid}
	poison.mu.Unlock()
	s.adminDo("POST", "/v1/admin/sessions/"+paused.id+"/resume", nil, http.StatusOK)
	wait()
	s.waitDrained(time.Minute)
	s.check("7 poison request under continue and pause policies")

	for _, c := range []struct {
		u      *user
		name   string
		status string
		tries  int
	}{{cont, cont.tag + "-3", "failed", 3}, {paused, poison.Name, "succeeded", 4}} {
		v := findOp(t, s, c.u, c.name)
		if v.Status != c.status || v.Attempts != c.tries {
			t.Errorf("poison %s: %s after %d attempts, want %s after %d", c.name, v.Status, v.Attempts, c.status, c.tries)
		}
	}
	if st, _ := getSession(context.Background(), s.api(0), paused); st.Paused {
		t.Errorf("session still paused after resume: %+v", st)
	}
}

// waitFinal waits until op o of u is final.
func waitFinal(t *testing.T, s *stack, u *user, o *op) {
	t.Helper()
	id := o.requestIDs()[0]
	if !waitFor(30*time.Second, func() bool {
		v, _ := getRequest(context.Background(), s.api(0), u, id)
		return isFinal(v.Status)
	}) {
		t.Fatalf("%s never became final", o.Name)
	}
}

// burstBatches is scenario 8's size in batches of 100. 15 batches make
// three continue-as-new boundaries. The embedded store makes each request
// cost a scan of the whole collection (see docs/faults.md), so the time per
// request grows with the burst; TURNSTILE_FAULTS_BURST_BATCHES=30 runs the
// full 3,000 in about ten minutes.
func burstBatches(t *testing.T) int {
	if v := os.Getenv("TURNSTILE_FAULTS_BURST_BATCHES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			t.Fatalf("TURNSTILE_FAULTS_BURST_BATCHES=%q: want 1 to 100", v)
		}
		return n
	}
	return 15
}

func TestFault8_BurstPastContinueAsNewKeepsOrder(t *testing.T) {
	const perBatch = 100
	batches := burstBatches(t)
	s := newStack(t, stackOptions{workers: 1, env: map[string]string{"TURNSTILE_MAX_QUEUE": strconv.Itoa(batches*perBatch + 100)}})
	u := s.newUsers(1)[0]
	start := time.Now()
	for b := range batches {
		ops := make([]*op, perBatch)
		bodies := make([]map[string]any, perBatch)
		for i := range ops {
			ops[i] = s.newOp(u, expectSucceeded)
			bodies[i] = payload(s.sink, u, ops[i], 0)
		}
		a := submitBatch(context.Background(), s.api(0), u, fmt.Sprintf("%s-batch%d", u.tag, b), ops, bodies, time.Now().Add(time.Minute))
		if a.status != http.StatusAccepted {
			t.Fatalf("batch %d: %s", b, a)
		}
	}
	t.Logf("%d requests accepted in %s", batches*perBatch, time.Since(start).Round(100*time.Millisecond))
	s.waitDrained(time.Duration(batches) * 35 * time.Second)
	t.Logf("waited %s for the queue after the first submission", time.Since(start).Round(100*time.Millisecond))
	s.check(fmt.Sprintf("8 one user bursts %d requests past continue-as-new", batches*perBatch))

	// The session did continue as new: more than one run, the earlier ones
	// closed as ContinuedAsNew.
	resp, err := s.temporalClient().ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{
		Namespace: "default", Query: fmt.Sprintf("WorkflowId = 'session-%s'", u.id), PageSize: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	can := 0
	for _, e := range resp.Executions {
		if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
			can++
		}
	}
	t.Logf("session-%s: %d runs, %d continued as new", u.id, len(resp.Executions), can)
	if can == 0 {
		t.Errorf("the session never continued as new: %d runs", len(resp.Executions))
	}
}

func TestFault9_HundredsOfUsersOnePoisonedOthersNotSlowed(t *testing.T) {
	const nUsers, perUser = 200, 2
	s := newStack(t, stackOptions{workers: 2})
	users := s.newUsers(nUsers)
	poisoned := users[0]

	// Three waves, in each every user submitting a batch: healthy, then
	// with all of one user's requests poisoned (each fails slowly, after
	// all its attempts), then healthy again. The embedded store gets slower
	// as it fills, so the poisoned wave is compared with the mean of the
	// healthy waves around it.
	base1 := s.wave(t, users, perUser, nil)
	withPoison := s.wave(t, users, perUser, poisoned)
	base2 := s.wave(t, users, perUser, nil)
	s.check(fmt.Sprintf("9 %d users at once, one poisoned", nUsers))

	others := func(o *op) bool { return o.User != poisoned.id }
	b1, p, b2 := s.latency(base1, others), s.latency(withPoison, others), s.latency(base2, others)
	t.Logf("latency of the %d other users: healthy %s; one user poisoned %s; healthy again %s", nUsers-1, b1, p, b2)
	baseline := (b1.P99 + b2.P99) / 2
	// Generous: the same machine and load, plus one user's slow failures.
	if limit := 2*baseline + 2*time.Second; p.P99 > limit {
		t.Errorf("the other users were slowed by the poisoned one: p99 %s > %s (2 × healthy p99 %s + 2s)", p.P99, limit, baseline)
	}
	for _, o := range withPoison {
		if ids := o.requestIDs(); o.User == poisoned.id && len(ids) > 0 {
			if v := s.records[ids[0]]; v.Status != "failed" || v.Attempts != 3 {
				t.Errorf("poisoned %s: %s after %d attempts, want failed after 3", o.Name, v.Status, v.Attempts)
			}
		}
	}
}

// waveSubmitters bounds the batch submissions in flight. All of a wave's
// sessions still run at once (each batch takes tens of milliseconds to
// accept, a session seconds to drain); unbounded, 200 simultaneous
// submissions queue up in front of the embedded store, whose every
// filtered query scans the collection, until the API's 10s backend
// timeout answers 503.
const waveSubmitters = 16

// wave has every user submit perUser ops as one batch and waits until they
// are done. The poisoned user's ops fail at the sink, slowly. It returns
// the wave's ops.
func (s *stack) wave(t *testing.T, users []*user, perUser int, poisoned *user) []*op {
	t.Helper()
	var (
		mu  sync.Mutex
		all []*op
		wg  sync.WaitGroup
		sem = make(chan struct{}, waveSubmitters)
	)
	for _, u := range users {
		ops := make([]*op, perUser)
		bodies := make([]map[string]any, perUser)
		for i := range ops {
			sleepMS, expect := 20, expectSucceeded
			if u == poisoned {
				sleepMS, expect = 500, expectFailed
			}
			ops[i] = s.newOp(u, expect)
			if u == poisoned {
				s.sink.poison(ops[i].Name)
			}
			bodies[i] = payload(s.sink, u, ops[i], sleepMS)
		}
		mu.Lock()
		all = append(all, ops...)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			key := ops[0].Name + "-batch"
			if a := submitBatch(context.Background(), s.api(0), u, key, ops, bodies, time.Now().Add(3*time.Minute)); a.status != http.StatusAccepted {
				t.Errorf("batch %s never accepted: %s", key, a)
			}
		}()
	}
	wg.Wait()
	s.waitDrained(4 * time.Minute)
	return all
}

// latency is the enqueue→finish latency of ops (those keep selects) as
// the API recorded it.
func (s *stack) latency(ops []*op, keep func(*op) bool) latencyStats {
	var ds []time.Duration
	for _, o := range ops {
		if keep != nil && !keep(o) {
			continue
		}
		ids := o.requestIDs()
		if len(ids) == 0 {
			continue
		}
		if v, ok := s.records[ids[0]]; ok && v.FinishedAt != nil {
			ds = append(ds, v.FinishedAt.Sub(v.EnqueuedAt))
		}
	}
	return percentiles(ds)
}

// TestFault10_WorkerKilledMidBatchResumes makes http a short type, so a
// user's backlog runs in batches (activities.RunBatch, one activity for
// many requests), kills the worker while a batch is at the sink, and
// restarts it: the batch is retried after the heartbeat timeout and resumes
// at the first request whose outcome was not recorded. Nothing may be lost,
// run twice to completion, reordered or overlapped.
func TestFault10_WorkerKilledMidBatchResumes(t *testing.T) {
	s := newStack(t, stackOptions{workers: 1, env: map[string]string{"TURNSTILE_LOCAL_TYPES": "http"}})
	users := s.newUsers(3)
	// No pause between submissions: each user's queue fills faster than
	// the sink answers, so requests wait together and are batched.
	wait := s.start(t, users, load{perUser: 30, sleepMS: 100, pace: time.Millisecond})

	s.waitBusy(t, 30*time.Second)
	time.Sleep(700 * time.Millisecond) // a few requests into the batches
	// Between two calls nothing is in flight and the kill would not bite:
	// kill while a call is at the sink.
	s.waitBusy(t, 10*time.Second)
	w := s.workers[0]
	s.must(w.kill())
	t.Logf("worker SIGKILLed during its batches")
	time.Sleep(time.Second)
	s.must(w.start())
	wait()
	s.waitDrained(drainAfterHeartbeat)
	r := s.check("10 worker SIGKILL mid-batch, restarted")
	if r.Redeliveries == 0 {
		t.Errorf("the kill did not bite: no request was retried after it")
	}

	// The scenario only tests batches if requests ran in them.
	logs, err := filepath.Glob(filepath.Join(s.dir, "worker*.log"))
	if err != nil {
		t.Fatal(err)
	}
	batched := 0
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, `"msg":"request finished"`) && strings.Contains(line, `"activity":"RunBatch"`) {
				batched++
			}
		}
	}
	t.Logf("%d requests finished inside batches", batched)
	if batched < 10 {
		t.Errorf("only %d requests ran in batches: the scenario did not exercise RunBatch", batched)
	}
}
