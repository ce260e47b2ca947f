package analytics

import (
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// The control plane's learned anomalies (anomalous-pod-deployment,
// anomalous-secret-access, sa-permission-anomaly) learn what each actor (an
// audit user: a person or a service account) does, in the baselines of the
// workloads (key "k8s-actor:<user>"), so that they share the learning period,
// bounds and persistence of analytics.baseline. An actor's learning period
// starts with its first request of any kind; each detector then learns the
// part of its requests it judges, and alerts on a new one once.

// actorBaseline is what the three detectors share.
type actorBaseline struct {
	store *baselineStore
	// ignored are the control plane's own identities and its controllers:
	// creating pods, reading secrets and updating roles is their job.
	ignored map[string]bool
	entry   []byte // reused buffer
	// reasons says what was new in the last detection, for the alert's
	// summary (shape runs right after the observe that raised it).
	reasons []string
}

// actorMemo is an audit event's actor as the first of the three detectors
// judged it (the others reuse it).
type actorMemo struct {
	state memoBool
	key   []byte // "k8s-actor:<user>"
	w     *workloadBaseline
}

// begin names the actor of an audit event and starts its learning period;
// false when the actor is not judged or the baseline table is full. Every
// request starts it, whichever detector judges it, so the first of the
// three to see the event does it once for all.
func (b *actorBaseline) begin(c *evalContext, now time.Time) bool {
	b.reasons = b.reasons[:0]
	m := &c.actor
	if m.state != memoUnknown {
		return m.state == memoTrue
	}
	a := c.ev.GetAudit()
	user := a.GetUser()
	if user == "" || a.GetCode() == 401 || b.ignored[user] || strings.HasPrefix(user, "system:node:") {
		// Nodes (the node authorizer) read the secrets and create the
		// mirror pods of the pods scheduled to them.
		m.state = memoFalse
		return false
	}
	m.key = append(append(m.key[:0], "k8s-actor:"...), user...)
	m.w = b.store.touch(m.key, now)
	m.state = memoOf(m.w != nil)
	return m.w != nil
}

// novel learns b.entry for the event's actor and says whether it is new
// after the learning period.
func (b *actorBaseline) novel(c *evalContext, now time.Time) bool {
	return b.store.observeIn(c.actor.w, b.entry, false, now)
}

func (b *actorBaseline) shape(al *api.Alert, _ *Rule, trigger *api.Event) {
	if len(b.reasons) > 0 {
		al.Summary = trigger.GetAudit().GetUser() + ": " + strings.Join(b.reasons, "; ")
	}
}

func auditOK(a *api.Audit) bool { return a.GetCode() >= 200 && a.GetCode() < 300 }

// podDeploymentAnomaly raises anomalous-pod-deployment: an actor creates a
// pod or workload in a namespace where it never did, or with an image from a
// repository it never deployed there.
type podDeploymentAnomaly struct {
	actorBaseline
	workloads map[string]bool // k8s_workload_resources
}

func (d *podDeploymentAnomaly) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT}
}

func (d *podDeploymentAnomaly) observe(c *evalContext, now time.Time) []*api.Event {
	a := c.ev.GetAudit()
	if !d.begin(c, now) {
		return nil
	}
	if a.GetVerb() != "create" || a.GetSubresource() != "" || !auditOK(a) || !d.workloads[a.GetResource()] {
		return nil
	}
	ns := a.GetNamespace()
	d.entry = append(append(d.entry[:0], "deploy-ns "...), ns...)
	if d.novel(c, now) {
		d.reasons = append(d.reasons, "first "+a.GetResource()+" it created in namespace "+ns)
	}
	for _, img := range c.audit().images {
		d.entry = append(append(d.entry[:0], "deploy-image "...), ns...)
		d.entry = append(d.entry, ' ')
		repo := len(d.entry)
		d.entry = appendImageRepository(d.entry, img)
		if d.novel(c, now) {
			d.reasons = append(d.reasons, "first image from "+string(d.entry[repo:])+" it deployed in "+ns+" ("+img+")")
		}
	}
	if len(d.reasons) == 0 {
		return nil
	}
	return []*api.Event{c.ev}
}

// appendImageRepository appends where an image comes from: its registry and
// its path without the image's own name, tag and digest
// (registry.local/shop/web:2 is registry.local/shop; busybox is
// docker.io/library). A CI account deploying new images of its project stays
// known; one deploying from elsewhere is new.
func appendImageRepository(b []byte, image string) []byte {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	parts := strings.Split(image, "/")
	registry := "docker.io"
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		registry, parts = parts[0], parts[1:]
	}
	if registry == "docker.io" && len(parts) == 1 {
		parts = []string{"library", parts[0]}
	}
	b = append(b, registry...)
	for _, p := range parts[:len(parts)-1] {
		b = append(append(b, '/'), p...)
	}
	return b
}

// secretAccessAnomaly raises anomalous-secret-access: an actor reads a
// secret it never read, or lists the secrets of a namespace it never listed.
type secretAccessAnomaly struct {
	actorBaseline
}

func (d *secretAccessAnomaly) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT}
}

func (d *secretAccessAnomaly) observe(c *evalContext, now time.Time) []*api.Event {
	a := c.ev.GetAudit()
	if !d.begin(c, now) {
		return nil
	}
	verb := a.GetVerb()
	if a.GetResource() != "secrets" || a.GetApiGroup() != "" || a.GetSubresource() != "" || !auditOK(a) ||
		(verb != "get" && verb != "list" && verb != "watch") {
		return nil
	}
	ns, name := a.GetNamespace(), a.GetName()
	where := "namespace " + ns
	if ns == "" {
		ns, where = "*", "every namespace"
	}
	d.entry = append(append(d.entry[:0], "secret "...), ns...)
	d.entry = append(d.entry, '/')
	if verb == "get" && name != "" {
		d.entry = append(d.entry, name...)
		where = "secret " + ns + "/" + name
	} else {
		// A list and a watch read the same: every secret of the namespace.
		d.entry = append(d.entry, '*')
		where = "the secrets of " + where
	}
	if !d.novel(c, now) {
		return nil
	}
	d.reasons = append(d.reasons, "first read ("+verb+") of "+where)
	return []*api.Event{c.ev}
}

// saPermissionAnomaly raises sa-permission-anomaly: a service account makes a
// request (verb, resource, namespace) on a sensitive resource it never made,
// whether RBAC allows it or not: a stolen token probing its permissions.
type saPermissionAnomaly struct {
	actorBaseline
	sensitive map[string]bool // k8s_sensitive_resources
	resource  []byte
}

func (d *saPermissionAnomaly) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT}
}

func (d *saPermissionAnomaly) observe(c *evalContext, now time.Time) []*api.Event {
	a := c.ev.GetAudit()
	if !strings.HasPrefix(a.GetUser(), "system:serviceaccount:") || !d.begin(c, now) {
		return nil
	}
	d.resource = append(d.resource[:0], a.GetResource()...)
	if s := a.GetSubresource(); s != "" {
		d.resource = append(append(d.resource, '/'), s...)
	}
	if !d.sensitive[string(d.resource)] {
		return nil
	}
	ns := a.GetNamespace()
	if ns == "" {
		ns = "*"
	}
	d.entry = append(append(d.entry[:0], "perm "...), a.GetVerb()...)
	d.entry = append(append(d.entry, ' '), d.resource...)
	d.entry = append(append(d.entry, ' '), ns...)
	if !d.novel(c, now) {
		return nil
	}
	outcome := "allowed"
	if !auditOK(a) {
		outcome = "answered " + strconv.Itoa(int(a.GetCode()))
	}
	where := "in namespace " + ns
	if ns == "*" {
		where = "cluster-wide"
	}
	d.reasons = append(d.reasons, "first "+a.GetVerb()+" "+string(d.resource)+" "+where+" ("+outcome+")")
	return []*api.Event{c.ev}
}
