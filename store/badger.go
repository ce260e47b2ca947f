package store

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// metaDirName is the Badger directory inside the spool's Dir.
const metaDirName = "meta"

// Badger keeps only the spool's metadata: a few keys per class, an acked
// key per record acknowledged out of order, and unreported gaps — kilobytes.
// Its profile is therefore the smallest it accepts: 1 MiB memtables (a
// transaction may then hold ~150 KiB, ~1 600 entries), tiny tables, no
// block cache. Badger's defaults (64 MiB memtables ×5, 256 MiB block cache)
// cost ~600 MB.
const (
	memTableSize     = 1 << 20
	numMemtables     = 2
	numL0Tables      = 2
	numL0TablesStall = 4
	baseTableSize    = 256 << 10
	baseLevelSize    = 1 << 20
	// Values (≤ 49 bytes) stay in the LSM tree.
	valueThreshold = 1 << 10
	valueLogFile   = 1 << 20 // Badger's minimum
)

// metadataAllowance bounds what Badger's files take on disk on top of the
// segment quota: two memtable WALs, the level-0 tables up to the write
// stall, a compaction's output and the value-log file, with room to spare.
const metadataAllowance int64 = 16 << 20

// badgerOptions is the metadata profile for a Badger directory.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerkv.Logger(log)).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(numL0Tables).
		WithNumLevelZeroTablesStall(numL0TablesStall).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(valueLogFile).
		WithCompression(options.None).
		// No compactor goroutines: each wakes every 50 ms, which cost an
		// idle agent 6 of its 10 millicores. The spool compacts the tiny
		// tree itself when level 0 fills (compactIfNeeded).
		WithNumCompactors(0).
		WithNumGoroutines(1).
		WithNumVersionsToKeep(1).
		// The spool serialises its own writes; conflict tracking would only cost memory.
		WithDetectConflicts(false).
		// Durability comes from an explicit db.Sync after each metadata change.
		WithSyncWrites(false)
}

// compactIfNeeded flattens the metadata tree once level 0 holds
// numL0Tables tables. Without compactors, level 0 would otherwise reach the
// write stall and block the next metadata write for good. The tree is a
// few hundred KiB at most, so this takes milliseconds.
func compactIfNeeded(db *badger.DB) error {
	if levels := db.Levels(); len(levels) == 0 || levels[0].NumTables < numL0Tables {
		return nil
	}
	if err := db.Flatten(1); err != nil {
		return fmt.Errorf("compact metadata: %w", err)
	}
	return nil
}

// diskUsage is the space the files under dir occupy on disk: allocated
// blocks, not apparent sizes, because Badger keeps its open memtable WAL and
// value log as sparse files of twice their nominal size.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path != dir {
				return nil // removed while we walked
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
