package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// On-disk layout. Every key starts with a one-byte kind so record keys of one
// class are a contiguous, prefix-addressable range ordered by sequence number:
//
//	record: 'r' class seq(8, big-endian)           → recordVersion appendedAt(8) payload
//	meta:   'm' class                              → classMeta (fixed size)
//	gap:    'g' class firstSeq(8, big-endian)      → gapVersion lastSeq(8) count(8) evictedAt(8)
const (
	kindRecord = 'r'
	kindMeta   = 'm'
	kindGap    = 'g'

	recordKeyLen = 1 + 1 + 8
	metaKeyLen   = 1 + 1
	gapKeyLen    = 1 + 1 + 8

	recordVersion   = 1
	recordHeaderLen = 1 + 8

	metaVersion  = 1
	classMetaLen = 1 + 8*7

	gapVersion  = 1
	gapValueLen = 1 + 8*3
)

// errCorrupt marks bytes read from disk that this package did not write.
var errCorrupt = errors.New("corrupt spool data")

func recordPrefix(c Class) []byte { return []byte{kindRecord, byte(c)} }

func recordKey(c Class, seq uint64) []byte {
	k := make([]byte, recordKeyLen)
	k[0], k[1] = kindRecord, byte(c)
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

func decodeRecordKey(k []byte) (RecordID, error) {
	if len(k) != recordKeyLen || k[0] != kindRecord {
		return RecordID{}, fmt.Errorf("record key %x: %w", k, errCorrupt)
	}
	c := Class(k[1])
	if !c.valid() {
		return RecordID{}, fmt.Errorf("record key %x: class %d: %w", k, k[1], errCorrupt)
	}
	return RecordID{Class: c, Seq: binary.BigEndian.Uint64(k[2:])}, nil
}

func encodeRecordValue(appendedAt time.Time, payload []byte) []byte {
	v := make([]byte, recordHeaderLen+len(payload))
	v[0] = recordVersion
	binary.BigEndian.PutUint64(v[1:], uint64(appendedAt.UnixNano()))
	copy(v[recordHeaderLen:], payload)
	return v
}

// decodeRecordValue returns the append time and the payload, which aliases v.
func decodeRecordValue(v []byte) (time.Time, []byte, error) {
	if len(v) < recordHeaderLen || v[0] != recordVersion {
		return time.Time{}, nil, fmt.Errorf("record value of %d bytes: %w", len(v), errCorrupt)
	}
	ns := int64(binary.BigEndian.Uint64(v[1:]))
	return time.Unix(0, ns), v[recordHeaderLen:], nil
}

// classMeta is what the spool persists per class, in the same transaction as
// the records it describes, so counters and sequence numbers never disagree
// with the records after a crash.
type classMeta struct {
	next      uint64 // sequence number the next append gets
	head      uint64 // no live record has a lower sequence number (the ack/evict position)
	liveCount uint64
	liveBytes uint64 // sum of recordSize over live records
	appended  uint64
	acked     uint64
	evicted   uint64
}

func metaKey(c Class) []byte { return []byte{kindMeta, byte(c)} }

func (m classMeta) encode() []byte {
	v := make([]byte, classMetaLen)
	v[0] = metaVersion
	for i, n := range []uint64{m.next, m.head, m.liveCount, m.liveBytes, m.appended, m.acked, m.evicted} {
		binary.BigEndian.PutUint64(v[1+8*i:], n)
	}
	return v
}

func decodeClassMeta(v []byte) (classMeta, error) {
	if len(v) != classMetaLen || v[0] != metaVersion {
		return classMeta{}, fmt.Errorf("class metadata of %d bytes: %w", len(v), errCorrupt)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[1+8*i:]) }
	m := classMeta{next: u(0), head: u(1), liveCount: u(2), liveBytes: u(3), appended: u(4), acked: u(5), evicted: u(6)}
	if m.head > m.next || m.liveCount > m.next-m.head {
		return classMeta{}, fmt.Errorf("class metadata next=%d head=%d live=%d: %w", m.next, m.head, m.liveCount, errCorrupt)
	}
	return m, nil
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
