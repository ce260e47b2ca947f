package proc

import "testing"

// /proc/PID/stat holds comm, which any process sets to anything it likes.
func FuzzParseStat(f *testing.F) {
	f.Add("1234 (bash) S 1 1234 1234 34816 1234 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987 0 0")
	f.Add("7 (a) (b) ) R 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		comm, _, _, err := parseStat(s)
		if err == nil && len(comm) > len(s) {
			t.Fatalf("comm %q longer than input", comm)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add("Name:\tbash\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	f.Add("Uid:\t1000\nGid:\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _, _, _ = parseStatus(s)
	})
}
