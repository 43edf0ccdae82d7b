package tests

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	sdkworker "go.temporal.io/sdk/worker"

	"github.com/turnstile/turnstile/app"
	"github.com/turnstile/turnstile/starter"
	"github.com/turnstile/turnstile/worker"
)

// TestE2E_WorkerStopLetsItsRunningRequestFinish stops a worker (a deploy,
// Ctrl-C on make run) while it runs a 1.5 s request. The worker waits for
// the request to finish and reports it, so it succeeds on its first
// attempt; it used to be cancelled at once, burn an attempt and wait out
// its heartbeat timeout on the next worker.
func TestE2E_WorkerStopLetsItsRunningRequestFinish(t *testing.T) {
	c := newUser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	queue := "stop-" + c.userID
	cfg := shared.cfg.Session
	cfg.LocalTypes = nil
	cfg.HeartbeatTimeout = 5 * time.Second
	newWorker := func() sdkworker.Worker {
		w := worker.New(shared.backends.Temporal, worker.Config{
			TaskQueue: queue, Requests: shared.backends.Store.Requests, Handlers: app.Registry(shared.cfg),
			Logger: slog.Default(), HeartbeatEvery: 200 * time.Millisecond,
		})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	first := newWorker()
	stopFirst := sync.OnceFunc(first.Stop)
	defer stopFirst()

	st := &starter.Starter{Client: shared.backends.Temporal, TaskQueue: queue, Config: cfg}
	req := c.submitTo(ctx, st, "sleep", `{"ms":1500}`)
	c.waitStatus(req.ID, "running")
	stopAt := time.Now()
	stopFirst()
	t.Logf("the worker stopped in %s", time.Since(stopAt).Round(time.Millisecond))
	second := newWorker()
	defer second.Stop()

	done := c.waitFinal(req.ID)[0]
	if done.Status != "succeeded" || done.Attempts != 1 {
		t.Fatalf("request ended %s after %d attempts (error %v), want succeeded on the first", done.Status, done.Attempts, done.Error)
	}
	if err := st.Close(ctx, c.userID, 0); err != nil {
		t.Fatal(err)
	}
}
