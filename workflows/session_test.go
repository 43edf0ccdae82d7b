package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
)

// fakeStore is an in-memory stand-in for MongoDB: these are unit tests of the
// workflow logic. The real store is exercised by store's and tests/ suites.
type fakeStore struct {
	mu   sync.Mutex
	reqs map[string]*models.Request
	// locks are per-request locks: Settle holds one while its run works, as
	// the embedded store does, and cancelQueued waits for it.
	locks sync.Map // id -> *sync.Mutex
	// settled lists the requests Settle ran, in order.
	settled []string
	// failSettleBefore[id] = n fails the first n Settles of id before they
	// run it (MongoDB unreachable); failSettleAfter[id] = n fails the first
	// n Settles of id after they ran it (the outcome could not be written).
	failSettleBefore, failSettleAfter map[string]int
}

func newFakeStore() *fakeStore {
	return &fakeStore{reqs: map[string]*models.Request{}, failSettleBefore: map[string]int{}, failSettleAfter: map[string]int{}}
}

func (f *fakeStore) lock(id string) (unlock func()) {
	m, _ := f.locks.LoadOrStore(id, &sync.Mutex{})
	m.(*sync.Mutex).Lock()
	return m.(*sync.Mutex).Unlock
}

// cancelQueued cancels a queued request, as store.Requests.CancelQueued
// does for the API, and says whether it did.
func (f *fakeStore) cancelQueued(id string) bool {
	defer f.lock(id)()
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reqs[id]
	if !ok || r.Status != models.StatusQueued {
		return false
	}
	now := time.Now()
	r.Status, r.FinishedAt = models.StatusCancelled, &now
	return true
}

func (f *fakeStore) settledIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.settled...)
}

// Settle implements activities.Settler like store.Requests.Settle, as one
// change under the fake's lock: a request of owner that is queued or
// running is run and its settlement recorded; any other status is returned
// unchanged without running it.
func (f *fakeStore) Settle(_ context.Context, id, owner string, _ func() time.Time, run func(cur *models.Request) models.Settlement) (*models.Request, bool, error) {
	defer f.lock(id)()
	f.mu.Lock()
	r, ok := f.reqs[id]
	if !ok || (owner != "" && r.UserID != owner) {
		f.mu.Unlock()
		return nil, false, fmt.Errorf("fake settle %s: %w", id, activities.ErrNotFound)
	}
	if n := f.failSettleBefore[id]; n > 0 {
		f.failSettleBefore[id] = n - 1
		f.mu.Unlock()
		return nil, false, errors.New("fake settle: store unreachable")
	}
	cur := *r
	f.mu.Unlock()
	if cur.Status != models.StatusQueued && cur.Status != models.StatusRunning {
		return &cur, false, nil
	}
	s := run(&cur)
	if cur.StartedAt != nil && cur.Status == models.StatusRunning {
		s.StartedAt = *cur.StartedAt // a retried start keeps the first
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.settled = append(f.settled, id)
	if n := f.failSettleAfter[id]; n > 0 {
		f.failSettleAfter[id] = n - 1
		return &cur, true, errors.New("fake settle: write timed out")
	}
	r, ok = f.reqs[id]
	if !ok {
		return &cur, true, fmt.Errorf("fake settle %s: %w", id, activities.ErrNotFound)
	}
	r.Status, r.Attempts = s.Status, s.Attempts
	if !s.StartedAt.IsZero() {
		started := s.StartedAt
		r.StartedAt = &started
	}
	if s.Status.Final() {
		finished := s.FinishedAt
		r.FinishedAt = &finished
		if s.Result != "" {
			r.Result = s.Result
		}
		if s.Error != "" {
			r.Error = s.Error
		}
	}
	return &cur, true, nil
}

func (f *fakeStore) add(userID string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.reqs[id] = &models.Request{ID: id, UserID: userID, Type: "work", Payload: `{"id":"` + id + `"}`, Status: models.StatusQueued}
	}
}

func (f *fakeStore) get(id string) models.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.reqs[id]
}

func (f *fakeStore) MarkRunning(_ context.Context, id, _ string, now time.Time) (*models.Request, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.reqs[id]
	if !ok {
		return nil, activities.ErrNotFound
	}
	if !r.Status.Final() {
		r.Status = models.StatusRunning
		if r.StartedAt == nil {
			r.StartedAt = &now
		}
	}
	c := *r
	return &c, nil
}

func (f *fakeStore) SetAttempts(_ context.Context, id string, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reqs[id].Status != models.StatusRunning {
		return activities.ErrNotRunning // as the store's ErrConflict
	}
	f.reqs[id].Attempts = n
	return nil
}

func (f *fakeStore) Finish(_ context.Context, id string, st models.Status, result, errMsg string, attempts int, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs[id]
	if r.Status.Final() {
		return nil
	}
	r.Status, r.Result, r.Error, r.Attempts, r.FinishedAt = st, result, errMsg, attempts, &now
	return nil
}

// recorder is the "work" handler: it records the order requests ran in,
// catches overlapping executions and fails requests as told.
type recorder struct {
	mu      sync.Mutex
	order   []string
	active  int
	overlap bool
	// calls counts the attempts of each request.
	calls map[string]int
	// onRun, if set, is called at the start of every attempt.
	onRun func(ctx context.Context, job activities.Job)
	// failFirst[id] = n fails the first n attempts of id; -1 fails always.
	failFirst map[string]int
	permanent map[string]bool
}

func (r *recorder) Handle(ctx context.Context, job activities.Job) (json.RawMessage, error) {
	if r.onRun != nil {
		r.onRun(ctx, job)
		if err := ctx.Err(); err != nil {
			// Like a real handler: work cut short by its deadline fails.
			return nil, err
		}
	}
	r.mu.Lock()
	r.active++
	if r.active > 1 {
		r.overlap = true
	}
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[job.ID]++
	n := r.failFirst[job.ID]
	perm := r.permanent[job.ID]
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.active--; r.mu.Unlock() }()
	if perm {
		return nil, activities.Permanent(errors.New("bad input"))
	}
	if n < 0 || job.Attempt <= n {
		return nil, fmt.Errorf("transient failure %d", job.Attempt)
	}
	r.mu.Lock()
	r.order = append(r.order, job.ID)
	r.mu.Unlock()
	return job.Payload, nil
}

func (r *recorder) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

func (r *recorder) ran() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}

const user = "u1"

var testConfig = Config{
	IdleTimeout:  time.Hour,
	MaxAttempts:  3,
	RetryInitial: time.Second,
	RetryMax:     time.Second,
}

type harness struct {
	testsuite.WorkflowTestSuite
	env   *testsuite.TestWorkflowEnvironment
	store *fakeStore
	work  *recorder
	acts  *activities.Activities
	t     *testing.T
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, store: newFakeStore(), work: &recorder{failFirst: map[string]int{}, permanent: map[string]bool{}}}
	h.env = h.NewTestWorkflowEnvironment()
	reg := activities.NewRegistry()
	reg.Register("work", h.work)
	h.env.RegisterWorkflowWithOptions(Session, workflow.RegisterOptions{Name: models.SessionWorkflowType})
	h.acts = &activities.Activities{Store: h.store, Handlers: reg, HeartbeatEvery: time.Second}
	h.env.RegisterActivity(h.acts)
	return h
}

// submitAt signals a submission of ids after d.
func (h *harness) submitAt(d time.Duration, ids ...string) {
	h.store.add(user, ids...)
	h.env.RegisterDelayedCallback(func() {
		sub := models.Submission{}
		for _, id := range ids {
			sub.Requests = append(sub.Requests, models.QueuedRequest{ID: id, Type: "work"})
		}
		h.env.SignalWorkflow(models.SignalSubmit, sub)
	}, d)
}

func (h *harness) signalAt(d time.Duration, name string, arg any) {
	h.env.RegisterDelayedCallback(func() { h.env.SignalWorkflow(name, arg) }, d)
}

func (h *harness) run(in Input) {
	h.t.Helper()
	if in.UserID == "" {
		in.UserID = user
	}
	if in.Config.IdleTimeout == 0 && in.Config.MaxAttempts == 0 {
		in.Config = testConfig
	}
	h.env.ExecuteWorkflow(models.SessionWorkflowType, in)
	if !h.env.IsWorkflowCompleted() {
		h.t.Fatal("workflow did not complete")
	}
}

func (h *harness) query() models.SessionState {
	h.t.Helper()
	v, err := h.env.QueryWorkflow(models.QueryState)
	if err != nil {
		h.t.Fatalf("query: %v", err)
	}
	var st models.SessionState
	if err := v.Get(&st); err != nil {
		h.t.Fatalf("decode state: %v", err)
	}
	return st
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (h *harness) wantRan(want ...string) {
	h.t.Helper()
	if got := h.work.ran(); !equal(got, want) {
		h.t.Fatalf("ran %v, want %v", got, want)
	}
	if h.work.overlap {
		h.t.Fatal("two requests of one user ran at once")
	}
}

func (h *harness) wantStatus(id string, st models.Status, attempts int) {
	h.t.Helper()
	r := h.store.get(id)
	if r.Status != st || r.Attempts != attempts {
		h.t.Fatalf("%s: status %s attempts %d, want %s attempts %d (error %q)", id, r.Status, r.Attempts, st, attempts, r.Error)
	}
}

func TestSessionWithFakeStore_RunsInterleavedSignalsInOrder(t *testing.T) {
	h := newHarness(t)
	h.submitAt(0, "a1", "a2")
	h.submitAt(time.Millisecond, "a3")
	h.submitAt(2*time.Second, "a4", "a5", "a6")
	h.submitAt(3*time.Second, "a7")
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	if err := h.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	h.wantRan("a1", "a2", "a3", "a4", "a5", "a6", "a7")
	for _, id := range h.work.ran() {
		h.wantStatus(id, models.StatusSucceeded, 1)
		if r := h.store.get(id); r.Result != r.Payload {
			t.Fatalf("%s: result %q, want payload %q", id, r.Result, r.Payload)
		}
	}
}

func TestSessionWithFakeStore_RetriesThenSucceeds(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["r1"] = 2
	h.submitAt(0, "r1", "r2")
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("r1", "r2")
	h.wantStatus("r1", models.StatusSucceeded, 3)
	h.wantStatus("r2", models.StatusSucceeded, 1)
}

func TestSessionWithFakeStore_ExhaustedRetriesFailAndQueueMovesOn(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["bad"] = -1
	h.work.permanent["perm"] = true
	h.submitAt(0, "ok1", "bad", "perm", "ok2")
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("ok1", "ok2")
	h.wantStatus("bad", models.StatusFailed, 3)
	h.wantStatus("perm", models.StatusFailed, 1)
	if r := h.store.get("bad"); r.Error == "" {
		t.Fatal("failed request has no error recorded")
	}
}

func TestSessionWithFakeStore_FailurePolicyPauseStopsQueueUntilResume(t *testing.T) {
	h := newHarness(t)
	h.work.permanent["poison"] = true
	h.signalAt(0, models.SignalPolicy, models.PolicySignal{Policy: models.PolicyPause})
	h.submitAt(time.Millisecond, "p1", "poison", "p2")
	h.env.RegisterDelayedCallback(func() {
		st := h.query()
		if !st.Paused || st.QueueLength != 1 || st.Queue[0].ID != "p2" || st.Failed != 1 {
			t.Errorf("after poison: %+v, want paused with p2 waiting", st)
		}
		if got := h.work.ran(); !equal(got, []string{"p1"}) {
			t.Errorf("ran %v while paused", got)
		}
	}, 10*time.Minute)
	h.signalAt(11*time.Minute, models.SignalResume, nil)
	h.signalAt(12*time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("p1", "p2")
	h.wantStatus("poison", models.StatusFailed, 1)
}

func TestSessionWithFakeStore_CloseWhileBusyDrainsThenEnds(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["c1"] = 2 // keeps c1 busy across retries while close arrives
	h.submitAt(0, "c1", "c2", "c3")
	h.signalAt(500*time.Millisecond, models.SignalClose, nil)
	h.run(Input{})
	if err := h.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	h.wantRan("c1", "c2", "c3")
}

func TestSessionWithFakeStore_SubmitAfterCloseReopens(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["o1"] = 1
	h.submitAt(0, "o1")
	h.signalAt(100*time.Millisecond, models.SignalClose, nil)
	h.env.RegisterDelayedCallback(func() {
		if st := h.query(); st.State != models.SessionClosing {
			t.Errorf("state %q after close, want closing", st.State)
		}
	}, 200*time.Millisecond)
	h.submitAt(300*time.Millisecond, "o2")
	h.env.RegisterDelayedCallback(func() {
		if st := h.query(); st.State != models.SessionOpen {
			t.Errorf("state %q after a new submission, want open", st.State)
		}
	}, 400*time.Millisecond)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("o1", "o2")
}

func TestSessionWithFakeStore_IdleTimeoutEndsSession(t *testing.T) {
	h := newHarness(t)
	h.submitAt(0, "i1")
	h.env.RegisterDelayedCallback(func() {
		if st := h.query(); st.State != models.SessionOpen {
			t.Errorf("state %q before idle timeout, want open", st.State)
		}
	}, 30*time.Minute)
	start := h.env.Now()
	h.run(Input{Config: Config{IdleTimeout: time.Hour}})
	if err := h.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if elapsed := h.env.Now().Sub(start); elapsed < time.Hour {
		t.Fatalf("session ended after %v, before its idle timeout", elapsed)
	}
	h.wantRan("i1")
}

func TestSessionWithFakeStore_DeduplicatesRepeatedRequestIDs(t *testing.T) {
	h := newHarness(t)
	h.submitAt(0, "d1", "d2")
	h.submitAt(time.Millisecond, "d1")     // a retried signal while queued
	h.submitAt(10*time.Second, "d2", "d3") // and after it ran
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("d1", "d2", "d3")
}

func TestSessionWithFakeStore_SkipsRequestsFinalOrMissingInStore(t *testing.T) {
	h := newHarness(t)
	h.submitAt(0, "s1", "s2", "s3")
	// s2 was cancelled in MongoDB before it started; s3's submission was undone.
	h.store.reqs["s2"].Status = models.StatusCancelled
	delete(h.store.reqs, "s3")
	h.submitAt(time.Second, "s4")
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("s1", "s4")
	h.wantStatus("s2", models.StatusCancelled, 0)
}

func TestSessionWithFakeStore_CancelSignalRemovesQueuedRequest(t *testing.T) {
	h := newHarness(t)
	h.signalAt(0, models.SignalPause, nil)
	h.submitAt(time.Millisecond, "x1", "x2", "x3")
	h.signalAt(time.Second, models.SignalCancel, models.CancelSignal{RequestID: "x2"})
	h.env.RegisterDelayedCallback(func() {
		st := h.query()
		if st.QueueLength != 2 || st.Queue[0].ID != "x1" || st.Queue[1].ID != "x3" || st.Queue[1].Position != 2 {
			t.Errorf("queue after cancel: %+v", st.Queue)
		}
	}, 2*time.Second)
	h.signalAt(3*time.Second, models.SignalResume, nil)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("x1", "x3")
}

func TestSessionWithFakeStore_QueryShowsPositionsAndRunning(t *testing.T) {
	h := newHarness(t)
	h.signalAt(0, models.SignalPause, nil)
	h.submitAt(time.Millisecond, "q1", "q2", "q3")
	h.env.RegisterDelayedCallback(func() {
		st := h.query()
		if st.UserID != user || !st.Paused || st.State != models.SessionOpen || st.QueueLength != 3 || st.Running != nil {
			t.Errorf("state: %+v", st)
		}
		for i, e := range st.Queue {
			if e.Position != i+1 || e.ID != fmt.Sprintf("q%d", i+1) {
				t.Errorf("queue[%d] = %+v", i, e)
			}
		}
	}, time.Second)
	h.signalAt(2*time.Second, models.SignalResume, nil)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("q1", "q2", "q3")
	if st := h.query(); st.Processed != 3 || st.QueueLength != 0 {
		t.Fatalf("final state %+v", st)
	}
}

func TestSessionWithFakeStore_ContinueAsNewCarriesQueueAndSeen(t *testing.T) {
	// First run: Temporal suggests continue-as-new at once, so the run must
	// hand over its whole state without running anything.
	h := newHarness(t)
	h.env.SetContinueAsNewSuggested(true)
	h.store.add(user, "n1", "n2")
	h.submitAt(0, "n3")
	h.run(Input{Queue: []models.QueuedRequest{{ID: "n1", Type: "work"}, {ID: "n2", Type: "work"}}, Seen: []string{"old", "n1", "n2"}, Processed: 7})
	var canErr *workflow.ContinueAsNewError
	if err := h.env.GetWorkflowError(); !errors.As(err, &canErr) {
		t.Fatalf("want continue-as-new, got %v", err)
	}
	var next Input
	if err := converter.GetDefaultDataConverter().FromPayloads(canErr.Input, &next); err != nil {
		t.Fatal(err)
	}
	if len(next.Queue) != 3 || next.Queue[0].ID != "n1" || next.Queue[2].ID != "n3" || next.Processed != 7 || len(next.Seen) != 4 {
		t.Fatalf("carried %+v", next)
	}
	if len(h.work.ran()) != 0 {
		t.Fatalf("ran %v before continuing as new", h.work.ran())
	}

	// Second run: the carried queue runs in order and the carried seen set
	// still deduplicates a late repeat of n1 and old.
	h2 := newHarness(t)
	h2.store = h.store
	h2.env.RegisterActivity(&activities.Activities{Store: h.store, Handlers: registryOf(h2.work), HeartbeatEvery: time.Second})
	h2.submitAt(0, "n1", "old", "n4")
	h2.signalAt(time.Minute, models.SignalClose, nil)
	h2.run(next)
	h2.wantRan("n1", "n2", "n3", "n4")
	if st := h2.query(); st.Processed != 11 {
		t.Fatalf("processed %d, want 11", st.Processed)
	}
}

func registryOf(h activities.Handler) *activities.Registry {
	r := activities.NewRegistry()
	r.Register("work", h)
	return r
}

func TestSessionWithFakeStore_RequeueRunsAFailedRequestAgainAtTheTail(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["poison"] = -1
	h.signalAt(0, models.SignalPolicy, models.PolicySignal{Policy: models.PolicyPause})
	h.submitAt(time.Millisecond, "r1", "poison", "r2", "r3")
	// An operator fixes the cause, requeues the request and resumes.
	h.env.RegisterDelayedCallback(func() {
		if st := h.query(); !st.Paused || st.QueueLength != 2 {
			t.Errorf("before requeue: %+v", st)
		}
		h.work.mu.Lock()
		h.work.failFirst["poison"] = 0
		h.work.mu.Unlock()
		h.store.mu.Lock()
		h.store.reqs["poison"].Status = models.StatusQueued
		h.store.mu.Unlock()
		h.env.SignalWorkflow(models.SignalRequeue, models.Submission{Requests: []models.QueuedRequest{{ID: "poison", Type: "work"}}})
		// A repeated requeue while it waits is not queued twice.
		h.env.SignalWorkflow(models.SignalRequeue, models.Submission{Requests: []models.QueuedRequest{{ID: "poison", Type: "work"}}})
	}, 10*time.Minute)
	h.signalAt(11*time.Minute, models.SignalResume, nil)
	h.signalAt(12*time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("r1", "r2", "r3", "poison")
	// Three failed attempts before, one successful after: four in all.
	h.wantStatus("poison", models.StatusSucceeded, 4)
}

func TestSessionWithFakeStore_SubmitOfASeenIDDoesNotRequeue(t *testing.T) {
	h := newHarness(t)
	h.work.permanent["p"] = true
	h.submitAt(0, "p")
	h.submitAt(time.Minute, "p") // an ordinary resubmission stays deduplicated
	h.signalAt(2*time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan()
	h.wantStatus("p", models.StatusFailed, 1)
}

func TestSessionWithFakeStore_LocalTypesRunInOrderWithRetriesAndFailures(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["l2"] = 2
	h.work.failFirst["l3"] = -1
	h.work.permanent["l4"] = true
	h.submitAt(0, "l1", "l2", "l3")
	h.submitAt(time.Second, "l4", "l5")
	h.signalAt(time.Hour, models.SignalClose, nil)
	cfg := testConfig
	cfg.LocalTypes = []string{"work"}
	h.run(Input{Config: cfg})
	if err := h.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	h.wantRan("l1", "l2", "l5")
	h.wantStatus("l1", models.StatusSucceeded, 1)
	h.wantStatus("l2", models.StatusSucceeded, 3)
	h.wantStatus("l3", models.StatusFailed, 3)
	h.wantStatus("l4", models.StatusFailed, 1)
}

// A local-type request gets MaxAttempts tries whatever its backoffs add up
// to: with only StartToCloseTimeout set, the SDK takes LocalTimeout (10 s)
// as the budget of all tries together, and a request retried every 3 s
// failed after 4 of 6 tries, recorded as 6 (issue 12.1).
func TestSessionWithFakeStore_LocalTypeGetsAllItsAttempts(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["slow"] = -1
	h.submitAt(0, "slow")
	h.signalAt(time.Hour, models.SignalClose, nil)
	cfg := testConfig
	cfg.LocalTypes = []string{"work"}
	cfg.MaxAttempts = 6
	cfg.RetryInitial, cfg.RetryMax = 3*time.Second, 3*time.Second
	h.run(Input{Config: cfg})
	if err := h.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if n := h.work.callsOf("slow"); n != 6 {
		t.Errorf("handler ran %d times, want 6", n)
	}
	h.wantStatus("slow", models.StatusFailed, 6)
}
