package store

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// mountTmpfs mounts a tmpfs of the given size in a temporary directory.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// With the free-space reserve (the default), a full disk is a clear error
// and the spool stays usable.
func TestAppendOnFullDiskFailsClearly(t *testing.T) {
	mnt := mountTmpfs(t, "56m")
	dir := filepath.Join(mnt, "spool")
	s, err := Open(Config{Dir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var acked []ackedRecord
	batch := make([][]byte, 100)
	for i := 0; ; i++ {
		for j := range batch {
			batch[j] = payloadFor(ClassEvent, i*100+j, helperRecordSize)
		}
		first, err := s.AppendBatch(ClassEvent, batch)
		if err != nil {
			if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("append on a full disk: %v, want ErrDiskFull and ENOSPC", err)
			}
			t.Logf("after %d records: %v", len(acked), err)
			break
		}
		for j := range batch {
			acked = append(acked, ackedRecord{RecordID{ClassEvent, first + uint64(j)}, i*100 + j})
		}
		if i > 10000 {
			t.Fatal("disk never filled")
		}
	}
	if len(acked) == 0 {
		t.Fatal("nothing fitted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkAcked(t, dir, acked)
}

// Without the reserve, Badger meets the real ENOSPC (or dies of SIGBUS on a
// mmap'd file). Either way nothing acknowledged is lost once space is back.
func TestRealENOSPCLosesNothingAcknowledged(t *testing.T) {
	mnt := mountTmpfs(t, "24m")
	dir := filepath.Join(mnt, "spool")
	acked, errLine := runAppendChild(t, dir, 0, helperNoGuardEnv+"=1")
	if len(acked) == 0 {
		t.Fatalf("child acknowledged nothing (%s)", errLine)
	}
	if out, err := exec.Command("mount", "-o", "remount,size=256m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v: %s", err, out)
	}
	checkAcked(t, dir, acked)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}
