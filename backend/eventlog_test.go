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
