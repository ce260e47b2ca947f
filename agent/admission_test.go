package agent

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/admission"
)

// TestAdmissionSink: the guard's violations, found by the posture checks,
// become admission events carrying the finding, the requesting user and the
// object (the generateName prefix of a pod not named yet); with the queue
// full the guard drops and counts instead of waiting, and the collector
// reports both.
func TestAdmissionSink(t *testing.T) {
	sink := &admissionSink{events: make(chan *api.Event, 1)}
	h, err := admission.NewHandler(admission.Config{Mode: admission.ModeAudit, Checks: []string{"pss-privileged", "pss-host-namespaces"}},
		admission.Options{Checker: postureChecker{cluster: "c1"}, OnViolation: func(f *api.Finding, req *admissionv1.AdmissionRequest) {
			sink.offer(admissionEvent(f, req, admission.ModeAudit, "node-a", time.Now()))
		}})
	if err != nil {
		t.Fatal(err)
	}
	const pod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-7d4f-","namespace":"apps"},` +
		`"spec":{"hostPID":true,"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}`
	const controller = "system:serviceaccount:kube-system:replicaset-controller"
	req := &admissionv1.AdmissionRequest{UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "apps", Operation: admissionv1.Create,
		UserInfo: authnv1.UserInfo{Username: controller, Groups: []string{"system:serviceaccounts"}}, Object: runtime.RawExtension{Raw: []byte(pod)}}
	if resp := h.Review(req, time.Now().Add(time.Second)); !resp.Allowed || len(resp.Warnings) != 2 {
		t.Fatalf("audit mode: %+v", resp)
	}
	// Two failed controls, room for one: the second was counted, not waited for.
	if n, q := sink.dropped.Load(), len(sink.events); n != 1 || q != 1 {
		t.Fatalf("dropped %d, queued %d; want 1 and 1", n, q)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newAdmissionCollector(h, sink))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, v := range map[string]float64{
		"harrier_admission_violations_dropped_total":       1,
		"harrier_admission_queue_depth":                    1,
		"harrier_admission_queue_capacity":                 1,
		"harrier_admission_reviews_total{outcome=warned}":  1,
		"harrier_admission_reviews_total{outcome=allowed}": 1,
		"harrier_admission_reviews_total{outcome=denied}":  0,
	} {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %t), want %v; all: %v", name, g, ok, v, got)
		}
	}

	ev := <-sink.events
	a := ev.GetAdmission()
	if ev.GetKind() != api.EventKind_EVENT_KIND_ADMISSION || ev.GetNode() != "node-a" || ev.GetTime() == nil {
		t.Errorf("event %v", ev)
	}
	if a.GetCheckId() != "pss-privileged" && a.GetCheckId() != "pss-host-namespaces" {
		t.Errorf("check %q", a.GetCheckId())
	}
	if a.GetUser() != controller || len(a.GetGroups()) != 1 || a.GetKind() != "Pod" || a.GetResource() != "pods" ||
		a.GetNamespace() != "apps" || a.GetName() != "web-7d4f-" || a.GetOperation() != "CREATE" || a.GetRequestUid() != "u1" ||
		a.GetMode() != "audit" || !a.GetAllowed() || a.GetDryRun() || a.GetSeverity() != "high" || a.GetDetail() == "" ||
		a.GetRemediation() == "" || a.GetTitle() == "" || a.GetFindingId() == "" {
		t.Errorf("admission %v", a)
	}
}
