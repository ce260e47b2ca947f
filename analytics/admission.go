package analytics

import (
	"time"

	"github.com/harrier-sec/harrier/api"
)

// admissionViolation raises admission-violation: the agent's admission
// guard found an object failing a control, and admitted it (audit mode) or
// refused it (deny mode). One event is one failed control of one request.
// Server-side dry runs create nothing and are left out: GitOps tools and
// kubectl diff make them all day.
type admissionViolation struct{}

func (admissionViolation) kinds() []api.EventKind {
	return []api.EventKind{api.EventKind_EVENT_KIND_ADMISSION}
}

func (admissionViolation) observe(c *evalContext, _ time.Time) []*api.Event {
	a := c.ev.GetAdmission()
	if a == nil || a.GetDryRun() || a.GetCheckId() == "" {
		return nil
	}
	return []*api.Event{c.ev}
}

// shape gives the alert what differs per failed control: the check's
// severity (unless a rule file set the detection's), Escape to Host for the
// checks that open a way to the node, the object under review as the alert's
// workload, a summary naming check, object, user and answer, and the check's
// fix.
func (admissionViolation) shape(al *api.Alert, r *Rule, trigger *api.Event) {
	a := trigger.GetAdmission()
	if !r.SeveritySet {
		if s, err := api.ParseSeverity(a.GetSeverity()); err == nil && s != api.Severity_SEVERITY_UNSPECIFIED {
			al.Severity = s
		}
	}
	if escapesToHost(a.GetCheckId()) && !hasTechnique(al.GetMitre(), "T1611") {
		// A new slice: the rule's is shared by every alert it raises.
		al.Mitre = append(append([]*api.Mitre(nil), al.GetMitre()...),
			&api.Mitre{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"})
	}
	ct := &api.Container{Name: a.GetContainer(), PodNamespace: a.GetNamespace()}
	if a.GetKind() == "Pod" {
		ct.PodName = a.GetName()
	} else {
		ct.WorkloadKind, ct.WorkloadName = a.GetKind(), a.GetName()
	}
	al.Container = ct
	al.Summary = admissionSummary(a)
	if fix := a.GetRemediation(); fix != "" {
		al.Remediation = fix
	}
}

// escapesToHost: the checks whose failure gives a container a way out to
// its node (MITRE T1611).
func escapesToHost(check string) bool {
	switch check {
	case "pss-privileged", "pss-host-namespaces", "pss-host-path", "pss-capabilities", "pss-proc-mount":
		return true
	}
	return false
}

func hasTechnique(ms []*api.Mitre, id string) bool {
	for _, m := range ms {
		if m.GetTechniqueId() == id {
			return true
		}
	}
	return false
}

// admissionOutcome is the guard's answer as a word.
func admissionOutcome(a *api.Admission) string {
	if a.GetAllowed() {
		return "admitted"
	}
	return "refused"
}

// admissionSummary: "alice created Pod default/priv: [pss-privileged]
// container "c": securityContext.privileged: true (audit mode: admitted)".
func admissionSummary(a *api.Admission) string {
	obj := a.GetName()
	if ns := a.GetNamespace(); ns != "" {
		obj = ns + "/" + obj
	}
	s := a.GetUser() + " " + admissionVerb(a.GetOperation()) + " " + a.GetKind() + " " + obj + ": [" + a.GetCheckId() + "]"
	if c := a.GetContainer(); c != "" {
		s += ` container "` + c + `":`
	}
	if d := a.GetDetail(); d != "" {
		s += " " + d
	} else if t := a.GetTitle(); t != "" {
		s += " " + t
	}
	return s + " (" + a.GetMode() + " mode: " + admissionOutcome(a) + ")"
}

func admissionVerb(op string) string {
	switch op {
	case "CREATE":
		return "created"
	case "UPDATE":
		return "updated"
	}
	return op
}

// admissionFields are the fields of admission events.
func admissionFields() []*field {
	a := func(c *evalContext) *api.Admission { return c.ev.GetAdmission() }
	return []*field{
		{name: "admission.check", doc: "admission guard: the failed check's ID (pss-privileged, ...)", str: func(c *evalContext) string { return a(c).GetCheckId() }},
		{name: "admission.severity", doc: "admission guard: the failed check's severity (info, low, medium, high, critical)", str: func(c *evalContext) string { return a(c).GetSeverity() }},
		{name: "admission.container", doc: "admission guard: the container that failed the check (empty for pod-level checks)", str: func(c *evalContext) string { return a(c).GetContainer() }},
		{name: "admission.detail", doc: "admission guard: what failed, e.g. securityContext.privileged: true", str: func(c *evalContext) string { return a(c).GetDetail() }},
		{name: "admission.user", doc: "admission guard: the requesting user", str: func(c *evalContext) string { return a(c).GetUser() }},
		{name: "admission.groups", typ: listField, doc: "admission guard: the requesting user's groups", list: func(c *evalContext) []string { return a(c).GetGroups() }},
		{name: "admission.operation", doc: "admission guard: CREATE or UPDATE", str: func(c *evalContext) string { return a(c).GetOperation() }},
		{name: "admission.kind", doc: "admission guard: the object's kind (Pod, Deployment, ...)", str: func(c *evalContext) string { return a(c).GetKind() }},
		{name: "admission.resource", doc: "admission guard: the resource (pods, deployments, ...)", str: func(c *evalContext) string { return a(c).GetResource() }},
		{name: "admission.namespace", doc: "admission guard: the object's namespace", str: func(c *evalContext) string { return a(c).GetNamespace() }},
		{name: "admission.name", doc: "admission guard: the object's name (its generateName prefix when not named yet)", str: func(c *evalContext) string { return a(c).GetName() }},
		{name: "admission.mode", doc: "admission guard: audit or deny", str: func(c *evalContext) string { return a(c).GetMode() }},
		{name: "admission.allowed", typ: boolField, doc: "admission guard: the object was admitted (audit mode) rather than refused", flag: func(c *evalContext) bool { return a(c).GetAllowed() }},
		{name: "admission.dry_run", typ: boolField, doc: "admission guard: a server-side dry run (nothing is created)", flag: func(c *evalContext) bool { return a(c).GetDryRun() }},
	}
}
