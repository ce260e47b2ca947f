// Command loadgen performs N operations of one workload as fast as it can in
// one process and prints one JSON object with the time it took:
//
//	loadgen -workload exec|open-unwatched|open-watched|connect|containers -n N [-dir DIR|-file FILE] [-addr 127.0.0.1:PORT]
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
//   - with -file instead of -dir, both open workloads open and close that
//     existing file read-only (/etc/shadow, /usr/lib/os-release, /proc/uptime):
//     the name only labels the run;
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
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	file     string
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
	fs.StringVar(&o.file, "file", "", "open workloads: an existing file to open read-only instead of one created in -dir")
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
		op, cleanup, err = setupOpen(o.workload, o.dir, o.file)
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
