package workflows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
)

// The batch tests need the fake store to take the Settler path of RunBatch.
var _ activities.Settler = (*fakeStore)(nil)

// batchConfig runs "work" as a local type in batches of size; the budget is
// generous so that a batch under the race detector is not cut short.
func batchConfig(size int) Config {
	cfg := testConfig
	cfg.LocalTypes = []string{"work"}
	cfg.BatchSize = size
	cfg.BatchBudget = time.Minute
	return cfg
}

// activityLog counts the activities a session started, by name.
type activityLog struct {
	mu      sync.Mutex
	regular map[string]int
	local   map[string]int
	// batches are the request IDs of every RunBatch started, in order.
	batches [][]string
	// onBatch, if set, is called (on the test environment's goroutine, where
	// queries and signals may be sent) as each RunBatch starts.
	onBatch func(in activities.BatchInput)
}

func (h *harness) logActivities() *activityLog {
	l := &activityLog{regular: map[string]int{}, local: map[string]int{}}
	h.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		name := info.ActivityType.Name
		var in activities.BatchInput
		if name == "RunBatch" {
			if err := args.Get(&in); err != nil {
				h.t.Errorf("decode RunBatch input: %v", err)
			}
		}
		l.mu.Lock()
		l.regular[name]++
		if name == "RunBatch" {
			var ids []string
			for _, it := range in.Items {
				ids = append(ids, it.ID)
			}
			l.batches = append(l.batches, ids)
		}
		onBatch := l.onBatch
		l.mu.Unlock()
		if name == "RunBatch" && onBatch != nil {
			onBatch(in)
		}
	})
	h.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		l.mu.Lock()
		l.local[info.ActivityType.Name]++
		l.mu.Unlock()
	})
	return l
}

func (l *activityLog) counts() (regular, local map[string]int, batches [][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return copyCounts(l.regular), copyCounts(l.local), slices.Clone(l.batches)
}

func copyCounts(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// queryState is query without t.Fatal, for callbacks off the test goroutine.
func (h *harness) queryState() (models.SessionState, error) {
	v, err := h.env.QueryWorkflow(models.QueryState)
	if err != nil {
		return models.SessionState{}, err
	}
	var st models.SessionState
	err = v.Get(&st)
	return st, err
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i+1)
	}
	return out
}

func (h *harness) wantNoError() {
	h.t.Helper()
	if err := h.env.GetWorkflowError(); err != nil {
		h.t.Fatal(err)
	}
}

func TestBatch_TwentyRequestsRunInBatchesInOrder(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	all := ids("b", 20)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(5)})
	h.wantNoError()

	h.wantRan(all...)
	for _, id := range all {
		h.wantStatus(id, models.StatusSucceeded, 1)
		r := h.store.get(id)
		if r.StartedAt == nil || r.FinishedAt == nil || r.Result != r.Payload {
			t.Fatalf("%s recorded as %+v", id, r)
		}
	}
	if got := h.store.settledIDs(); !equal(got, all) {
		t.Fatalf("settled %v, want each request once in order", got)
	}
	regular, local, batches := log.counts()
	if regular["RunBatch"] == 0 {
		t.Fatalf("RunBatch never ran: regular %v local %v", regular, local)
	}
	if n := total(regular) + total(local); n >= len(all) {
		t.Fatalf("%d activity executions for %d requests (regular %v, local %v): batching saved nothing", n, len(all), regular, local)
	}
	var batched []string
	for _, b := range batches {
		if len(b) < 2 || len(b) > 5 {
			t.Fatalf("batch of %d requests %v with BatchSize 5", len(b), b)
		}
		batched = append(batched, b...)
	}
	if !equal(batched, all) {
		t.Fatalf("batches %v do not cover the requests in order", batches)
	}
	// A fresh run's one read of the inbox (Pending) is the only local one.
	if regular["RunBatch"] != 4 || total(local) != local["Pending"] || local["Pending"] != 1 || regular["Run"] != 0 {
		t.Fatalf("regular %v local %v, want exactly 4 RunBatch, the fresh run's Pending and nothing else", regular, local)
	}
	if st := h.query(); st.Processed != 20 || st.Failed != 0 || st.QueueLength != 0 || st.Running != nil {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_RetryableFailureMidBatchRetriesInOrder(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	h.work.failFirst["t03"] = 1
	all := ids("t", 6)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan(all...)
	h.wantStatus("t03", models.StatusSucceeded, 2)
	if n := h.work.callsOf("t03"); n != 2 {
		t.Fatalf("t03 tried %d times, want 2", n)
	}
	for _, id := range all {
		if id != "t03" {
			h.wantStatus(id, models.StatusSucceeded, 1)
		}
	}
	regular, local, batches := log.counts()
	// The batch stops at t03, which runs on its own (a local activity: it is
	// a local type) and the rest runs as the next batch.
	if len(batches) != 2 || !equal(batches[0], all) || !equal(batches[1], all[3:]) {
		t.Fatalf("batches %v", batches)
	}
	if local["Run"] != 1 || regular["Run"] != 0 {
		t.Fatalf("t03's retry: regular %v local %v, want one local Run", regular, local)
	}
	if st := h.query(); st.Processed != 6 || st.Failed != 0 {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_RetryableFailureMidBatchStopsAtMaxAttempts(t *testing.T) {
	h := newHarness(t)
	h.work.failFirst["f02"] = -1
	all := ids("f", 4)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan("f01", "f03", "f04")
	h.wantStatus("f02", models.StatusFailed, int(testConfig.MaxAttempts))
	if n := h.work.callsOf("f02"); n != int(testConfig.MaxAttempts) {
		t.Fatalf("f02 tried %d times, want MaxAttempts = %d", n, testConfig.MaxAttempts)
	}
	if r := h.store.get("f02"); r.Error == "" || r.FinishedAt == nil {
		t.Fatalf("f02 recorded as %+v", r)
	}
	if st := h.query(); st.Processed != 4 || st.Failed != 1 {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_PermanentFailureWithPausePolicyLeavesRestQueued(t *testing.T) {
	h := newHarness(t)
	h.work.permanent["p03"] = true
	all := ids("p", 6)
	h.signalAt(0, models.SignalPolicy, models.PolicySignal{Policy: models.PolicyPause})
	h.submitAt(time.Millisecond, all...)
	h.env.RegisterDelayedCallback(func() {
		st, err := h.queryState()
		if err != nil {
			t.Errorf("query: %v", err)
			return
		}
		var queued []string
		for _, e := range st.Queue {
			queued = append(queued, e.ID)
		}
		if !st.Paused || st.Failed != 1 || st.Processed != 3 || st.Running != nil || st.QueueLength != 3 || !equal(queued, all[3:]) {
			t.Errorf("after p03 failed: %+v, want paused with p04..p06 queued", st)
		}
		if got := h.work.ran(); !equal(got, all[:2]) {
			t.Errorf("ran %v while paused, want %v", got, all[:2])
		}
		for _, id := range all[3:] {
			if r := h.store.get(id); r.Status != models.StatusQueued || r.Attempts != 0 {
				t.Errorf("%s is %s (attempts %d) while paused, want queued", id, r.Status, r.Attempts)
			}
		}
	}, 10*time.Minute)
	h.signalAt(11*time.Minute, models.SignalResume, nil)
	h.signalAt(12*time.Minute, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan("p01", "p02", "p04", "p05", "p06")
	h.wantStatus("p03", models.StatusFailed, 1)
	if r := h.store.get("p03"); r.Error == "" {
		t.Fatal("p03 failed without an error recorded")
	}
}

func TestBatch_PermanentFailureWithContinuePolicyRunsOn(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	h.work.permanent["c02"] = true
	all := ids("c", 4)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan("c01", "c03", "c04")
	h.wantStatus("c02", models.StatusFailed, 1)
	if _, _, batches := log.counts(); len(batches) != 1 {
		t.Fatalf("batches %v, want one: a permanent failure does not end a batch under policy continue", batches)
	}
	if st := h.query(); st.Processed != 4 || st.Failed != 1 || st.Paused {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_RequestCancelledOrForeignOrMissingIsSkipped(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	all := ids("s", 7)
	h.submitAt(0, all...)
	// s02 was cancelled before its batch started; s04 belongs to another
	// user (a forged signal); s05's submission was undone.
	h.store.cancelQueued("s02")
	h.store.reqs["s04"].UserID = "someone-else"
	delete(h.store.reqs, "s05")
	// s06 is cancelled while the batch runs, before its turn.
	h.work.onRun = func(_ context.Context, job activities.Job) {
		if job.ID == "s03" && !h.store.cancelQueued("s06") {
			t.Error("could not cancel s06 while s03 ran")
		}
	}
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan("s01", "s03", "s07")
	h.wantStatus("s02", models.StatusCancelled, 0)
	h.wantStatus("s06", models.StatusCancelled, 0)
	if r := h.store.get("s04"); r.Status != models.StatusQueued || r.StartedAt != nil {
		t.Fatalf("another user's request was touched: %+v", r)
	}
	if _, _, batches := log.counts(); len(batches) != 1 {
		t.Fatalf("batches %v, want one", batches)
	}
	if st := h.query(); st.Processed != 3 || st.Failed != 0 {
		t.Fatalf("final state %+v: skipped requests are not processed", st)
	}
}

func TestBatch_QueryDuringBatchShowsRunningAndBatchQueued(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	all := ids("q", 6)
	checked := 0
	log.onBatch = func(in activities.BatchInput) {
		if in.Items[0].ID != "q01" {
			return
		}
		checked++
		st, err := h.queryState()
		if err != nil {
			t.Errorf("query: %v", err)
			return
		}
		if st.Running == nil || st.Running.ID != "q01" || st.Running.Type != "work" {
			t.Errorf("running %+v during the batch, want q01", st.Running)
		}
		var queued []string
		for i, e := range st.Queue {
			queued = append(queued, e.ID)
			if e.Position != i+1 {
				t.Errorf("queue[%d] at position %d", i, e.Position)
			}
		}
		// q02..q04 are in the batch, q05 and q06 wait behind it.
		if st.QueueLength != 5 || !equal(queued, all[1:]) {
			t.Errorf("queue during the batch: length %d %v, want %v", st.QueueLength, queued, all[1:])
		}
	}
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(4)})
	h.wantNoError()
	if checked != 1 {
		t.Fatalf("the first batch was seen %d times", checked)
	}
	h.wantRan(all...)
	if st := h.query(); st.Running != nil || st.QueueLength != 0 || st.Processed != 6 {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_UnrecordedOutcomeIsRecordedBySession(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	h.store.failSettleAfter["u02"] = 1
	all := ids("u", 4)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan(all...)
	if n := h.work.callsOf("u02"); n != 1 {
		t.Fatalf("u02 ran %d times, want once", n)
	}
	for _, id := range all {
		h.wantStatus(id, models.StatusSucceeded, 1)
	}
	if r := h.store.get("u02"); r.Result != r.Payload || r.FinishedAt == nil {
		t.Fatalf("u02 recorded as %+v", r)
	}
	regular, local, batches := log.counts()
	if local["Finish"] != 1 || len(batches) != 2 || !equal(batches[1], all[2:]) {
		t.Fatalf("regular %v local %v batches %v, want u02 finished by the session and u03.. in a second batch", regular, local, batches)
	}
	if st := h.query(); st.Processed != 4 {
		t.Fatalf("final state %+v", st)
	}
}

func TestBatch_StoreUnavailableBeforeARequestRunsItOnce(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	h.store.failSettleBefore["e01"] = 1 // the batch cannot start: it is retried
	h.store.failSettleBefore["e03"] = 1 // the batch ends early: e03.. go back to the queue
	all := ids("e", 5)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(10)})
	h.wantNoError()

	h.wantRan(all...)
	for _, id := range all {
		h.wantStatus(id, models.StatusSucceeded, 1)
		if n := h.work.callsOf(id); n != 1 {
			t.Fatalf("%s ran %d times", id, n)
		}
	}
	if got := h.store.settledIDs(); !equal(got, all) {
		t.Fatalf("settled %v", got)
	}
	if _, _, batches := log.counts(); len(batches) != 3 || !equal(batches[2], all[2:]) {
		t.Fatalf("batches %v, want a retried first batch and a second one from e03", batches)
	}
}

func TestBatch_BatchSizeOneRunsEachAsLocalActivity(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	all := ids("o", 5)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(1)})
	h.wantNoError()

	h.wantRan(all...)
	regular, local, _ := log.counts()
	if regular["RunBatch"] != 0 || local["Run"] != len(all) {
		t.Fatalf("regular %v local %v, want no RunBatch and one local Run per request", regular, local)
	}
	if len(h.store.settledIDs()) != 0 {
		t.Fatal("Settle used without a batch")
	}
}

func TestBatch_SessionBeforeVersionBatchDoesNotBatch(t *testing.T) {
	h := newHarness(t)
	h.env.OnGetVersion(changeRequeue, workflow.DefaultVersion, versionLatest).Return(versionLocal)
	log := h.logActivities()
	all := ids("v", 5)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	h.run(Input{Config: batchConfig(5)})
	h.wantNoError()

	h.wantRan(all...)
	regular, local, _ := log.counts()
	if regular["RunBatch"] != 0 || local["Run"] != len(all) {
		t.Fatalf("regular %v local %v, want the v2 path: no RunBatch, one local Run per request", regular, local)
	}
}

func TestBatch_RegularTypesAreNotBatched(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	all := ids("n", 4)
	h.submitAt(0, all...)
	h.signalAt(time.Hour, models.SignalClose, nil)
	cfg := batchConfig(5)
	cfg.LocalTypes = []string{"other"}
	h.run(Input{Config: cfg})
	h.wantNoError()

	h.wantRan(all...)
	regular, local, _ := log.counts()
	if regular["RunBatch"] != 0 || regular["Run"] != len(all) {
		t.Fatalf("regular %v local %v, want one regular Run per request", regular, local)
	}
}

func TestBatch_ContinueAsNewAfterBatchCarriesQueueAndTried(t *testing.T) {
	h := newHarness(t)
	log := h.logActivities()
	h.work.failFirst["k02"] = 1
	all := ids("k", 6)
	// Temporal suggests continuing as new while the first batch runs: the
	// run must end after it, handing over what the batch did not get to.
	log.onBatch = func(activities.BatchInput) { h.env.SetContinueAsNewSuggested(true) }
	h.submitAt(0, all...)
	cfg := batchConfig(3)
	h.run(Input{Config: cfg})
	var canErr *workflow.ContinueAsNewError
	if err := h.env.GetWorkflowError(); !errors.As(err, &canErr) {
		t.Fatalf("want continue-as-new, got %v", err)
	}
	var next Input
	if err := converter.GetDefaultDataConverter().FromPayloads(canErr.Input, &next); err != nil {
		t.Fatal(err)
	}
	var carried []string
	for _, r := range next.Queue {
		carried = append(carried, r.ID)
	}
	if !equal(carried, all[1:]) || next.Queue[0].Tried != 1 || next.Queue[1].Tried != 0 || next.Processed != 1 || len(next.Seen) != 6 {
		t.Fatalf("carried %+v, want k02 (tried once) and the rest", next)
	}
	h.wantRan("k01")
	if r := h.store.get("k02"); r.Attempts != 1 {
		t.Fatalf("k02 before continuing: %+v", r)
	}

	h2 := newHarness(t)
	h2.store = h.store
	h2.work = h.work
	h2.env.RegisterActivity(&activities.Activities{Store: h.store, Handlers: registryOf(h.work), HeartbeatEvery: time.Second})
	log2 := h2.logActivities()
	h2.signalAt(time.Hour, models.SignalClose, nil)
	h2.run(next)
	h2.wantNoError()
	h2.wantRan(all...)
	h2.wantStatus("k02", models.StatusSucceeded, 2)
	if n := h.work.callsOf("k02"); n != 2 {
		t.Fatalf("k02 tried %d times, want 2", n)
	}
	if _, _, batches := log2.counts(); len(batches) != 1 || !equal(batches[0], all[2:5]) {
		t.Fatalf("second run's batches %v, want [k03 k04 k05]", batches)
	}
	if st := h2.query(); st.Processed != 6 {
		t.Fatalf("processed %d, want 6", st.Processed)
	}
}

// A requeued request keeps its earlier attempts in its count, but gets a
// fresh budget of MaxAttempts tries (see execute: MaximumAttempts stays
// MaxAttempts and PriorAttempts only numbers them). A requeued request whose
// first try fails inside a batch must get the same budget as one that runs
// on its own.
func TestBatch_RequeuedRequestRetriedAfterBatchKeepsItsBudget(t *testing.T) {
	for _, v := range []workflow.Version{versionLocal, versionBatch} {
		t.Run(fmt.Sprintf("version%d", v), func(t *testing.T) {
			h := newHarness(t)
			h.env.OnGetVersion(changeRequeue, workflow.DefaultVersion, versionLatest).Return(v)
			h.work.failFirst["poison"] = -1
			h.signalAt(0, models.SignalPolicy, models.PolicySignal{Policy: models.PolicyPause})
			h.submitAt(time.Millisecond, "r1", "poison", "r2", "r3")
			h.env.RegisterDelayedCallback(func() {
				if st, err := h.queryState(); err != nil || !st.Paused || st.QueueLength != 2 {
					t.Errorf("before requeue: %+v %v", st, err)
				}
				if r := h.store.get("poison"); r.Status != models.StatusFailed || r.Attempts != 3 {
					t.Errorf("poison before requeue: %s, %d attempts", r.Status, r.Attempts)
				}
				// Its next two tries fail too; the third of this requeue succeeds.
				h.work.mu.Lock()
				h.work.failFirst["poison"] = 5
				h.work.mu.Unlock()
				h.store.mu.Lock()
				p := h.store.reqs["poison"]
				p.Status, p.Error, p.StartedAt, p.FinishedAt = models.StatusQueued, "", nil, nil
				h.store.mu.Unlock()
				h.env.SignalWorkflow(models.SignalRequeue, models.Submission{Requests: []models.QueuedRequest{{ID: "poison", Type: "work"}}})
			}, 10*time.Minute)
			h.signalAt(11*time.Minute, models.SignalResume, nil)
			h.signalAt(12*time.Minute, models.SignalClose, nil)
			h.run(Input{Config: batchConfig(10)})
			h.wantNoError()
			// 3 tries before the requeue, 3 after it: the 6th succeeds.
			if n := h.work.callsOf("poison"); n != 6 {
				t.Errorf("poison tried %d times, want 3 before the requeue and 3 after it", n)
			}
			h.wantStatus("poison", models.StatusSucceeded, 6)
			h.wantRan("r1", "r2", "r3", "poison")
		})
	}
}

// Config.LocalTimeout "bounds one try of a local-type request". A try that
// takes longer fails and is retried, up to MaxAttempts, on its own; in a
// batch it must be bounded the same way. Unbounded, a try is cut only by
// the batch activity's StartToCloseTimeout, after which RunBatch is retried
// without limit, the slow request first again: the user's queue stalls.
func TestBatch_LocalTimeoutBoundsATryInABatch(t *testing.T) {
	const localTimeout = 100 * time.Millisecond
	for _, v := range []workflow.Version{versionLocal, versionBatch} {
		t.Run(fmt.Sprintf("version%d", v), func(t *testing.T) {
			h := newHarness(t)
			h.env.SetTestTimeout(30 * time.Second)
			h.env.OnGetVersion(changeRequeue, workflow.DefaultVersion, versionLatest).Return(v)
			var (
				mu      sync.Mutex
				longest time.Duration
			)
			h.work.onRun = func(ctx context.Context, job activities.Job) {
				if job.ID != "slow" {
					return
				}
				start := time.Now()
				select {
				case <-ctx.Done():
				case <-time.After(1500 * time.Millisecond):
				}
				mu.Lock()
				longest = max(longest, time.Since(start))
				mu.Unlock()
			}
			h.submitAt(0, "fast", "slow", "after")
			h.signalAt(time.Hour, models.SignalClose, nil)
			cfg := batchConfig(10)
			cfg.LocalTimeout = localTimeout
			h.run(Input{Config: cfg})
			h.wantNoError()
			mu.Lock()
			defer mu.Unlock()
			if longest > time.Second {
				t.Errorf("a try of slow ran %v with LocalTimeout %v", longest.Round(time.Millisecond), localTimeout)
			}
			if r := h.store.get("slow"); r.Status != models.StatusFailed {
				t.Errorf("slow: %s after %d attempts, want failed: each try outlasted LocalTimeout", r.Status, r.Attempts)
			}
			h.wantStatus("after", models.StatusSucceeded, 1)
		})
	}
}
