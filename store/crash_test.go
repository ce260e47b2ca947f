package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// Environment of the child process the crash tests start from this test
// binary (see TestMain).
const (
	helperEnv        = "HARRIER_STORE_TEST_HELPER" // "append": run appendHelper instead of the tests
	helperDirEnv     = "HARRIER_STORE_TEST_DIR"
	helperNoGuardEnv = "HARRIER_STORE_TEST_NO_FREE_CHECK" // set: MinFreeBytes -1, to hit real ENOSPC
	helperRecordSize = 1024
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "append" {
		os.Exit(appendHelper())
	}
	// Every spool a test opens must be closed by it: a goroutine that
	// outlives the tests fails them.
	goleak.VerifyTestMain(m)
}

// appendHelper appends records forever, mixing single appends and batches
// and all classes, and prints "class seq index" for each one once Append has
// returned nil. It exits 3 on an append error, printing it.
func appendHelper() int {
	cfg := Config{Dir: os.Getenv(helperDirEnv)}
	if os.Getenv(helperNoGuardEnv) != "" {
		cfg.MinFreeBytes = -1
	}
	s, err := Open(cfg, nil)
	if err != nil {
		fmt.Println("ERR", err)
		return 2
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		c := Class(1 + i%numClasses)
		n := 1 + (i%4)*10 // 1, 11, 21, 31 records
		batch := make([][]byte, n)
		for j := range batch {
			batch[j] = payloadFor(c, i*100+j, helperRecordSize)
		}
		first, err := s.AppendBatch(c, batch)
		if err != nil {
			fmt.Fprintln(out, "ERR", err)
			out.Flush()
			return 3
		}
		for j := range batch {
			fmt.Fprintln(out, uint8(c), first+uint64(j), i*100+j)
		}
		out.Flush()
	}
}

type ackedRecord struct {
	id    RecordID
	index int
}

// runAppendChild starts the helper on dir, reads what it acknowledged, and
// SIGKILLs it after killAfter lines (0: let it run until it exits itself).
func runAppendChild(t *testing.T, dir string, killAfter int, extraEnv ...string) (acked []ackedRecord, lastErr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=append", helperDirEnv + "=" + dir}, extraEnv...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERR ") {
			lastErr = line
			continue
		}
		var c uint8
		var seq uint64
		var idx int
		if _, err := fmt.Sscan(line, &c, &seq, &idx); err != nil {
			continue // a line cut short by the kill
		}
		acked = append(acked, ackedRecord{RecordID{Class(c), seq}, idx})
		if !killed && killAfter > 0 && len(acked) >= killAfter {
			// Lines already written by the child stay readable after the kill.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	t.Logf("child: %d records acknowledged, exit %v, %s %s", len(acked), err, lastErr, strings.TrimSpace(stderr.String()))
	return acked, lastErr
}

// checkAcked reopens dir and checks every acknowledged record is there intact.
func checkAcked(t *testing.T, dir string, acked []ackedRecord) {
	t.Helper()
	s, err := Open(Config{Dir: dir}, testLogger(t))
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	maxSeq := map[Class]uint64{}
	for _, a := range acked {
		p, ok, err := s.get(a.id)
		if err != nil || !ok {
			t.Fatalf("acknowledged record %v lost (ok=%v err=%v)", a.id, ok, err)
		}
		if !bytes.Equal(p, payloadFor(a.id.Class, a.index, helperRecordSize)) {
			t.Fatalf("record %v payload differs", a.id)
		}
		maxSeq[a.id.Class] = max(maxSeq[a.id.Class], a.id.Seq)
	}
	// Sequences continue after what was acknowledged; counters match the records.
	for c, seq := range maxSeq {
		if next := s.Stats().Classes[c].NextSeq; next <= seq {
			t.Fatalf("%s next seq %d not after acknowledged %d", c, next, seq)
		}
	}
}

func TestSurvivesKill9(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	var all []ackedRecord
	for round, killAfter := range []int{40, 300, 1, 900} {
		acked, errLine := runAppendChild(t, dir, killAfter)
		if errLine != "" {
			t.Fatalf("round %d: child failed: %s", round, errLine)
		}
		if len(acked) < killAfter {
			t.Fatalf("round %d: child acknowledged only %d records", round, len(acked))
		}
		all = append(all, acked...)
		checkAcked(t, dir, all)
	}
	// Every record on disk is accounted for in the counters.
	s := openTest(t, Config{Dir: dir})
	var depth uint64
	for _, cs := range s.Stats().Classes {
		depth += cs.Depth
	}
	var n uint64
	drainEach(t, s, 1000, 64<<20, func(Record) { n++ })
	if n != depth || n < uint64(len(all)) {
		t.Fatalf("drained %d records, stats said %d, %d acknowledged", n, depth, len(all))
	}
}
