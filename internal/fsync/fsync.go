// Package fsync holds the file-system durability helpers that the spool
// (store) and the backend's event log share.
package fsync

import (
	"fmt"
	"os"
)

// Dir makes the creation, removal or renaming of files in dir durable: a
// file's own fsync does not cover its directory entry.
func Dir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
