package store

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestEncodingRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, tc := range []struct {
		name    string
		class   Class
		seq     uint64
		payload []byte
	}{
		{"alert empty payload", ClassAlert, 1, nil},
		{"finding", ClassFinding, 42, []byte("inventory")},
		{"event max seq", ClassEvent, ^uint64(0), bytes.Repeat([]byte{0xff}, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := decodeRecordKey(recordKey(tc.class, tc.seq))
			if err != nil || id != (RecordID{tc.class, tc.seq}) {
				t.Fatalf("decodeRecordKey = %v, %v", id, err)
			}
			gotAt, payload, err := decodeRecordValue(encodeRecordValue(at, tc.payload))
			if err != nil || !gotAt.Equal(at) || !bytes.Equal(payload, tc.payload) {
				t.Fatalf("decodeRecordValue = %v, %q, %v", gotAt, payload, err)
			}
			m := classMeta{next: tc.seq, head: tc.seq / 2, liveCount: tc.seq / 4, liveBytes: 7, appended: 8, acked: 9, evicted: 10}
			if got, err := decodeClassMeta(m.encode()); err != nil || got != m {
				t.Fatalf("decodeClassMeta = %+v, %v", got, err)
			}
			g := Gap{Class: tc.class, FirstSeq: tc.seq / 2, LastSeq: tc.seq, Count: 1, EvictedAt: at}
			if got, err := decodeGap(gapKey(g.Class, g.FirstSeq), g.encodeValue()); err != nil || got != g {
				t.Fatalf("decodeGap = %+v, %v", got, err)
			}
		})
	}
}

func TestRecordKeysSortBySeq(t *testing.T) {
	for _, pair := range [][2]uint64{{1, 2}, {255, 256}, {1 << 32, 1<<32 + 1}} {
		if bytes.Compare(recordKey(ClassEvent, pair[0]), recordKey(ClassEvent, pair[1])) >= 0 {
			t.Errorf("key(%d) does not sort before key(%d)", pair[0], pair[1])
		}
	}
}

func TestDecodeRejectsForeignBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"short record key", func() error { _, err := decodeRecordKey([]byte{kindRecord, 1}); return err }()},
		{"record key class 0", func() error { _, err := decodeRecordKey(recordKey(0, 1)); return err }()},
		{"record key class 4", func() error { _, err := decodeRecordKey(recordKey(4, 1)); return err }()},
		{"record value version", func() error { _, _, err := decodeRecordValue(make([]byte, 20)); return err }()},
		{"meta short", func() error { _, err := decodeClassMeta([]byte{metaVersion}); return err }()},
		{"meta head after next", func() error {
			_, err := decodeClassMeta(classMeta{next: 1, head: 2}.encode())
			return err
		}()},
		{"gap count zero", func() error {
			_, err := decodeGap(gapKey(ClassEvent, 5), Gap{LastSeq: 6}.encodeValue())
			return err
		}()},
		{"gap last before first", func() error {
			_, err := decodeGap(gapKey(ClassEvent, 5), Gap{LastSeq: 4, Count: 1}.encodeValue())
			return err
		}()},
	} {
		if !errors.Is(tc.err, errCorrupt) {
			t.Errorf("%s: err = %v, want errCorrupt", tc.name, tc.err)
		}
	}
}

// The decoders read bytes from disk: they must reject anything they did not
// write without panicking, and what they accept must re-encode identically.

func FuzzDecodeRecordKey(f *testing.F) {
	f.Add(recordKey(ClassEvent, 7))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, k []byte) {
		id, err := decodeRecordKey(k)
		if err == nil && !bytes.Equal(recordKey(id.Class, id.Seq), k) {
			t.Fatalf("accepted %x, re-encodes as %x", k, recordKey(id.Class, id.Seq))
		}
	})
}

func FuzzDecodeRecordValue(f *testing.F) {
	f.Add(encodeRecordValue(time.Unix(1, 2), []byte("x")))
	f.Add([]byte{recordVersion})
	f.Fuzz(func(t *testing.T, v []byte) {
		at, payload, err := decodeRecordValue(v)
		if err == nil && !bytes.Equal(encodeRecordValue(at, payload), v) {
			t.Fatalf("accepted %x, re-encodes differently", v)
		}
	})
}

func FuzzDecodeClassMeta(f *testing.F) {
	f.Add(classMeta{next: 10, head: 3, liveCount: 7, liveBytes: 100}.encode())
	f.Add([]byte{metaVersion, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		m, err := decodeClassMeta(v)
		if err == nil && !bytes.Equal(m.encode(), v) {
			t.Fatalf("accepted %x, re-encodes as %x", v, m.encode())
		}
	})
}

func FuzzDecodeGap(f *testing.F) {
	g := Gap{Class: ClassFinding, FirstSeq: 3, LastSeq: 9, Count: 5, EvictedAt: time.Unix(5, 0)}
	f.Add(gapKey(g.Class, g.FirstSeq), g.encodeValue())
	f.Add([]byte{kindGap}, []byte{gapVersion})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		g, err := decodeGap(k, v)
		if err != nil {
			return
		}
		if !bytes.Equal(gapKey(g.Class, g.FirstSeq), k) || !bytes.Equal(g.encodeValue(), v) {
			t.Fatalf("accepted %x=%x, re-encodes differently", k, v)
		}
		if g.Count > g.LastSeq-g.FirstSeq+1 {
			t.Fatalf("accepted gap %+v with more records than seqs", g)
		}
	})
}
