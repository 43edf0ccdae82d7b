package api

import (
	"sync"
	"time"
)

// queueLengths remembers, per user, the queue length a session last
// recorded and how many requests this API instance has accepted since, so
// that a burst of submissions does not ask Temporal once per submission.
// Asking costs a DescribeWorkflowExecution, which under load queues behind
// the single history shard's writes: at 200 users × 32 concurrent
// submitters it passed its 1 s budget and fell back to a MongoDB count (a
// collection scan on the embedded store), which made it slower still.
type queueLengths struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]queueLen
}

type queueLen struct {
	recorded int // as the session recorded it at `at`
	added    int // accepted here since
	at       time.Time
}

// queueLenTTL is how long a recorded length is used before asking again.
// Within it the estimate lags by what other API instances accepted, at most
// the per-user rate × ttl, which queuedCount's lag margin covers.
const queueLenTTL = time.Second

// maxQueueLenEntries bounds the map; expired entries are pruned beyond it.
const maxQueueLenEntries = 10000

func newQueueLengths(ttl time.Duration) *queueLengths {
	return &queueLengths{ttl: ttl, m: make(map[string]queueLen)}
}

// get returns the estimate for userID if one is fresh at now.
func (q *queueLengths) get(userID string, now time.Time) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.m[userID]
	if !ok || now.Sub(e.at) >= q.ttl {
		return 0, false
	}
	return e.recorded + e.added, true
}

// set records a length read from the session at now.
func (q *queueLengths) set(userID string, recorded int, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.m) >= maxQueueLenEntries {
		for k, e := range q.m {
			if now.Sub(e.at) >= q.ttl {
				delete(q.m, k)
			}
		}
	}
	q.m[userID] = queueLen{recorded: recorded, at: now}
}

// add counts n requests accepted for userID since the last set.
func (q *queueLengths) add(userID string, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.m[userID]; ok {
		e.added += n
		q.m[userID] = e
	}
}
