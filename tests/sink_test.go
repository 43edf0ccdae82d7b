package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sink is the local server that requests of type http call. It records, per
// user, the order calls arrive in and whether two of one user's calls were
// ever in flight at once: the execution order as the outside world sees it.
type sink struct {
	*httptest.Server
	mu       sync.Mutex
	order    map[string][]int // user → seq in arrival order
	inFlight map[string]int
	overlaps map[string]int
	keys     map[string]int // Idempotency-Key → calls
	// poisoned makes /poison answer 500 until a test "fixes" it.
	poisoned atomic.Bool
}

// sinkCall is the payload body the tests send to the sink.
type sinkCall struct {
	User    string `json:"user"`
	Seq     int    `json:"seq"`
	SleepMS int    `json:"sleep_ms"`
}

func newSink() *sink {
	s := &sink{order: map[string][]int{}, inFlight: map[string]int{}, overlaps: map[string]int{}, keys: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *sink) hostPort() string {
	u := s.URL[len("http://"):]
	host, port, _ := net.SplitHostPort(u)
	return net.JoinHostPort(host, port)
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/poison" && s.poisoned.Load() {
		http.Error(w, "poisoned", http.StatusInternalServerError)
		return
	}
	if code := r.URL.Query().Get("status"); code != "" {
		n, _ := strconv.Atoi(code)
		http.Error(w, "told to fail", n)
		return
	}
	var call sinkCall
	if err := json.NewDecoder(r.Body).Decode(&call); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.keys[r.Header.Get("Idempotency-Key")]++
	s.inFlight[call.User]++
	if s.inFlight[call.User] > 1 {
		s.overlaps[call.User]++
	}
	s.order[call.User] = append(s.order[call.User], call.Seq)
	s.mu.Unlock()
	time.Sleep(time.Duration(call.SleepMS) * time.Millisecond)
	s.mu.Lock()
	s.inFlight[call.User]--
	s.mu.Unlock()
	fmt.Fprintf(w, `{"user":%q,"seq":%d}`, call.User, call.Seq)
}

func (s *sink) report(user string) (order []int, overlaps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.order[user]...), s.overlaps[user]
}

func (s *sink) calls(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[key]
}
