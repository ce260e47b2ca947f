package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestProfilePath(t *testing.T) {
	for _, tc := range []struct{ base, phase, point, want string }{
		{"/tmp/p", "quota", "", "/tmp/p.quota"},
		{"/tmp/p", "quota+memlimit", "backlog", "/tmp/p.quota-memlimit.backlog"},
		{"heap", "sustained", "window", "heap.sustained.window"},
	} {
		if got := profilePath(tc.base, tc.phase, tc.point); got != tc.want {
			t.Errorf("profilePath(%q, %q, %q) = %q, want %q", tc.base, tc.phase, tc.point, got, tc.want)
		}
	}
}

// TestRSSByMapping maps a file named like a Badger table, touches its pages
// and checks that they are counted as .sst, apart from anon and the binary.
func TestRSSByMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "000001.sst")
	const size = 4 << 20
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := mmapRead(f, size)
	if err != nil {
		t.Fatal(err)
	}
	defer munmap(data)
	var sum byte
	for i := 0; i < size; i += 4096 {
		sum += data[i]
	}
	t.Logf("checksum %d", sum)
	m, err := rssByMapping()
	if err != nil {
		t.Fatal(err)
	}
	if m["sst"] < size/2 {
		t.Errorf("sst RSS %d after touching a %d-byte mapping: %v", m["sst"], size, m)
	}
	if m["anon"] == 0 || m["other files"] == 0 {
		t.Errorf("anon and the binary should be resident: %v", m)
	}
}

func mmapRead(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func munmap(b []byte) { _ = syscall.Munmap(b) }
