package sensor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestShedOrderUnderOverload: with nobody reading, fork and exit stop
// entering the queue once it is half full, and the rest of it goes to the
// other kinds; every shed and drop is counted.
func TestShedOrderUnderOverload(t *testing.T) {
	testenv.RequireRoot(t)
	s := newRawSensor(t, Config{QueueSize: 64})
	out, stop := runRaw(t, s, s.QueueSize())
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i := 0; i < 20; i++ {
			_ = exec.Command("/bin/true").Run()
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.QueueShed["fork"] > 0 && st.QueueShed["exit"] > 0 && st.QueueDropped["exec"] > 0 {
			if st.QueueShed["exec"] != 0 {
				t.Errorf("exec events were shed: %v", st.QueueShed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no shedding after 20 s: shed %v dropped %v", st.QueueShed, st.QueueDropped)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	close(out)
	i := 0
	for ev := range out {
		if i >= s.QueueSize()/2 && (ev.GetKind() == api.EventKind_EVENT_KIND_FORK || ev.GetKind() == api.EventKind_EVENT_KIND_EXIT) {
			t.Fatalf("a %s entered the queue at position %d, past the shed mark", ev.GetKind(), i)
		}
		i++
	}
	if i != s.QueueSize() {
		t.Fatalf("queue holds %d events, want it full (%d)", i, s.QueueSize())
	}
}

// TestKernelShedsOrdinaryReadsUnderPressure: with the ring buffer over half
// full, the kernel drops read-only opens of ordinary watched paths, and keeps
// room for sensitive paths and writes, which still arrive.
func TestKernelShedsOrdinaryReadsUnderPressure(t *testing.T) {
	testenv.RequireRoot(t)
	dir, plain, secret, written := shedFiles(t)
	// A ring large enough that, once ordinary reads fill it past half, what
	// other processes on a busy machine exec meanwhile cannot fill the rest
	// before the sensitive read arrives.
	s := newRawSensor(t, Config{RingBufferBytes: 1 << 20, WakeupBytes: 1000 << 10, WatchPaths: []string{dir + "/"},
		SensitivePaths: []string{secret}})
	// Nobody reads the ring yet: ordinary reads (by a child: the sensor
	// ignores its own process) fill it past half, in batches until the
	// kernel sheds.
	var st Stats
	for batch := 0; batch < 40 && st.KernelShedReads == 0; batch++ {
		if out, err := exec.Command("sh", "-c", `i=0; while [ $i -lt 1000 ]; do read x < "$1"; i=$((i+1)); done`, "sh", plain).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		var err error
		if st, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	if st.KernelShedReads == 0 {
		t.Fatalf("no ordinary read shed with the ring full: %+v", st)
	}
	if out, err := exec.Command("sh", "-c", `read x < "$1"; echo y > "$2"`, "sh", secret, written).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	out, stop := runRaw(t, s, 1<<16)
	waitSecretAndWrite(t, "under pressure", out, secret, written)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestShedWhenTheQueueIsOld: far below shedAt, once the oldest queued event
// has waited longer than maxQueueDelay, ordinary reads are shed, while a
// sensitive read and a write still enter the queue; once the consumer has
// caught up, ordinary reads enter again.
func TestShedWhenTheQueueIsOld(t *testing.T) {
	testenv.RequireRoot(t)
	dir, plain, secret, written := shedFiles(t)
	s := newRawSensor(t, Config{QueueSize: 8192, MaxQueueDelay: confval.Duration(50 * time.Millisecond), WatchPaths: []string{dir + "/"},
		SensitivePaths: []string{secret}})
	// Queue ages are read from a clock that stands still until the test
	// moves it, so no read can age the queue but the test's step.
	start := time.Now()
	var elapsed atomic.Int64
	s.queueNow = func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	out, stop := runRaw(t, s, s.QueueSize())
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	// reads opens plain n times (by a child: the sensor ignores its own
	// process) and waits until the sensor has received them all.
	reads := func(n int) {
		t.Helper()
		before, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do read x < "$1"; i=$((i+1)); done`, n)
		if out, err := exec.Command("sh", "-c", script, "sh", plain).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.Received-before.Received >= uint64(n) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sensor received %d of %d reads", st.Received-before.Received, n)
			}
		}
	}
	// Nobody consumes: 300 reads wait in the queue, far below shedAt.
	reads(300)
	if st, _ := s.Stats(); st.QueueShed["file_open"] != 0 || len(out) < 300 {
		t.Fatalf("shed %v with a young queue of %d", st.QueueShed, len(out))
	}
	elapsed.Add(int64(100 * time.Millisecond)) // the head is now older than 50 ms
	queued := len(out)
	reads(300)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// The check runs every 64 records: at most that many entered after the
	// queue grew old.
	if shed := st.QueueShed["file_open"]; shed < 300-queueClockStride || len(out) > queued+queueClockStride {
		t.Fatalf("old queue: %d ordinary reads shed, the queue grew from %d to %d", shed, queued, len(out))
	}
	if st.QueueHeadAge < 50*time.Millisecond {
		t.Errorf("old queue: reported head age %v", st.QueueHeadAge)
	}
	if out, err := exec.Command("sh", "-c", `read x < "$1"; echo y > "$2"`, "sh", secret, written).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	// The consumer catches up; the sensitive read and the write were queued.
	waitSecretAndWrite(t, "old queue", out, secret, written)
	for len(out) > 0 {
		<-out
	}
	shedBefore := st.QueueShed["file_open"]
	reads(200)
	if st, _ := s.Stats(); st.QueueShed["file_open"] != shedBefore {
		t.Fatalf("with the queue drained, %d more ordinary reads were shed", st.QueueShed["file_open"]-shedBefore)
	}
}

// waitSecretAndWrite reads out until it has seen an open of secret and a
// write open of written: what overload must never shed.
func waitSecretAndWrite(t *testing.T, when string, out <-chan *api.Event, secret, written string) {
	t.Helper()
	var gotSecret, gotWrite bool
	deadline := time.After(10 * time.Second)
	for !gotSecret || !gotWrite {
		select {
		case ev := <-out:
			switch ev.GetFileOpen().GetPath() {
			case secret:
				gotSecret = true
			case written:
				gotWrite = gotWrite || ev.GetFileOpen().GetWrite()
			}
		case <-deadline:
			t.Fatalf("%s: sensitive read seen %v, write seen %v", when, gotSecret, gotWrite)
		}
	}
}

// newRawSensor is a sensor with cfg, closed at the end of the test.
func newRawSensor(t *testing.T, cfg Config) *Sensor {
	t.Helper()
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runRaw runs s into a channel of the given size that nobody reads until
// the test does; stop ends Run and returns its error.
func runRaw(t *testing.T, s *Sensor, size int) (out chan *api.Event, stop func() error) {
	t.Helper()
	out = make(chan *api.Event, size)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, out) }()
	return out, func() error { cancel(); return <-done }
}

// shedFiles makes a directory with an ordinary file and a sensitive one
// (both existing) and the path of a file to write.
func shedFiles(t *testing.T) (dir, plain, secret, written string) {
	t.Helper()
	dir = t.TempDir()
	plain, secret, written = filepath.Join(dir, "plain"), filepath.Join(dir, "secret"), filepath.Join(dir, "written")
	for _, p := range []string{plain, secret} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, plain, secret, written
}

// TestKernelShedsRepeatsUnderPressure: with the ring buffer over three
// quarters full (nobody reads it, as when the agent gets no CPU), one
// shell's fork+exec storm of /bin/true is shed past its burst, counted by
// kind, and a different program's exec in the middle of it still arrives.
func TestKernelShedsRepeatsUnderPressure(t *testing.T) {
	testenv.RequireRoot(t)
	odd := filepath.Join(t.TempDir(), "harrier-odd")
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(odd, b, 0o755); err != nil {
		t.Fatal(err)
	}
	s := newRawSensor(t, Config{RingBufferBytes: 1 << 20, WakeupBytes: 1000 << 10})
	var st Stats
	for batch := 0; batch < 40 && st.KernelShedRepeats["exec"] == 0; batch++ {
		if out, err := exec.Command("sh", "-c", `i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done`).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if st, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
	}
	// The storm goes on while the odd program runs once.
	storm := exec.Command("sh", "-c", `i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done`)
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(odd).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if err := storm.Wait(); err != nil {
		t.Fatal(err)
	}
	if st, err = s.Stats(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"exec", "fork", "exit"} {
		if st.KernelShedRepeats[k] == 0 {
			t.Errorf("no %s shed as a repeat with the ring full: repeats %v, ring full %v", k, st.KernelShedRepeats, st.KernelRingFull)
		}
	}
	out, stop := runRaw(t, s, 1<<16)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-out:
			if ev.GetKind() == api.EventKind_EVENT_KIND_EXEC && ev.GetProcess().GetExe() == odd {
				return
			}
		case <-deadline:
			t.Fatalf("the odd program's exec did not arrive: repeats shed %v, ring full %v", st.KernelShedRepeats, st.KernelRingFull)
		}
	}
}
