package badgerkv

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func openMemDB(t *testing.T) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func keys(seq func(func(*badger.Item) bool)) []string {
	var out []string
	for item := range seq {
		out = append(out, string(item.KeyCopy(nil)))
	}
	return out
}

func TestPrefixScans(t *testing.T) {
	db := openMemDB(t)
	// Keys right at both edges of prefix "b/": "b." sorts before it, "b0"
	// (its end) right after, and "b/\xff\xff" is its last key.
	stored := []string{"a/1", "b.", "b/", "b/1", "b/2", "b/\xff\xff", "b0", "c/1", "\xff\xff"}
	if err := db.Update(func(txn *badger.Txn) error {
		for _, k := range stored {
			if err := txn.Set([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		scan func(txn *badger.Txn) []string
		want []string
	}{
		{"prefix", func(txn *badger.Txn) []string { return keys(Prefix(txn, []byte("b/"))) }, []string{"b/", "b/1", "b/2", "b/\xff\xff"}},
		{"prefix from", func(txn *badger.Txn) []string { return keys(PrefixFrom(txn, []byte("b/"), []byte("b/15"))) }, []string{"b/2", "b/\xff\xff"}},
		{"prefix none", func(txn *badger.Txn) []string { return keys(Prefix(txn, []byte("d/"))) }, nil},
		{"reverse", func(txn *badger.Txn) []string { return keys(PrefixReverse(txn, []byte("b/"))) }, []string{"b/\xff\xff", "b/2", "b/1", "b/"}},
		{"reverse, end key absent", func(txn *badger.Txn) []string { return keys(PrefixReverse(txn, []byte("c/"))) }, []string{"c/1"}},
		{"reverse none", func(txn *badger.Txn) []string { return keys(PrefixReverse(txn, []byte("bb"))) }, nil},
		{"reverse all-0xff prefix", func(txn *badger.Txn) []string { return keys(PrefixReverse(txn, []byte("\xff"))) }, []string{"\xff\xff"}},
		{"reverse empty prefix", func(txn *badger.Txn) []string { return keys(PrefixReverse(txn, nil)) }, nil},
	}
	tests[len(tests)-1].want = slices.Clone(stored)
	slices.Reverse(tests[len(tests)-1].want)
	for _, tc := range tests {
		if err := db.View(func(txn *badger.Txn) error {
			if got := tc.scan(txn); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// Breaking out of a scan closes its iterator: a read-write transaction
// allows one iterator at a time, so a second scan would panic otherwise.
func TestBreakClosesIterator(t *testing.T) {
	db := openMemDB(t)
	if err := db.Update(func(txn *badger.Txn) error {
		for _, k := range []string{"k1", "k2", "k3"} {
			if err := txn.Set([]byte(k), nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	txn := db.NewTransaction(true)
	defer txn.Discard()
	for range 3 {
		for range Prefix(txn, []byte("k")) {
			break
		}
		for range PrefixReverse(txn, []byte("k")) {
			break
		}
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Errorf("disk %s\n", "gone")
	l.Warningf("slow")
	l.Infof("compaction")
	l.Debugf("detail")
	out := buf.String()
	for _, want := range []string{`level=ERROR msg=badger detail="disk gone"`, `level=WARN msg=badger detail=slow`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "compaction") || strings.Contains(out, "detail=detail") {
		t.Errorf("info or debug reached the log: %q", out)
	}
}
