package ocirun

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// Available reports nil when containers can be started here, or an error
// naming everything that is missing.
func Available() error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("not running as root"))
	}
	if _, err := runcPath(); err != nil {
		errs = append(errs, err)
	}
	if err := checkStatic(BusyboxPath); err != nil {
		errs = append(errs, fmt.Errorf("busybox-static: %w", err))
	}
	if len(errs) == 0 { // mounting needs root; don't report it twice
		if err := checkOverlay(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("runc containers unavailable (apt-get install runc busybox-static, run as root): %w", err)
	}
	return nil
}

func runcPath() (string, error) {
	if p, err := exec.LookPath("runc"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/runc"
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("runc not found on PATH or at %s: %w", p, err)
	}
	return p, nil
}

// checkStatic returns an error unless path is a statically linked ELF
// executable (one without a program interpreter).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// checkOverlay mounts and unmounts a throwaway overlayfs.
func checkOverlay() error {
	dir, err := os.MkdirTemp("", "ocirun-overlay-")
	if err != nil {
		return fmt.Errorf("overlayfs check: %w", err)
	}
	defer os.RemoveAll(dir)
	l, err := newLayers(dir)
	if err != nil {
		return fmt.Errorf("overlayfs check: %w", err)
	}
	if err := l.mount(); err != nil {
		return fmt.Errorf("overlayfs check: %w", err)
	}
	if err := l.unmount(); err != nil {
		return fmt.Errorf("overlayfs check: %w", err)
	}
	return nil
}
