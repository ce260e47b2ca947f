package container

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/harrier-sec/harrier/internal/testenv"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestFindCgroupByIDTree exercises the walk on an ordinary directory tree,
// where inode numbers play the part of cgroup IDs.
func TestFindCgroupByIDTree(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b/c", "a/d", "e"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "a", "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		id       uint64
		max      int
		want     string
		wantErrs []error
	}{
		{name: "root", id: inode(t, root), max: 10, want: "/"},
		{name: "deep", id: inode(t, filepath.Join(root, "a/b/c")), max: 10, want: "/a/b/c"},
		{name: "unbounded", id: inode(t, filepath.Join(root, "e")), max: 0, want: "/e"},
		{name: "files are not cgroups", id: inode(t, filepath.Join(root, "a/file")), max: 10, wantErrs: []error{ErrNotFound}},
		{name: "absent", id: math.MaxUint64, max: 100, wantErrs: []error{ErrNotFound}},
		{name: "limit", id: inode(t, filepath.Join(root, "e")), max: 2, wantErrs: []error{ErrNotFound, ErrWalkLimit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindCgroupByID(root, tt.id, tt.max)
			for _, want := range tt.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			if len(tt.wantErrs) == 0 && err != nil {
				t.Fatal(err)
			}
			if len(tt.wantErrs) == 1 && errors.Is(err, ErrWalkLimit) {
				t.Errorf("err = %v: walk limit not expected", err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFindCgroupByIDMissingMount(t *testing.T) {
	_, err := FindCgroupByID(filepath.Join(t.TempDir(), "nope"), 1, 10)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v, want a walk error other than ErrNotFound", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want it to wrap os.ErrNotExist", err)
	}
}

// TestFindCgroupByIDReal creates a cgroup on this machine's preferred
// hierarchy and finds it by its ID.
func TestFindCgroupByIDReal(t *testing.T) {
	testenv.RequireRoot(t) // creating cgroups needs root
	h := realHierarchies(t)
	ctrl, mp := h.Preferred()
	if mp == "" {
		t.Fatal("no cgroup filesystem mounted: the sensor needs one")
	}
	rel := fmt.Sprintf("/harrier-container-test-%d", os.Getpid())
	parent := filepath.Join(mp, rel)
	child := filepath.Join(parent, "child")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatalf("cannot create cgroup under %s (%q): %v", mp, ctrl, err)
	}
	t.Cleanup(func() {
		// Cgroups are removed with rmdir, innermost first.
		_ = os.Remove(child)
		if err := os.Remove(parent); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatalf("create child cgroup: %v", err)
	}
	for _, want := range []string{rel, rel + "/child"} {
		id := inode(t, filepath.Join(mp, want))
		got, err := FindCgroupByID(mp, id, 100000)
		if err != nil {
			t.Fatalf("FindCgroupByID(%s, %d): %v", mp, id, err)
		}
		if got != want {
			t.Errorf("FindCgroupByID(%s, %d) = %q, want %q", mp, id, got, want)
		}
	}
}
