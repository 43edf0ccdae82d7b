package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/turnstile/turnstile/models"
)

// idemField holds userID + "\x00" + idempotency key, only on requests that
// have a key. A sparse unique index on this one field makes a key unique per
// user: a compound sparse index would still index documents without the key,
// and FerretDB does not implement partialFilterExpression.
const idemField = "idem"

var requestIndexes = []mongo.IndexModel{
	{Keys: bson.D{{Key: idemField, Value: 1}}, Options: options.Index().SetName("idem_unique").SetUnique(true).SetSparse(true)},
	// Request IDs are UUIDv7, so _id order is enqueue order.
	{Keys: bson.D{{Key: "user_id", Value: 1}, {Key: "_id", Value: 1}}, Options: options.Index().SetName("user_id")},
	{Keys: bson.D{{Key: "user_id", Value: 1}, {Key: "status", Value: 1}}, Options: options.Index().SetName("user_status")},
}

// requestDoc is a request as stored: models.Request plus the idempotency
// field, which stays out of the shared type. Reads decode into
// models.Request, which ignores the extra field.
type requestDoc struct {
	models.Request `bson:",inline"`
	Idem           string `bson:"idem,omitempty"`
}

func idemValue(userID, key string) string { return userID + "\x00" + key }

// compensationTimeout bounds the clean-up after a failed insert; it runs even
// when the caller's context is done.
const compensationTimeout = 5 * time.Second

// Requests is the "requests" collection: every request's status, payload
// and outcome. MongoDB is its system of record; Temporal runs it.
type Requests struct {
	c    *mongo.Collection
	keys *mongo.Collection // idempotency key → request IDs (RememberKey)
	// queues is touched after a change that the queue document does not
	// otherwise show (cancel, requeue, attempts), for watchers.
	queues *Queues
}

// touch tells userID's watchers to look again; best effort (they also look
// on their own now and then), so its error is dropped.
func (r *Requests) touch(ctx context.Context, userID string, what Change) {
	if r.queues == nil || userID == "" {
		return
	}
	_ = r.queues.Touch(ctx, userID, what, time.Now().UTC())
}

// Insert stores reqs in order, all or none. Each needs an ID and a UserID. If
// one of them has an idempotency key its user already used (or an ID that
// exists), the error wraps ErrDuplicate. When the insert fails part-way, the
// requests it stored are deleted again before Insert returns; without
// transactions another reader may glimpse them in between.
func (r *Requests) Insert(ctx context.Context, reqs ...models.Request) error {
	if len(reqs) == 0 {
		return nil
	}
	docs := make([]requestDoc, len(reqs))
	for i, req := range reqs {
		if req.ID == "" || req.UserID == "" {
			return fmt.Errorf("store: insert request %d: empty ID or UserID", i)
		}
		if !req.Status.Valid() {
			return fmt.Errorf("store: insert request %d: invalid status %q", i, req.Status)
		}
		docs[i] = requestDoc{Request: req}
		if req.IdempotencyKey != "" {
			docs[i].Idem = idemValue(req.UserID, req.IdempotencyKey)
		}
	}
	_, err := r.c.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
	if err == nil {
		return nil
	}
	// An ordered insert stops at the first failing document: those before it
	// are stored. If the error says nothing about which (a network error),
	// remove them all; the IDs are the caller's new ones.
	stored := len(reqs)
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && len(bwe.WriteErrors) > 0 && bwe.WriteConcernError == nil {
		stored = bwe.WriteErrors[0].Index
		for _, we := range bwe.WriteErrors {
			stored = min(stored, we.Index)
		}
	}
	if stored > 0 {
		ids := make(bson.A, stored)
		for i := range stored {
			ids[i] = reqs[i].ID
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensationTimeout)
		defer cancel()
		if _, derr := r.c.DeleteMany(cctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}); derr != nil {
			return fmt.Errorf("%w (and undoing the partial insert failed: %v)", wrap("insert requests", err), derr)
		}
	}
	return wrap("insert requests", err)
}

// Get returns the request with id if it belongs to userID; userID "" means
// any owner (admin). Another user's request is ErrNotFound, like a missing one.
func (r *Requests) Get(ctx context.Context, userID, id string) (*models.Request, error) {
	// Filter by _id alone, which FerretDB pushes down to SQLite, and check
	// the owner here.
	var d entryDoc
	if err := r.c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d); err != nil {
		return nil, notFound("get request", err)
	}
	if (userID != "" && d.UserID != userID) || d.void() || d.RequeueOf != "" {
		return nil, fmt.Errorf("store: get request: %w", ErrNotFound)
	}
	if d.end() > d.Seq {
		// A batch member counts once its batch is committed.
		last, err := r.entry(ctx, d.UserID, d.end())
		if errors.Is(err, ErrNotFound) || (err == nil && last.void()) {
			return nil, fmt.Errorf("store: get request: %w", ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
	}
	return &d.Request, nil
}

// ByIdempotencyKey returns userID's request made with idempotency key key.
func (r *Requests) ByIdempotencyKey(ctx context.Context, userID, key string) (*models.Request, error) {
	if userID == "" || key == "" {
		return nil, fmt.Errorf("store: request by idempotency key: %w", ErrNotFound)
	}
	var req models.Request
	if err := r.c.FindOne(ctx, bson.D{{Key: idemField, Value: idemValue(userID, key)}}).Decode(&req); err != nil {
		return nil, notFound("request by idempotency key", err)
	}
	return &req, nil
}

// List returns up to limit of userID's requests ("" = every user's), newest
// first, optionally only those in status, starting below beforeID ("" = from
// the newest). Pass the last ID of a page as beforeID to get the next.
func (r *Requests) List(ctx context.Context, userID string, status models.Status, limit int, beforeID string) ([]models.Request, error) {
	filter := bson.D{}
	if userID != "" {
		filter = append(filter, bson.E{Key: "user_id", Value: userID})
	}
	if status != "" {
		filter = append(filter, bson.E{Key: "status", Value: status})
	} else {
		// Requests only: not the inbox's tombstones and requeue entries.
		filter = append(filter, bson.E{Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{
			models.StatusQueued, models.StatusRunning, models.StatusSucceeded, models.StatusFailed, models.StatusCancelled}}}})
	}
	if beforeID != "" {
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: beforeID}}})
	}
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(clampLimit(limit))
	cur, err := r.c.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap("list requests", err)
	}
	reqs := []models.Request{}
	if err := cur.All(ctx, &reqs); err != nil {
		return nil, wrap("list requests", err)
	}
	return reqs, nil
}

// CountQueued counts userID's requests in status queued.
func (r *Requests) CountQueued(ctx context.Context, userID string) (int64, error) {
	n, err := r.c.CountDocuments(ctx, bson.D{
		{Key: "user_id", Value: userID},
		{Key: "status", Value: models.StatusQueued},
	})
	if err != nil {
		return 0, wrap("count queued", err)
	}
	return n, nil
}

// CountByStatus counts all requests per status (one count per status: the
// statuses are few, and counts work the same on MongoDB and FerretDB).
func (r *Requests) CountByStatus(ctx context.Context) (map[models.Status]int64, error) {
	out := map[models.Status]int64{}
	for _, st := range []models.Status{models.StatusQueued, models.StatusRunning, models.StatusSucceeded, models.StatusFailed, models.StatusCancelled} {
		n, err := r.c.CountDocuments(ctx, bson.D{{Key: "status", Value: st}})
		if err != nil {
			return nil, wrap("count by status", err)
		}
		out[st] = n
	}
	return out, nil
}

// Delete removes the request with id; the API undoes an insert with it when
// the session could not be signalled. A missing request is ErrNotFound.
func (r *Requests) Delete(ctx context.Context, id string) error {
	res, err := r.c.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return wrap("delete request", err)
	}
	if res.DeletedCount == 0 {
		return fmt.Errorf("store: delete request: %w", ErrNotFound)
	}
	return nil
}

// transition applies update to request id if its status is one of from
// (and, with owner set, it belongs to owner), and returns the request as it
// was before; changed reports whether the update applied. A missing or
// foreign request is ErrNotFound.
//
// It is one conditional findOneAndUpdate: atomic on MongoDB, and on the
// embedded FerretDB through its gate (devserver/mongogate), which also
// looks the request up by _id.
func (r *Requests) transition(ctx context.Context, op, id, owner string, from []models.Status, update bson.D) (*models.Request, bool, error) {
	filter := bson.D{{Key: "_id", Value: id}, {Key: "status", Value: bson.D{{Key: "$in", Value: from}}}}
	if owner != "" {
		filter = append(filter, bson.E{Key: "user_id", Value: owner})
	}
	var before models.Request
	err := r.c.FindOneAndUpdate(ctx, filter, update,
		options.FindOneAndUpdate().SetReturnDocument(options.Before)).Decode(&before)
	if err == nil {
		return &before, true, nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return nil, false, wrap(op, err)
	}
	cur, err := r.Get(ctx, owner, id)
	if err != nil {
		return nil, false, err
	}
	return cur, false, nil
}

func set(fields ...bson.E) bson.D { return bson.D{{Key: "$set", Value: bson.D(fields)}} }

// CancelQueued moves userID's request id ("" = any owner) from queued to
// cancelled and returns it. A missing or foreign request is ErrNotFound; one
// that is no longer queued is ErrConflict, returned with the request as it is.
func (r *Requests) CancelQueued(ctx context.Context, userID, id string, now time.Time) (*models.Request, error) {
	cur, changed, err := r.transition(ctx, "cancel request", id, userID, []models.Status{models.StatusQueued},
		set(bson.E{Key: "status", Value: models.StatusCancelled}, bson.E{Key: "finished_at", Value: now}))
	if err != nil {
		return nil, err
	}
	if !changed {
		return cur, fmt.Errorf("store: cancel request: %w: it is %s", ErrConflict, cur.Status)
	}
	r.touch(ctx, cur.UserID, ChangeAny)
	cur.Status, cur.FinishedAt = models.StatusCancelled, &now
	return cur, nil
}

// Requeue moves a failed or cancelled request back to queued and clears its
// outcome (result, error, started and finished times); attempts stay. Any
// other status is ErrConflict. Re-submitting it to the session is the
// caller's job.
func (r *Requests) Requeue(ctx context.Context, id string) error {
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: "status", Value: models.StatusQueued}}},
		{Key: "$unset", Value: bson.D{
			{Key: "result", Value: ""},
			{Key: "error", Value: ""},
			{Key: "started_at", Value: ""},
			{Key: "finished_at", Value: ""},
		}},
	}
	cur, changed, err := r.transition(ctx, "requeue request", id, "",
		[]models.Status{models.StatusFailed, models.StatusCancelled}, update)
	if err != nil {
		return err
	}
	if !changed {
		return fmt.Errorf("store: requeue request: %w: it is %s", ErrConflict, cur.Status)
	}
	r.touch(ctx, cur.UserID, ChangeAny)
	return nil
}

// MarkRunning records that the worker starts the request and returns it:
// a queued request becomes running with started_at = now. A request already
// running (a retried start) is returned unchanged, its started_at kept; one
// already final is returned unchanged too, so the caller can skip it.
// Running it twice is harmless. Queued implies never started: Requeue clears
// started_at when it queues a request again. The owner is part of the
// update's filter ("" = any owner): another user's request is ErrNotFound
// and stays as it was.
func (r *Requests) MarkRunning(ctx context.Context, id, owner string, now time.Time) (*models.Request, error) {
	cur, changed, err := r.transition(ctx, "mark running", id, owner, []models.Status{models.StatusQueued},
		set(bson.E{Key: "status", Value: models.StatusRunning}, bson.E{Key: "started_at", Value: now}))
	if err != nil {
		return nil, err
	}
	if changed {
		cur.Status, cur.StartedAt = models.StatusRunning, &now
	}
	return cur, nil
}

// SetAttempts records the number of attempts made so far (a value, not an
// increment, so a retried call changes nothing). It applies only while the
// request is running: otherwise ErrConflict, or ErrNotFound if it is missing.
func (r *Requests) SetAttempts(ctx context.Context, id string, attempts int) error {
	cur, changed, err := r.transition(ctx, "set attempts", id, "", []models.Status{models.StatusRunning},
		set(bson.E{Key: "attempts", Value: attempts}))
	if err != nil {
		return err
	}
	if !changed {
		return fmt.Errorf("store: set attempts: %w: it is %s", ErrConflict, cur.Status)
	}
	r.touch(ctx, cur.UserID, ChangeHead)
	return nil
}

// Finish records a request's final status with its result (succeeded) or
// error message, the attempts made and the time. It applies only to a
// running or queued request; on a final one it changes nothing and returns
// nil, so a retried Finish never overwrites the first outcome. A missing
// request is ErrNotFound.
func (r *Requests) Finish(ctx context.Context, id string, status models.Status, result, errMsg string, attempts int, now time.Time) error {
	if !status.Final() {
		return fmt.Errorf("store: finish request: status %q is not final", status)
	}
	fields := []bson.E{
		{Key: "status", Value: status},
		{Key: "attempts", Value: attempts},
		{Key: "finished_at", Value: now},
	}
	if result != "" {
		fields = append(fields, bson.E{Key: "result", Value: result})
	}
	if errMsg != "" {
		fields = append(fields, bson.E{Key: "error", Value: errMsg})
	}
	_, _, err := r.transition(ctx, "finish request", id, "", []models.Status{models.StatusQueued, models.StatusRunning}, set(fields...))
	return err
}
