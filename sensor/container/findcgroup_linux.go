package container

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// ErrNotFound is wrapped by FindCgroupByID when no cgroup has the ID.
var ErrNotFound = errors.New("cgroup not found")

// ErrWalkLimit is wrapped, together with ErrNotFound, when FindCgroupByID
// gave up after maxEntries cgroups, so the cgroup may still exist.
var ErrWalkLimit = errors.New("walk limit reached")

// FindCgroupByID returns the path, relative to mountpoint and starting
// with "/", of the cgroup whose ID is id. The kernel's cgroup ID (as
// returned by bpf_get_current_cgroup_id) is the kernfs inode number of the
// cgroup directory, so a walk comparing inodes finds it.
//
// At most maxEntries cgroups (directories) are examined, bounding the cost
// on hosts with many cgroups; maxEntries <= 0 means no bound. Cgroups that
// vanish or cannot be read during the walk are skipped.
func FindCgroupByID(mountpoint string, id uint64, maxEntries int) (string, error) {
	var found string
	visited := 0
	errStop := errors.New("stop")
	err := filepath.WalkDir(mountpoint, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == mountpoint {
				return err
			}
			// Removed or unreadable while walking: not what we look for.
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if maxEntries > 0 && visited >= maxEntries {
			return fmt.Errorf("cgroup id %d under %s: examined %d cgroups: %w: %w",
				id, mountpoint, visited, ErrNotFound, ErrWalkLimit)
		}
		visited++
		fi, err := d.Info()
		if err != nil {
			return filepath.SkipDir
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Ino != id {
			return nil
		}
		rel, err := filepath.Rel(mountpoint, p)
		if err != nil {
			return fmt.Errorf("cgroup id %d: %w", id, err)
		}
		found = "/"
		if rel != "." {
			found += filepath.ToSlash(rel)
		}
		return errStop
	})
	switch {
	case errors.Is(err, errStop):
		return found, nil
	case err != nil:
		if errors.Is(err, ErrNotFound) {
			return "", err
		}
		return "", fmt.Errorf("find cgroup id %d under %s: %w", id, mountpoint, err)
	}
	return "", fmt.Errorf("cgroup id %d under %s: %w", id, mountpoint, ErrNotFound)
}
