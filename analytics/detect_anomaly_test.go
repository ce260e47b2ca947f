package analytics

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// anomalyIDs are the control plane's learned anomalies; the other rules that
// the same requests raise (kube-system-container, mining-image, ...) are
// not what these tests are about.
var anomalyIDs = []string{"anomalous-pod-deployment", "anomalous-secret-access", "sa-permission-anomaly"}

// actorEv is an audit event by user at t0+d.
func actorEv(user, verb, resource, ns, name string, code int32, d time.Duration, object string) *api.Event {
	ev := auditEv(verb, resource, ns, name, object, func(a *api.Audit) {
		a.User, a.Code = user, code
		if r, sub, ok := strings.Cut(resource, "/"); ok {
			a.Resource, a.Subresource = r, sub
		}
		if strings.Contains(resource, "role") {
			a.ApiGroup = "rbac.authorization.k8s.io"
		}
	})
	at(d)(ev)
	return ev
}

func podObj(images ...string) string {
	var cs []string
	for _, img := range images {
		cs = append(cs, `{"name":"c","image":"`+img+`"}`)
	}
	return `{"kind":"Pod","spec":{"containers":[` + strings.Join(cs, ",") + `]}}`
}

func deploymentObj(image string) string {
	return `{"kind":"Deployment","spec":{"template":{"spec":{"containers":[{"name":"c","image":"` + image + `"}]}}}}`
}

const (
	ciSA   = "system:serviceaccount:ci:deployer"
	webSA  = "system:serviceaccount:shop:web"
	rsCtrl = "system:serviceaccount:kube-system:replicaset-controller"
)

func TestControlPlaneAnomalies(t *testing.T) {
	learned := 2 * time.Minute // after the 1 min learning period
	tests := []struct {
		name   string
		events []*api.Event
		want   []string // the anomalies raised, in order
		// summary is a part of the first alert's summary.
		summary string
	}{
		{
			name: "CI account deploys its own images, then a miner in kube-system",
			events: []*api.Event{
				actorEv(ciSA, "create", "deployments", "shop", "web", 201, 0, deploymentObj("registry.local/shop/web:1")),
				actorEv(ciSA, "create", "deployments", "shop", "api", 201, learned, deploymentObj("registry.local/shop/api:7")),
				actorEv(ciSA, "create", "pods", "kube-system", "x", 201, learned, podObj("docker.io/xmrig/xmrig:6.21")),
			},
			want:    []string{"anomalous-pod-deployment"},
			summary: "first pods it created in namespace kube-system; first image from docker.io/xmrig it deployed in kube-system",
		},
		{
			name: "known namespace, image from another repository",
			events: []*api.Event{
				actorEv(ciSA, "create", "deployments", "shop", "web", 201, 0, deploymentObj("registry.local/shop/web:1")),
				actorEv(ciSA, "create", "cronjobs", "shop", "job", 201, learned,
					`{"kind":"CronJob","spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}}}`),
			},
			want:    []string{"anomalous-pod-deployment"},
			summary: "first image from docker.io/library it deployed in shop (busybox)",
		},
		{
			name: "anything new during learning is learned",
			events: []*api.Event{
				actorEv(ciSA, "create", "deployments", "shop", "web", 201, 0, deploymentObj("registry.local/shop/web:1")),
				actorEv(ciSA, "create", "pods", "tools", "dbg", 201, 30*time.Second, podObj("docker.io/nicolaka/netshoot")),
				actorEv(ciSA, "create", "pods", "tools", "dbg2", 201, learned, podObj("docker.io/nicolaka/netshoot:v2")),
			},
		},
		{
			name: "the controllers, the control plane and the nodes create pods anywhere",
			events: []*api.Event{
				actorEv(rsCtrl, "create", "pods", "shop", "web-1", 201, 0, podObj("registry.local/shop/web:1")),
				actorEv(rsCtrl, "create", "pods", "kube-system", "dns-1", 201, learned, podObj("registry.k8s.io/coredns/coredns:v1.12.0")),
				actorEv("system:node:n1", "create", "pods", "kube-system", "etcd-n1", 201, 0, podObj("registry.k8s.io/etcd:3.6")),
				actorEv("system:node:n1", "create", "pods", "other", "static", 201, learned, podObj("docker.io/xmrig/xmrig")),
			},
		},
		{
			name: "a refused or read request deploys nothing",
			events: []*api.Event{
				actorEv(ciSA, "create", "deployments", "shop", "web", 201, 0, deploymentObj("registry.local/shop/web:1")),
				actorEv(ciSA, "create", "pods", "kube-system", "x", 403, learned, podObj("docker.io/xmrig/xmrig")),
				actorEv(ciSA, "get", "pods", "kube-system", "x", 200, learned, ""),
			},
		},
		{
			name: "a user reads a secret it never read, in a namespace it never touched",
			events: []*api.Event{
				actorEv("alice", "get", "secrets", "shop", "db", 200, 0, ""),
				actorEv("alice", "list", "secrets", "shop", "", 200, 0, ""),
				actorEv("alice", "get", "secrets", "shop", "db", 200, learned, ""),
				actorEv("alice", "watch", "secrets", "shop", "", 200, learned, ""),
				actorEv("alice", "get", "secrets", "kube-system", "bootstrap-token-abcdef", 200, learned, ""),
			},
			want:    []string{"anomalous-secret-access"},
			summary: "alice: first read (get) of secret kube-system/bootstrap-token-abcdef",
		},
		{
			name: "a user lists every namespace's secrets",
			events: []*api.Event{
				actorEv("alice", "get", "secrets", "shop", "db", 200, 0, ""),
				actorEv("alice", "list", "secrets", "", "", 200, learned, ""),
			},
			want:    []string{"anomalous-secret-access"},
			summary: "the secrets of every namespace",
		},
		{
			name: "secrets refused, written, or read by the control plane",
			events: []*api.Event{
				actorEv("alice", "get", "secrets", "shop", "db", 200, 0, ""),
				actorEv("alice", "get", "secrets", "kube-system", "x", 403, learned, ""),
				actorEv("alice", "create", "secrets", "shop", "new", 201, learned, ""),
				actorEv("system:kube-controller-manager", "get", "secrets", "shop", "a", 200, 0, ""),
				actorEv("system:kube-controller-manager", "list", "secrets", "", "", 200, learned, ""),
				actorEv("system:node:n1", "get", "secrets", "shop", "db", 200, learned, ""),
			},
		},
		{
			name: "a service account probes RBAC and exec it never used",
			events: []*api.Event{
				actorEv(webSA, "get", "configmaps", "shop", "cfg", 200, 0, ""),
				actorEv(webSA, "get", "configmaps", "shop", "cfg", 200, learned, ""),
				actorEv(webSA, "create", "clusterrolebindings", "", "", 403, learned, ""),
				actorEv(webSA, "create", "pods/exec", "shop", "db-0", 403, learned, ""),
				actorEv(webSA, "create", "pods/exec", "shop", "db-1", 403, learned, ""), // the same permission
			},
			want:    []string{"sa-permission-anomaly", "sa-permission-anomaly"},
			summary: "first create clusterrolebindings cluster-wide (answered 403)",
		},
		{
			name: "learning starts with an account's first request, not its first sensitive one",
			events: []*api.Event{
				actorEv(webSA, "get", "configmaps", "shop", "cfg", 200, 0, ""),
				actorEv(webSA, "get", "roles", "shop", "r", 403, learned, ""),
			},
			want: []string{"sa-permission-anomaly"},
		},
		{
			name: "a service account uses the sensitive permissions it learned; people and controllers are not judged",
			events: []*api.Event{
				actorEv(webSA, "create", "serviceaccounts/token", "shop", "web", 201, 0, ""),
				actorEv(webSA, "create", "serviceaccounts/token", "shop", "web", 201, learned, ""),
				actorEv(webSA, "list", "pods", "kube-system", "", 200, learned, ""), // not sensitive
				actorEv("alice", "get", "configmaps", "shop", "cfg", 200, 0, ""),
				actorEv("alice", "create", "clusterrolebindings", "", "x", 201, learned, ""),
				actorEv("system:serviceaccount:kube-system:clusterrole-aggregation-controller", "get", "clusterroles", "", "admin", 200, 0, ""),
				actorEv("system:serviceaccount:kube-system:clusterrole-aggregation-controller", "update", "clusterroles", "", "edit", 200, learned, ""),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Config{Baseline: BaselineConfig{LearningPeriod: confval.Duration(time.Minute)}})
			var got []string
			var first *api.Alert
			for _, ev := range tt.events {
				e.Process(ev, func(a *api.Alert) {
					if slices.Contains(anomalyIDs, a.GetDetectionId()) {
						got = append(got, a.GetDetectionId())
						if first == nil {
							first = a
						}
					}
				})
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("anomalies %v, want %v", got, tt.want)
			}
			if first == nil {
				return
			}
			if !strings.Contains(first.GetSummary(), tt.summary) {
				t.Errorf("summary %q, want it to say %q", first.GetSummary(), tt.summary)
			}
			if first.GetSeverity() == api.Severity_SEVERITY_UNSPECIFIED || len(first.GetMitre()) == 0 ||
				first.GetDescription() == "" || len(first.GetEvidence()) != 1 || first.GetEvidence()[0].GetAudit() == nil {
				t.Errorf("alert lacks severity, MITRE, description or its audit evidence: %v", first)
			}
		})
	}
}

func TestImageRepository(t *testing.T) {
	for image, want := range map[string]string{
		"busybox":                   "docker.io/library",
		"busybox:1.37":              "docker.io/library",
		"xmrig/xmrig:6.21":          "docker.io/xmrig",
		"docker.io/xmrig/xmrig":     "docker.io/xmrig",
		"docker.io/nginx":           "docker.io/library",
		"registry.local/shop/web:2": "registry.local/shop",
		"registry.local:5000/shop/team/web@sha256:ab": "registry.local:5000/shop/team",
		"localhost/web":   "localhost",
		"ghcr.io/org/app": "ghcr.io/org",
	} {
		if got := string(appendImageRepository(nil, image)); got != want {
			t.Errorf("%s: %q, want %q", image, got, want)
		}
	}
}

// TestControlPlaneAnomaliesBounded: actors beyond maxWorkloads are not
// tracked (counted, never alerting), and no actor learns more than
// maxEntries.
func TestControlPlaneAnomaliesBounded(t *testing.T) {
	e := newTestEngine(t, Config{Baseline: BaselineConfig{LearningPeriod: confval.Duration(time.Minute), MaxWorkloads: 2, MaxEntries: 3}})
	var got []string
	emit := func(a *api.Alert) {
		if slices.Contains(anomalyIDs, a.GetDetectionId()) {
			got = append(got, a.GetDetectionId())
		}
	}
	for i := range 50 {
		user := "user-" + itoa(i%5)
		e.Process(actorEv(user, "get", "secrets", "ns-"+itoa(i), "s", 200, 0, ""), emit)
	}
	if n := len(e.baseline.workloads); n != 2 || e.baseline.Untracked == 0 {
		t.Fatalf("actors %d (want 2), untracked %d", n, e.baseline.Untracked)
	}
	for k, w := range e.baseline.workloads {
		if len(w.Exes) > 3 {
			t.Errorf("%s learned %d entries, bound 3", k, len(w.Exes))
		}
	}
	if len(got) != 0 {
		t.Fatalf("alerts while learning: %v", got)
	}
	// An untracked actor raises nothing; a tracked one, past its bound,
	// still alerts on what it never did.
	e.Process(actorEv("user-4", "get", "secrets", "kube-system", "x", 200, 2*time.Minute, ""), emit)
	e.Process(actorEv("user-0", "get", "secrets", "kube-system", "x", 200, 2*time.Minute, ""), emit)
	if !slices.Equal(got, []string{"anomalous-secret-access"}) {
		t.Fatalf("alerts %v, want one for the tracked actor", got)
	}
}

// TestControlPlaneAnomaliesPersist: what an actor did is saved with the
// baselines, so a restarted agent neither learns again nor forgets.
func TestControlPlaneAnomaliesPersist(t *testing.T) {
	cfg := Config{Baseline: BaselineConfig{Path: filepath.Join(t.TempDir(), "baselines.json"), LearningPeriod: confval.Duration(time.Hour)}}
	e := newTestEngine(t, cfg)
	run(e, actorEv(ciSA, "create", "deployments", "shop", "web", 201, 0, deploymentObj("registry.local/shop/web:1")),
		actorEv("alice", "get", "secrets", "shop", "db", 200, 0, ""))
	if err := e.Close(func(*api.Alert) {}); err != nil {
		t.Fatal(err)
	}
	e2 := newTestEngine(t, cfg)
	ids, _ := run(e2,
		actorEv(ciSA, "create", "deployments", "shop", "web", 201, 2*time.Hour, deploymentObj("registry.local/shop/web:2")),
		actorEv("alice", "get", "secrets", "shop", "db", 200, 2*time.Hour, ""),
		actorEv(ciSA, "create", "deployments", "kube-system", "m", 201, 2*time.Hour, deploymentObj("docker.io/xmrig/xmrig")),
		actorEv("alice", "get", "secrets", "kube-system", "x", 200, 2*time.Hour, ""),
	)
	var got []string
	for _, id := range ids {
		if slices.Contains(anomalyIDs, id) {
			got = append(got, id)
		}
	}
	if !slices.Equal(got, []string{"anomalous-pod-deployment", "anomalous-secret-access"}) {
		t.Fatalf("after a restart: %v, want the new deployment and the new secret only", got)
	}
}
