package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Metadata layout in Badger (payloads are in segment files, segment.go).
// Every key starts with a one-byte kind:
//
//	meta:  'm' class                          → classMeta (fixed size)
//	acked: 'a' class seq(8, big-endian)       → ackedVersion frameSize(4)
//	gap:   'g' class firstSeq(8, big-endian)  → gapVersion lastSeq(8) count(8) evictedAt(8)
//	id:    'i'                                → the spool's ID (spoolIDLen random bytes)
//
// An acked key marks a record acknowledged out of order, above its class's
// head; it is deleted when the head passes it.
const (
	kindMeta  = 'm'
	kindAcked = 'a'
	kindGap   = 'g'
	kindID    = 'i'

	spoolIDLen = 16

	metaKeyLen  = 1 + 1
	ackedKeyLen = 1 + 1 + 8
	gapKeyLen   = 1 + 1 + 8

	metaVersion  = 2
	classMetaLen = 1 + 8*6

	ackedVersion  = 1
	ackedValueLen = 1 + 4

	gapVersion  = 1
	gapValueLen = 1 + 8*3
)

// errCorrupt marks bytes read from disk that this package did not write.
var errCorrupt = errors.New("corrupt spool data")

// classMeta is what the spool persists per class on every acknowledgement
// and eviction. The append position is not in it: the segment files are the
// truth for what was appended (next is a floor for when they are all gone).
type classMeta struct {
	next    uint64 // next sequence number, as of the write
	head    uint64 // no live record has a lower sequence number (the ack/evict position)
	headSeg uint64 // first seq of the segment holding head (a hint, checked at Open)
	headOff uint64 // offset of head's frame in that segment (a hint)
	acked   uint64
	evicted uint64
}

func metaKey(c Class) []byte { return []byte{kindMeta, byte(c)} }

func (m classMeta) encode() []byte {
	v := make([]byte, classMetaLen)
	v[0] = metaVersion
	for i, n := range []uint64{m.next, m.head, m.headSeg, m.headOff, m.acked, m.evicted} {
		binary.BigEndian.PutUint64(v[1+8*i:], n)
	}
	return v
}

func decodeClassMeta(v []byte) (classMeta, error) {
	if len(v) != classMetaLen || v[0] != metaVersion {
		return classMeta{}, fmt.Errorf("class metadata of %d bytes: %w", len(v), errCorrupt)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[1+8*i:]) }
	m := classMeta{next: u(0), head: u(1), headSeg: u(2), headOff: u(3), acked: u(4), evicted: u(5)}
	if m.head == 0 || m.head > m.next {
		return classMeta{}, fmt.Errorf("class metadata next=%d head=%d: %w", m.next, m.head, errCorrupt)
	}
	return m, nil
}

func ackedKey(c Class, seq uint64) []byte {
	k := make([]byte, ackedKeyLen)
	k[0], k[1] = kindAcked, byte(c)
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

func encodeAckedValue(frameSize uint32) []byte {
	v := make([]byte, ackedValueLen)
	v[0] = ackedVersion
	binary.BigEndian.PutUint32(v[1:], frameSize)
	return v
}

// decodeAcked decodes an acked key and value.
func decodeAcked(k, v []byte) (RecordID, uint32, error) {
	if len(k) != ackedKeyLen || k[0] != kindAcked || !Class(k[1]).valid() {
		return RecordID{}, 0, fmt.Errorf("acked key %x: %w", k, errCorrupt)
	}
	if len(v) != ackedValueLen || v[0] != ackedVersion {
		return RecordID{}, 0, fmt.Errorf("acked value of %d bytes: %w", len(v), errCorrupt)
	}
	id := RecordID{Class: Class(k[1]), Seq: binary.BigEndian.Uint64(k[2:])}
	size := binary.BigEndian.Uint32(v[1:])
	if id.Seq == 0 || size < frameHeaderLen {
		return RecordID{}, 0, fmt.Errorf("acked record %s/%d of %d bytes: %w", id.Class, id.Seq, size, errCorrupt)
	}
	return id, size, nil
}

func gapPrefix() []byte { return []byte{kindGap} }

func gapKey(c Class, first uint64) []byte {
	k := make([]byte, gapKeyLen)
	k[0], k[1] = kindGap, byte(c)
	binary.BigEndian.PutUint64(k[2:], first)
	return k
}

func (g Gap) encodeValue() []byte {
	v := make([]byte, gapValueLen)
	v[0] = gapVersion
	binary.BigEndian.PutUint64(v[1:], g.LastSeq)
	binary.BigEndian.PutUint64(v[9:], g.Count)
	binary.BigEndian.PutUint64(v[17:], uint64(g.EvictedAt.UnixNano()))
	return v
}

func decodeGap(k, v []byte) (Gap, error) {
	if len(k) != gapKeyLen || k[0] != kindGap || !Class(k[1]).valid() {
		return Gap{}, fmt.Errorf("gap key %x: %w", k, errCorrupt)
	}
	if len(v) != gapValueLen || v[0] != gapVersion {
		return Gap{}, fmt.Errorf("gap value of %d bytes: %w", len(v), errCorrupt)
	}
	g := Gap{
		Class:     Class(k[1]),
		FirstSeq:  binary.BigEndian.Uint64(k[2:]),
		LastSeq:   binary.BigEndian.Uint64(v[1:]),
		Count:     binary.BigEndian.Uint64(v[9:]),
		EvictedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[17:]))),
	}
	if g.LastSeq < g.FirstSeq || g.Count == 0 || g.Count-1 > g.LastSeq-g.FirstSeq {
		return Gap{}, fmt.Errorf("gap %d..%d count %d: %w", g.FirstSeq, g.LastSeq, g.Count, errCorrupt)
	}
	return g, nil
}
