package posture

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// FindingID is the stable ID of a finding: the same check on the same
// object (by kind, namespace and name, not UID, so a re-created object
// keeps its findings) and container in the same cluster.
func FindingID(checkID, cluster string, obj *api.ObjectRef, container string) string {
	h := sha256.New()
	for _, s := range []string{checkID, cluster, obj.GetKind(), obj.GetNamespace(), obj.GetName(), container} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// evaluator holds what one evaluation shares.
type evaluator struct {
	cfg           Config
	cluster, node string
	seen          *timestamppb.Timestamp
	out           []*api.Finding
	// saAutomount is the automountServiceAccountToken of known service
	// accounts, by "namespace/name"; a missing entry is unknown.
	saAutomount map[string]*bool
}

func newEvaluator(cfg Config, cluster, node string, t time.Time) *evaluator {
	e := &evaluator{cfg: cfg, cluster: cluster, node: node}
	if !t.IsZero() {
		e.seen = timestamppb.New(t)
	}
	return e
}

// object collects the findings of one object, merging repeated failures of
// one check on one container into one finding (its details joined, the
// highest severity kept), so each ID is unique.
type object struct {
	e     *evaluator
	ref   *api.ObjectRef
	byKey map[string]*api.Finding
	order []string
}

func (e *evaluator) object(ref *api.ObjectRef) *object {
	return &object{e: e, ref: ref, byKey: map[string]*api.Finding{}}
}

// on reports whether check runs on this object.
func (o *object) on(checkID string) bool {
	c, ok := lookup(checkID)
	if !ok || !o.e.cfg.enabled(checkID) {
		return false
	}
	return !(c.Exemptible && o.e.cfg.exempt(o.ref.GetNamespace()))
}

// fail records a failed control; sev 0 means the check's default.
func (o *object) fail(checkID, container, detail string, sev api.Severity) {
	if !o.on(checkID) {
		return
	}
	c, _ := lookup(checkID)
	if sev == api.Severity_SEVERITY_UNSPECIFIED {
		sev = c.Severity
	}
	k := checkID + "\x00" + container
	if f, ok := o.byKey[k]; ok {
		f.Detail += "; " + detail
		f.Severity = max(f.Severity, sev)
		return
	}
	o.byKey[k] = &api.Finding{
		Id: FindingID(checkID, o.e.cluster, o.ref, container), CheckId: checkID, Title: c.Title,
		Severity: sev, Category: c.Category, Object: o.ref, Container: container, Detail: detail,
		Remediation: c.Remediation, Standards: slices.Clone(c.Standards), Cluster: o.e.cluster, Node: o.e.node,
		LastSeen: o.e.seen,
	}
	o.order = append(o.order, k)
}

func (o *object) flush() {
	for _, k := range o.order {
		o.e.out = append(o.e.out, o.byKey[k])
	}
}

// sortFindings orders findings by object, check and container, so output
// is deterministic.
func sortFindings(fs []*api.Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		for _, p := range [][2]string{
			{a.GetObject().GetKind(), b.GetObject().GetKind()},
			{a.GetObject().GetNamespace(), b.GetObject().GetNamespace()},
			{a.GetObject().GetName(), b.GetObject().GetName()},
			{a.GetCheckId(), b.GetCheckId()},
			{a.GetContainer(), b.GetContainer()},
		} {
			if c := strings.Compare(p[0], p[1]); c != 0 {
				return c < 0
			}
		}
		return false
	})
}
