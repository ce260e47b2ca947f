package ocirun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

type layers struct {
	lower, upper, work, merged string
	// below are read-only directories stacked under lower, topmost first.
	below []string
}

func newLayers(dir string) (layers, error) {
	l := layers{
		lower:  filepath.Join(dir, "lower"),
		upper:  filepath.Join(dir, "upper"),
		work:   filepath.Join(dir, "work"),
		merged: filepath.Join(dir, "merged"),
	}
	for _, d := range []string{l.lower, l.upper, l.work, l.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, err
		}
	}
	return l, nil
}

func (l layers) mount() error {
	lower := strings.Join(append([]string{l.lower}, l.below...), ":")
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, l.upper, l.work)
	if err := unix.Mount("overlay", l.merged, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay at %s: %w", l.merged, err)
	}
	return nil
}

func (l layers) unmount() error {
	err := unix.Unmount(l.merged, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(l.merged, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
		return fmt.Errorf("unmount %s: %w", l.merged, err)
	}
	return nil
}

func ensureMountPoint(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if st.IsDir() {
		return os.MkdirAll(dst, 0o755)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// buildLower fills the lower layer: busybox, its applets, /etc and the
// mount points.
func buildLower(lower string, extra []string, image map[string]File) error {
	for _, d := range []string{"bin", "etc", "tmp", "proc", "dev", "sys", "root", "home/user", "var/tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "var/tmp"} {
		if err := os.Chmod(filepath.Join(lower, d), 0o1777); err != nil {
			return err
		}
	}
	if err := os.Chown(filepath.Join(lower, "home/user"), 1000, 1000); err != nil {
		return err
	}
	if err := copyFile(BusyboxPath, filepath.Join(lower, "bin/busybox"), 0o755); err != nil {
		return err
	}
	linked := map[string]bool{}
	for _, a := range append(applets(), extra...) {
		if linked[a] {
			continue
		}
		linked[a] = true
		if err := os.Symlink("busybox", filepath.Join(lower, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n" +
			"user:x:1000:1000:user:/home/user:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group": "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
		"etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(lower, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for name, f := range image {
		if err := addImageFile(lower, name, f); err != nil {
			return fmt.Errorf("image file %s: %w", name, err)
		}
	}
	return nil
}

func addImageFile(lower, name string, f File) error {
	dst := filepath.Join(lower, filepath.Clean("/"+name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	mode := f.Mode
	if f.Host != "" {
		if mode == 0 {
			mode = 0o755
		}
		if err := copyFile(f.Host, dst, mode); err != nil {
			return err
		}
	} else {
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(dst, []byte(f.Content), mode); err != nil {
			return err
		}
		if err := os.Chmod(dst, mode); err != nil { // WriteFile's mode is subject to the umask
			return err
		}
	}
	return os.Chown(dst, f.UID, f.GID)
}

func copyFile(src, dst string, mode os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	// OpenFile's mode is subject to the umask and ignored for an
	// existing file.
	return out.Chmod(mode)
}
