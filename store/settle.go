package store

import (
	"context"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/turnstile/turnstile/models"
)

// Settle runs request id with run if it is queued (or running: a start
// retried after a crash) and records what run returns: a final status with
// started_at, finished_at, attempts and the result or error, or running
// with the attempts made when it is to be tried again. It returns the
// request as it was before and whether run was called; a request in any
// other status is returned unchanged without calling run.
//
// With Options.SerializeUpdates the request is read and written by _id
// with its per-document lock held while run works, so a concurrent cancel
// in this process waits and finds it final: two document operations per
// request, and a queued request goes straight to its final status. Without
// it (MongoDB) it is marked running first, conditionally and atomically,
// and then settled: every step is one indexed findOneAndUpdate. run must be
// short: it holds the lock.
//
// On the locked path a final outcome whose write fails is remembered in
// this process: until it is written (by Finish, or by a Settle of the same
// request, which writes it instead of running the request again) every
// state change sees the request as running, so a cancel cannot win over a
// request that ran.
func (r *Requests) Settle(ctx context.Context, id, owner string, now func() time.Time, run func(cur *models.Request) models.Settlement) (*models.Request, bool, error) {
	startable := []models.Status{models.StatusQueued, models.StatusRunning}
	if r.locks.on {
		defer r.locks.lock(id)()
		cur, err := r.Get(ctx, owner, id)
		if err != nil {
			return nil, false, err
		}
		if !slices.Contains(startable, cur.Status) {
			return cur, false, nil
		}
		if v, ran := r.unsettled.Load(id); ran {
			// It ran and its outcome could not be written: write that
			// outcome now rather than run it again.
			s := v.(models.Settlement)
			if err := r.writeByID(ctx, "settle request", id, settleUpdate(s, true)); err != nil {
				return nil, false, err
			}
			r.unsettled.Delete(id)
			cur.Status = s.Status
			return cur, false, nil
		}
		s := run(cur)
		if cur.StartedAt != nil && cur.Status == models.StatusRunning {
			s.StartedAt = *cur.StartedAt // a retried start keeps the first
		}
		if err := r.writeByID(ctx, "settle request", id, settleUpdate(s, true)); err != nil {
			if s.Status.Final() {
				r.unsettled.Store(id, s)
			}
			return cur, true, err
		}
		return cur, true, nil
	}

	cur, changed, err := r.transition(ctx, "settle request", id, owner, []models.Status{models.StatusQueued},
		set(bson.E{Key: "status", Value: models.StatusRunning}, bson.E{Key: "started_at", Value: now()}))
	if err != nil {
		return nil, false, err
	}
	if !changed && cur.Status != models.StatusRunning {
		return cur, false, nil
	}
	s := run(cur)
	if _, _, err := r.transition(ctx, "settle request", id, owner, []models.Status{models.StatusRunning}, settleUpdate(s, false)); err != nil {
		return cur, true, err
	}
	return cur, true, nil
}

// settleUpdate is the $set of a settlement; withStart also sets status
// running's started_at, which the locked path writes in the same change.
func settleUpdate(s models.Settlement, withStart bool) bson.D {
	fields := []bson.E{{Key: "status", Value: s.Status}, {Key: "attempts", Value: s.Attempts}}
	if withStart && !s.StartedAt.IsZero() {
		fields = append(fields, bson.E{Key: "started_at", Value: s.StartedAt})
	}
	if s.Status.Final() {
		fields = append(fields, bson.E{Key: "finished_at", Value: s.FinishedAt})
		if s.Result != "" {
			fields = append(fields, bson.E{Key: "result", Value: s.Result})
		}
		if s.Error != "" {
			fields = append(fields, bson.E{Key: "error", Value: s.Error})
		}
	}
	return set(fields...)
}
