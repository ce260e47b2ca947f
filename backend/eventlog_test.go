package backend

import (
	"bytes"
	"testing"
)

// FuzzDecodePageLocation: an index value read back from the store's Badger
// must be rejected cleanly or re-encode identically.
func FuzzDecodePageLocation(f *testing.F) {
	f.Add(pageLocation{seg: 3, off: 4096, len: 512, csum: 7}.encode())
	f.Add([]byte{locVersion})
	f.Fuzz(func(t *testing.T, v []byte) {
		l, err := decodePageLocation(v)
		if err == nil && !bytes.Equal(l.encode(), v) {
			t.Fatalf("accepted %x, re-encodes as %x", v, l.encode())
		}
	})
}

// FuzzEachPageEvent: an event page read back from a segment must be walked
// without panicking, and every record it yields must lie within the page.
func FuzzEachPageEvent(f *testing.F) {
	f.Add([]byte{pageVersion, 0, 0, 0, 2, 'h', 'i', 0, 0, 0, 0})
	f.Add([]byte{1, 'x'})
	f.Add([]byte{pageVersion, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, v []byte) {
		total := 0
		_ = eachPageEvent(v, func(rec []byte) error {
			total += len(rec)
			return nil
		})
		if total > len(v) {
			t.Fatalf("records of %d bytes from a page of %d", total, len(v))
		}
	})
}
