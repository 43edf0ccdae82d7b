package api

import (
	"testing"
	"time"
)

func TestQueueLengthsEstimateExpires(t *testing.T) {
	q := newQueueLengths(time.Second)
	t0 := time.Unix(1000, 0)
	if _, ok := q.get("u", t0); ok {
		t.Fatal("estimate before any recorded length")
	}
	q.add("u", 3) // nothing recorded yet: ignored
	q.set("u", 5, t0)
	q.add("u", 2)
	q.add("other", 7)
	if n, ok := q.get("u", t0.Add(500*time.Millisecond)); !ok || n != 7 {
		t.Fatalf("fresh estimate = %d, %v; want 7 (5 recorded + 2 accepted)", n, ok)
	}
	if _, ok := q.get("u", t0.Add(time.Second)); ok {
		t.Fatal("estimate still used after its ttl")
	}
	q.set("u", 1, t0.Add(time.Second))
	if n, _ := q.get("u", t0.Add(time.Second)); n != 1 {
		t.Fatalf("after a new reading = %d, want 1 (accepted count reset)", n)
	}
}

func TestQueueLengthsPrunesExpired(t *testing.T) {
	q := newQueueLengths(time.Second)
	t0 := time.Unix(1000, 0)
	for i := range maxQueueLenEntries {
		q.set(string(rune('a'+i%26))+time.Duration(i).String(), i, t0)
	}
	q.set("late", 1, t0.Add(2*time.Second))
	if len(q.m) != 1 {
		t.Fatalf("%d entries after pruning, want 1", len(q.m))
	}
}
