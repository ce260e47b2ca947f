// Command loadgen performs N operations of one workload as fast as it can in
// one process and prints one JSON object with the time it took:
//
//	loadgen -workload exec|open-unwatched|open-watched|connect|containers -n N [-dir DIR] [-addr 127.0.0.1:PORT]
//	loadgen -workload audit -addr 127.0.0.1:PORT -ca-file CA -token-file TOKEN -n N
//	loadgen -workload ... -rate OPS_PER_SEC -duration 20s   (paced: the budget benchmark's rate steps)
//
// It is the load half of the overhead benchmark in tests/bench/overhead; the
// workloads are chosen to hit the sensor's hot paths:
//
//   - exec: fork+exec+wait of /bin/true (fork, exec and exit events);
//   - open-unwatched: open+close of a file under DIR, a directory the sensor
//     filters out in the kernel;
//   - open-watched: the same under a DIR the sensor's watchPaths cover, so every
//     open crosses to user space;
//   - connect: TCP connect+close to a listener on 127.0.0.1 that loadgen starts
//     itself, or to -addr, which must also be on 127.0.0.1;
//   - containers: one runc container (busybox rootfs on an overlay, built
//     under DIR) created, run with `sh -c 'echo hi; /bin/hostname'`
//     until it exits, then deleted; up to -parallel at once, as a node's
//     container runtime starts pods. Its CPU time includes runc's and the
//     containers' (they are waited-for children);
//   - audit: one Kubernetes audit event, batched into audit.k8s.io/v1
//     EventLists as the API server's webhook backend does and posted over
//     HTTPS with a bearer token to the agent's audit receiver at -addr
//     (127.0.0.1 only).
//
// Only the operations are timed, not the setup.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
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

// checkEvery is how many operations run between checks for cancellation.
const checkEvery = 256

// result is what loadgen prints.
type result struct {
	Workload  string  `json:"workload"`
	N         int     `json:"n"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// Paced runs: the rate asked for, and the CPU time loadgen (and its
	// children) spent per operation — with and without the agent, the
	// workload's slowdown.
	TargetRate float64 `json:"target_rate,omitempty"`
	CPUPerOpUs float64 `json:"cpu_per_op_us,omitempty"`
}

type options struct {
	workload string
	n        int
	dir      string
	addr     string
	bin      string
	rate     float64
	duration time.Duration
	// containers
	parallel int
	// audit
	caFile, tokenFile string
	batch             int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			slog.New(slog.NewTextHandler(os.Stderr, nil)).Error("loadgen failed", "err", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.workload, "workload", "", "exec, open-unwatched, open-watched, connect, containers or audit")
	fs.IntVar(&o.n, "n", 0, "number of operations")
	fs.StringVar(&o.dir, "dir", "", "directory for the open workloads (created if missing; open-unwatched defaults to a temporary one)")
	fs.StringVar(&o.addr, "addr", "", "connect: 127.0.0.1:PORT of a listener (default: one started in-process); audit: the receiver's 127.0.0.1:PORT")
	fs.IntVar(&o.parallel, "parallel", 8, "containers: containers in flight at once")
	fs.StringVar(&o.caFile, "ca-file", "", "audit: CA of the receiver's serving certificate")
	fs.StringVar(&o.tokenFile, "token-file", "", "audit: the receiver's bearer token")
	fs.IntVar(&o.batch, "batch", 0, "audit: events per POST (default: rate/10 within 50..400, as the API server batches)")
	fs.StringVar(&o.bin, "bin", "/bin/true", "exec: the program to run")
	fs.Float64Var(&o.rate, "rate", 0, "paced mode: operations per second (with -duration instead of -n)")
	fs.DurationVar(&o.duration, "duration", 0, "paced mode: how long to run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	paced := o.rate > 0 || o.duration > 0
	switch {
	case paced && (o.rate <= 0 || o.duration <= 0 || o.n != 0):
		return errors.New("paced mode needs -rate and -duration, and no -n")
	case !paced && o.n <= 0:
		return fmt.Errorf("-n %d: must be positive", o.n)
	}

	var (
		op      func() error
		cleanup func()
		err     error
		// drain, for workloads whose operations finish asynchronously,
		// waits for them; it runs before the time and CPU are taken.
		drain = func() error { return nil }
	)
	switch o.workload {
	case "exec":
		op, cleanup, err = setupExec(o.bin)
	case "open-unwatched", "open-watched":
		op, cleanup, err = setupOpen(o.workload, o.dir)
	case "connect":
		op, cleanup, err = setupConnect(ctx, o.addr)
	case "containers":
		op, drain, cleanup, err = setupContainers(ctx, o.dir, o.parallel)
	case "audit":
		batch := o.batch
		if batch <= 0 {
			batch = auditgen.BatchSize(o.rate)
		}
		op, drain, cleanup, err = setupAudit(ctx, o.addr, o.caFile, o.tokenFile, batch)
	default:
		return fmt.Errorf("-workload %q: want exec, open-unwatched, open-watched, connect, containers or audit", o.workload)
	}
	if err != nil {
		return fmt.Errorf("%s: setup: %w", o.workload, err)
	}
	defer cleanup()

	// One OS thread does all the work; pinning the goroutine keeps the Go
	// scheduler from migrating it mid-storm.
	runtime.LockOSThread()
	if paced {
		res, err := runPaced(ctx, o, op, drain)
		runtime.UnlockOSThread()
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(res)
	}
	start := time.Now()
	for i := range o.n {
		if i%checkEvery == 0 && ctx.Err() != nil {
			return fmt.Errorf("%s: interrupted after %d operations: %w", o.workload, i, ctx.Err())
		}
		if err := op(); err != nil {
			return fmt.Errorf("%s: operation %d: %w", o.workload, i, err)
		}
	}
	if err := drain(); err != nil {
		return fmt.Errorf("%s: %w", o.workload, err)
	}
	elapsed := time.Since(start)
	runtime.UnlockOSThread()

	return json.NewEncoder(stdout).Encode(result{
		Workload:  o.workload,
		N:         o.n,
		Seconds:   elapsed.Seconds(),
		OpsPerSec: float64(o.n) / elapsed.Seconds(),
	})
}

// runPaced runs op at o.rate for o.duration: each millisecond it catches up
// with the schedule, so a slow operation shows as a lower achieved rate rather
// than a burst later.
func runPaced(ctx context.Context, o options, op, drain func() error) (result, error) {
	cpu0 := cpuTime()
	start := time.Now()
	done := 0
	for {
		elapsed := time.Since(start)
		if elapsed >= o.duration {
			break
		}
		if ctx.Err() != nil {
			return result{}, fmt.Errorf("%s: interrupted: %w", o.workload, ctx.Err())
		}
		due := int(o.rate * elapsed.Seconds())
		if done >= due {
			time.Sleep(time.Millisecond)
			continue
		}
		for ; done < due && time.Since(start) < o.duration; done++ {
			if err := op(); err != nil {
				return result{}, fmt.Errorf("%s: operation %d: %w", o.workload, done, err)
			}
		}
	}
	if err := drain(); err != nil {
		return result{}, fmt.Errorf("%s: %w", o.workload, err)
	}
	elapsed := time.Since(start)
	res := result{Workload: o.workload, N: done, Seconds: elapsed.Seconds(), OpsPerSec: float64(done) / elapsed.Seconds(), TargetRate: o.rate}
	if done > 0 {
		res.CPUPerOpUs = (cpuTime() - cpu0).Seconds() * 1e6 / float64(done)
	}
	return res, nil
}

// cpuTime is the user+system time of this process and its waited-for children.
func cpuTime() time.Duration {
	var self, kids unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &self)
	_ = unix.Getrusage(unix.RUSAGE_CHILDREN, &kids)
	t := func(r unix.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return t(self) + t(kids)
}

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

// setupOpen returns an operation that opens and closes one file in dir.
func setupOpen(workload, dir string) (func() error, func(), error) {
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
	op := func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", path, err)
		}
		return nil
	}
	return op, cleanup, nil
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
