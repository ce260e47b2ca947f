package response

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ActionQuarantine moves the alert's process's executable aside in its own
// directory, with mode 000, after keeping a copy (within a size cap) and its
// SHA-256 in the agent's quarantine directory for forensics.
const ActionQuarantine = "quarantine-executable"

// DefaultQuarantineCopyBytes caps the forensic copy of one file.
const DefaultQuarantineCopyBytes = 64 << 20

// Quarantined is what quarantine did.
type Quarantined struct {
	// Moved is the file's new path, as the process saw its file system.
	Moved string
	// SHA256 is the file's digest; Copy the forensic copy ("" when the file
	// was over the cap: the digest is still of the whole file).
	SHA256, Copy string
	// Mode is the file's permission bits before quarantine, to restore.
	Mode os.FileMode
}

// quarantineSuffix marks a file moved aside, before its UTC time.
const quarantineSuffix = ".harrier-quarantine-"

// quarantineExecutable quarantines target's executable. The file is read
// through /proc/<pid>/exe (it may already be deleted) and moved within
// /proc/<pid>/root, the process's own view of the file system, so that a
// container's file stays in the container, where it was.
func quarantineExecutable(t Target, exe, dir string, copyCap int64) (Quarantined, error) {
	p, err := pinTarget("", t)
	if err != nil {
		return Quarantined{}, err
	}
	defer unix.Close(p.fd)
	proc := "/proc/" + strconv.Itoa(t.PID)
	src, err := os.Open(proc + "/exe")
	if err != nil {
		return Quarantined{}, fmt.Errorf("quarantine: %w", err)
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Quarantined{}, fmt.Errorf("quarantine: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		return Quarantined{}, fmt.Errorf("quarantine: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(h, &capWriter{w: tmp, left: copyCap}), src)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Quarantined{}, fmt.Errorf("quarantine: copy: %w", err)
	}
	q := Quarantined{SHA256: hex.EncodeToString(h.Sum(nil))}
	if n <= copyCap {
		q.Copy = filepath.Join(dir, q.SHA256)
		if err := os.Rename(tmp.Name(), q.Copy); err != nil {
			return q, fmt.Errorf("quarantine: %w", err)
		}
		_ = os.Chmod(q.Copy, 0)
	}
	// Aside: same directory, a name that says what happened, mode 000.
	moved := exe + quarantineSuffix + time.Now().UTC().Format("20060102T150405Z")
	root := proc + "/root"
	if fi, err := os.Stat(root + exe); err == nil {
		q.Mode = fi.Mode().Perm()
	}
	if err := os.Rename(root+exe, root+moved); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return q, fmt.Errorf("quarantine: %s is gone already (the copy and digest are kept): %w", exe, err)
		}
		return q, fmt.Errorf("quarantine: move %s aside: %w", exe, err)
	}
	q.Moved = moved
	if err := os.Chmod(root+moved, 0); err != nil {
		return q, fmt.Errorf("quarantine: chmod %s: %w", moved, err)
	}
	return q, nil
}

// capWriter writes the first left bytes and counts the rest away.
type capWriter struct {
	w    io.Writer
	left int64
}

func (c *capWriter) Write(b []byte) (int, error) {
	if c.left > 0 {
		k := min(int64(len(b)), c.left)
		if _, err := c.w.Write(b[:k]); err != nil {
			return 0, err
		}
		c.left -= k
	}
	return len(b), nil
}
