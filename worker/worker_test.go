package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/turnstile/turnstile/activities"
	"github.com/turnstile/turnstile/models"
	"github.com/turnstile/turnstile/store/storetest"
	"github.com/turnstile/turnstile/worker"
	"go.temporal.io/sdk/testsuite"
)

// A session must never start another user's request: a MarkRunning that
// names bob's request in alice's session leaves it queued, untouched, on
// the real store (the owner is part of the update, not checked after it).
func TestMarkRunningLeavesAnotherUsersRequestQueued(t *testing.T) {
	s := storetest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	bobs := models.Request{ID: "bob-000000000001", UserID: "bob", Type: "echo", Payload: `{}`,
		Status: models.StatusQueued, EnqueuedAt: time.Now().UTC()}
	if err := s.Requests.Insert(ctx, bobs); err != nil {
		t.Fatal(err)
	}
	a := &activities.Activities{Store: worker.Recorder{Requests: s.Requests}}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(a.MarkRunning)
	if val, err := env.ExecuteActivity(a.MarkRunning, activities.MarkRunningInput{RequestID: bobs.ID, UserID: "alice"}); err == nil {
		var res activities.MarkRunningResult
		if err := val.Get(&res); err != nil {
			t.Fatal(err)
		}
		if res.Status == models.StatusRunning {
			t.Fatalf("alice's session was told to run bob's request: %+v", res)
		}
	}
	got, err := s.Requests.Get(ctx, "bob", bobs.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != models.StatusQueued || got.StartedAt != nil {
		t.Fatalf("bob's request after alice's MarkRunning: status %s started_at %v, want queued and never started", got.Status, got.StartedAt)
	}
}
