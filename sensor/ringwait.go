package sensor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ringWait parks the reading goroutine in Go's netpoller until the kernel
// wakes the ring buffer's readers or a deadline passes. ringbuf.Reader
// blocks in epoll_wait inside a system call instead, and the runtime's
// sysmon, seeing a P held in a syscall, retakes it every ~10ms and then polls
// every 20µs for a while: on an exec storm that cost the sensor more CPU
// than decoding the events did. Parked in the netpoller, the goroutine holds
// no P and an idle sensor lets sysmon sleep.
type ringWait struct {
	f  *os.File
	rc syscall.RawConn
}

// newRingWait watches the ring buffer map's fd (a duplicate, which Close
// releases). It fails if the fd cannot join the netpoller.
func newRingWait(mapFD int) (*ringWait, error) {
	fd, err := unix.FcntlInt(uintptr(mapFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup ring buffer fd: %w", err)
	}
	// Non-blocking before os.NewFile, which then registers the fd with the
	// netpoller; it shares the file description, which only bpf(2) uses.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("ring buffer fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// A file the netpoller does not hold takes no deadline.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("ring buffer fd in the netpoller: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &ringWait{f: f, rc: rc}, nil
}

// wait returns nil once the kernel has woken the ring buffer's readers (at
// times for a wake-up that came while the caller was still draining),
// os.ErrDeadlineExceeded at deadline or when ctx is done, or the error that
// ends the wait (Close).
func (w *ringWait) wait(ctx context.Context, deadline time.Time) error {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return err
	}
	// Checked after setting the deadline: interrupt's earlier deadline may
	// have just been overwritten.
	if ctx.Err() != nil {
		return os.ErrDeadlineExceeded
	}
	woken := false
	err := w.rc.Read(func(uintptr) bool {
		// The first call comes before any wait: the ring was just drained.
		done := woken
		woken = true
		return done
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	return err
}

// interrupt ends a wait in progress (for ctx's cancellation).
func (w *ringWait) interrupt() { _ = w.f.SetReadDeadline(time.Now()) }

// Close releases the fd and ends a wait in progress.
func (w *ringWait) Close() error { return w.f.Close() }
