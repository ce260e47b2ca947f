package sensor

import "time"

// queueClockStride: one enqueue time is kept per this many events.
const queueClockStride = 64

// queueClock knows how long the oldest event in the sensor's queue has
// waited, without help from the consumer: events leave a channel in order,
// so the head's index is the number enqueued minus the channel's length.
// The clock keeps, per block of stride indexes, when the block's last
// event was enqueued. That is no earlier than the head's own enqueue time,
// so the age it reports errs young (by one block's span: under a storm, a
// millisecond), never old, however sparse the events.
type queueClock struct {
	start time.Time
	times []time.Duration // since start, when block b filled, at (b % len)
}

// newQueueClock sizes the clock for a queue of capacity events: the blocks
// in the queue plus one partly gone and one partly filled.
func newQueueClock(capacity int, start time.Time) *queueClock {
	return &queueClock{start: start, times: make([]time.Duration, capacity/queueClockStride+2)}
}

// closesBlock says whether index i is the last of its block: only then does
// the caller read the clock and call enqueued.
func closesBlock(i uint64) bool { return i%queueClockStride == queueClockStride-1 }

// enqueued records that the event with index i (counting from 0; one that
// closes its block) entered the queue at now.
func (q *queueClock) enqueued(i uint64, now time.Time) {
	q.times[(i/queueClockStride)%uint64(len(q.times))] = now.Sub(q.start)
}

// headAge is how long the oldest of the queued events has waited, given
// the number ever enqueued and the number still queued. A head in the
// block still filling (fewer than a stride queued) counts as young.
func (q *queueClock) headAge(enqueued uint64, queued int, now time.Time) time.Duration {
	if queued <= 0 || uint64(queued) > enqueued {
		return 0
	}
	block := (enqueued - uint64(queued)) / queueClockStride
	if (block+1)*queueClockStride > enqueued {
		return 0
	}
	return now.Sub(q.start) - q.times[block%uint64(len(q.times))]
}
