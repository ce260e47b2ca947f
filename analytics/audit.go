package analytics

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// auditView is what rules read of a Kubernetes audit event's request
// object, parsed once per event on first use. Derived facts (privileged
// containers, host paths, images, exposure, RBAC rules) are computed in Go so
// that rules need not walk the object's optional fields in CEL.
type auditView struct {
	parsed        bool
	obj           map[string]any
	privileged    bool
	hostPaths     []string
	images        []string
	exposed       bool
	selector      []string
	roleVerbs     []string
	roleResources []string
	roleRef       string
}

func (c *evalContext) audit() *auditView {
	v := &c.auditV
	if v.parsed {
		return v
	}
	*v = auditView{parsed: true}
	s := c.ev.GetAudit().GetRequestObject()
	if s == "" || c.ev.GetAudit().GetObjectTruncated() {
		return v
	}
	if json.Unmarshal([]byte(s), &v.obj) != nil {
		v.obj = nil
		return v
	}
	for _, spec := range podSpecs(v.obj) {
		for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
			for _, ct := range objects(spec[key]) {
				if img, ok := ct["image"].(string); ok {
					v.images = append(v.images, img)
				}
				sc := object(ct["securityContext"])
				if b, _ := sc["privileged"].(bool); b {
					v.privileged = true
				}
				for _, capName := range strs(object(sc["capabilities"])["add"]) {
					if n := strings.TrimPrefix(strings.ToUpper(capName), "CAP_"); n == "SYS_ADMIN" || n == "ALL" {
						v.privileged = true
					}
				}
			}
		}
		for _, vol := range objects(spec["volumes"]) {
			if p, ok := object(vol["hostPath"])["path"].(string); ok {
				v.hostPaths = append(v.hostPaths, p)
			}
		}
	}
	spec := object(v.obj["spec"])
	switch t, _ := spec["type"].(string); {
	case t == "LoadBalancer" || t == "NodePort" || len(objectsOrStrs(spec["externalIPs"])) > 0:
		v.exposed = true
	}
	if kind, _ := v.obj["kind"].(string); kind == "Ingress" {
		v.exposed = true
	}
	if sel := object(spec["selector"]); sel != nil {
		// A Service's selector is a plain map; a workload's has matchLabels.
		if ml := object(sel["matchLabels"]); ml != nil {
			sel = ml
		}
		for k, val := range sel {
			if s, ok := val.(string); ok {
				v.selector = append(v.selector, k+"="+s)
			}
		}
		sort.Strings(v.selector)
	}
	for _, r := range objects(v.obj["rules"]) {
		v.roleVerbs = append(v.roleVerbs, strs(r["verbs"])...)
		v.roleResources = append(v.roleResources, strs(r["resources"])...)
	}
	v.roleRef, _ = object(v.obj["roleRef"])["name"].(string)
	return v
}

// podSpecs finds the pod specs in a Pod, a workload's template, or a
// CronJob's job template.
func podSpecs(obj map[string]any) []map[string]any {
	spec := object(obj["spec"])
	if spec == nil {
		return nil
	}
	var out []map[string]any
	if _, ok := spec["containers"]; ok {
		out = append(out, spec)
	}
	if t := object(object(spec["template"])["spec"]); t != nil {
		out = append(out, t)
	}
	if t := object(object(object(object(spec["jobTemplate"])["spec"])["template"])["spec"]); t != nil {
		out = append(out, t)
	}
	return out
}

func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func objects(v any) []map[string]any {
	l, _ := v.([]any)
	var out []map[string]any
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func objectsOrStrs(v any) []any { l, _ := v.([]any); return l }

// auditFields are the fields of audit events.
func auditFields() []*field {
	a := func(c *evalContext) *api.Audit { return c.ev.GetAudit() }
	return []*field{
		{name: "audit.verb", doc: "Kubernetes audit: verb (get, list, create, update, patch, delete, ...)", str: func(c *evalContext) string { return a(c).GetVerb() }},
		{name: "audit.user", doc: "Kubernetes audit: user name (system:serviceaccount:NS:NAME for service accounts)", str: func(c *evalContext) string { return a(c).GetUser() }},
		{name: "audit.groups", typ: listField, doc: "Kubernetes audit: the user's groups", list: func(c *evalContext) []string { return a(c).GetGroups() }},
		{name: "audit.user_agent", doc: "Kubernetes audit: the client's user agent", str: func(c *evalContext) string { return a(c).GetUserAgent() }},
		{name: "audit.source_ips", typ: listField, doc: "Kubernetes audit: the client's addresses", list: func(c *evalContext) []string { return a(c).GetSourceIps() }},
		{name: "audit.resource", doc: "Kubernetes audit: resource (pods, roles, ...)", str: func(c *evalContext) string { return a(c).GetResource() }},
		{name: "audit.subresource", doc: "Kubernetes audit: subresource (exec, status, ...)", str: func(c *evalContext) string { return a(c).GetSubresource() }},
		{name: "audit.namespace", doc: "Kubernetes audit: namespace of the object", str: func(c *evalContext) string { return a(c).GetNamespace() }},
		{name: "audit.name", doc: "Kubernetes audit: name of the object", str: func(c *evalContext) string { return a(c).GetName() }},
		{name: "audit.api_group", doc: "Kubernetes audit: API group of the object (\"\" for core)", str: func(c *evalContext) string { return a(c).GetApiGroup() }},
		{name: "audit.uri", doc: "Kubernetes audit: request URI", str: func(c *evalContext) string { return a(c).GetRequestUri() }},
		{name: "audit.stage", doc: "Kubernetes audit: stage (ResponseComplete, ...)", str: func(c *evalContext) string { return a(c).GetStage() }},
		{name: "audit.code", typ: intField, doc: "Kubernetes audit: HTTP response code", num: func(c *evalContext) int64 { return int64(a(c).GetCode()) }},
		{name: "audit.object", doc: "Kubernetes audit: the request object as compact JSON (empty unless the audit policy records requests)", str: func(c *evalContext) string { return a(c).GetRequestObject() }},
		{name: "audit.obj", typ: dynField, doc: "Kubernetes audit: the request object parsed (a map; use has() for optional fields)", dyn: func(c *evalContext) any {
			if o := c.audit().obj; o != nil {
				return o
			}
			return map[string]any{}
		}},
		{name: "audit.privileged", typ: boolField, doc: "Kubernetes audit: the request object (pod or pod template) has a privileged container or adds CAP_SYS_ADMIN/ALL", flag: func(c *evalContext) bool { return c.audit().privileged }},
		{name: "audit.host_paths", typ: listField, doc: "Kubernetes audit: hostPath volume paths in the request object's pod specs", list: func(c *evalContext) []string { return c.audit().hostPaths }},
		{name: "audit.images", typ: listField, doc: "Kubernetes audit: container images in the request object's pod specs", list: func(c *evalContext) []string { return c.audit().images }},
		{name: "audit.exposed", typ: boolField, doc: "Kubernetes audit: the request object is a LoadBalancer/NodePort service, has externalIPs, or is an ingress", flag: func(c *evalContext) bool { return c.audit().exposed }},
		{name: "audit.selector", typ: listField, doc: "Kubernetes audit: the request object's selector as key=value items", list: func(c *evalContext) []string { return c.audit().selector }},
		{name: "audit.role_verbs", typ: listField, doc: "Kubernetes audit: verbs of a Role/ClusterRole's rules", list: func(c *evalContext) []string { return c.audit().roleVerbs }},
		{name: "audit.role_resources", typ: listField, doc: "Kubernetes audit: resources of a Role/ClusterRole's rules", list: func(c *evalContext) []string { return c.audit().roleResources }},
		{name: "audit.role_ref", doc: "Kubernetes audit: the role a (Cluster)RoleBinding refers to", str: func(c *evalContext) string { return c.audit().roleRef }},
	}
}

// saBaseline raises sa-anomalous-op: after its learning period, a service
// account makes a kind of request (verb on group/resource/subresource) it
// never made. Its baseline lives with the workloads' (key "k8s-sa:<user>").
type saBaseline struct {
	store      *baselineStore
	key, entry []byte // reused buffers
}

func (b *saBaseline) kinds() []api.EventKind { return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT} }

func (b *saBaseline) observe(c *evalContext, now time.Time) []*api.Event {
	a := c.ev.GetAudit()
	user := a.GetUser()
	if !strings.HasPrefix(user, "system:serviceaccount:") || a.GetCode() == 401 || a.GetCode() == 403 || a.GetResource() == "" {
		return nil
	}
	b.key = append(append(b.key[:0], "k8s-sa:"...), user...)
	b.entry = append(b.entry[:0], a.GetVerb()...)
	b.entry = append(b.entry, ' ')
	b.entry = append(b.entry, a.GetApiGroup()...)
	b.entry = append(b.entry, '/')
	b.entry = append(b.entry, a.GetResource()...)
	if s := a.GetSubresource(); s != "" {
		b.entry = append(append(b.entry, '/'), s...)
	}
	if b.store.observe(b.key, b.entry, false, now) {
		return []*api.Event{c.ev}
	}
	return nil
}
