package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxSleep bounds the sleep handler so a typo cannot park a queue for days.
const MaxSleep = time.Hour

// Echo returns its payload as the result.
type Echo struct{}

// Handle returns job.Payload.
func (Echo) Handle(_ context.Context, job Job) (json.RawMessage, error) {
	if len(job.Payload) == 0 {
		return json.RawMessage("null"), nil
	}
	return job.Payload, nil
}

// Sleep waits {"ms": N} milliseconds, honouring cancellation. The Run
// activity heartbeats while any handler runs.
type Sleep struct{}

type sleepPayload struct {
	MS *int64 `json:"ms"`
}

func parseSleep(payload json.RawMessage) (time.Duration, error) {
	var p sleepPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return 0, fmt.Errorf("sleep payload must be {\"ms\": N}: %w", err)
	}
	if p.MS == nil {
		return 0, errors.New(`sleep payload must be {"ms": N}`)
	}
	// Check the range before converting: a huge ms would overflow Duration.
	if *p.MS < 0 || *p.MS > MaxSleep.Milliseconds() {
		return 0, fmt.Errorf("sleep ms must be between 0 and %d", MaxSleep.Milliseconds())
	}
	return time.Duration(*p.MS) * time.Millisecond, nil
}

// Validate checks the payload shape and range.
func (Sleep) Validate(payload json.RawMessage) error {
	_, err := parseSleep(payload)
	return err
}

// Handle sleeps.
func (Sleep) Handle(ctx context.Context, job Job) (json.RawMessage, error) {
	d, err := parseSleep(job.Payload)
	if err != nil {
		return nil, Permanent(err)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return json.Marshal(map[string]int64{"slept_ms": d.Milliseconds()})
	case <-ctx.Done():
		return nil, fmt.Errorf("sleep interrupted: %w", ctx.Err())
	}
}
