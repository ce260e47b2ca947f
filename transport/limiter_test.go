package transport

import (
	"bytes"
	"context"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestTokenBucket(t *testing.T) {
	// 10 KiB/s: burst is clamped up to minBurstBytes (4 KiB).
	const rate = 10 << 10
	steps := []struct {
		advance time.Duration
		take    int
		want    time.Duration
	}{
		{0, 4 << 10, 0},                      // the burst is free
		{0, 10 << 10, time.Second},           // then the rate applies
		{time.Second, 0, 0},                  // the debt is paid back
		{time.Second, 4 << 10, 0},            // refill is capped at the burst...
		{0, 1 << 10, 100 * time.Millisecond}, // ...so this waits
		{10 * time.Second, 4 << 10, 0},       // a long idle gives only the burst
		{0, 20 << 10, 2 * time.Second},       // a request bigger than the burst still gets the exact rate
		{500 * time.Millisecond, 0, 1500 * time.Millisecond},
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := newTokenBucket(rate, clk.now)
	for i, s := range steps {
		clk.t = clk.t.Add(s.advance)
		if got := b.reserve(s.take); (got - s.want).Abs() > time.Millisecond {
			t.Fatalf("step %d: reserve(%d) = %v, want %v", i, s.take, got, s.want)
		}
	}
}

func TestTokenBucketLongRunRate(t *testing.T) {
	// Writing 1 MiB at 200 KiB/s in chunks must take (1 MiB - burst) / rate.
	const rate = 200 << 10
	clk := &fakeClock{t: time.Unix(0, 0)}
	b := newTokenBucket(rate, clk.now)
	for sent := 0; sent < 1<<20; sent += writeChunk {
		clk.t = clk.t.Add(b.reserve(writeChunk)) // sleep exactly as asked
	}
	got := clk.t.Sub(time.Unix(0, 0))
	want := time.Duration(float64(1<<20-int(b.burst)) / rate * float64(time.Second))
	if (got - want).Abs() > 10*time.Millisecond {
		t.Fatalf("1 MiB at 200 KiB/s took %v, want %v", got, want)
	}
}

func TestWriteLimited(t *testing.T) {
	var out bytes.Buffer
	data := bytes.Repeat([]byte("x"), 3*writeChunk+7)
	if err := writeLimited(context.Background(), &out, nil, data); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("unlimited write: %v", err)
	}
	out.Reset()
	b := newTokenBucket(1<<30, time.Now)
	if err := writeLimited(context.Background(), &out, b, data); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("limited write: %v", err)
	}
	// A cancelled context stops a write that would have to wait.
	slow := newTokenBucket(1, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeLimited(ctx, &out, slow, data); err == nil {
		t.Fatal("write with a cancelled context and an empty bucket succeeded")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 500*time.Millisecond, 30*time.Second
	top := func(n int64) int64 { return n - 1 }
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{0, lo}, {1, 2 * lo}, {2, 4 * lo}, {5, 32 * lo}, {6, hi}, {100, hi},
	}
	for _, tc := range tests {
		if got := backoff(tc.attempt, lo, hi, top); got != tc.want {
			t.Errorf("backoff(%d) ceiling = %v, want %v", tc.attempt, got, tc.want)
		}
		if got := backoff(tc.attempt, lo, hi, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("backoff(%d) floor = %v, want 0 (full jitter)", tc.attempt, got)
		}
		if got := backoff(tc.attempt, lo, hi, jitter); got < 0 || got > tc.want {
			t.Errorf("backoff(%d) = %v, outside [0, %v]", tc.attempt, got, tc.want)
		}
	}
}
