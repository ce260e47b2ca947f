package analytics

import (
	"net/netip"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// maxPostgresObjects bounds each table of exposedPostgres: objects past it
// are not tracked (and counted).
const maxPostgresObjects = 4096

// exposedPostgres raises exposed-postgres-trust or exposed-postgres-broad-range:
// a Service exposed outside the cluster (LoadBalancer, NodePort,
// externalIPs) selects Postgres pods whose pg_hba.conf, from a ConfigMap they
// mount (or the official image's POSTGRES_HOST_AUTH_METHOD=trust), lets in
// any client without a password (trust) or from any address (0.0.0.0/0, ::/0,
// all). The API server does not see the file in the container, so the
// detector joins what the audit events of the three objects say: whichever
// arrives last raises the alert, with the other two as evidence. It knows the
// objects written since the agent started; patches are not merged.
type exposedPostgres struct {
	broad    bool            // which of the two detections this instance raises
	images   []string        // postgres_images
	configs  map[string]*hba // "ns/name" of ConfigMaps with risky pg_hba entries
	pods     map[string]*pgPods
	services map[string]*exposedService
	// Untracked counts objects ignored because a table was full.
	Untracked uint64
	summary   string // of the last detection, for shape
}

func (d *exposedPostgres) shape(al *api.Alert, _ *Rule, _ *api.Event) { al.Summary = d.summary }

// hba is what one pg_hba.conf (or the image's environment) allows.
type hba struct {
	trust, broad []string // the risky lines
	ev           *api.Event
}

// pgPods is a Postgres pod or workload's pod template.
type pgPods struct {
	labels     map[string]string
	configMaps []string
	env        *hba // POSTGRES_HOST_AUTH_METHOD=trust
	ev         *api.Event
}

type exposedService struct {
	selector map[string]string
	ev       *api.Event
}

func newExposedPostgres(broad bool, images map[string]bool) *exposedPostgres {
	d := &exposedPostgres{broad: broad, configs: map[string]*hba{}, pods: map[string]*pgPods{}, services: map[string]*exposedService{}}
	for img := range images {
		d.images = append(d.images, img)
	}
	sort.Strings(d.images)
	return d
}

func (d *exposedPostgres) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT}
}

// evidenceOf keeps an event without its request object: the alert names the
// object and the risky lines; the object can be large.
func evidenceOf(ev *api.Event) *api.Event {
	c := proto.Clone(ev).(*api.Event)
	if a := c.GetAudit(); a != nil {
		a.RequestObject = ""
	}
	return c
}

func (d *exposedPostgres) observe(c *evalContext, _ time.Time) []*api.Event {
	a := c.ev.GetAudit()
	res := a.GetResource()
	if a.GetSubresource() != "" || !auditOK(a) || (res != "configmaps" && res != "services" && !isWorkloadResource(res)) {
		return nil
	}
	verb := a.GetVerb()
	if verb != "create" && verb != "update" && verb != "delete" {
		return nil
	}
	// Most writes cannot concern Postgres: a look at the raw object spares
	// parsing it, and a key is made only when a table holds the kind.
	if verb != "delete" && c.pgConcern == memoUnknown {
		// Both detectors ask the same of the event.
		c.pgConcern = memoOf(d.mayConcern(res, a.GetRequestObject()))
	}
	relevant := verb != "delete" && c.pgConcern == memoTrue
	if !relevant && !d.tracks(res) {
		return nil
	}
	key := a.GetNamespace() + "/" + a.GetName()
	if res != "configmaps" && res != "services" {
		key = a.GetNamespace() + "/" + res + "/" + a.GetName()
	}
	if !relevant {
		switch res {
		case "configmaps":
			delete(d.configs, key)
		case "services":
			delete(d.services, key)
		default:
			delete(d.pods, key)
		}
		return nil
	}
	obj := c.audit().obj
	if obj == nil {
		return nil
	}
	switch res {
	case "configmaps":
		h := parseHBAConfigMap(obj)
		if h == nil {
			delete(d.configs, key)
			return nil
		}
		if d.configs[key] == nil && len(d.configs) >= maxPostgresObjects {
			d.Untracked++
			return nil
		}
		h.ev = evidenceOf(c.ev)
		d.configs[key] = h
	case "services":
		sel, exposed := exposedSelector(c)
		if !exposed || len(sel) == 0 {
			delete(d.services, key)
			return nil
		}
		if d.services[key] == nil && len(d.services) >= maxPostgresObjects {
			d.Untracked++
			return nil
		}
		d.services[key] = &exposedService{selector: sel, ev: evidenceOf(c.ev)}
	default:
		p := d.postgresPods(obj)
		if p == nil {
			delete(d.pods, key)
			return nil
		}
		if d.pods[key] == nil && len(d.pods) >= maxPostgresObjects {
			d.Untracked++
			return nil
		}
		p.ev = evidenceOf(c.ev)
		d.pods[key] = p
	}
	return d.join(a.GetNamespace(), c.ev)
}

// tracks says whether a table holds objects of the resource, so deletes of
// the rest cost nothing.
func (d *exposedPostgres) tracks(res string) bool {
	switch {
	case res == "configmaps":
		return len(d.configs) > 0
	case res == "services":
		return len(d.services) > 0
	}
	return len(d.pods) > 0
}

// mayConcern says whether a written object may be one the tables keep: a
// ConfigMap naming pg_hba, an exposed Service, a workload with a Postgres
// image, judged as postgresPods judges it.
func (d *exposedPostgres) mayConcern(res, raw string) bool {
	switch res {
	case "configmaps":
		return strings.Contains(raw, "pg_hba")
	case "services":
		return strings.Contains(raw, "LoadBalancer") || strings.Contains(raw, "NodePort") || strings.Contains(raw, "externalIPs")
	}
	return imageValueContains(raw, d.images)
}

// imageValueContains says whether an "image" value of a raw JSON object
// contains one of subs: one pass over the object for the key, then the
// (short) values, rather than a pass over the whole object per image name.
// An object with escapes counts as containing, so it is parsed and judged
// properly.
func imageValueContains(raw string, subs []string) bool {
	if strings.Contains(raw, `\u`) {
		return true // a key may be escaped ("im\u0061ge"): let the parse judge
	}
	const key = `"image"`
	for {
		i := strings.Index(raw, key)
		if i < 0 {
			return false
		}
		raw = strings.TrimLeft(raw[i+len(key):], " \t\r\n")
		if !strings.HasPrefix(raw, ":") {
			continue
		}
		raw = strings.TrimLeft(raw[1:], " \t\r\n")
		if !strings.HasPrefix(raw, `"`) {
			continue
		}
		end := strings.IndexByte(raw[1:], '"')
		if end < 0 {
			return false
		}
		value := raw[1 : 1+end]
		if strings.IndexByte(value, '\\') >= 0 || containsAnyOf(strings.ToLower(value), subs) {
			return true
		}
		raw = raw[1+end:]
	}
}

func isWorkloadResource(res string) bool {
	switch res {
	case "pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs", "replicationcontrollers":
		return true
	}
	return false
}

// join finds, in the namespace of the object just written, an exposed
// service selecting Postgres pods with a risky configuration, and returns
// the evidence (the other objects' events, then the trigger).
func (d *exposedPostgres) join(ns string, trigger *api.Event) []*api.Event {
	prefix := ns + "/"
	for sk, svc := range d.services {
		if !strings.HasPrefix(sk, prefix) {
			continue
		}
		for pk, p := range d.pods {
			if !strings.HasPrefix(pk, prefix) || !selects(svc.selector, p.labels) {
				continue
			}
			var evidence []*api.Event
			var lines []string
			risky := func(h *hba) bool {
				l := h.trust
				if d.broad {
					l = h.broad
				}
				lines = append(lines, l...)
				return len(l) > 0
			}
			if p.env != nil && risky(p.env) {
				evidence = append(evidence, p.ev)
			}
			var from []string
			for _, cm := range p.configMaps {
				if h := d.configs[ns+"/"+cm]; h != nil && risky(h) {
					evidence = append(evidence, h.ev)
					from = append(from, "ConfigMap "+cm)
				}
			}
			if len(evidence) == 0 {
				continue
			}
			pa := p.ev.GetAudit()
			d.summary = "Service " + sk + " exposes Postgres " + pa.GetResource() + " " + pa.GetName()
			if len(from) > 0 {
				d.summary += " (pg_hba.conf from " + strings.Join(from, ", ") + ")"
			}
			d.summary += ": " + strings.Join(lines, "; ")
			evidence = append(evidence, p.ev, svc.ev)
			out := make([]*api.Event, 0, len(evidence)+1)
			for _, ev := range evidence {
				if !sameObject(ev, trigger) && !containsEvent(out, ev) {
					out = append(out, ev)
				}
			}
			return append(out, trigger)
		}
	}
	return nil
}

func sameObject(a, b *api.Event) bool {
	x, y := a.GetAudit(), b.GetAudit()
	return x.GetResource() == y.GetResource() && x.GetNamespace() == y.GetNamespace() && x.GetName() == y.GetName()
}

func containsEvent(l []*api.Event, ev *api.Event) bool {
	for _, e := range l {
		if e == ev {
			return true
		}
	}
	return false
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// exposedSelector is an exposed Service's selector.
func exposedSelector(c *evalContext) (map[string]string, bool) {
	v := c.audit()
	if kind, _ := v.obj["kind"].(string); kind == "Ingress" || !v.exposed {
		return nil, false
	}
	sel := map[string]string{}
	for k, val := range object(object(v.obj["spec"])["selector"]) {
		if s, ok := val.(string); ok {
			sel[k] = s
		}
	}
	return sel, true
}

// postgresPods reads a pod or workload: nil unless a container runs a
// Postgres image.
func (d *exposedPostgres) postgresPods(obj map[string]any) *pgPods {
	meta := object(obj["metadata"])
	spec := object(obj["spec"])
	podSpec, labels := spec, object(meta["labels"])
	if t := object(spec["template"]); t != nil {
		podSpec, labels = object(t["spec"]), object(object(t["metadata"])["labels"])
	}
	if t := object(object(object(spec["jobTemplate"])["spec"])["template"]); t != nil {
		podSpec, labels = object(t["spec"]), object(object(t["metadata"])["labels"])
	}
	var p *pgPods
	postgres := false
	for _, key := range []string{"initContainers", "containers"} {
		for _, ct := range objects(podSpec[key]) {
			img, _ := ct["image"].(string)
			if !containsAnyOf(strings.ToLower(img), d.images) {
				continue
			}
			if !postgres {
				postgres, p = true, &pgPods{labels: map[string]string{}}
			}
			for _, env := range objects(ct["env"]) {
				if n, _ := env["name"].(string); n == "POSTGRES_HOST_AUTH_METHOD" {
					if v, _ := env["value"].(string); v == "trust" {
						// The official image then writes "host all all all trust".
						line := "POSTGRES_HOST_AUTH_METHOD=trust (host all all all trust)"
						p.env = &hba{trust: []string{line}, broad: []string{line}}
					}
				}
			}
		}
	}
	if !postgres {
		return nil
	}
	for k, v := range labels {
		if s, ok := v.(string); ok {
			p.labels[k] = s
		}
	}
	for _, vol := range objects(podSpec["volumes"]) {
		if n, ok := object(vol["configMap"])["name"].(string); ok {
			p.configMaps = append(p.configMaps, n)
		}
		for _, src := range objects(object(vol["projected"])["sources"]) {
			if n, ok := object(src["configMap"])["name"].(string); ok {
				p.configMaps = append(p.configMaps, n)
			}
		}
	}
	return p
}

func containsAnyOf(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// parseHBAConfigMap reads the pg_hba.conf entries of a ConfigMap's data
// (keys holding "pg_hba"); nil when none is risky.
func parseHBAConfigMap(obj map[string]any) *hba {
	h := &hba{}
	for k, v := range object(obj["data"]) {
		s, ok := v.(string)
		if !ok || !strings.Contains(k, "pg_hba") {
			continue
		}
		trust, broad := parseHBA(s)
		h.trust = append(h.trust, trust...)
		h.broad = append(h.broad, broad...)
	}
	if len(h.trust) == 0 && len(h.broad) == 0 {
		return nil
	}
	return h
}

// parseHBA returns the host lines of a pg_hba.conf that trust clients from
// beyond the pod (trust from anywhere but loopback), and those that accept
// any address (0.0.0.0/0, ::/0, all) with any method but reject.
func parseHBA(conf string) (trust, broad []string) {
	for _, line := range strings.Split(conf, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[0], "host") {
			continue // local lines use the Unix socket: no service reaches them
		}
		addr, method := f[3], f[4]
		if m, err := netip.ParseAddr(f[4]); err == nil && len(f) >= 6 { // an address and a netmask
			if m.IsUnspecified() {
				addr += "/0"
			}
			method = f[5]
		}
		entry := strings.Join(f, " ")
		anyAddr := addr == "all" || addr == "0.0.0.0/0" || addr == "::/0" || addr == "::0/0"
		if p, err := netip.ParsePrefix(addr); err == nil && p.Bits() == 0 {
			anyAddr = true
		}
		if method == "trust" && !loopbackOnly(addr) {
			trust = append(trust, entry)
		}
		if anyAddr && method != "reject" {
			broad = append(broad, entry)
		}
	}
	return trust, broad
}

func loopbackOnly(addr string) bool {
	if addr == "samehost" {
		return true
	}
	if p, err := netip.ParsePrefix(addr); err == nil {
		return p.Masked().Addr().IsLoopback() && (p.Addr().Is4() && p.Bits() >= 8 || p.Bits() == 128)
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.IsLoopback()
	}
	return false
}
