package analytics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// admissionEv is the event the agent makes of one failed control: alice
// creates Pod default/priv with a privileged container, admitted in audit
// mode.
func admissionEv(opts ...func(*api.Admission)) *api.Event {
	a := &api.Admission{RequestUid: "u1", Operation: "CREATE", User: "alice", Groups: []string{"system:authenticated"},
		Resource: "pods", Kind: "Pod", Namespace: "default", Name: "priv", Mode: "audit", Allowed: true,
		CheckId: "pss-privileged", Title: "Privileged container", Severity: "high", Container: "c",
		Detail: "securityContext.privileged: true", Remediation: "set securityContext.privileged to false", FindingId: "f1"}
	for _, o := range opts {
		o(a)
	}
	return &api.Event{Kind: api.EventKind_EVENT_KIND_ADMISSION, Time: timestamppb.New(t0), Node: "node-a", Detail: &api.Event_Admission{Admission: a}}
}

func TestAdmissionViolation(t *testing.T) {
	tests := []struct {
		name      string
		evs       []*api.Event
		alerts    int // new alerts
		severity  api.Severity
		escape    bool   // MITRE carries T1611 besides T1610
		summary   string // part of the first alert's summary
		container *api.Container
	}{
		{"privileged pod admitted", []*api.Event{admissionEv()}, 1, api.Severity_SEVERITY_HIGH, true,
			`alice created Pod default/priv: [pss-privileged] container "c": securityContext.privileged: true (audit mode: admitted)`,
			&api.Container{Name: "c", PodName: "priv", PodNamespace: "default"}},
		{"the check's severity", []*api.Event{admissionEv(func(a *api.Admission) {
			a.CheckId, a.Severity, a.Detail, a.Container = "image-latest", "medium", `image "nginx" has no tag`, "web"
		})}, 1, api.Severity_SEVERITY_MEDIUM, false, `[image-latest] container "web": image "nginx" has no tag`, nil},
		{"refused in deny mode", []*api.Event{admissionEv(func(a *api.Admission) { a.Mode, a.Allowed = "deny", false })},
			1, api.Severity_SEVERITY_HIGH, true, "(deny mode: refused)", nil},
		{"deployment template", []*api.Event{admissionEv(func(a *api.Admission) {
			a.Kind, a.Resource, a.ApiGroup, a.Name, a.CheckId, a.Container, a.Detail = "Deployment", "deployments", "apps", "web", "pss-host-namespaces", "", "hostPID: true"
		})}, 1, api.Severity_SEVERITY_HIGH, true, "alice created Deployment default/web: [pss-host-namespaces] hostPID: true",
			&api.Container{PodNamespace: "default", WorkloadKind: "Deployment", WorkloadName: "web"}},
		{"no severity: the catalogue's", []*api.Event{admissionEv(func(a *api.Admission) { a.Severity = "" })}, 1, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"dry run", []*api.Event{admissionEv(func(a *api.Admission) { a.DryRun = true })}, 0, 0, false, "", nil},
		{"same request again, and a retry", []*api.Event{admissionEv(), admissionEv(func(a *api.Admission) { a.RequestUid = "u2" })}, 1, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"same object, another check", []*api.Event{admissionEv(), admissionEv(func(a *api.Admission) {
			a.CheckId, a.Severity = "pss-run-as-non-root", "medium"
		})}, 2, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"same check, another object", []*api.Event{admissionEv(), admissionEv(func(a *api.Admission) { a.Name = "priv2" })}, 2, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"same check and object, another user", []*api.Event{admissionEv(), admissionEv(func(a *api.Admission) { a.User = "bob" })}, 2, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"admitted, then refused", []*api.Event{admissionEv(), admissionEv(func(a *api.Admission) { a.Mode, a.Allowed = "deny", false })}, 2, api.Severity_SEVERITY_HIGH, true, "", nil},
		{"a controller's pods from one template", []*api.Event{
			admissionEv(func(a *api.Admission) {
				a.Name, a.User = "web-7d4f-", "system:serviceaccount:kube-system:replicaset-controller"
			}),
			admissionEv(func(a *api.Admission) {
				a.Name, a.User = "web-7d4f-", "system:serviceaccount:kube-system:replicaset-controller"
			}),
		}, 1, api.Severity_SEVERITY_HIGH, true, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			_, alerts := run(e, tt.evs...)
			if len(alerts) != tt.alerts {
				t.Fatalf("%d alerts, want %d: %v", len(alerts), tt.alerts, alerts)
			}
			if tt.alerts == 0 {
				return
			}
			a := alerts[0]
			if a.GetDetectionId() != string(api.DetectionAdmissionViolation) || a.GetSeverity() != tt.severity {
				t.Errorf("alert %s severity %v, want %s %v", a.GetDetectionId(), a.GetSeverity(), api.DetectionAdmissionViolation, tt.severity)
			}
			if !hasTechnique(a.GetMitre(), "T1610") || hasTechnique(a.GetMitre(), "T1611") != tt.escape {
				t.Errorf("MITRE %v; want T1610, T1611 %v", a.GetMitre(), tt.escape)
			}
			if !strings.Contains(a.GetSummary(), tt.summary) {
				t.Errorf("summary %q lacks %q", a.GetSummary(), tt.summary)
			}
			if tt.container != nil && (a.GetContainer().GetName() != tt.container.GetName() || a.GetContainer().GetPodName() != tt.container.GetPodName() ||
				a.GetContainer().GetPodNamespace() != tt.container.GetPodNamespace() || a.GetContainer().GetWorkloadKind() != tt.container.GetWorkloadKind() ||
				a.GetContainer().GetWorkloadName() != tt.container.GetWorkloadName()) {
				t.Errorf("container %v, want %v", a.GetContainer(), tt.container)
			}
			ev := a.GetEvidence()
			if len(ev) != 1 || ev[0].GetAdmission().GetCheckId() == "" || ev[0].GetAdmission().GetRemediation() == "" {
				t.Errorf("evidence %v: want the admission event with the finding", ev)
			}
			if a.GetRemediation() != ev[0].GetAdmission().GetRemediation() {
				t.Errorf("remediation %q, want the check's fix", a.GetRemediation())
			}
		})
	}
	// The rule's MITRE list is shared by its alerts: adding T1611 to one
	// must not leak into the next.
	e := newTestEngine(t, Config{})
	_, alerts := run(e, admissionEv(), admissionEv(func(a *api.Admission) { a.CheckId, a.Severity = "image-latest", "medium" }))
	if len(alerts) != 2 || hasTechnique(alerts[1].GetMitre(), "T1611") || len(e.Rule(string(api.DetectionAdmissionViolation)).Mitre) != 1 {
		t.Errorf("T1611 leaked: %v / rule %v", alerts, e.Rule(string(api.DetectionAdmissionViolation)).Mitre)
	}
}

// An operator's severity, exceptions and rules apply to admission events
// like to any other.
func TestAdmissionViolationTuned(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(file, []byte(`rules:
  - id: admission-violation
    severity: critical
    exceptions:
      - name: ci
        namespaces: [ci]
  - id: site-admission-by-sa
    name: Service account submitted a violating workload
    severity: low
    kinds: [admission]
    condition: admission.user.startsWith("system:serviceaccount:ci-") && admission.check == "pss-privileged"
    output: "{admission.user} {admission.kind} {admission.namespace}/{admission.name} {admission.check}"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newTestEngine(t, Config{}, file)
	ids, alerts := run(e,
		admissionEv(func(a *api.Admission) { a.CheckId, a.Severity = "image-latest", "medium" }),
		admissionEv(func(a *api.Admission) { a.Namespace = "ci" }),
		admissionEv(func(a *api.Admission) { a.Namespace, a.User = "build", "system:serviceaccount:ci-runner:default" }),
	)
	if strings.Join(ids, ",") != "admission-violation,site-admission-by-sa,admission-violation" {
		t.Fatalf("alerts %v", ids)
	}
	if alerts[0].GetSeverity() != api.Severity_SEVERITY_CRITICAL {
		t.Errorf("patched severity not kept: %v", alerts[0].GetSeverity())
	}
	if got := alerts[1].GetSummary(); got != "system:serviceaccount:ci-runner:default Pod build/priv pss-privileged" {
		t.Errorf("rule output %q", got)
	}
}

// The same violation after the de-duplication window is a new alert.
func TestAdmissionViolationWindow(t *testing.T) {
	e := newTestEngine(t, Config{})
	later := admissionEv()
	later.Time = timestamppb.New(t0.Add(11 * time.Minute))
	if ids, _ := run(e, admissionEv(), later); len(ids) != 2 {
		t.Errorf("alerts %v; want one per window", ids)
	}
}

// The rate limit counts per namespace for admission events: a rollout that
// floods one namespace leaves another's alerts alone.
func TestAdmissionViolationRateLimit(t *testing.T) {
	e := newTestEngine(t, Config{RateLimitPerMinute: 2})
	var evs []*api.Event
	for _, name := range []string{"a", "b", "c"} {
		evs = append(evs, admissionEv(func(a *api.Admission) { a.Namespace, a.Name = "busy", name }))
	}
	evs = append(evs, admissionEv(func(a *api.Admission) { a.Namespace = "quiet" }))
	ids, alerts := run(e, evs...)
	if len(ids) != 3 || alerts[2].GetContainer().GetPodNamespace() != "quiet" {
		t.Errorf("alerts %v; want 2 in busy, then quiet's", alerts)
	}
	if n := e.Stats().Suppressed[string(api.DetectionAdmissionViolation)]; n != 1 {
		t.Errorf("suppressed %d, want 1", n)
	}
}
