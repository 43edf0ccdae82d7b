package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"time"
)

// The recording sink is the downstream service that requests of type http
// call: the outside world whose view of execution the checker trusts. It
// behaves like a well-made idempotent API: the first successful call with an
// Idempotency-Key (Turnstile sends the request ID) takes effect; any later
// call with that key is a redelivery that returns the stored answer and
// changes nothing. A redelivery that arrives while the first call is still
// in progress waits for it, so one key never has two effects, not even two
// overlapping attempts at one.

// callOutcome is what one call to the sink did.
type callOutcome string

const (
	outcomeEffect     callOutcome = "effect"     // the key's one effect
	outcomeRedelivery callOutcome = "redelivery" // same key again: absorbed, no effect
	outcomeFailed     callOutcome = "failed"     // answered 500 (poison): no effect, retryable
)

// sinkCall is one call as the sink logged it.
type sinkCall struct {
	Key     string // Idempotency-Key: the request ID
	User    string // from the body
	Op      string // the client's name for the operation, from the body
	Start   time.Time
	End     time.Time
	Outcome callOutcome
}

// sinkBody is the body the clients put in their http requests' payload.
type sinkBody struct {
	User    string `json:"user"`
	Op      string `json:"op"`
	SleepMS int    `json:"sleep_ms"`
}

type keyState struct {
	mu     sync.Mutex // held while the key's first successful call runs
	done   bool
	answer []byte
}

type sink struct {
	srv *httptest.Server

	mu       sync.Mutex
	calls    []sinkCall
	keys     map[string]*keyState
	poisoned map[string]bool   // op → answer 500
	hooks    map[string]func() // op → run once its effect is logged
	inFlight int               // calls executing now (not redeliveries)
}

func newSink() *sink {
	s := &sink{keys: map[string]*keyState{}, poisoned: map[string]bool{}, hooks: map[string]func(){}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *sink) close() { s.srv.Close() }

// hostPort is the sink's address for TURNSTILE_HTTP_ALLOWLIST.
func (s *sink) hostPort() string { return s.srv.Listener.Addr().(*net.TCPAddr).String() }

// url is where the clients' http requests point.
func (s *sink) url() string { return s.srv.URL + "/effect" }

// poison makes every call for op answer 500 until heal(op).
func (s *sink) poison(op string) { s.mu.Lock(); s.poisoned[op] = true; s.mu.Unlock() }
func (s *sink) heal(op string)   { s.mu.Lock(); delete(s.poisoned, op); s.mu.Unlock() }

// afterEffect runs f in a goroutine of its own once op's effect is logged,
// just before the sink answers: a scenario times an action to the moment
// the worker moves on to the next request.
func (s *sink) afterEffect(op string, f func()) { s.mu.Lock(); s.hooks[op] = f; s.mu.Unlock() }

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	// Read the whole body before anything counts: a caller frozen halfway
	// through sending has not called yet.
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var b sinkBody
	if err := json.Unmarshal(data, &b); err != nil || b.Op == "" || b.User == "" {
		http.Error(w, "want {user, op, sleep_ms}", http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		http.Error(w, "Idempotency-Key is required", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	ks := s.keys[key]
	if ks == nil {
		ks = &keyState{}
		s.keys[key] = ks
	}
	s.mu.Unlock()

	ks.mu.Lock()
	defer ks.mu.Unlock()
	start := time.Now()
	if ks.done {
		s.log(sinkCall{Key: key, User: b.User, Op: b.Op, Start: start, End: time.Now(), Outcome: outcomeRedelivery})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(ks.answer)
		return
	}
	s.mu.Lock()
	s.inFlight++
	poisoned := s.poisoned[b.Op]
	s.mu.Unlock()
	time.Sleep(time.Duration(b.SleepMS) * time.Millisecond)
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	if poisoned {
		s.log(sinkCall{Key: key, User: b.User, Op: b.Op, Start: start, End: time.Now(), Outcome: outcomeFailed})
		http.Error(w, "poisoned", http.StatusInternalServerError)
		return
	}
	ks.answer = fmt.Appendf(nil, `{"op":%q,"key":%q}`, b.Op, key)
	ks.done = true
	s.log(sinkCall{Key: key, User: b.User, Op: b.Op, Start: start, End: time.Now(), Outcome: outcomeEffect})
	s.mu.Lock()
	hook := s.hooks[b.Op]
	delete(s.hooks, b.Op)
	s.mu.Unlock()
	if hook != nil {
		go hook()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(ks.answer)
}

func (s *sink) log(c sinkCall) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

// snapshot returns every call so far, by start time.
func (s *sink) snapshot() []sinkCall {
	s.mu.Lock()
	out := append([]sinkCall(nil), s.calls...)
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// count returns how many calls had the outcome.
func (s *sink) count(o callOutcome) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c.Outcome == o {
			n++
		}
	}
	return n
}

// busy reports whether a call is executing right now.
func (s *sink) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight > 0
}
