package sensor

import (
	"testing"
	"time"
)

func TestQueueClockHeadAge(t *testing.T) {
	const capacity = 256
	q := newQueueClock(capacity, time.Now())
	t0 := q.start
	var enqueued uint64
	// enqueue n events, one per millisecond from at.
	enqueue := func(n int, at time.Duration) {
		for i := 0; i < n; i++ {
			if closesBlock(enqueued) {
				q.enqueued(enqueued, t0.Add(at+time.Duration(i)*time.Millisecond))
			}
			enqueued++
		}
	}
	enqueue(capacity, 0) // indexes 0..255 at 0..255 ms
	now := t0.Add(300 * time.Millisecond)
	for _, tc := range []struct {
		name   string
		queued int
		want   time.Duration
	}{
		{"empty queue", 0, 0},
		{"full queue: the head is index 0, its block filled at 63 ms", capacity, 237 * time.Millisecond},
		{"head at a block's start", capacity - 64, 173 * time.Millisecond},
		{"head inside a block: at most a block's span young", capacity - 100, 173 * time.Millisecond},
		{"head in the last block", 64, 45 * time.Millisecond},
		{"more queued than ever enqueued", capacity + 1, 0},
	} {
		if got := q.headAge(enqueued, tc.queued, now); got != tc.want {
			t.Errorf("%s: head age %v, want %v", tc.name, got, tc.want)
		}
	}
	// The queue turns over many times; the slots are reused without
	// mixing a block up with an older one.
	for round := 1; round <= 10; round++ {
		enqueue(capacity, time.Duration(round)*time.Second)
	}
	now = t0.Add(10*time.Second + 400*time.Millisecond)
	if got, want := q.headAge(enqueued, capacity, now), (400-63)*time.Millisecond; got != want {
		t.Errorf("after turnover, full queue: %v, want %v", got, want)
	}
	// A block still filling counts as young, however long ago it began.
	enqueue(10, 20*time.Second)
	if got := q.headAge(enqueued, 10, t0.Add(time.Minute)); got != 0 {
		t.Errorf("a part-filled head block: %v, want 0", got)
	}
}
