// Command response measures Harrier's response actions on this host (as
// root): the latency of kill at exec and of kill-process-tree (p50/p99), and
// what the response hooks add to exec and connect storms when no policy
// matches. See tests/bench/README.md and the README's "Response" section.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/response"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "response bench:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	kills, execs, connects, rounds int
	out                            string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("response", flag.ContinueOnError)
	var o options
	fs.IntVar(&o.kills, "kills", 1000, "processes killed per latency figure")
	fs.IntVar(&o.execs, "execs", 2000, "execs per storm round")
	fs.IntVar(&o.connects, "connects", 5000, "loopback TCP connections per storm round")
	fs.IntVar(&o.rounds, "rounds", 5, "storm rounds per state (alternating; the median is reported)")
	fs.StringVar(&o.out, "out", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: it loads BPF programs and makes a cgroup")
	}
	dir, err := os.MkdirTemp("", "harrier-bench-response-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	res := results{}
	if res.KillAtExec, err = killAtExecLatency(ctx, dir, o.kills); err != nil {
		return fmt.Errorf("kill at exec: %w", err)
	}
	if res.KillProcessTree, err = killTreeLatency(ctx, o.kills); err != nil {
		return fmt.Errorf("kill-process-tree: %w", err)
	}
	if res.ExecStorm, err = execStorm(ctx, dir, o); err != nil {
		return fmt.Errorf("exec storm: %w", err)
	}
	if res.ConnectStorm, err = connectStorm(ctx, o); err != nil {
		return fmt.Errorf("connect storm: %w", err)
	}
	res.print(stdout)
	if o.out != "" {
		return benchutil.WriteJSON(o.out, res)
	}
	return nil
}

type latency struct {
	What     string  `json:"what"`
	N        int     `json:"n"`
	P50Us    float64 `json:"p50Us"`
	P99Us    float64 `json:"p99Us"`
	Baseline string  `json:"baseline,omitempty"`
}

func newLatency(what string, us []float64) latency {
	return latency{What: what, N: len(us), P50Us: benchutil.Percentile(us, 50), P99Us: benchutil.Percentile(us, 99)}
}

type storm struct {
	What string `json:"what"`
	// Per operation, the median of the rounds, in microseconds.
	WithoutUs float64 `json:"withoutUs"`
	WithUs    float64 `json:"withUs"`
	With      string  `json:"with"`
}

type results struct {
	KillAtExec      []latency `json:"killAtExec"`
	KillProcessTree []latency `json:"killProcessTree"`
	ExecStorm       storm     `json:"execStorm"`
	ConnectStorm    storm     `json:"connectStorm"`
}

func (r results) print(w io.Writer) {
	for _, l := range append(r.KillAtExec, r.KillProcessTree...) {
		fmt.Fprintf(w, "%-60s n=%-5d p50 %8.1f µs  p99 %8.1f µs\n", l.What, l.N, l.P50Us, l.P99Us)
	}
	for _, s := range []storm{r.ExecStorm, r.ConnectStorm} {
		fmt.Fprintf(w, "%-60s without %7.1f µs/op  with %7.1f µs/op  (%+.1f%%; with: %s)\n", s.What, s.WithoutUs, s.WithUs,
			100*(s.WithUs-s.WithoutUs)/s.WithoutUs, s.With)
	}
}

// forkExecWait forks and execs bin, and waits for it.
func forkExecWait(bin string) (syscall.WaitStatus, error) {
	attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{0, 1, 2}}
	pid, err := syscall.ForkExec(bin, []string{bin}, attr)
	if err != nil {
		return 0, fmt.Errorf("fork/exec %s: %w", bin, err)
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			return ws, err
		}
	}
}

// copyExe copies the program name (from PATH) to dir/as: a file of its own.
func copyExe(name, dir, as string) (string, error) {
	src, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, as)
	return dst, os.WriteFile(dst, b, 0o755)
}

// killAtExecLatency execs a listed copy of true n times under enforce:
// from fork to the kernel's signal (the kernel's clock, from the hits),
// and from user space's fork/exec call to the killed child reaped; the
// same for an unlisted copy run to its exit, as the baseline.
func killAtExecLatency(ctx context.Context, dir string, n int) ([]latency, error) {
	listed, err := copyExe("true", dir, "listed-true")
	if err != nil {
		return nil, err
	}
	unlisted, err := copyExe("true", dir, "unlisted-true")
	if err != nil {
		return nil, err
	}
	boot, err := procstat.BootTime()
	if err != nil {
		return nil, err
	}
	g, _, err := response.StartExecGuard([]response.ExecDeny{{Name: "bench", Mode: response.ModeEnforce, Paths: []string{listed}}}, boot)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	var (
		mu       sync.Mutex
		toSignal []float64
		wg       sync.WaitGroup
	)
	runCtx, cancel := context.WithCancel(ctx)
	wg.Go(func() {
		_ = g.Run(runCtx, func(h response.ExecHit) {
			mu.Lock()
			toSignal = append(toSignal, float64(h.SignalTime.Sub(h.StartTime).Nanoseconds())/1e3)
			mu.Unlock()
		}, slog.New(slog.DiscardHandler))
	})
	defer func() { cancel(); wg.Wait() }()
	reaped := make([]float64, 0, n)
	for range n {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t0 := time.Now()
		ws, err := forkExecWait(listed)
		if err != nil {
			return nil, err
		}
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			return nil, fmt.Errorf("listed program not killed: wait status %#x", uint32(ws))
		}
		reaped = append(reaped, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	baseline := make([]float64, 0, n)
	for range n {
		t0 := time.Now()
		ws, err := forkExecWait(unlisted)
		if err != nil {
			return nil, err
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return nil, fmt.Errorf("unlisted program: wait status %#x", uint32(ws))
		}
		baseline = append(baseline, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := len(toSignal)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return []latency{
		newLatency("kill at exec: fork to SIGKILL sent (kernel clock)", toSignal),
		newLatency("kill at exec: fork/exec call to killed child reaped", reaped),
		newLatency("baseline: fork/exec call to unlisted true reaped", baseline),
	}, nil
}

// killTreeLatency starts n sleeps, one at a time, and kills each with
// KillProcessTree: from the call to the child reaped.
func killTreeLatency(ctx context.Context, n int) ([]latency, error) {
	boot, err := procstat.BootTime()
	if err != nil {
		return nil, err
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, err
	}
	took := make([]float64, 0, n)
	for range n {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cmd := exec.Command(sleep, "600")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		st, err := procstat.Read("", cmd.Process.Pid)
		if err != nil {
			_ = cmd.Process.Kill()
			return nil, err
		}
		t0 := time.Now()
		if _, err := response.KillProcessTree("", response.Target{PID: cmd.Process.Pid, StartTime: boot.Add(st.SinceBoot())}); err != nil {
			_ = cmd.Process.Kill()
			return nil, err
		}
		_ = cmd.Wait()
		took = append(took, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	return []latency{newLatency("kill-process-tree: call to a lone sleep reaped", took)}, nil
}

// rounds runs op count times per round, without and with, in turns
// (each going first every other round, so that drift in the host's load
// weighs on both), and returns the median per-operation time of each, in
// microseconds.
func rounds(ctx context.Context, o options, count int, op func() error, with func() (func(), error)) (float64, float64, error) {
	var without, withT []float64
	for i := range o.rounds {
		for _, on := range []bool{i%2 == 1, i%2 == 0} {
			undo := func() {}
			if on {
				var err error
				if undo, err = with(); err != nil {
					return 0, 0, err
				}
			}
			t0 := time.Now()
			for range count {
				if ctx.Err() != nil {
					undo()
					return 0, 0, ctx.Err()
				}
				if err := op(); err != nil {
					undo()
					return 0, 0, err
				}
			}
			per := float64(time.Since(t0).Nanoseconds()) / 1e3 / float64(count)
			undo()
			if on {
				withT = append(withT, per)
			} else {
				without = append(without, per)
			}
		}
	}
	return benchutil.Median(without), benchutil.Median(withT), nil
}

// execStorm: fork/exec/wait of true, without and with the kill-at-exec
// program attached for a listed path (never run) and for drift in every
// container: the hook runs on every exec, and nothing matches.
func execStorm(ctx context.Context, dir string, o options) (storm, error) {
	never, err := copyExe("true", dir, "never-run")
	if err != nil {
		return storm{}, err
	}
	tru, err := exec.LookPath("true")
	if err != nil {
		return storm{}, err
	}
	boot, err := procstat.BootTime()
	if err != nil {
		return storm{}, err
	}
	op := func() error {
		ws, err := forkExecWait(tru)
		if err == nil && (!ws.Exited() || ws.ExitStatus() != 0) {
			err = fmt.Errorf("true: wait status %#x", uint32(ws))
		}
		return err
	}
	with := func() (func(), error) {
		g, _, err := response.StartExecGuard([]response.ExecDeny{
			{Name: "listed", Mode: response.ModeEnforce, Paths: []string{never}},
			{Name: "drift", Mode: response.ModeEnforce, Drift: true},
		}, boot)
		if err != nil {
			return nil, err
		}
		return func() { _ = g.Close() }, nil
	}
	without, withT, err := rounds(ctx, o, o.execs, op, with)
	return storm{What: "exec storm (fork/exec/wait true)", WithoutUs: without, WithUs: withT,
		With: "kill at exec attached: one listed path, drift in all containers; none matches"}, err
}

// connectStorm: TCP connect and close to a loopback listener from a cgroup
// of the driver's own, without and with block-network and isolate-network
// attached to it with the listener allowed (every hook runs and passes).
// With no policy matching, the hooks are attached nowhere: that costs
// nothing, so this is the cost of a blocked or isolated cgroup's allowed
// traffic.
func connectStorm(ctx context.Context, o options) (s storm, err error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return storm{}, err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	n, err := response.NewNetBlocker([]netip.AddrPort{addr})
	if err != nil {
		return storm{}, err
	}
	defer n.Close()
	v2, err := response.UnifiedMount()
	if err != nil {
		return storm{}, err
	}
	cg := filepath.Join(v2, "harrier-bench-response-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return storm{}, err
	}
	defer os.Remove(cg)
	home, err := n.CgroupOf(os.Getpid())
	if err != nil {
		return storm{}, err
	}
	// The whole driver moves in (cgroup v2 moves every thread), and back.
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return storm{}, err
	}
	defer func() {
		if e := os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); e != nil && err == nil {
			err = fmt.Errorf("back to %s: %w", home, e)
		}
	}()
	op := func() error {
		c, err := net.Dial("tcp4", addr.String())
		if err != nil {
			return err
		}
		return c.Close()
	}
	with := func() (func(), error) {
		if err := n.Block(cg); err != nil {
			return nil, err
		}
		if err := n.Isolate(cg); err != nil {
			_ = n.Unblock(cg)
			return nil, err
		}
		return func() { _ = n.Unisolate(cg); _ = n.Unblock(cg) }, nil
	}
	without, withT, err := rounds(ctx, o, o.connects, op, with)
	if err == nil && (n.Refused() != 0 || n.Dropped() != 0) {
		err = fmt.Errorf("the hooks refused %d calls and dropped %d packets of allowed traffic", n.Refused(), n.Dropped())
	}
	return storm{What: "connect storm (loopback TCP connect+close)", WithoutUs: without, WithUs: withT,
		With: "block-network and isolate-network attached, the destination allowed"}, err
}
