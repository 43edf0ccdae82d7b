package store

import (
	"context"
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
// It is marked running first, conditionally and atomically (a cancel that
// comes later finds it running), then run, then settled: each step is one
// findOneAndUpdate by _id (see transition). A settle write that fails
// leaves the request running, and the activity's retry settles it.
func (r *Requests) Settle(ctx context.Context, id, owner string, now func() time.Time, run func(cur *models.Request) models.Settlement) (*models.Request, bool, error) {
	cur, changed, err := r.transition(ctx, "settle request", id, owner, []models.Status{models.StatusQueued},
		set(bson.E{Key: "status", Value: models.StatusRunning}, bson.E{Key: "started_at", Value: now()}))
	if err != nil {
		return nil, false, err
	}
	if !changed && cur.Status != models.StatusRunning {
		return cur, false, nil
	}
	s := run(cur)
	if _, _, err := r.transition(ctx, "settle request", id, owner, []models.Status{models.StatusRunning}, settleUpdate(s)); err != nil {
		return cur, true, err
	}
	return cur, true, nil
}

// settleUpdate is the $set of a settlement.
func settleUpdate(s models.Settlement) bson.D {
	fields := []bson.E{{Key: "status", Value: s.Status}, {Key: "attempts", Value: s.Attempts}}
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
