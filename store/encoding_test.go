package store

import (
	"bytes"
	"errors"
	"fmt"
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
			frame := appendFrame([]byte("prefix"), tc.seq, at.UnixNano(), tc.payload)[len("prefix"):]
			h, payload, err := decodeFrame(frame, 2048)
			if err != nil || h.seq != tc.seq || !frameTime(h.appendedAt).Equal(at) || !bytes.Equal(payload, tc.payload) ||
				h.size() != int64(len(frame)) || uint64(len(frame)) != recordSize(len(tc.payload)) {
				t.Fatalf("decodeFrame = %+v, %q, %v", h, payload, err)
			}
			m := classMeta{next: max(tc.seq, 10), head: max(tc.seq/2, 1), headSeg: 3, headOff: 77, acked: 1, evicted: 2}
			if got, err := decodeClassMeta(m.encode()); err != nil || got != m {
				t.Fatalf("decodeClassMeta = %+v, %v", got, err)
			}
			id, size, err := decodeAcked(ackedKey(tc.class, tc.seq), encodeAckedValue(30))
			if err != nil || id != (RecordID{tc.class, tc.seq}) || size != 30 {
				t.Fatalf("decodeAcked = %v, %d, %v", id, size, err)
			}
			g := Gap{Class: tc.class, FirstSeq: tc.seq / 2, LastSeq: tc.seq, Count: 1, EvictedAt: at}
			if got, err := decodeGap(gapKey(g.Class, g.FirstSeq), g.encodeValue()); err != nil || got != g {
				t.Fatalf("decodeGap = %+v, %v", got, err)
			}
			if c, first, ok := parseSegmentName(segmentName(tc.class, tc.seq)); !ok || c != tc.class || first != tc.seq {
				t.Fatalf("parseSegmentName(%s) = %v %d %v", segmentName(tc.class, tc.seq), c, first, ok)
			}
		})
	}
}

func TestSegmentNamesSortBySeq(t *testing.T) {
	for _, pair := range [][2]uint64{{1, 2}, {9, 10}, {255, 256}, {1 << 32, 1<<32 + 1}} {
		if segmentName(ClassEvent, pair[0]) >= segmentName(ClassEvent, pair[1]) {
			t.Errorf("name(%d) does not sort before name(%d)", pair[0], pair[1])
		}
	}
}

func TestDecodeRejectsForeignBytes(t *testing.T) {
	good := appendFrame(nil, 5, 1, []byte("payload"))
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"short frame", func() error { _, _, err := decodeFrame(good[:10], 100); return err }()},
		{"truncated payload", func() error { _, _, err := decodeFrame(good[:len(good)-1], 100); return err }()},
		{"frame version", func() error { b := bytes.Clone(good); b[0] = 9; _, _, err := decodeFrame(b, 100); return err }()},
		{"frame over the limit", func() error { _, _, err := decodeFrame(good, 3); return err }()},
		{"frame checksum", func() error { _, _, err := decodeFrame(flipped, 100); return err }()},
		{"meta short", func() error { _, err := decodeClassMeta([]byte{metaVersion}); return err }()},
		{"meta head after next", func() error {
			_, err := decodeClassMeta(classMeta{next: 1, head: 2}.encode())
			return err
		}()},
		{"meta head zero", func() error { _, err := decodeClassMeta(classMeta{next: 1}.encode()); return err }()},
		{"acked class 4", func() error { _, _, err := decodeAcked(ackedKey(4, 1), encodeAckedValue(30)); return err }()},
		{"acked size below a header", func() error { _, _, err := decodeAcked(ackedKey(1, 1), encodeAckedValue(3)); return err }()},
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
	for _, name := range []string{"event-1.seg", "event-00000000000000000000.seg", "metric-00000000000000000001.seg", "event-00000000000000000001.tmp"} {
		if _, _, ok := parseSegmentName(name); ok {
			t.Errorf("parseSegmentName(%q) accepted it", name)
		}
	}
}

// The decoders read bytes from disk: they must reject anything they did not
// write without panicking, and what they accept must re-encode identically.

func FuzzDecodeFrame(f *testing.F) {
	f.Add(appendFrame(nil, 7, 99, []byte("x")))
	f.Add(appendFrame(nil, 1, 0, nil))
	f.Add([]byte{frameVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := decodeFrame(b, 1<<16)
		if err != nil {
			return
		}
		if re := appendFrame(nil, h.seq, h.appendedAt, payload); !bytes.Equal(re, b[:h.size()]) {
			t.Fatalf("accepted %x, re-encodes as %x", b[:h.size()], re)
		}
	})
}

func FuzzDecodeClassMeta(f *testing.F) {
	f.Add(classMeta{next: 10, head: 3, headSeg: 1, headOff: 100, acked: 2}.encode())
	f.Add([]byte{metaVersion, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		m, err := decodeClassMeta(v)
		if err == nil && !bytes.Equal(m.encode(), v) {
			t.Fatalf("accepted %x, re-encodes as %x", v, m.encode())
		}
	})
}

func FuzzDecodeAcked(f *testing.F) {
	f.Add(ackedKey(ClassEvent, 7), encodeAckedValue(40))
	f.Add([]byte{kindAcked}, []byte{ackedVersion})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		id, size, err := decodeAcked(k, v)
		if err != nil {
			return
		}
		if !bytes.Equal(ackedKey(id.Class, id.Seq), k) || !bytes.Equal(encodeAckedValue(size), v) {
			t.Fatalf("accepted %x=%x, re-encodes differently", k, v)
		}
	})
}

func FuzzParseSegmentName(f *testing.F) {
	f.Add(segmentName(ClassAlert, 12))
	f.Add("event-x.seg")
	f.Fuzz(func(t *testing.T, name string) {
		c, first, ok := parseSegmentName(name)
		if ok && segmentName(c, first) != name {
			t.Fatalf("accepted %q, re-encodes as %q", name, segmentName(c, first))
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

// decodeFrame (tests only; the spool reads frames with frameReader)
// decodes one whole frame at the start of b and returns its
// header, its payload (aliasing b) and its size.
func decodeFrame(b []byte, maxPayload int) (frameHeader, []byte, error) {
	h, err := decodeFrameHeader(b, maxPayload)
	if err != nil {
		return h, nil, err
	}
	if int64(len(b)) < h.size() {
		return h, nil, fmt.Errorf("frame seq %d: %d of %d bytes: %w", h.seq, len(b), h.size(), errCorrupt)
	}
	payload := b[frameHeaderLen:h.size()]
	if err := verifyFrame(h, b[:frameHeaderLen], payload); err != nil {
		return h, nil, err
	}
	return h, payload, nil
}
