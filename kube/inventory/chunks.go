package inventory

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// DefaultMaxPerChunk is Chunks' default bound on the items plus findings of
// one chunk. Items' attributes are bounded (512 bytes each), so 200 stay
// far below MaxChunkBytes in practice; MaxChunkBytes cuts a chunk early
// when they do not.
const DefaultMaxPerChunk = 200

// MaxChunkBytes bounds the encoded size of one chunk's items and findings,
// below the agent spool's 256 KiB record limit (store.DefaultMaxRecordBytes)
// with room for the record's framing. A single item or finding larger than
// this still gets a chunk of its own.
const MaxChunkBytes = 192 << 10

// Chunks cuts a snapshot's items and findings into chunks of at most
// maxPerChunk entries (<= 0: DefaultMaxPerChunk) and about MaxChunkBytes,
// items first. All chunks share snapshotID, cluster, node and t, and carry
// part (0-based) and parts. There is always at least one chunk, so an
// empty snapshot still replaces the previous one. Findings get snapshotID
// as their snapshot_id. Snapshot.Chunks also sets chunks[0].Errors.
func Chunks(cluster, node, snapshotID string, t time.Time, items []*api.InventoryItem, findings []*api.Finding, maxPerChunk int) []*api.InventoryChunk {
	if maxPerChunk <= 0 {
		maxPerChunk = DefaultMaxPerChunk
	}
	ts := timestamppb.New(t)
	var chunks []*api.InventoryChunk
	var cur *api.InventoryChunk
	n, size := 0, 0
	next := func(s int) {
		if cur == nil || n >= maxPerChunk || (n > 0 && size+s > MaxChunkBytes) {
			cur = &api.InventoryChunk{Cluster: cluster, SnapshotId: snapshotID, Time: ts, Node: node}
			chunks = append(chunks, cur)
			n, size = 0, 0
		}
		n++
		size += s
	}
	for _, it := range items {
		if it == nil {
			continue
		}
		next(proto.Size(it))
		cur.Items = append(cur.Items, it)
	}
	for _, f := range findings {
		if f == nil {
			continue
		}
		f.SnapshotId = snapshotID
		next(proto.Size(f))
		cur.Findings = append(cur.Findings, f)
	}
	if len(chunks) == 0 {
		chunks = append(chunks, &api.InventoryChunk{Cluster: cluster, SnapshotId: snapshotID, Time: ts, Node: node})
	}
	for i, c := range chunks {
		c.Part, c.Parts = uint32(i), uint32(len(chunks))
	}
	return chunks
}

// Chunks is the whole snapshot as chunks: its items and the findings
// evaluated on it, stamped with the snapshot's time, and the kinds that
// could not be listed on part 0.
func (s *Snapshot) Chunks(cluster, node, snapshotID string, findings []*api.Finding, maxPerChunk int) []*api.InventoryChunk {
	chunks := Chunks(cluster, node, snapshotID, s.Time, s.Items(), findings, maxPerChunk)
	chunks[0].Errors = s.ErrorMap()
	return chunks
}
