package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/turnstile/turnstile/models"
)

// --- RunBatch with fake stores ---

// batchFakeStore is an in-memory Recorder (not a Settler) that behaves like
// the request store: MarkRunning starts a queued request, Finish records an
// outcome once. It logs every call and can fail chosen calls.
type batchFakeStore struct {
	mu        sync.Mutex
	reqs      map[string]*models.Request
	calls     []string // "mark r1", "attempts r1 1", "finish r1 succeeded", "settle r1"
	markErr   map[string]error
	finishErr map[string]error
}

func newBatchFakeStore(reqs ...models.Request) *batchFakeStore {
	f := &batchFakeStore{reqs: map[string]*models.Request{}, markErr: map[string]error{}, finishErr: map[string]error{}}
	for _, r := range reqs {
		f.reqs[r.ID] = &r
	}
	return f
}

func (f *batchFakeStore) logCall(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *batchFakeStore) MarkRunning(_ context.Context, id, _ string, now time.Time) (*models.Request, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logCall("mark %s", id)
	if err := f.markErr[id]; err != nil {
		return nil, err
	}
	r, ok := f.reqs[id]
	if !ok {
		return nil, fmt.Errorf("mark running %s: %w", id, ErrNotFound)
	}
	if r.Status == models.StatusQueued {
		r.Status, r.StartedAt = models.StatusRunning, &now
	}
	c := *r
	return &c, nil
}

func (f *batchFakeStore) SetAttempts(_ context.Context, id string, attempts int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logCall("attempts %s %d", id, attempts)
	r, ok := f.reqs[id]
	if !ok {
		return ErrNotFound
	}
	if r.Status == models.StatusRunning {
		r.Attempts = attempts
	}
	return nil
}

func (f *batchFakeStore) Finish(_ context.Context, id string, status models.Status, result, errMsg string, attempts int, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logCall("finish %s %s", id, status)
	if err := f.finishErr[id]; err != nil {
		return err
	}
	r, ok := f.reqs[id]
	if !ok {
		return ErrNotFound
	}
	if !r.Status.Final() {
		r.Status, r.Result, r.Error, r.Attempts, r.FinishedAt = status, result, errMsg, attempts, &now
	}
	return nil
}

func (f *batchFakeStore) get(id string) models.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.reqs[id]
}

func (f *batchFakeStore) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// callsOn returns the logged calls that name id.
func (f *batchFakeStore) callsOn(id string) []string {
	var out []string
	for _, c := range f.callLog() {
		if strings.Fields(c)[1] == id {
			out = append(out, c)
		}
	}
	return out
}

// batchFakeSettler is batchFakeStore that is also a Settler, recording a
// start and an outcome as one change, as store.Requests.Settle does.
type batchFakeSettler struct {
	*batchFakeStore
	settleErr map[string]error // returned before run
	writeErr  map[string]error // returned after run, the outcome unrecorded
}

var _ Settler = (*batchFakeSettler)(nil)

func newBatchFakeSettler(reqs ...models.Request) *batchFakeSettler {
	return &batchFakeSettler{batchFakeStore: newBatchFakeStore(reqs...), settleErr: map[string]error{}, writeErr: map[string]error{}}
}

func (f *batchFakeSettler) Settle(_ context.Context, id, owner string, _ func() time.Time, run func(cur *models.Request) models.Settlement) (*models.Request, bool, error) {
	f.mu.Lock()
	f.logCall("settle %s", id)
	if err := f.settleErr[id]; err != nil {
		f.mu.Unlock()
		return nil, false, err
	}
	r, ok := f.reqs[id]
	if !ok || (owner != "" && r.UserID != owner) {
		f.mu.Unlock()
		return nil, false, fmt.Errorf("settle %s: %w", id, ErrNotFound)
	}
	pre := *r
	f.mu.Unlock()
	if pre.Status != models.StatusQueued && pre.Status != models.StatusRunning {
		return &pre, false, nil
	}
	arg := pre
	s := run(&arg)

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.writeErr[id]; err != nil {
		return &pre, true, err
	}
	r.Status, r.Attempts = s.Status, s.Attempts
	if r.StartedAt == nil {
		r.StartedAt = &s.StartedAt
	}
	if s.Status.Final() {
		r.Result, r.Error, r.FinishedAt = s.Result, s.Error, &s.FinishedAt
	}
	return &pre, true, nil
}

// Request types of the batch tests (their own, so metrics of other tests
// are not disturbed).
const (
	batchOK    = "batch-ok"    // returns the request ID as a JSON string
	batchFlaky = "batch-flaky" // fails, may be retried
	batchBad   = "batch-bad"   // fails permanently
	batchSlow  = "batch-slow"  // succeeds after batchSlowFor
)

const batchSlowFor = 60 * time.Millisecond

// batchHandlers is a registry of the batch test types that remembers the
// jobs it ran, in order.
type batchHandlers struct {
	*Registry
	mu   sync.Mutex
	jobs []Job
	// during, if set, is called by the slow handler after its work.
	during func()
}

func newBatchHandlers() *batchHandlers {
	h := &batchHandlers{Registry: NewRegistry()}
	record := func(job Job) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.jobs = append(h.jobs, job)
	}
	h.Register(batchOK, HandlerFunc(func(_ context.Context, job Job) (json.RawMessage, error) {
		record(job)
		return json.RawMessage(`"` + job.ID + `"`), nil
	}))
	h.Register(batchFlaky, HandlerFunc(func(_ context.Context, job Job) (json.RawMessage, error) {
		record(job)
		return nil, errors.New("upstream flaky")
	}))
	h.Register(batchBad, HandlerFunc(func(_ context.Context, job Job) (json.RawMessage, error) {
		record(job)
		return nil, Permanent(errors.New("bad input"))
	}))
	h.Register(batchSlow, HandlerFunc(func(ctx context.Context, job Job) (json.RawMessage, error) {
		record(job)
		select {
		case <-time.After(batchSlowFor):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if h.during != nil {
			h.during()
		}
		return json.RawMessage(`"` + job.ID + `"`), nil
	}))
	return h
}

// ran lists the IDs of the jobs run, in order.
func (h *batchHandlers) ran() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []string{}
	for _, j := range h.jobs {
		out = append(out, j.ID)
	}
	return out
}

func (h *batchHandlers) job(id string) (Job, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, j := range h.jobs {
		if j.ID == id {
			return j, true
		}
	}
	return Job{}, false
}

const batchUser = "u1"

func batchReq(id, typ string) models.Request {
	return models.Request{ID: id, UserID: batchUser, Type: typ, Payload: `{"id":"` + id + `"}`, Status: models.StatusQueued, EnqueuedAt: testNow.Add(-time.Second)}
}

func batchInput(budget time.Duration, reqs ...models.Request) BatchInput {
	in := BatchInput{UserID: batchUser, Budget: budget}
	for _, r := range reqs {
		in.Items = append(in.Items, BatchItem{ID: r.ID, Type: r.Type})
	}
	return in
}

// batchStores are the two kinds of store RunBatch works with: a plain
// Recorder (MarkRunning, run, Finish) and a Settler.
type batchStoreKind struct {
	name    string
	settler bool
}

var batchStoreKinds = []batchStoreKind{{"FakeRecorder", false}, {"FakeSettler", true}}

// newBatchStore returns the store for kind holding reqs, as a Recorder and
// as the fake underneath; settler is nil for a plain Recorder.
func newBatchStore(kind batchStoreKind, reqs ...models.Request) (Recorder, *batchFakeStore, *batchFakeSettler) {
	if kind.settler {
		s := newBatchFakeSettler(reqs...)
		return s, s.batchFakeStore, s
	}
	f := newBatchFakeStore(reqs...)
	return f, f, nil
}

func executeBatch(t *testing.T, env *testsuite.TestActivityEnvironment, a *Activities, in BatchInput) (BatchResult, error) {
	t.Helper()
	val, err := env.ExecuteActivity(a.RunBatch, in)
	if err != nil {
		return BatchResult{}, err
	}
	var res BatchResult
	if err := val.Get(&res); err != nil {
		t.Fatal(err)
	}
	return res, nil
}

func mustExecuteBatch(t *testing.T, env *testsuite.TestActivityEnvironment, a *Activities, in BatchInput) BatchResult {
	t.Helper()
	res, err := executeBatch(t, env, a, in)
	if err != nil {
		t.Fatalf("RunBatch: %v", err)
	}
	return res
}

func checkDone(t *testing.T, res BatchResult, want ...BatchOutcome) {
	t.Helper()
	if want == nil {
		want = []BatchOutcome{}
	}
	got := res.Done
	if got == nil {
		got = []BatchOutcome{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Done = %+v, want %+v", got, want)
	}
}

func checkUntouched(t *testing.T, h *batchHandlers, f *batchFakeStore, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, ran := h.job(id); ran {
			t.Errorf("%s ran; it is after the end of the batch", id)
		}
		if calls := f.callsOn(id); len(calls) != 0 {
			t.Errorf("%s: store calls %v; it is after the end of the batch", id, calls)
		}
		if got := f.get(id); got.Status != models.StatusQueued || got.StartedAt != nil || got.Attempts != 0 {
			t.Errorf("%s changed: %+v", id, got)
		}
	}
}

func TestRunBatchWithFakeStores_RunsItemsInOrderRecordingEach(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchOK), batchReq("r3", batchOK)
			r2.Attempts = 2 // requeued: its attempts keep counting
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusSucceeded},
				BatchOutcome{ID: "r2", Status: models.StatusSucceeded},
				BatchOutcome{ID: "r3", Status: models.StatusSucceeded})
			if res.Retry != nil || res.Unrecorded != nil {
				t.Errorf("Retry %+v, Unrecorded %+v; want neither", res.Retry, res.Unrecorded)
			}
			if got := h.ran(); !reflect.DeepEqual(got, []string{"r1", "r2", "r3"}) {
				t.Errorf("handlers ran %v, want r1, r2, r3 in order", got)
			}
			for _, r := range []models.Request{r1, r2, r3} {
				j, _ := h.job(r.ID)
				if j.UserID != batchUser || j.Type != batchOK || string(j.Payload) != r.Payload || j.Attempt != r.Attempts+1 {
					t.Errorf("%s: handler got %+v; want its payload, attempt %d", r.ID, j, r.Attempts+1)
				}
				got := f.get(r.ID)
				if got.Status != models.StatusSucceeded || got.Result != `"`+r.ID+`"` || got.Attempts != r.Attempts+1 ||
					got.StartedAt == nil || got.FinishedAt == nil || got.Error != "" {
					t.Errorf("%s stored %+v; want succeeded with its result and %d attempts", r.ID, got, r.Attempts+1)
				}
			}
			// Each request is recorded before the next starts.
			want := []string{"mark r1", "finish r1 succeeded", "mark r2", "finish r2 succeeded", "mark r3", "finish r3 succeeded"}
			if kind.settler {
				want = []string{"settle r1", "settle r2", "settle r3"}
			}
			if got := f.callLog(); !reflect.DeepEqual(got, want) {
				t.Errorf("store calls %v, want %v", got, want)
			}
		})
	}
}

func TestRunBatchWithFakeStores_SkipsWhatIsNotQueued(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, done, cancelled, foreign, r5 := batchReq("r1", batchOK), batchReq("done", batchOK),
				batchReq("cancelled", batchOK), batchReq("foreign", batchOK), batchReq("r5", batchOK)
			done.Status, done.Result, done.Attempts = models.StatusSucceeded, `"earlier"`, 1
			cancelled.Status = models.StatusCancelled
			foreign.UserID = "someone-else"
			rec, f, _ := newBatchStore(kind, r1, done, cancelled, foreign, r5)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			in := batchInput(time.Minute, r1, done, cancelled, batchReq("missing", batchOK), foreign, r5)
			res := mustExecuteBatch(t, env, a, in)
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusSucceeded},
				BatchOutcome{ID: "done", Status: models.StatusSucceeded, Skipped: true},
				BatchOutcome{ID: "cancelled", Status: models.StatusCancelled, Skipped: true},
				BatchOutcome{ID: "missing", Skipped: true},
				BatchOutcome{ID: "foreign", Skipped: true},
				BatchOutcome{ID: "r5", Status: models.StatusSucceeded})
			if got := h.ran(); !reflect.DeepEqual(got, []string{"r1", "r5"}) {
				t.Errorf("handlers ran %v, want only r1 and r5", got)
			}
			if got := f.get("done"); got.Result != `"earlier"` || got.Attempts != 1 {
				t.Errorf("a final request changed: %+v", got)
			}
			if got := f.get("cancelled"); got.Status != models.StatusCancelled || got.StartedAt != nil {
				t.Errorf("a cancelled request changed: %+v", got)
			}
			if got := f.get("foreign"); got.Status == models.StatusSucceeded || got.Result != "" {
				t.Errorf("another user's request ran: %+v", got)
			}
		})
	}
}

func TestRunBatchWithFakeStores_RetryableFailureEndsTheBatch(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchFlaky), batchReq("r3", batchOK)
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded})
			if res.Retry == nil || *res.Retry != (BatchRetry{ID: "r2", Attempts: 1}) {
				t.Errorf("Retry = %+v, want {r2 1}", res.Retry)
			}
			if res.Unrecorded != nil {
				t.Errorf("Unrecorded = %+v, want nil", res.Unrecorded)
			}
			if got := f.get("r2"); got.Status != models.StatusRunning || got.Attempts != 1 || got.FinishedAt != nil || got.Error != "" {
				t.Errorf("r2 stored %+v; want running with 1 attempt, to be retried", got)
			}
			if calls := f.callsOn("r2"); slicesContainPrefix(calls, "finish") {
				t.Errorf("r2 was finished: %v", calls)
			}
			checkUntouched(t, h, f, "r3")
		})
	}
}

func slicesContainPrefix(s []string, prefix string) bool {
	for _, c := range s {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func TestRunBatchWithFakeStores_PermanentFailureIsRecorded(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchBad), batchReq("r2", "no-such-type"), batchReq("r3", batchOK)
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusFailed},
				BatchOutcome{ID: "r2", Status: models.StatusFailed},
				BatchOutcome{ID: "r3", Status: models.StatusSucceeded})
			if res.Retry != nil || res.Unrecorded != nil {
				t.Errorf("Retry %+v, Unrecorded %+v; want neither", res.Retry, res.Unrecorded)
			}
			if got := f.get("r1"); got.Status != models.StatusFailed || !strings.Contains(got.Error, "bad input") ||
				got.Attempts != 1 || got.Result != "" || got.FinishedAt == nil {
				t.Errorf("r1 stored %+v; want failed with the handler's error after 1 attempt", got)
			}
			if got := f.get("r2"); got.Status != models.StatusFailed || !strings.Contains(got.Error, "no-such-type") {
				t.Errorf("r2 (unknown type) stored %+v; want failed naming the type", got)
			}
		})
	}
}

func TestRunBatchWithFakeStores_StopOnFailureStopsAfterTheFailure(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchBad), batchReq("r3", batchOK)
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			in := batchInput(time.Minute, r1, r2, r3)
			in.StopOnFailure = true
			res := mustExecuteBatch(t, env, a, in)
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusSucceeded},
				BatchOutcome{ID: "r2", Status: models.StatusFailed})
			if got := f.get("r2"); got.Status != models.StatusFailed {
				t.Errorf("r2 stored %+v; want failed", got)
			}
			checkUntouched(t, h, f, "r3")
		})
	}
}

func TestRunBatchWithFakeStores_StopOnFailureIgnoresSkippedFailed(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			// A request that failed before (a duplicate in the queue) is not
			// a failure of this batch.
			r1, r2 := batchReq("r1", batchOK), batchReq("r2", batchOK)
			r1.Status, r1.Error = models.StatusFailed, "earlier"
			rec, _, _ := newBatchStore(kind, r1, r2)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			in := batchInput(time.Minute, r1, r2)
			in.StopOnFailure = true
			res := mustExecuteBatch(t, env, a, in)
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusFailed, Skipped: true},
				BatchOutcome{ID: "r2", Status: models.StatusSucceeded})
		})
	}
}

func TestRunBatchWithFakeStores_BudgetStopsAfterTheFirstItem(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchSlow), batchReq("r2", batchSlow), batchReq("r3", batchOK)
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Millisecond, r1, r2, r3))
			checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded})
			if res.Retry != nil || res.Unrecorded != nil {
				t.Errorf("Retry %+v, Unrecorded %+v; want neither", res.Retry, res.Unrecorded)
			}
			checkUntouched(t, h, f, "r2", "r3")
		})
	}
}

func TestRunBatchWithFakeStores_FirstItemStoreErrorFailsTheBatch(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2 := batchReq("r1", batchOK), batchReq("r2", batchOK)
			rec, f, s := newBatchStore(kind, r1, r2)
			outage := errors.New("mongo unreachable")
			if s != nil {
				s.settleErr["r1"] = outage
			} else {
				f.markErr["r1"] = outage
			}
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			_, err := executeBatch(t, env, a, batchInput(time.Minute, r1, r2))
			appErr := applicationError(t, err)
			if appErr.NonRetryable() || !strings.Contains(appErr.Error(), "mongo unreachable") {
				t.Errorf("err = %v (non-retryable %v); want the store's error, retryable", appErr, appErr.NonRetryable())
			}
			if got := h.ran(); len(got) != 0 {
				t.Errorf("handlers ran %v after the store failed", got)
			}
			checkUntouched(t, h, f, "r2")
		})
	}
}

func TestRunBatchWithFakeStores_LaterItemStoreErrorEndsTheBatch(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchOK), batchReq("r3", batchOK)
			rec, f, s := newBatchStore(kind, r1, r2, r3)
			outage := errors.New("mongo unreachable")
			if s != nil {
				s.settleErr["r2"] = outage
			} else {
				f.markErr["r2"] = outage
			}
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded})
			if res.Retry != nil || res.Unrecorded != nil {
				t.Errorf("Retry %+v, Unrecorded %+v; want neither: r2 did not start", res.Retry, res.Unrecorded)
			}
			if got := h.ran(); !reflect.DeepEqual(got, []string{"r1"}) {
				t.Errorf("handlers ran %v, want only r1", got)
			}
			if got := f.get("r2"); got.Status != models.StatusQueued {
				t.Errorf("r2 stored %+v; want still queued", got)
			}
			checkUntouched(t, h, f, "r3")
		})
	}
}

func TestRunBatchWithFakeStores_UnrecordedOutcomeEndsTheBatch(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchOK), batchReq("r3", batchOK)
			rec, f, s := newBatchStore(kind, r1, r2, r3)
			lost := errors.New("write timed out")
			if s != nil {
				s.writeErr["r2"] = lost
			} else {
				f.finishErr["r2"] = lost
			}
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded})
			want := FinishInput{RequestID: "r2", UserID: batchUser, Status: models.StatusSucceeded, Result: json.RawMessage(`"r2"`), Attempts: 1}
			if res.Unrecorded == nil || !reflect.DeepEqual(*res.Unrecorded, want) {
				t.Errorf("Unrecorded = %+v, want %+v", res.Unrecorded, want)
			}
			if res.Retry != nil {
				t.Errorf("Retry = %+v, want nil", res.Retry)
			}
			if got := h.ran(); !reflect.DeepEqual(got, []string{"r1", "r2"}) {
				t.Errorf("handlers ran %v, want r1, r2", got)
			}
			checkUntouched(t, h, f, "r3")
		})
	}
}

func TestRunBatchWithFakeStores_UnrecordedFailureOfTheFirstItem(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2 := batchReq("r1", batchBad), batchReq("r2", batchOK)
			rec, f, s := newBatchStore(kind, r1, r2)
			lost := errors.New("write timed out")
			if s != nil {
				s.writeErr["r1"] = lost
			} else {
				f.finishErr["r1"] = lost
			}
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)

			// It ran: the batch reports it for the session to record, not an error.
			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2))
			checkDone(t, res)
			u := res.Unrecorded
			if u == nil || u.RequestID != "r1" || u.UserID != batchUser || u.Status != models.StatusFailed ||
				!strings.Contains(u.Error, "bad input") || u.Attempts != 1 || u.Result != nil {
				t.Errorf("Unrecorded = %+v; want r1 failed with the handler's error, 1 attempt, no result", u)
			}
			checkUntouched(t, h, f, "r2")
		})
	}
}

func TestRunBatchWithFakeSettler_NotFoundAfterRunIsSkipped(t *testing.T) {
	// The request went away while it ran (its submission was undone): the
	// store could not record it, and there is nothing to record.
	r1, r2 := batchReq("r1", batchOK), batchReq("r2", batchOK)
	s := newBatchFakeSettler(r1, r2)
	s.writeErr["r1"] = fmt.Errorf("settle r1: %w", ErrNotFound)
	h := newBatchHandlers()
	a, env := newTestActivities(s, h.Registry)

	res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2))
	checkDone(t, res, BatchOutcome{ID: "r1", Skipped: true}, BatchOutcome{ID: "r2", Status: models.StatusSucceeded})
	if res.Unrecorded != nil || res.Retry != nil {
		t.Errorf("Unrecorded %+v, Retry %+v; want neither", res.Unrecorded, res.Retry)
	}
}

func TestRunBatchWithFakeStores_ResumesAfterHeartbeatedOutcomes(t *testing.T) {
	// TestActivityEnvironment.SetHeartbeatDetails stands for the details a
	// retried activity gets from the server.
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2, r3 := batchReq("r1", batchOK), batchReq("r2", batchOK), batchReq("r3", batchOK)
			rec, f, _ := newBatchStore(kind, r1, r2, r3)
			h := newBatchHandlers()
			a, env := newTestActivities(rec, h.Registry)
			earlier := []BatchOutcome{{ID: "r1", Status: models.StatusFailed}}
			env.SetHeartbeatDetails(earlier)

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2, r3))
			checkDone(t, res,
				BatchOutcome{ID: "r1", Status: models.StatusFailed},
				BatchOutcome{ID: "r2", Status: models.StatusSucceeded},
				BatchOutcome{ID: "r3", Status: models.StatusSucceeded})
			if got := h.ran(); !reflect.DeepEqual(got, []string{"r2", "r3"}) {
				t.Errorf("handlers ran %v, want r2, r3: r1 was done before", got)
			}
			checkUntouched(t, h, f, "r1")
		})
	}
}

func TestRunBatchWithFakeSettler_ResumeWithEveryItemDone(t *testing.T) {
	r1, r2 := batchReq("r1", batchOK), batchReq("r2", batchOK)
	s := newBatchFakeSettler(r1, r2)
	h := newBatchHandlers()
	a, env := newTestActivities(s, h.Registry)
	// More outcomes than items (never sent, but harmless) are cut to the items.
	env.SetHeartbeatDetails([]BatchOutcome{
		{ID: "r1", Status: models.StatusSucceeded}, {ID: "r2", Status: models.StatusSucceeded}, {ID: "r3", Status: models.StatusSucceeded},
	})
	res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2))
	checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded}, BatchOutcome{ID: "r2", Status: models.StatusSucceeded})
	if got := h.ran(); len(got) != 0 {
		t.Errorf("handlers ran %v; every item was done", got)
	}
	if got := s.callLog(); len(got) != 0 {
		t.Errorf("store calls %v; every item was done", got)
	}
}

// heartbeatLog records every activity.RecordHeartbeat call's details (the
// SDK sends only some of them; the server keeps the last one sent, which a
// retry gets from activity.GetHeartbeatDetails).
type heartbeatLog struct {
	interceptor.WorkerInterceptorBase
	mu    sync.Mutex
	beats [][]any
}

func (l *heartbeatLog) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &heartbeatLogInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, log: l}
}

func (l *heartbeatLog) last() ([]any, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.beats) == 0 {
		return nil, 0
	}
	return l.beats[len(l.beats)-1], len(l.beats)
}

type heartbeatLogInbound struct {
	interceptor.ActivityInboundInterceptorBase
	log *heartbeatLog
}

func (i *heartbeatLogInbound) Init(outbound interceptor.ActivityOutboundInterceptor) error {
	return i.Next.Init(&heartbeatLogOutbound{ActivityOutboundInterceptorBase: interceptor.ActivityOutboundInterceptorBase{Next: outbound}, log: i.log})
}

type heartbeatLogOutbound struct {
	interceptor.ActivityOutboundInterceptorBase
	log *heartbeatLog
}

func (o *heartbeatLogOutbound) RecordHeartbeat(ctx context.Context, details ...any) {
	c := make([]any, len(details))
	for i, d := range details {
		if done, ok := d.([]BatchOutcome); ok {
			d = append([]BatchOutcome(nil), done...)
		}
		c[i] = d
	}
	o.log.mu.Lock()
	o.log.beats = append(o.log.beats, c)
	o.log.mu.Unlock()
	o.Next.RecordHeartbeat(ctx, details...)
}

// TestRunBatchWithFakeStores_HeartbeatKeepsProgressWhileAHandlerWorks: the
// details of the last heartbeat are what a retry after a lost worker
// resumes from. While an item's handler works, they must still hold the
// outcomes of the items before it; a heartbeat without details (the
// handler's keep-alive) would make the retry start the batch over.
func TestRunBatchWithFakeStores_HeartbeatKeepsProgressWhileAHandlerWorks(t *testing.T) {
	for _, kind := range batchStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			r1, r2 := batchReq("r1", batchOK), batchReq("r2", batchSlow)
			rec, _, _ := newBatchStore(kind, r1, r2)
			h := newBatchHandlers()
			hb := &heartbeatLog{}
			var (
				mu    sync.Mutex
				while []any
				count int
			)
			// batchSlowFor is several HeartbeatEvery (10ms): the handler
			// heartbeats while it works.
			h.during = func() {
				mu.Lock()
				defer mu.Unlock()
				while, count = hb.last()
			}
			a, env := newTestActivities(rec, h.Registry)
			env.SetWorkerOptions(worker.Options{Interceptors: []interceptor.WorkerInterceptor{hb}})

			res := mustExecuteBatch(t, env, a, batchInput(time.Minute, r1, r2))
			checkDone(t, res, BatchOutcome{ID: "r1", Status: models.StatusSucceeded}, BatchOutcome{ID: "r2", Status: models.StatusSucceeded})
			mu.Lock()
			defer mu.Unlock()
			if count == 0 {
				t.Fatal("no heartbeat recorded before r2's handler finished")
			}
			want := []any{[]BatchOutcome{{ID: "r1", Status: models.StatusSucceeded}}}
			if !reflect.DeepEqual(while, want) {
				t.Errorf("while r2's handler worked, the last heartbeat (of %d) carried %#v; want %#v, "+
					"else a retry after a lost worker starts the batch over and reports r1 as skipped", count, while, want)
			}
			if last, _ := hb.last(); !reflect.DeepEqual(last, []any{res.Done}) {
				t.Errorf("last heartbeat %#v, want the final outcomes %#v", last, res.Done)
			}
		})
	}
}

// lowMarks is an Inbox (a unit-test fake) that records the low marks a
// batch reports.
type lowMarks struct {
	mu   sync.Mutex
	lows []int64
}

func (l *lowMarks) Pending(context.Context, string, int64, int) (models.Delivery, error) {
	return models.Delivery{}, nil
}

func (l *lowMarks) Steering(context.Context, string) (bool, models.FailurePolicy, error) {
	return false, "", nil
}

func (l *lowMarks) Handled(_ context.Context, _ string, low int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lows = append(l.lows, low)
	return nil
}

func (l *lowMarks) Started(context.Context, string, int64) error { return nil }

func (l *lowMarks) got() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lows)
}

// With AnnounceEvery, a batch reports its progress (the queue's low mark,
// which polling event streams read) as it goes, at most that often, not
// only at its end: a finish early in a long batch reaches them then.
func TestRunBatchWithFakeSettler_AnnouncesProgressAsItGoes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		every  time.Duration
		budget time.Duration
		done   int
		want   []int64
	}{
		{"every item", time.Nanosecond, time.Minute, 3, []int64{2, 3, 4}},
		{"at the end only", time.Hour, time.Minute, 3, []int64{4}},
		{"by default at the end only", 0, time.Minute, 3, []int64{4}},
		// Ended by its budget right after telling: the end does not tell again.
		{"not twice", time.Nanosecond, time.Nanosecond, 1, []int64{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reqs []models.Request
			for i, id := range []string{"r1", "r2", "r3"} {
				r := batchReq(id, batchOK)
				r.Seq = int64(i + 1)
				reqs = append(reqs, r)
			}
			rec, _, _ := newBatchStore(batchStoreKinds[1], reqs...)
			a, env := newTestActivities(rec, newBatchHandlers().Registry)
			marks := &lowMarks{}
			a.Inbox, a.AnnounceEvery = marks, tc.every
			in := batchInput(tc.budget, reqs...)
			for i := range in.Items {
				in.Items[i].Seq = reqs[i].Seq
			}
			res := mustExecuteBatch(t, env, a, in)
			if len(res.Done) != tc.done {
				t.Fatalf("Done = %+v, want %d", res.Done, tc.done)
			}
			if got := marks.got(); !slices.Equal(got, tc.want) {
				t.Errorf("low marks %v, want %v", got, tc.want)
			}
		})
	}
}
