package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/turnstile/turnstile/models"
)

// A user's inbox is their requests in sequence order. Each accepted request
// is a document with _id models.RequestID(user, seq), so every read and
// write of one request, and every walk along a user's sequence, is a lookup
// by _id: the only filter FerretDB v1 answers from an index, and cheap on
// MongoDB too. Nothing here needs a multi-document transaction.
//
// The rules that keep the sequence whole (docs/architecture.md, "The inbox"):
//
//   - Allocation is the insert. A submitter tries seq n only after seeing
//     n-1 committed (it read a tail hint ≥ n-1, or n-1 already existed), and
//     the _id's uniqueness lets exactly one insert of n win. So committed
//     entries always form a prefix 1..N: there is no number that was handed
//     out and never used, and a later submission always gets a higher number.
//   - A batch of k takes n..n+k-1 in one ordered insert; every member names
//     its range (batch_start, batch_end). It is committed when its last
//     member exists. A walker that meets a batch whose last member is
//     missing waits (nothing after it is delivered: no overtaking), and
//     after AbandonAfter writes a tombstone in the last member's place,
//     which voids the batch; the _id arbitrates between that tombstone and
//     a late insert, so the batch is either wholly committed or wholly void.
//   - An insert whose outcome is unknown (a timeout) is settled the same
//     way: the submitter writes the tombstone itself and learns from the
//     duplicate-key error whether its insert had landed.
//
// The "queues" collection keeps one small document per user with hints
// (each at most the truth): tail, the highest committed sequence number;
// delivered, the highest a session is known to hold; low, the first entry
// not yet handled by a session. The relay finds users with tail > delivered
// by reading these documents, never the requests.

// Collections of the inbox.
const (
	QueuesCollection      = "queues"
	IdempotencyCollection = "idempotency"
)

// Document kinds besides requests in the requests collection. Their status
// is none of models.Status, so counts and scans by status skip them.
const (
	statusVoid    models.Status = "void"    // a tombstone
	statusRequeue models.Status = "requeue" // a requeue entry
)

// DefaultAbandonAfter is how long a batch may stay half-inserted before a
// walker voids it: far beyond any live submission's backend timeout.
const DefaultAbandonAfter = 30 * time.Second

// maxAppendTries bounds Append's retries on a taken sequence number; each
// retry means another submission of the user won that number.
const maxAppendTries = 64

// Queue is a user's inbox bookkeeping: hints, each at most the truth.
type Queue struct {
	UserID    string `bson:"_id"`
	Tail      int64  `bson:"tail"`
	Delivered int64  `bson:"delivered"`
	Low       int64  `bson:"low"`
	// Started: every entry before it has been started by a session.
	Started   int64     `bson:"started"`
	UpdatedAt time.Time `bson:"updated_at"`
	// Paused and Policy are an operator's steering of the user's session,
	// kept here so that a run that ends (idle, closed, terminated) does
	// not take them with it: a fresh run starts from them.
	Paused bool                 `bson:"paused,omitempty"`
	Policy models.FailurePolicy `bson:"policy,omitempty"`
	// Closing is the tail a user's close of their session covered: while a
	// run is open and nothing was accepted after it, the session is closing
	// (it drains, then ends). For watchers, which tell the session's state
	// without querying the workflow.
	Closing int64 `bson:"closing,omitempty"`

	// Change counters, for watchers (the events stream) that poll this one
	// document instead of the user's requests. Rev moves on every change
	// to it and on every change of one of the user's requests; Scan on a
	// change that may hit any waiting request (a cancel), not only the
	// head; Steer on a change of the session's steering (pause, resume,
	// policy, close); Head on a change of the running request that Started
	// and Low do not show (its attempts).
	Rev   int64 `bson:"rev,omitempty"`
	Scan  int64 `bson:"scan,omitempty"`
	Steer int64 `bson:"steer,omitempty"`
	Head  int64 `bson:"head,omitempty"`
}

// next is the first entry that may still be waiting.
func (q Queue) next() int64 { return max(q.Started, q.Low, 1) }

// Pending is how many entries may still wait: tail - next + 1, an upper
// bound (cancelled entries in between count until a session passes them).
func (q Queue) Pending() int64 { return max(0, q.Tail-q.next()+1) }

// Held is how many entries a session holds (delivered) without having
// started them: delivered - next + 1, at least 0.
func (q Queue) Held() int64 { return max(0, q.Delivered-q.next()+1) }

// Position estimates where entry seq stands among the waiting (1 = next).
func (q Queue) Position(seq int64) int { return int(max(1, seq-q.next()+1)) }

// Queues is the per-user inbox documents.
type Queues struct {
	c *mongo.Collection
}

// Get returns userID's queue document; a user who never submitted has a
// zero one.
func (q *Queues) Get(ctx context.Context, userID string) (Queue, error) {
	var doc Queue
	err := q.c.FindOne(ctx, bson.D{{Key: "_id", Value: userID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Queue{UserID: userID}, nil
	}
	if err != nil {
		return Queue{}, wrap("get queue", err)
	}
	return doc, nil
}

// raise sets field to at least v (upserting the document) and moves rev
// and each counter named in also.
func (q *Queues) raise(ctx context.Context, userID, field string, v int64, now time.Time, also ...string) error {
	inc := bson.D{{Key: "rev", Value: 1}}
	for _, c := range also {
		inc = append(inc, bson.E{Key: c, Value: 1})
	}
	_, err := q.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: userID}},
		bson.D{
			{Key: "$max", Value: bson.D{{Key: field, Value: v}}},
			{Key: "$set", Value: bson.D{{Key: "updated_at", Value: now}}},
			{Key: "$inc", Value: inc},
		},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return wrap("raise queue "+field, err)
	}
	return nil
}

// SetPaused records an operator's pause (true) or resume of userID's
// session.
func (q *Queues) SetPaused(ctx context.Context, userID string, paused bool, now time.Time) error {
	return q.set(ctx, "set paused", userID, bson.E{Key: "paused", Value: paused}, now)
}

// SetPolicy records an operator's failure policy for userID's session.
func (q *Queues) SetPolicy(ctx context.Context, userID string, p models.FailurePolicy, now time.Time) error {
	return q.set(ctx, "set policy", userID, bson.E{Key: "policy", Value: p}, now)
}

func (q *Queues) set(ctx context.Context, op, userID string, field bson.E, now time.Time) error {
	_, err := q.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: userID}},
		bson.D{
			{Key: "$set", Value: bson.D{field, {Key: "updated_at", Value: now}}},
			{Key: "$inc", Value: bson.D{{Key: "rev", Value: 1}, {Key: "steer", Value: 1}}},
		},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// Change says which of a queue document's change counters a Touch moves
// besides Rev.
type Change int

// Changes a Touch records.
const (
	ChangeHead  Change = iota // the running or next request (attempts)
	ChangeAny                 // any waiting request (a cancel)
	ChangeSteer               // the session's steering (a close)
)

// Touch records that something of userID's changed that the queue
// document's other fields do not show, so watchers look again. Best
// effort for the caller: a watcher also looks on its own now and then.
func (q *Queues) Touch(ctx context.Context, userID string, what Change, now time.Time) error {
	inc := bson.D{{Key: "rev", Value: 1}}
	switch what {
	case ChangeHead:
		inc = append(inc, bson.E{Key: "head", Value: 1})
	case ChangeAny:
		inc = append(inc, bson.E{Key: "scan", Value: 1})
	case ChangeSteer:
		inc = append(inc, bson.E{Key: "steer", Value: 1})
	}
	_, err := q.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: userID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "updated_at", Value: now}}}, {Key: "$inc", Value: inc}},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return wrap("touch queue", err)
	}
	return nil
}

// Closing records that userID closed their session through entry
// through, and moves the steering counter (watchers read the session's
// state again).
func (q *Queues) Closing(ctx context.Context, userID string, through int64, now time.Time) error {
	return q.raise(ctx, userID, "closing", through, now, "steer")
}

// Committed records that userID's entries through tail are committed.
func (q *Queues) Committed(ctx context.Context, userID string, tail int64, now time.Time) error {
	return q.raise(ctx, userID, "tail", tail, now)
}

// Delivered records that a session holds userID's entries through seq.
func (q *Queues) Delivered(ctx context.Context, userID string, seq int64, now time.Time) error {
	return q.raise(ctx, userID, "delivered", seq, now)
}

// Handled records that every entry of userID before low has been handled
// by a session (run, or skipped as cancelled).
func (q *Queues) Handled(ctx context.Context, userID string, low int64, now time.Time) error {
	return q.raise(ctx, userID, "low", low, now)
}

// Started records that every entry of userID before next has been started.
func (q *Queues) Started(ctx context.Context, userID string, next int64, now time.Time) error {
	return q.raise(ctx, userID, "started", next, now)
}

// Undelivered returns the queue documents with entries no session is known
// to hold (tail > delivered). It reads the small per-user documents only.
func (q *Queues) Undelivered(ctx context.Context) ([]Queue, error) {
	cur, err := q.c.Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap("list queues", err)
	}
	var all []Queue
	if err := cur.All(ctx, &all); err != nil {
		return nil, wrap("list queues", err)
	}
	out := all[:0]
	for _, d := range all {
		if d.Tail > d.Delivered {
			out = append(out, d)
		}
	}
	return out, nil
}

// entryDoc is an inbox document as stored: a request, a tombstone or a
// requeue entry.
type entryDoc struct {
	models.Request `bson:",inline"`
	Idem           string `bson:"idem,omitempty"`
	BatchStart     int64  `bson:"batch_start,omitempty"`
	BatchEnd       int64  `bson:"batch_end,omitempty"`
	RequeueOf      string `bson:"requeue_of,omitempty"`
}

// end is the last sequence number of the range the document starts or
// belongs to.
func (d *entryDoc) end() int64 { return max(d.BatchEnd, d.Seq) }

// start is the first sequence number of its range.
func (d *entryDoc) start() int64 {
	if d.BatchStart > 0 {
		return d.BatchStart
	}
	return d.Seq
}

func (d *entryDoc) void() bool { return d.Status == statusVoid }

// entry reads userID's document at seq.
func (r *Requests) entry(ctx context.Context, userID string, seq int64) (*entryDoc, error) {
	var d entryDoc
	if err := r.c.FindOne(ctx, bson.D{{Key: "_id", Value: models.RequestID(userID, seq)}}).Decode(&d); err != nil {
		return nil, notFound("read entry", err)
	}
	return &d, nil
}

// Append accepts reqs as userID's next requests, in order and all or none,
// and returns them with their IDs and sequence numbers. hint is the
// highest committed sequence number the caller knows of (a queue's Tail, or
// a higher one it committed itself; 0 if none). Each request needs Type,
// Payload and EnqueuedAt; IdempotencyKey is optional and unique per user:
// one already taken makes Append fail with ErrDuplicate and accept nothing.
//
// When Append returns nil, every request is committed. When it returns
// another error, none is, with one exception that the error then says:
// MongoDB became unreachable in the middle and the outcome could not be
// settled (ErrUnsettled); a batch left so is voided by the next walker.
func (r *Requests) Append(ctx context.Context, userID string, hint int64, reqs []models.Request) ([]models.Request, error) {
	docs := make([]entryDoc, len(reqs))
	for i, req := range reqs {
		req.UserID, req.Status = userID, models.StatusQueued
		docs[i] = entryDoc{Request: req}
		if req.IdempotencyKey != "" {
			docs[i].Idem = idemValue(userID, req.IdempotencyKey)
		}
	}
	if err := r.appendDocs(ctx, userID, hint, docs); err != nil {
		return nil, err
	}
	out := make([]models.Request, len(docs))
	for i := range docs {
		out[i] = docs[i].Request
	}
	return out, nil
}

// AppendRequeue appends an entry that sends request target (already set
// queued) to the tail of userID's queue, and returns its sequence number.
func (r *Requests) AppendRequeue(ctx context.Context, userID string, hint int64, target string, now time.Time) (int64, error) {
	docs := []entryDoc{{Request: models.Request{UserID: userID, Status: statusRequeue, EnqueuedAt: now}, RequeueOf: target}}
	if err := r.appendDocs(ctx, userID, hint, docs); err != nil {
		return 0, err
	}
	return docs[0].Seq, nil
}

// ErrUnsettled: an append's outcome is unknown (MongoDB stopped answering
// in the middle); a later walker settles it.
var ErrUnsettled = errors.New("outcome unknown")

func (r *Requests) appendDocs(ctx context.Context, userID string, hint int64, docs []entryDoc) error {
	if userID == "" || len(docs) == 0 {
		return errors.New("store: append: no user or nothing to append")
	}
	k := int64(len(docs))
	for range maxAppendTries {
		n := hint + 1
		for i := range docs {
			seq := n + int64(i)
			docs[i].ID, docs[i].Seq = models.RequestID(userID, seq), seq
			if k > 1 {
				docs[i].BatchStart, docs[i].BatchEnd = n, n+k-1
			}
		}
		_, err := r.insertMany(ctx, docs)
		if err == nil {
			return nil
		}
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 || bwe.WriteConcernError != nil || !mongo.IsDuplicateKeyError(err) {
			// Unknown outcome: settle it with a tombstone in the last
			// member's place; its duplicate-key error means ours landed.
			committed, serr := r.settleUnknown(ctx, userID, n, n+k-1)
			if serr != nil {
				return fmt.Errorf("store: append: %w: %w (settling: %v)", ErrUnsettled, err, serr)
			}
			if committed {
				return nil
			}
			return wrap("append", err)
		}
		failed := bwe.WriteErrors[0].Index
		for _, we := range bwe.WriteErrors {
			failed = min(failed, we.Index)
		}
		if failed > 0 {
			// Part of the batch went in, so the number was ours and a key
			// was taken: void the batch (its last member is ours and
			// missing, so the tombstone goes in).
			if _, serr := r.settleUnknown(ctx, userID, n, n+k-1); serr != nil {
				return fmt.Errorf("store: append: %w: %w (voiding a partial batch: %v)", ErrUnsettled, err, serr)
			}
			return wrap("append", err)
		}
		// The first failed: the sequence number or the idempotency key?
		taken, gerr := r.entry(ctx, userID, n)
		switch {
		case gerr == nil:
			hint = taken.end() // another submission has it: after its range
		case errors.Is(gerr, ErrNotFound):
			return wrap("append", err) // the key: ErrDuplicate
		default:
			return gerr
		}
	}
	return fmt.Errorf("store: append: %w: gave up after %d taken sequence numbers", ErrConflict, maxAppendTries)
}

// insertTimeout bounds an append's insert apart from the caller's
// deadline. An insert the caller abandons keeps running on the server and
// may land after the tombstone that settled it; detached, the insert's
// outcome is known unless MongoDB itself stops answering.
const insertTimeout = 20 * time.Second

func (r *Requests) insertMany(ctx context.Context, docs []entryDoc) (*mongo.InsertManyResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), insertTimeout)
	defer cancel()
	return r.c.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
}

// settleUnknown decides the range start..last whose insert may or may not
// have landed: it writes a tombstone in last's place unless last exists.
// committed reports that the range is committed.
func (r *Requests) settleUnknown(ctx context.Context, userID string, start, last int64) (committed bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensationTimeout)
	defer cancel()
	for {
		committed, err = r.tombstone(ctx, userID, start, last)
		if err == nil || ctx.Err() != nil {
			return committed, err
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tombstone inserts the void marker at last for the range start..last, or
// finds the range's real last member there (committed).
func (r *Requests) tombstone(ctx context.Context, userID string, start, last int64) (committed bool, err error) {
	doc := entryDoc{Request: models.Request{
		ID: models.RequestID(userID, last), UserID: userID, Seq: last, Status: statusVoid, EnqueuedAt: time.Now().UTC(),
	}}
	if start < last {
		doc.BatchStart, doc.BatchEnd = start, last
	}
	_, err = r.c.InsertOne(ctx, doc)
	if err == nil {
		r.voidMembers(ctx, userID, start, last)
		if start < last {
			r.sweepLater(userID, start, last)
		}
		return false, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return false, wrap("write tombstone", err)
	}
	cur, err := r.entry(ctx, userID, last)
	if err != nil {
		return false, err
	}
	return !cur.void(), nil
}

// voidMembers marks the members of a voided range void and frees their
// idempotency keys, so they count nowhere and a retry with the same key can
// be accepted. Best effort: the tombstone already voids them for every
// reader; a member left queued only shows in admin counts.
func (r *Requests) voidMembers(ctx context.Context, userID string, start, last int64) {
	for seq := start; seq < last; seq++ {
		_, _ = r.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: models.RequestID(userID, seq)}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "status", Value: statusVoid}}},
			{Key: "$unset", Value: bson.D{{Key: idemField, Value: ""}}},
		})
	}
}

// sweepAfter are the delays after a tombstone at which its range's members
// are voided again: a member the server landed after the tombstone (its
// insert was in flight) is void for every reader already, but it would
// hold its idempotency key and count as queued in admin figures.
var sweepAfter = []time.Duration{time.Second, 10 * time.Second, time.Minute}

// sweepLater voids the members of the voided range start..last again after
// each of sweepAfter. Best effort, in this process; a key a late member
// still holds is freed by the next submission that needs it (FreeVoided).
func (r *Requests) sweepLater(userID string, start, last int64) {
	go func() {
		var slept time.Duration
		for _, d := range sweepAfter {
			time.Sleep(d - slept)
			slept = d
			ctx, cancel := context.WithTimeout(context.Background(), compensationTimeout)
			r.voidMembers(ctx, userID, start, last)
			cancel()
		}
	}()
}

// FreeVoided voids request id of userID if it is a member of a voided
// batch (its last member is a tombstone) and frees its idempotency key;
// freed reports that it was such a member.
func (r *Requests) FreeVoided(ctx context.Context, userID, id string) (freed bool, err error) {
	owner, seq, ok := models.ParseRequestID(id)
	if !ok || owner != userID {
		return false, nil // not a sequenced request of userID's: in no batch range
	}
	d, err := r.entry(ctx, userID, seq)
	if err != nil {
		return false, err
	}
	if d.end() == d.Seq {
		return false, nil
	}
	last, err := r.entry(ctx, userID, d.end())
	if errors.Is(err, ErrNotFound) || (err == nil && !last.void()) {
		return false, nil // still being inserted, or committed
	}
	if err != nil {
		return false, err
	}
	r.voidMembers(ctx, userID, d.start(), d.end())
	return true, nil
}

// Entry is one inbox entry to deliver: Seq, and the request it runs (for a
// requeue entry, the requeued request).
type Entry struct {
	Seq     int64
	Request models.Request
}

// Queued is e as a session carries it.
func (e Entry) Queued() models.QueuedRequest {
	return models.QueuedRequest{ID: e.Request.ID, Type: e.Request.Type, EnqueuedAt: e.Request.EnqueuedAt, Seq: e.Seq, Naive: e.Request.Naive}
}

// Delivery is the page as a session takes it in: entries in (after, Through].
func (p EntryPage) Delivery(after int64) models.Delivery {
	d := models.Delivery{After: after, Through: p.Through, Entries: make([]models.QueuedRequest, len(p.Entries))}
	for i, e := range p.Entries {
		d.Entries[i] = e.Queued()
	}
	return d
}

// EntryPage is what Entries read: entries in sequence order, and Through,
// the last sequence number it accounted for (entries up to it that are not
// listed need no delivery). Blocked reports a batch still being inserted
// right after Through.
type EntryPage struct {
	Entries []Entry
	Through int64
	Blocked bool
}

// Entries reads userID's inbox after seq after, in sequence order, until
// the end or limit entries: the requests still queued or running, and
// requeue entries whose request is queued. A batch found half-inserted
// stops the walk; once older than abandonAfter it is voided and skipped.
func (r *Requests) Entries(ctx context.Context, userID string, after int64, limit int, abandonAfter time.Duration) (EntryPage, error) {
	page := EntryPage{Through: after}
	s := after + 1
	for len(page.Entries) < limit {
		d, err := r.entry(ctx, userID, s)
		if errors.Is(err, ErrNotFound) {
			return page, nil
		}
		if err != nil {
			return page, err
		}
		members := []*entryDoc{d}
		if end := d.end(); end > s {
			last, err := r.entry(ctx, userID, end)
			switch {
			case errors.Is(err, ErrNotFound):
				if time.Since(d.EnqueuedAt) < abandonAfter {
					page.Blocked = true
					return page, nil
				}
				if _, err := r.tombstone(ctx, userID, d.start(), end); err != nil {
					return page, err
				}
				continue // read the range again, now settled
			case err != nil:
				return page, err
			}
			if last.void() {
				members = nil
			} else {
				for m := s + 1; m < end; m++ {
					md, err := r.entry(ctx, userID, m)
					if err != nil {
						return page, err
					}
					members = append(members, md)
				}
				members = append(members, last)
			}
			s = end
		}
		for _, m := range members {
			if e, ok, err := r.deliverable(ctx, m); err != nil {
				return page, err
			} else if ok {
				page.Entries = append(page.Entries, e)
			}
		}
		page.Through = s
		s++
	}
	return page, nil
}

// deliverable turns a document into an entry when it still has to run.
func (r *Requests) deliverable(ctx context.Context, d *entryDoc) (Entry, bool, error) {
	switch {
	case d.void():
		return Entry{}, false, nil
	case d.RequeueOf != "":
		target, err := r.Get(ctx, d.UserID, d.RequeueOf)
		if errors.Is(err, ErrNotFound) {
			return Entry{}, false, nil
		}
		if err != nil {
			return Entry{}, false, err
		}
		return Entry{Seq: d.Seq, Request: *target}, target.Status == models.StatusQueued, nil
	}
	live := d.Status == models.StatusQueued || d.Status == models.StatusRunning
	return Entry{Seq: d.Seq, Request: d.Request}, live, nil
}

// listScanBudget bounds the documents one page of ListOwn reads: a page
// that finds fewer matches within it ends early, with a cursor to go on.
const listScanBudget = 1000

// listPrefetch is how many documents ListOwn reads at once.
const listPrefetch = 8

// ListOwn returns a page of userID's requests, newest first, optionally
// only those in status, starting below sequence number before (0 = from the
// newest). q is the user's queue document. next is the sequence number to
// pass as before for the next page, 0 at the end. It reads the user's own
// documents by _id only, so its cost does not grow with other users'
// requests.
func (r *Requests) ListOwn(ctx context.Context, q Queue, status models.Status, limit int, before int64) (reqs []models.Request, next int64, err error) {
	userID := q.UserID
	lim := int(clampLimit(limit))
	top := before - 1
	if before <= 0 {
		// The tail hint may lag the truth: look past it.
		top = q.Tail
		for {
			d, err := r.entry(ctx, userID, top+1)
			if errors.Is(err, ErrNotFound) {
				break
			}
			if err != nil {
				return nil, 0, err
			}
			top = d.end()
		}
	}
	floor := int64(1)
	if status == models.StatusQueued || status == models.StatusRunning {
		floor = max(q.Low, 1) // nothing before low waits or runs
	}
	reqs = []models.Request{}
	// validFrom: members of a batch at or above it are known committed.
	validFrom, validTo := int64(0), int64(-1)
	examined := 0
	for s := top; s >= floor; {
		if len(reqs) == lim {
			return reqs, s + 1, nil
		}
		if examined >= listScanBudget {
			return reqs, s + 1, nil
		}
		chunk := r.readDown(ctx, userID, s, max(s-listPrefetch+1, floor))
		for _, c := range chunk {
			if c.err != nil && !errors.Is(c.err, ErrNotFound) {
				return nil, 0, c.err
			}
		}
		for _, c := range chunk {
			if c.seq > s {
				continue // skipped past by a range
			}
			examined++
			s = c.seq - 1
			d := c.doc
			if d == nil || d.RequeueOf != "" {
				continue
			}
			if d.void() {
				s = d.start() - 1 // a void range: skip its members
				break
			}
			if d.end() > d.Seq && !(d.Seq >= validFrom && d.Seq <= validTo) {
				last, err := r.entry(ctx, userID, d.end())
				if err != nil && !errors.Is(err, ErrNotFound) {
					return nil, 0, err
				}
				if last == nil || last.void() {
					s = d.start() - 1
					break
				}
				validFrom, validTo = d.start(), d.end()
			}
			if status != "" && d.Status != status {
				continue
			}
			reqs = append(reqs, d.Request)
			if len(reqs) == lim {
				return reqs, d.Seq, nil
			}
		}
	}
	return reqs, 0, nil
}

type readResult struct {
	seq int64
	doc *entryDoc
	err error
}

// readDown reads userID's documents from seq hi down to lo, concurrently,
// and returns them in that order (doc nil where there is none).
func (r *Requests) readDown(ctx context.Context, userID string, hi, lo int64) []readResult {
	out := make([]readResult, hi-lo+1)
	var wg sync.WaitGroup
	for i := range out {
		seq := hi - int64(i)
		out[i].seq = seq
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].doc, out[i].err = r.entry(ctx, userID, seq)
		}()
	}
	wg.Wait()
	return out
}

// keyDoc maps a user's idempotency key to the requests it made.
type keyDoc struct {
	ID  string   `bson:"_id"`
	IDs []string `bson:"ids"`
}

// RememberKey records that userID's idempotency key key made the requests
// ids, so a retry finds them by _id.
func (r *Requests) RememberKey(ctx context.Context, userID, key string, ids []string) error {
	_, err := r.keys.InsertOne(ctx, keyDoc{ID: idemValue(userID, key), IDs: ids})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return wrap("remember idempotency key", err)
	}
	return nil
}

// ByKey returns the requests userID's idempotency key made, as RememberKey
// recorded them; ErrNotFound if it did not.
func (r *Requests) ByKey(ctx context.Context, userID, key string) ([]models.Request, error) {
	var doc keyDoc
	if err := r.keys.FindOne(ctx, bson.D{{Key: "_id", Value: idemValue(userID, key)}}).Decode(&doc); err != nil {
		return nil, notFound("request by idempotency key", err)
	}
	out := make([]models.Request, 0, len(doc.IDs))
	for _, id := range doc.IDs {
		req, err := r.Get(ctx, userID, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *req)
	}
	return out, nil
}

// Placed is one of a user's requests at its place in their sequence: its
// own entry, or for a requeued request the requeue entry that put it back.
type Placed struct {
	Place int64
	models.Request
}

// Window reads userID's committed requests at places from on, in place
// order, for a watcher: through hint (a tail the caller knows of) and on
// past it while entries exist, examining at most limit places. top is the
// last place examined, where the next read continues (from = top+1); a
// batch not yet wholly committed stops the read before it, so it is read
// again. It reads by _id only.
func (r *Requests) Window(ctx context.Context, userID string, from, hint int64, limit int) (placed []Placed, top int64, err error) {
	from = max(from, 1)
	top = from - 1
	docs := map[int64]*entryDoc{}
	read := func(seq int64) (*entryDoc, error) {
		if d, ok := docs[seq]; ok {
			return d, nil
		}
		// Through the hint, read ahead a chunk at a time, concurrently.
		hi := max(seq, min(hint, seq+listPrefetch-1))
		for _, c := range r.readDown(ctx, userID, hi, seq) {
			if c.err != nil && !errors.Is(c.err, ErrNotFound) {
				return nil, c.err
			}
			docs[c.seq] = c.doc
		}
		return docs[seq], nil
	}
	for seq := from; seq < from+int64(limit); seq++ {
		d, err := read(seq)
		if err != nil {
			return nil, top, err
		}
		if d == nil {
			return placed, top, nil // the end of the committed prefix (or a gap a walker settles)
		}
		if d.end() > d.Seq {
			last, err := read(d.end())
			if err != nil {
				return nil, top, err
			}
			if last == nil {
				return placed, top, nil // a batch still committing: read it again later
			}
			if last.void() {
				d = last
			}
		}
		top = seq
		switch {
		case d.void():
			seq = d.end() // skip the void range's members
			top = seq
		case d.RequeueOf != "":
			var target models.Request
			if err := r.c.FindOne(ctx, bson.D{{Key: "_id", Value: d.RequeueOf}}).Decode(&target); err != nil {
				if errors.Is(err, mongo.ErrNoDocuments) {
					continue
				}
				return nil, top, wrap("read requeued request", err)
			}
			placed = append(placed, Placed{Place: d.Seq, Request: target})
		default:
			placed = append(placed, Placed{Place: d.Seq, Request: d.Request})
		}
	}
	return placed, top, nil
}

// ErrNoFeed: the server offers no change feed (a real MongoDB, a FerretDB
// without the embedded store's gate); watchers poll instead.
var ErrNoFeed = errors.New("no change feed")

// ChangeCursor is where a reader of Changes stands; the zero cursor asks
// for one at the present.
type ChangeCursor struct {
	Epoch int64
	Seq   int64
}

// feedCommand is the embedded store's change feed, answered by its gate
// (devserver/mongogate.FeedCommand).
const feedCommand = "turnstileChanges"

// Written is a document a write touched, by _id, and the top-level fields
// it set (nil: any may have changed, as by an insert).
type Written struct {
	ID     string
	Fields []string
}

// Only reports whether the change set nothing but fields among these.
func (c Written) Only(fields ...string) bool {
	if c.Fields == nil {
		return false
	}
	for _, f := range c.Fields {
		if !slices.Contains(fields, f) {
			return false
		}
	}
	return true
}

// Changes returns the users whose queue documents changed since c (each
// with the fields it set), and the cursor to ask from next; all means any
// of them may have (the feed cannot tell which). The zero cursor lists
// none: it only starts one. ErrNoFeed if the server has no feed.
func (q *Queues) Changes(ctx context.Context, c ChangeCursor) (changes []Written, all bool, next ChangeCursor, err error) {
	return feedChanges(ctx, q.c, "read queue changes", c)
}

// Changes returns the request documents (entries) written since c, by
// _id (models.RequestID: the user and the place), as Queues.Changes does
// the queue documents.
func (r *Requests) Changes(ctx context.Context, c ChangeCursor) (changes []Written, all bool, next ChangeCursor, err error) {
	return feedChanges(ctx, r.c, "read request changes", c)
}

func feedChanges(ctx context.Context, coll *mongo.Collection, op string, c ChangeCursor) (changes []Written, all bool, next ChangeCursor, err error) {
	var r struct {
		Epoch  int64      `bson:"epoch"`
		Next   int64      `bson:"next"`
		IDs    []string   `bson:"ids"`
		Fields [][]string `bson:"fields"`
		All    bool       `bson:"all"`
	}
	err = coll.Database().RunCommand(ctx, bson.D{
		{Key: feedCommand, Value: coll.Name()}, {Key: "epoch", Value: c.Epoch}, {Key: "after", Value: c.Seq},
	}).Decode(&r)
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == 59 { // CommandNotFound
		return nil, false, c, ErrNoFeed
	}
	if err != nil {
		return nil, false, c, wrap(op, err)
	}
	changes = make([]Written, len(r.IDs))
	for i, id := range r.IDs {
		changes[i].ID = id
		if i < len(r.Fields) { // an older gate lists no fields: any
			changes[i].Fields = r.Fields[i]
		}
	}
	return changes, r.All, ChangeCursor{Epoch: r.Epoch, Seq: r.Next}, nil
}
