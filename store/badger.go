package store

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Low-memory Badger profile. Badger's defaults (64 MiB memtables ×5, 256 MiB
// block cache, unbounded index memory) cost ~600 MB; the agent's whole budget
// is 296 MiB. The figures measured with these settings are in README.md and on
// BenchmarkSpoolMemory.
const (
	memTableSize     = 4 << 20 // each memtable's arena and WAL; also bounds a transaction to ~600 KiB
	numMemtables     = 2       // one being written, one being flushed
	numL0Tables      = 2       // compact L0 early: fewer tables to consult and keep indexes for
	numL0TablesStall = 4
	baseTableSize    = 1 << 20
	baseLevelSize    = 8 << 20
	blockCacheSize   = 4 << 20 // decompressed SST blocks for Next; reads are sequential, so small is enough
	indexCacheSize   = 2 << 20 // table indexes and bloom filters live here instead of on the heap
	// Payloads stay in the LSM tree (ValueThreshold above MaxRecordBytes), so
	// compaction drops acked and evicted records together with their
	// tombstones. With payloads in the value log, space only comes back once
	// compaction has produced discard statistics for value-log GC: measured
	// with a 4 MiB quota, 20 MiB of dead value log piled up behind 0.1 MiB of
	// live records; TestSteadyFlowStaysInQuotaWithoutEvicting fails that way
	// (37k of 82k records evicted with a threshold of 64 B). The price is
	// compaction write amplification: it bounds the append rate (README.md,
	// "Spool and uplink").
	valueThreshold     = 512 << 10
	minValueLogFile    = 1 << 20 // Badger's minimum
	maxValueLogFile    = 16 << 20
	valueLogQuotaShare = 64 // a value-log file is at most quota/64, so GC can give back space in small steps
)

// badgerWorkingSet is disk Badger uses regardless of how much is spooled:
// memtable WALs, level-0 tables up to the write stall, the output of an
// L0→L1 compaction before its inputs are deleted, and the open value-log
// file. The quota bounds the spool's data; the files may exceed it by this
// (33 MiB with these settings). Without the compaction term, transient peaks
// made the disk check evict findings to make room for events.
func badgerWorkingSet(quota int64) int64 {
	return (numMemtables+numL0TablesStall)*memTableSize + baseLevelSize + valueLogFileSize(quota)
}

func valueLogFileSize(quota int64) int64 {
	return min(max(quota/valueLogQuotaShare, minValueLogFile), maxValueLogFile)
}

// badgerOptions is the low-memory profile for a spool in dir with the given quota.
func badgerOptions(dir string, quota int64, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(slogLogger{log: log}).
		WithLoggingLevel(badger.WARNING).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(numL0Tables).
		WithNumLevelZeroTablesStall(numL0TablesStall).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithBlockCacheSize(blockCacheSize).
		WithIndexCacheSize(indexCacheSize).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFileSize(quota)).
		// No compression: ZSTD in the table builder keeps a compressed copy of
		// every block of the tables a compaction is building; measured, it took
		// peak live heap under write load from 106 to 193 MiB. The uplink
		// compresses batches with zstd anyway.
		WithCompression(options.None).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithNumVersionsToKeep(1).
		// The spool serialises its own writes; conflict tracking would only cost memory.
		WithDetectConflicts(false).
		// Durability comes from an explicit db.Sync per append batch (one fsync for many records).
		WithSyncWrites(false)
}

// slogLogger routes Badger's log to slog. Badger logs at info level on every
// compaction; only warnings and errors reach the agent's log.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Errorf(f string, a ...any) {
	l.log.Error("badger", "detail", fmt.Sprintf(f, a...))
}

func (l slogLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger", "detail", fmt.Sprintf(f, a...))
}

func (l slogLogger) Infof(f string, a ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("badger", "detail", fmt.Sprintf(f, a...))
	}
}

func (l slogLogger) Debugf(string, ...any) {}

// diskUsage is the space the spool's files occupy on disk: allocated blocks,
// not apparent sizes, because Badger keeps its open memtable WAL and value log
// as sparse files of twice their nominal size.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path != dir {
				return nil // removed by compaction or GC while we walked
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}
