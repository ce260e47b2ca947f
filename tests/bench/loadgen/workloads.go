package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/internal/ocirun"
	"github.com/harrier-sec/harrier/tests/bench/internal/auditgen"
)

// setupExec returns an operation that forks, execs bin with no arguments and
// waits for it to exit successfully. syscall.ForkExec uses vfork semantics,
// so the cost measured is the kernel's, not the Go runtime's.
func setupExec(bin string) (func() error, func(), error) {
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	fd := devNull.Fd()
	attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{fd, fd, fd}}
	argv := []string{bin}
	op := func() error {
		pid, err := syscall.ForkExec(bin, argv, attr)
		if err != nil {
			return fmt.Errorf("fork/exec %s: %w", bin, err)
		}
		var ws syscall.WaitStatus
		for {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("wait %s: %w", bin, err)
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return fmt.Errorf("%s: wait status %#x", bin, uint32(ws))
		}
		return nil
	}
	return op, func() { _ = devNull.Close() }, nil
}

// setupOpen returns an operation that opens and closes one file: file, an
// existing file opened read-only as it is (/etc/shadow, /proc/uptime), or
// else one loadgen creates in dir.
func setupOpen(workload, dir, file string) (func() error, func(), error) {
	if file != "" {
		if dir != "" {
			return nil, nil, errors.New("-dir and -file are exclusive")
		}
		if !filepath.IsAbs(file) {
			return nil, nil, fmt.Errorf("-file %q: must be absolute", file)
		}
		return openClose(file), func() {}, nil
	}
	cleanup := func() {}
	if dir == "" {
		if workload == "open-watched" {
			return nil, nil, errors.New("-dir is required: a directory the sensor's watchPaths cover")
		}
		tmp, err := os.MkdirTemp("", "loadgen-open-")
		if err != nil {
			return nil, nil, fmt.Errorf("temporary directory: %w", err)
		}
		dir = tmp
		cleanup = func() { _ = os.RemoveAll(tmp) }
	}
	if !filepath.IsAbs(dir) {
		return nil, nil, fmt.Errorf("-dir %q: must be absolute", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, "loadgen-file")
	if err := os.WriteFile(path, []byte("loadgen\n"), 0o644); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("create %s: %w", path, err)
	}
	return openClose(path), cleanup, nil
}

// openClose returns an operation that opens path read-only and closes it.
func openClose(path string) func() error {
	return func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", path, err)
		}
		return nil
	}
}

// loopback is the only address loadgen ever connects to.
func loopback() netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }

// setupConnect returns an operation that opens a TCP socket, connects it to
// addr (or to an in-process listener) and closes it with SO_LINGER 0. The
// reset close keeps TIME_WAIT sockets from exhausting the ephemeral ports
// over a long benchmark; the sensor's cost is in connect, not in close.
func setupConnect(ctx context.Context, addr string) (func() error, func(), error) {
	var (
		l       *listener
		cleanup = func() {}
	)
	if addr == "" {
		var err error
		if l, err = newListener(ctx); err != nil {
			return nil, nil, err
		}
		cleanup = l.close
		addr = l.addr.String()
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("-addr %q: %w", addr, err)
	}
	if ap.Addr() != loopback() || ap.Port() == 0 {
		cleanup()
		return nil, nil, fmt.Errorf("-addr %q: only %s:PORT is allowed", addr, loopback())
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: loopback().As4()}
	reset := &unix.Linger{Onoff: 1, Linger: 0}
	op := func() error {
		if l != nil {
			// Wait for a slot in the accept window, so the backlog never
			// overflows (a dropped SYN costs a 1 s retransmit).
			select {
			case l.window <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, reset); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("SO_LINGER: %w", err)
		}
		for {
			err = unix.Connect(fd, sa)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("connect %s: %w", ap, err)
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		return nil
	}
	return op, cleanup, nil
}

// listener is loadgen's own TCP listener on 127.0.0.1. Its accept threads
// make blocking accept4 calls and close each connection at once; window
// bounds the connections made but not yet accepted to well under the
// backlog.
type listener struct {
	fd     int
	addr   netip.AddrPort
	window chan struct{}
	wg     sync.WaitGroup
}

const (
	acceptThreads = 2
	listenBacklog = 4096
	maxWindow     = 512
)

func newListener(ctx context.Context) (*listener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("listener socket: %w", err)
	}
	l := &listener{fd: fd}
	fail := func(what string, err error) (*listener, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("listener %s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: loopback().As4()}); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	sa4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return fail("getsockname", fmt.Errorf("unexpected address %T", sa))
	}
	l.addr = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))
	// The kernel caps the backlog at net.core.somaxconn; stay well under it.
	window := maxWindow
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n/2 < window {
			window = max(1, n/2)
		}
	}
	l.window = make(chan struct{}, window)
	for range acceptThreads {
		l.wg.Go(func() { l.acceptLoop(ctx) })
	}
	return l, nil
}

// acceptLoop accepts and closes connections until the listener is shut down.
func (l *listener) acceptLoop(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			_ = unix.Close(nfd)
			select {
			case <-l.window:
			default:
			}
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
		default:
			if ctx.Err() == nil && !errors.Is(err, unix.EINVAL) {
				// EMFILE and the like: back off rather than spin.
				time.Sleep(time.Millisecond)
				continue
			}
			return // shut down (EINVAL) or cancelled
		}
	}
}

// close stops the accept threads and closes the socket.
func (l *listener) close() {
	_ = unix.Shutdown(l.fd, unix.SHUT_RDWR) // wakes blocked accept4 calls with EINVAL
	l.wg.Wait()
	_ = unix.Close(l.fd)
}

// containerTimeout bounds one container's run.
const containerTimeout = 30 * time.Second

// setupContainers returns an operation that starts one container's life
// (create, run to exit, delete) in the background, waiting while parallel
// are in flight, and a drain that waits for them all. A failed container
// fails the next operation.
func setupContainers(ctx context.Context, dir string, parallel int) (op, drain func() error, cleanup func(), err error) {
	if err := ocirun.Available(); err != nil {
		return nil, nil, nil, err
	}
	if parallel < 1 {
		return nil, nil, nil, fmt.Errorf("-parallel %d: must be positive", parallel)
	}
	cleanup = func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "loadgen-containers-")
		if err != nil {
			return nil, nil, nil, fmt.Errorf("temporary directory: %w", err)
		}
		dir = tmp
		cleanup = func() { _ = os.RemoveAll(tmp) }
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, parallel)
		mu    sync.Mutex
		first error
		n     int
	)
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
	op = func() error {
		if err := failed(); err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		n++
		cdir := filepath.Join(dir, fmt.Sprintf("c%d", n))
		wg.Go(func() {
			defer func() { <-slots }()
			if err := runContainer(ctx, cdir); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
		return nil
	}
	drain = func() error {
		wg.Wait()
		return failed()
	}
	// Containers still in flight when a run fails are torn down before
	// their directory goes.
	removeDir := cleanup
	cleanup = func() { wg.Wait(); removeDir() }
	return op, drain, cleanup, nil
}

// runContainer creates a container in dir, runs it until its command
// exits, checks what it printed, and removes it.
func runContainer(ctx context.Context, dir string) (err error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("container directory: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); err == nil && rerr != nil {
			err = fmt.Errorf("remove %s: %w", dir, rerr)
		}
	}()
	c, err := ocirun.Create(dir, "bench-", ocirun.Options{Args: []string{"sh", "-c", "echo hi; /bin/hostname"}})
	if err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	defer func() {
		if terr := c.Teardown(); err == nil && terr != nil {
			err = fmt.Errorf("teardown %s: %w", c.ID, terr)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, containerTimeout)
	defer cancel()
	out, err := c.Run(rctx)
	if err != nil {
		return err
	}
	if want := "hi\n" + c.ID + "\n"; out != want {
		return fmt.Errorf("container %s printed %q, want %q", c.ID, out, want)
	}
	return nil
}

// auditMaxWait is how long an event waits for its batch to fill, as the
// API server's webhook batch wait (which defaults to 30 s; shorter here so
// that low rates still post within a step).
const auditMaxWait = time.Second

// setupAudit returns an operation that adds one benign audit event to the
// current batch, posting it when full, and a drain that posts the rest.
func setupAudit(ctx context.Context, addr, caFile, tokenFile string, batch int) (op, drain func() error, cleanup func(), err error) {
	if addr == "" || caFile == "" || tokenFile == "" {
		return nil, nil, nil, errors.New("-addr, -ca-file and -token-file are required")
	}
	p, err := auditgen.NewPoster(addr, caFile, tokenFile)
	if err != nil {
		return nil, nil, nil, err
	}
	var g auditgen.Generator
	b := &auditgen.Batcher{Poster: p, Size: batch, MaxWait: auditMaxWait}
	op = func() error { return b.Add(ctx, g.Next(time.Now())) }
	drain = func() error { return b.Flush(ctx) }
	return op, drain, p.Close, nil
}
