// Package badgerkv holds what the spool (store) and the backend's store both
// need around Badger: key-prefix scans and Badger's log sent to slog.
package badgerkv

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Prefix yields the items whose keys start with prefix, in key order. An
// item is valid only until the loop moves on (copy what outlives it). The
// iterator is closed when the loop ends, however it ends.
func Prefix(txn *badger.Txn, prefix []byte) iter.Seq[*badger.Item] {
	return PrefixFrom(txn, prefix, nil)
}

// PrefixFrom is Prefix starting at the first key at or after from (nil: the
// prefix's first key).
func PrefixFrom(txn *badger.Txn, prefix, from []byte) iter.Seq[*badger.Item] {
	return func(yield func(*badger.Item) bool) {
		// Values are read through Item.Value: no prefetch. Both stores keep
		// small values in the LSM tree.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(from); it.Valid(); it.Next() {
			if !yield(it.Item()) {
				return
			}
		}
	}
}

// PrefixReverse yields the items whose keys start with prefix, last key
// first.
func PrefixReverse(txn *badger.Txn, prefix []byte) iter.Seq[*badger.Item] {
	return func(yield func(*badger.Item) bool) {
		// A reverse seek lands on the last key at or before its argument, and
		// Badger's Prefix option does not apply to the seek: seek to the
		// first key after every key of the prefix and step off it if stored.
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true})
		defer it.Close()
		if end := prefixEnd(prefix); end == nil {
			it.Rewind()
		} else {
			it.Seek(end)
		}
		if it.Valid() && !bytes.HasPrefix(it.Item().Key(), prefix) {
			it.Next()
		}
		for ; it.ValidForPrefix(prefix); it.Next() {
			if !yield(it.Item()) {
				return
			}
		}
	}
}

// prefixEnd is the smallest key greater than every key starting with
// prefix, or nil when there is none (prefix is empty or all 0xff).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Logger sends Badger's warnings and errors to log. Info and Debug are
// dropped: Badger logs at info level on every compaction and memtable flush.
// Set it with Options.WithLogger, and not WithLoggingLevel after it, which
// replaces the logger with Badger's own (stderr).
func Logger(log *slog.Logger) badger.Logger { return logger{log: log} }

type logger struct{ log *slog.Logger }

func (l logger) Errorf(f string, a ...any)   { l.emit(slog.LevelError, f, a) }
func (l logger) Warningf(f string, a ...any) { l.emit(slog.LevelWarn, f, a) }
func (logger) Infof(string, ...any)          {}
func (logger) Debugf(string, ...any)         {}

func (l logger) emit(level slog.Level, f string, a []any) {
	l.log.Log(context.Background(), level, "badger", "detail", strings.TrimSpace(fmt.Sprintf(f, a...)))
}
