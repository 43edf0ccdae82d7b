package workflows

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/turnstile/turnstile/models"
)

// fakeInbox is an in-memory stand-in for the store's inbox (unit tests of
// the workflow logic; the real inbox is tested in store and tests/): entry
// seq runs request ids[seq-1], which lives in the harness's fakeStore.
type fakeInbox struct {
	mu    sync.Mutex
	st    *fakeStore
	ids   []string
	low   int64
	reads []int64 // the after of every Pending call
	// paused and policy are the stored steering Steering returns.
	paused bool
	policy models.FailurePolicy
}

func (f *fakeInbox) Pending(_ context.Context, userID string, after int64, limit int) (models.Delivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, after)
	if after <= 0 {
		after = max(f.low-1, 0)
	}
	d := models.Delivery{After: after, Through: int64(len(f.ids))}
	for i := after; i < int64(len(f.ids)); i++ {
		r := f.st.get(f.ids[i])
		if r.Status == models.StatusQueued || r.Status == models.StatusRunning {
			d.Entries = append(d.Entries, models.QueuedRequest{ID: r.ID, Type: r.Type, Seq: i + 1})
		}
	}
	return d, nil
}

func (f *fakeInbox) Handled(_ context.Context, _ string, low int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.low = max(f.low, low)
	return nil
}

func (f *fakeInbox) Started(context.Context, string, int64) error { return nil }

func (f *fakeInbox) Steering(context.Context, string) (bool, models.FailurePolicy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused, f.policy, nil
}

func (f *fakeInbox) readsAfter() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.reads...)
}

// withInbox gives h an inbox; append adds requests to it (committed, not
// yet delivered) and returns their deliveries' entries.
func withInbox(h *harness) *fakeInbox {
	in := &fakeInbox{st: h.store}
	h.acts.Inbox = in
	return in
}

func (f *fakeInbox) append(ids ...string) []models.QueuedRequest {
	f.st.add(user, ids...)
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []models.QueuedRequest
	for _, id := range ids {
		f.ids = append(f.ids, id)
		out = append(out, models.QueuedRequest{ID: id, Type: "work", Seq: int64(len(f.ids))})
	}
	return out
}

func deliveryOf(entries []models.QueuedRequest) models.Delivery {
	return models.Delivery{After: entries[0].Seq - 1, Through: entries[len(entries)-1].Seq, Entries: entries}
}

func TestInbox_DeliveriesDeduplicatedBySequence(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	first := in.append("s1", "s2", "s3")
	h.signalAt(time.Second, models.SignalDeliver, deliveryOf(first))
	// The same delivery again (a relay and the API both sent it), and one
	// overlapping it.
	h.signalAt(2*time.Second, models.SignalDeliver, deliveryOf(first))
	second := in.append("s4", "s5")
	h.signalAt(3*time.Second, models.SignalDeliver, deliveryOf(append(first[2:], second...)))
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("s1", "s2", "s3", "s4", "s5")
	if in.low != 6 {
		t.Fatalf("low mark %d, want 6", in.low)
	}
	// A fresh run reads the store once at its start; no gap, no other read.
	if reads := in.readsAfter(); len(reads) != 1 || reads[0] != 0 {
		t.Fatalf("inbox reads %v, want one fresh-run read", reads)
	}
}

// A delivery that starts after entries the session has not seen (another
// API instance's delivery is late, or went to a run that ended) makes the
// session read them from the store, in order, before the delivered ones.
func TestInbox_GapFilledFromStore(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	in.append("g1", "g2", "g3")
	late := in.append("g4", "g5")
	// The run starts from a continue-as-new (no fresh read) that had taken
	// nothing; only the late delivery arrives.
	h.signalAt(time.Second, models.SignalDeliver, deliveryOf(late))
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{Carried: true})
	h.wantRan("g1", "g2", "g3", "g4", "g5")
	if reads := in.readsAfter(); len(reads) != 1 || reads[0] != 0 {
		// after 0 here is the carried LastSeq, not a fresh run's read
		t.Fatalf("inbox reads %v, want one gap read after 0", reads)
	}
}

// A fresh run takes in what the store holds before anything it is sent: a
// terminated run left s1..s3 queued, and the next submission opens a new
// run with only its own entry.
func TestInbox_FreshRunTakesInStoreFirst(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	in.append("t1", "t2", "t3")
	next := in.append("t4")
	h.signalAt(0, models.SignalDeliver, deliveryOf(next))
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("t1", "t2", "t3", "t4")
}

// A cancelled entry the store still lists is not run; its requeue entry,
// delivered later with a new sequence number, runs it.
func TestInbox_RequeueEntryRunsAgain(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	first := in.append("r1", "r2")
	h.signalAt(time.Second, models.SignalDeliver, deliveryOf(first))
	h.env.RegisterDelayedCallback(func() {
		h.store.mu.Lock()
		h.store.reqs["r1"].Status = models.StatusQueued // requeued by an operator
		h.store.mu.Unlock()
		in.mu.Lock()
		in.ids = append(in.ids, "r1")
		seq := int64(len(in.ids))
		in.mu.Unlock()
		h.env.SignalWorkflow(models.SignalDeliver, models.Delivery{After: seq - 1, Through: seq,
			Entries: []models.QueuedRequest{{ID: "r1", Type: "work", Seq: seq}}})
	}, 10*time.Second)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{})
	h.wantRan("r1", "r2", "r1")
}

// A session that started before sequencing (legacy entries carried, the old
// submit signal) drains them first and then takes inbox deliveries.
func TestInbox_OldShapeSessionDrains(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	h.store.add(user, "old1", "old2")
	h.submitAt(time.Second, "old3")
	// new1 and new2 are accepted by the new API after old3's 202.
	h.env.RegisterDelayedCallback(func() {
		h.env.SignalWorkflow(models.SignalDeliver, deliveryOf(in.append("new1", "new2")))
	}, 2*time.Second)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{
		Queue:   []models.QueuedRequest{{ID: "old1", Type: "work"}, {ID: "old2", Type: "work"}},
		Seen:    []string{"old1", "old2"},
		Carried: false, // an old run's continue-as-new input had no Carried
	})
	h.wantRan("old1", "old2", "old3", "new1", "new2")
}

// A close that arrives before a delivery still on its way (deliveries are
// asynchronous) does not end the session before it: the close names the
// last accepted sequence number, and the session reads what it misses.
func TestInbox_CloseWaitsForEverythingAcceptedBeforeIt(t *testing.T) {
	h := newHarness(t)
	start := h.env.Now()
	in := withInbox(h)
	first := in.append("c1")
	h.signalAt(time.Second, models.SignalDeliver, deliveryOf(first))
	h.env.RegisterDelayedCallback(func() {
		in.append("c2", "c3") // accepted, delivery not arrived
		h.env.SignalWorkflow(models.SignalClose, models.CloseSignal{Through: 3})
	}, 2*time.Second)
	// The delivery arrives after the close: it drains, and does not reopen
	// the session (the run ends without waiting for the idle timeout).
	h.signalAt(3*time.Second, models.SignalDeliver, models.Delivery{After: 1, Through: 3,
		Entries: []models.QueuedRequest{{ID: "c2", Type: "work", Seq: 2}, {ID: "c3", Type: "work", Seq: 3}}})
	h.run(Input{})
	h.wantRan("c1", "c2", "c3")
	if end := h.env.Now(); end.Sub(start) > time.Minute {
		t.Fatalf("the session ended %v after it started: the late delivery reopened it", end.Sub(start))
	}
}

// A cancel can reach the session before the delivery of the request it
// cancels (the API answers 202 and delivers a few milliseconds later; the
// client cancels at once): the session must not list the request as waiting
// when the delivery comes (it would skip it at its turn anyway, the store
// says cancelled). Found flaky in tests.TestAdmin_CancelRemovesAQueuedRequestAndTheRestKeepOrder.
func TestInbox_CancelAheadOfItsDelivery(t *testing.T) {
	h := newHarness(t)
	in := withInbox(h)
	ids := []string{models.RequestID(user, 1), models.RequestID(user, 2), models.RequestID(user, 3)}
	entries := in.append(ids...)
	h.signalAt(time.Second, models.SignalPause, nil)
	h.env.RegisterDelayedCallback(func() { h.store.cancelQueued(ids[1]) }, 2*time.Second)
	h.signalAt(2*time.Second, models.SignalCancel, models.CancelSignal{RequestID: ids[1]})
	h.signalAt(3*time.Second, models.SignalDeliver, deliveryOf(entries))
	var waiting []string
	h.env.RegisterDelayedCallback(func() {
		for _, q := range h.query().Queue {
			waiting = append(waiting, q.ID)
		}
	}, 4*time.Second)
	h.signalAt(5*time.Second, models.SignalResume, nil)
	h.signalAt(time.Minute, models.SignalClose, nil)
	h.run(Input{Carried: true})
	if len(waiting) != 2 || waiting[0] != ids[0] || waiting[1] != ids[2] {
		t.Fatalf("waiting after the cancel and the delivery: %v, want %v and %v", waiting, ids[0], ids[2])
	}
	h.wantRan(ids[0], ids[2])
}
