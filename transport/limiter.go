package transport

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"
)

const (
	// writeChunk is the largest piece written before asking the bucket again,
	// so a capped link sees a steady flow instead of bursts of whole batches.
	writeChunk    = 16 << 10
	minBurstBytes = 4 << 10
	maxBurstBytes = 256 << 10
)

// tokenBucket caps a byte rate. Tokens may go negative (debt): a caller that
// takes n tokens waits until the debt is paid, which keeps the long-run rate
// exact for any n without splitting requests to fit the burst.
type tokenBucket struct {
	rate  float64 // bytes per second
	burst float64
	now   func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(bytesPerSec int64, now func() time.Time) *tokenBucket {
	// A tenth of a second's worth of burst, clamped: enough to fill a chunk,
	// small enough that the cap holds over short windows.
	burst := min(max(float64(bytesPerSec)/10, minBurstBytes), maxBurstBytes)
	t := now()
	return &tokenBucket{rate: float64(bytesPerSec), burst: burst, now: now, tokens: burst, last: t}
}

// reserve takes n tokens and returns how long the caller must wait before
// sending them.
func (b *tokenBucket) reserve(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if el := t.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
	}
	b.last = t
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

func (b *tokenBucket) wait(ctx context.Context, n int) error {
	d := b.reserve(n)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timer.C:
		return nil
	}
}

// writeLimited writes p in chunks, each after the bucket allows it. A nil
// bucket means no cap.
func writeLimited(ctx context.Context, w io.Writer, b *tokenBucket, p []byte) error {
	if b == nil {
		_, err := w.Write(p)
		return err
	}
	for len(p) > 0 {
		n := min(len(p), writeChunk)
		if err := b.wait(ctx, n); err != nil {
			return fmt.Errorf("bandwidth wait: %w", err)
		}
		if _, err := w.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// backoff returns the delay before reconnect attempt number attempt (0-based):
// full jitter over an exponential ceiling, so a fleet of agents cut off by the
// same outage does not reconnect in lockstep. rnd returns a value in [0, n).
func backoff(attempt int, lo, hi time.Duration, rnd func(n int64) int64) time.Duration {
	ceil := lo
	for i := 0; i < attempt && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceil) + 1))
}

// jitter is the production random source for backoff.
func jitter(n int64) int64 { return rand.Int64N(n) }
