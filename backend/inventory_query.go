package backend

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// currentMetas reads every cluster's current snapshot meta (one cluster
// when cluster is non-empty) in txn.
func currentMetas(txn *badger.Txn, cluster string) (map[string]clusterMeta, error) {
	out := map[string]clusterMeta{}
	if cluster != "" {
		m, ok, err := loadClusterMeta(txn, cluster)
		if ok {
			out[cluster] = m
		}
		return out, err
	}
	for item := range badgerkv.Prefix(txn, key(prefixCluster)) {
		cl := string(bytes.TrimPrefix(item.Key(), key(prefixCluster)))
		err := item.Value(func(v []byte) error {
			m, err := decodeClusterMeta(v)
			out[cl] = m
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("snapshot meta %q: %w", cl, err)
		}
	}
	return out, nil
}

// Snapshots describes every cluster's current snapshot, ordered by cluster.
func (s *BadgerStore) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []SnapshotInfo
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, "")
		for cl, m := range metas {
			out = append(out, m.info(cl))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out, nil
}

// Inventory scans the current snapshots' items. A site's inventory is
// thousands of objects; a fleet store would index.
func (s *BadgerStore) Inventory(ctx context.Context, q InventoryQuery) ([]InventoryEntry, error) {
	var out []InventoryEntry
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, q.Cluster)
		if err != nil {
			return err
		}
		return eachCurrent(ctx, txn, metas, prefixItem, func(cl string, item *api.InventoryItem) {
			if inventoryMatches(item, q) {
				out = append(out, InventoryEntry{Cluster: cl, Item: item})
			}
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list inventory: %w", err)
	}
	slices.SortFunc(out, func(a, b InventoryEntry) int {
		x, y := a.Item.GetObject(), b.Item.GetObject()
		return cmp.Or(strings.Compare(a.Cluster, b.Cluster), strings.Compare(x.GetKind(), y.GetKind()),
			strings.Compare(x.GetNamespace(), y.GetNamespace()), strings.Compare(x.GetName(), y.GetName()),
			strings.Compare(x.GetUid(), y.GetUid()))
	})
	if l := effectiveLimit(q.Limit); len(out) > l {
		out = out[:l]
	}
	return out, nil
}

// inventoryMatches is the one definition of InventoryQuery's filters.
func inventoryMatches(it *api.InventoryItem, q InventoryQuery) bool {
	o := it.GetObject()
	if q.Kind != "" && !strings.EqualFold(o.GetKind(), q.Kind) {
		return false
	}
	if q.Namespace != "" && o.GetNamespace() != q.Namespace {
		return false
	}
	if q.Name != "" && !strings.Contains(o.GetName(), q.Name) {
		return false
	}
	if q.Node != "" && it.GetNode() != q.Node {
		return false
	}
	if q.Image != "" && !slices.ContainsFunc(it.GetImages(), func(img string) bool { return strings.Contains(img, q.Image) }) {
		return false
	}
	if q.Workloads && (len(it.GetImages()) == 0 || it.GetOwner().GetKind() != "") {
		return false
	}
	return true
}

// Findings scans the current snapshots' findings, most severe first, then
// by object.
func (s *BadgerStore) Findings(ctx context.Context, q FindingQuery) ([]*api.Finding, error) {
	var out []*api.Finding
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, q.Cluster)
		if err != nil {
			return err
		}
		if err := eachCurrent(ctx, txn, metas, prefixFinding, func(_ string, f *api.Finding) {
			if findingMatches(f, q) {
				out = append(out, f)
			}
		}); err != nil {
			return err
		}
		nodes, err := s.nodeFindings(ctx, txn)
		if err != nil {
			return err
		}
		for _, f := range nodes {
			if (q.Cluster == "" || f.GetCluster() == q.Cluster) && findingMatches(f, q) {
				out = append(out, f)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	slices.SortFunc(out, compareFindings)
	if l := effectiveLimit(q.Limit); len(out) > l {
		out = out[:l]
	}
	return out, nil
}

func compareFindings(a, b *api.Finding) int {
	x, y := a.GetObject(), b.GetObject()
	return cmp.Or(cmp.Compare(b.GetSeverity(), a.GetSeverity()),
		strings.Compare(a.GetCluster(), b.GetCluster()), strings.Compare(x.GetKind(), y.GetKind()),
		strings.Compare(x.GetNamespace(), y.GetNamespace()), strings.Compare(x.GetName(), y.GetName()),
		strings.Compare(a.GetContainer(), b.GetContainer()), strings.Compare(a.GetCheckId(), b.GetCheckId()),
		strings.Compare(a.GetId(), b.GetId()))
}

// findingMatches is the one definition of FindingQuery's filters.
func findingMatches(f *api.Finding, q FindingQuery) bool {
	switch {
	case q.Check != "" && f.GetCheckId() != q.Check,
		f.GetSeverity() < q.Severity,
		q.Namespace != "" && f.GetObject().GetNamespace() != q.Namespace,
		q.Kind != "" && !strings.EqualFold(f.GetObject().GetKind(), q.Kind),
		q.Category != "" && f.GetCategory() != q.Category:
		return false
	}
	return true
}

// Finding returns one finding of a current snapshot by ID. Finding IDs
// include the cluster, so the first cluster holding the ID is the one.
func (s *BadgerStore) Finding(ctx context.Context, id string) (*api.Finding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var f *api.Finding
	err := s.db.View(func(txn *badger.Txn) error {
		metas, err := currentMetas(txn, "")
		if err != nil {
			return err
		}
		clusters := make([]string, 0, len(metas))
		for cl := range metas {
			clusters = append(clusters, cl)
		}
		slices.Sort(clusters)
		for _, cl := range clusters {
			f, err = getProto[api.Finding](txn, findingKey(cl, metas[cl].Gen, id))
			if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		nodes, err := s.nodeFindings(ctx, txn)
		if err != nil {
			return err
		}
		for _, nf := range nodes {
			if nf.GetId() == id {
				f = nf
				return nil
			}
		}
		return ErrNotFound
	})
	if err != nil {
		return nil, fmt.Errorf("finding %q: %w", id, err)
	}
	return f, nil
}

// nodeFindingsMaxAge is how long a silent agent's node findings are still
// listed: a node that has not sent a heartbeat for a day is likely gone.
const nodeFindingsMaxAge = 24 * time.Hour

// nodeFindings are the findings agents report about their own node (the
// kubelet's settings) in their last heartbeat, which replaces the previous
// heartbeat's.
func (s *BadgerStore) nodeFindings(ctx context.Context, txn *badger.Txn) ([]*api.Finding, error) {
	agents, err := readAgents(ctx, txn)
	if err != nil {
		return nil, err
	}
	var out []*api.Finding
	now := s.cfg.Now()
	for _, info := range agents {
		if now.Sub(info.LastSeen) > nodeFindingsMaxAge {
			continue
		}
		for _, f := range info.Health.GetNodeFindings() {
			if f.GetId() == "" {
				f.Id = fallbackFindingID(f)
			}
			out = append(out, f)
		}
	}
	return out, nil
}

// eachCurrent decodes every entry under prefix (prefixItem: items,
// prefixFinding: findings) of each cluster's current generation, as metas
// names them, and passes it to fn with its cluster.
func eachCurrent[M any, PM interface {
	*M
	proto.Message
}](ctx context.Context, txn *badger.Txn, metas map[string]clusterMeta, prefix string, fn func(cluster string, m PM)) error {
	for cl, meta := range metas {
		for item := range badgerkv.Prefix(txn, genPrefix(prefix, cl, meta.Gen)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			m := PM(new(M))
			if err := item.Value(func(v []byte) error { return proto.Unmarshal(v, m) }); err != nil {
				return fmt.Errorf("%s %q: %w", entryNoun(prefix), item.Key(), err)
			}
			fn(cl, m)
		}
	}
	return nil
}

// entryNoun names what a generation's keys under prefix hold, for errors.
func entryNoun(prefix string) string {
	if prefix == prefixItem {
		return "item"
	}
	return "finding"
}
