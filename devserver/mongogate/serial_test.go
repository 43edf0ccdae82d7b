package mongogate

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSerialLetsInWritersAtATimeInArrivalOrder (unit, no FerretDB): no
// more than Writers writes are past serial at once, the others wait and
// go in the order they came, and each release also releases the write's
// own document locks.
func TestSerialLetsInWritersAtATimeInArrivalOrder(t *testing.T) {
	g := &Gate{writers: make(chan struct{}, 2)}
	var inside, most, unlocked atomic.Int32
	var mu sync.Mutex
	var order []int
	hold := g.serial(func() {}) // the first holds a turn while the rest queue
	hold2 := g.serial(func() {})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release := g.serial(func() { unlocked.Add(1) })
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(30 * time.Millisecond) // longer than the arrivals are apart
			inside.Add(-1)
			release()
		}()
		time.Sleep(10 * time.Millisecond) // let it queue before the next comes
	}
	hold()
	hold2()
	wg.Wait()
	if m := most.Load(); m > 2 {
		t.Errorf("%d writes at once, want at most 2", m)
	}
	if unlocked.Load() != 6 {
		t.Errorf("%d document unlocks, want 6", unlocked.Load())
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1]-1 { // two run side by side: neighbours may swap
			t.Errorf("order %v: a writer went ahead of one that came earlier", order)
		}
	}
}
