package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// user is one benchmark user and what it submitted, in order.
type user struct {
	token   string
	refresh string
	ids     []string
	enqueue []time.Duration // client round trip per accepted submission
	failed  []string        // submissions answered 503 or timed out: not accepted, or not known to be
	records []record
}

// renewAfter: if logging the users in took longer, their tokens are renewed
// before submitting (access tokens live 15 minutes by default).
const renewAfter = 5 * time.Minute

// runScenario registers the users, submits, waits until every request is
// final, reads them all back and computes the result.
func runScenario(ctx context.Context, c *client, runID string, sc scenario, progress io.Writer) (result, error) {
	users := make([]*user, sc.Users)
	loginStart := time.Now()
	if err := parallel(ctx, sc.Concurrency, sc.Users, func(i int) error {
		tok, refresh, err := c.login(ctx, fmt.Sprintf("bench-%s-%s-%s-%d@bench.example.com", runID, sc.Name, sc.mode(), i))
		users[i] = &user{token: tok, refresh: refresh}
		return err
	}); err != nil {
		return result{}, err
	}
	if time.Since(loginStart) > renewAfter {
		// The first tokens may be close to expiring: renew them all.
		if err := parallel(ctx, sc.Concurrency, sc.Users, func(i int) error {
			var err error
			users[i].token, users[i].refresh, err = c.renew(ctx, users[i].refresh)
			return err
		}); err != nil {
			return result{}, err
		}
	}
	fmt.Fprintf(progress, "   %d users ready\n", sc.Users)
	var watching *watchers
	if sc.Watch > 0 {
		watching = watch(ctx, c, users, sc.Watch)
		if err := sleep(ctx, time.Second); err != nil { // the streams connect
			return result{}, err
		}
	}

	throttledBefore := throttled.Load()
	signalsBefore, signalsErr := c.signalsSent(ctx, c.metrics)
	var submitted atomic.Int64
	total := int64(sc.Users * sc.PerUser)
	stopProgress := ticker(progress, func() string {
		return fmt.Sprintf("   submitted %d/%d", submitted.Load(), total)
	})
	start := time.Now()
	conc := sc.Concurrency
	if sc.Rate > 0 {
		conc = sc.Users
	}
	err := parallel(ctx, conc, sc.Users, func(i int) error {
		u := users[i]
		for n := 0; n < sc.PerUser; n += sc.Batch {
			items := make([]map[string]any, 0, sc.Batch)
			for k := n; k < min(n+sc.Batch, sc.PerUser); k++ {
				items = append(items, item(sc, i, k))
			}
			t0 := time.Now()
			if sc.Rate > 0 {
				// Due at the (n/Batch·Users + i)th tick of the offered rate.
				t0 = start.Add(time.Duration(float64((n/sc.Batch)*sc.Users+i) / sc.Rate * float64(time.Second)))
				if err := sleep(ctx, time.Until(t0)); err != nil {
					return err
				}
			}
			ids, err := c.submit(ctx, u.token, sc.Mode, items)
			if failedSubmission(ctx, err) {
				// Counted as failed in the table; the run goes on. Its
				// requests are not followed (an unknown outcome may run).
				u.failed = append(u.failed, err.Error())
				continue
			}
			if err != nil {
				return fmt.Errorf("submit: %w", err)
			}
			u.enqueue = append(u.enqueue, time.Since(t0))
			u.ids = append(u.ids, ids...)
			submitted.Add(int64(len(ids)))
			if sc.Sequential {
				if err := waitRecord(ctx, c, u.token, ids[len(ids)-1]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	stopProgress()
	if err != nil {
		return result{}, err
	}
	submitTime := time.Since(start)

	// Wait until each user's last request is final: the session runs a
	// user's requests in order, so the others are final too (the read-back
	// below checks that). A 503 or 429 under load is waited out.
	var done atomic.Int64
	stopProgress = ticker(progress, func() string { return fmt.Sprintf("   finished users %d/%d", done.Load(), sc.Users) })
	err = parallel(ctx, 16, sc.Users, func(i int) error {
		u := users[i]
		if len(u.ids) == 0 {
			done.Add(1)
			return nil
		}
		for {
			r, err := c.get(ctx, u.token, u.ids[len(u.ids)-1])
			if e, ok := err.(*apiError); ok && (e.Status == 503 || e.Status == 429) {
				err = nil
			}
			if err != nil {
				return fmt.Errorf("waiting for the last request: %w", err)
			}
			if r.final() {
				done.Add(1)
				return nil
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
	})
	stopProgress()
	if err != nil {
		return result{}, fmt.Errorf("waiting for completion (lost requests?): %w", err)
	}
	// Read every request back.
	type ref struct{ u, k int }
	var refs []ref
	for i, u := range users {
		u.records = make([]record, len(u.ids))
		for k := range u.ids {
			refs = append(refs, ref{i, k})
		}
	}
	if err := parallel(ctx, 16, len(refs), func(j int) error {
		u := users[refs[j].u]
		r, err := c.get(ctx, u.token, u.ids[refs[j].k])
		u.records[refs[j].k] = r
		return err
	}); err != nil {
		return result{}, fmt.Errorf("read back: %w", err)
	}
	res := analyse(sc, users, submitTime)
	if watching != nil {
		watching.stop(&res, users)
	}
	res.Throttled = throttled.Load() - throttledBefore
	res.Signals = -1
	if signalsAfter, err := c.signalsSent(ctx, c.metrics); err == nil && signalsErr == nil && res.Requests > 0 {
		res.Signals = (signalsAfter - signalsBefore) / float64(res.Requests)
	} else if err := errors.Join(signalsErr, err); err != nil {
		fmt.Fprintf(progress, "   signals per request not read: %v\n", err)
	}
	return res, nil
}

// failedSubmission reports an answer the bench counts as a failed
// submission rather than a reason to stop: a 503 (a backend was too slow or
// down) or a client-side timeout. The run's own deadline or an interrupt
// is not one.
func failedSubmission(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if e, ok := err.(*apiError); ok {
		return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusGatewayTimeout
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func item(sc scenario, userIdx, k int) map[string]any {
	if sc.Type == "sleep" {
		ms := sc.SleepMS
		if len(sc.SleepMix) > 0 {
			ms = sc.SleepMix[k%len(sc.SleepMix)]
		}
		return map[string]any{"type": "sleep", "payload": map[string]int{"ms": ms}}
	}
	return map[string]any{"type": sc.Type, "payload": map[string]int{"u": userIdx, "k": k}}
}

func waitRecord(ctx context.Context, c *client, token, id string) error {
	for {
		r, err := c.get(ctx, token, id)
		if err != nil {
			return err
		}
		if r.final() {
			return nil
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
