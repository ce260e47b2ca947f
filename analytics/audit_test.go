package analytics

import (
	"slices"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// auditEv is an audit event of a successful request by a user.
func auditEv(verb, resource, ns, name, object string, opts ...func(*api.Audit)) *api.Event {
	a := &api.Audit{Verb: verb, Resource: resource, Namespace: ns, Name: name, RequestObject: object,
		User: "alice", Groups: []string{"system:authenticated"}, UserAgent: "kubectl/v1.37.2", Code: 201,
		Stage: "ResponseComplete"}
	for _, o := range opts {
		o(a)
	}
	return &api.Event{Kind: api.EventKind_EVENT_KIND_AUDIT, Detail: &api.Event_Audit{Audit: a}}
}

func TestAuditRules(t *testing.T) {
	podWith := func(spec string) string { return `{"kind":"Pod","spec":` + spec + `}` }
	tests := []struct {
		name string
		ev   *api.Event
		want string // "" for no alert
	}{
		{"privileged pod", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}`)), "privileged-container"},
		{"sys_admin deployment", auditEv("create", "deployments", "default", "d", `{"kind":"Deployment","spec":{"template":{"spec":{"containers":[{"image":"x","securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}}]}}}}`), "privileged-container"},
		{"plain pod", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"image":"nginx"}]}`)), ""},
		{"privileged but denied", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"securityContext":{"privileged":true}}]}`), func(a *api.Audit) { a.Code = 403 }), ""},
		{"docker socket", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"image":"x"}],"volumes":[{"name":"s","hostPath":{"path":"/var/run/docker.sock"}}]}`)), "sensitive-mount"},
		{"host root", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"image":"x"}],"volumes":[{"name":"s","hostPath":{"path":"/"}}]}`)), "sensitive-mount"},
		{"harmless host path", auditEv("create", "pods", "default", "p", podWith(`{"containers":[{"image":"x"}],"volumes":[{"name":"s","hostPath":{"path":"/var/log/app"}}]}`)), ""},
		{"dashboard lb", auditEv("create", "services", "kubernetes-dashboard", "kd", `{"kind":"Service","spec":{"type":"LoadBalancer","selector":{"k8s-app":"kubernetes-dashboard"}}}`), "exposed-dashboard"},
		{"redis nodeport", auditEv("create", "services", "db", "redis", `{"kind":"Service","spec":{"type":"NodePort","selector":{"app":"redis"}}}`), "exposed-service"},
		{"redis clusterip", auditEv("create", "services", "db", "redis", `{"kind":"Service","spec":{"selector":{"app":"redis"}}}`), ""},
		{"wildcard role", auditEv("create", "clusterroles", "", "r", `{"kind":"ClusterRole","rules":[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}]}`), "high-priv-role"},
		{"secrets clusterrole", auditEv("create", "clusterroles", "", "r", `{"kind":"ClusterRole","rules":[{"resources":["secrets"],"verbs":["get"]}]}`), "high-priv-role"},
		{"narrow role", auditEv("create", "roles", "default", "r", `{"kind":"Role","rules":[{"resources":["pods"],"verbs":["get"]}]}`), ""},
		{"apiserver bootstrap role", auditEv("create", "clusterroles", "", "cluster-admin", `{"rules":[{"resources":["*"],"verbs":["*"]}]}`, func(a *api.Audit) { a.User = "system:apiserver" }), ""},
		{"cluster-admin binding", auditEv("create", "clusterrolebindings", "", "b", `{"roleRef":{"kind":"ClusterRole","name":"cluster-admin"}}`), "cluster-admin-binding"},
		{"kube-system pod", auditEv("create", "pods", "kube-system", "backdoor", podWith(`{"containers":[{"image":"x"}]}`)), "kube-system-container"},
		{"coredns pod", auditEv("create", "pods", "kube-system", "coredns-abc", podWith(`{"containers":[{"image":"x"}]}`)), ""},
		{"events deleted", auditEv("deletecollection", "events", "default", "", "", func(a *api.Audit) { a.Code = 200 }), "events-deleted"},
		{"webhook", auditEv("create", "validatingwebhookconfigurations", "", "w", `{}`, func(a *api.Audit) { a.ApiGroup = "admissionregistration.k8s.io" }), "admission-webhook"},
		{"coredns", auditEv("update", "configmaps", "kube-system", "coredns", `{}`, func(a *api.Audit) { a.Code = 200 }), "coredns-modified"},
		{"sa ssar", auditEv("create", "selfsubjectaccessreviews", "", "", `{}`, func(a *api.Audit) { a.User = "system:serviceaccount:default:web" }), "sa-suspicious-op"},
		{"sa curl", auditEv("get", "pods", "default", "", "", func(a *api.Audit) {
			a.User, a.UserAgent, a.Code = "system:serviceaccount:default:web", "curl/8.5.0", 200
		}), "sa-suspicious-op"},
		{"sa lists pods cluster-wide", auditEv("list", "pods", "", "", "", func(a *api.Audit) {
			a.User, a.UserAgent, a.Code = "system:serviceaccount:default:web", "app/v1 (linux/amd64) kubernetes/abc", 200
		}), "sa-suspicious-op"},
		// Harrier's own leader taking its inventory (found by the test cluster's quiet period).
		{"harrier inventory", auditEv("list", "pods", "", "", "", func(a *api.Audit) {
			a.User, a.UserAgent, a.Code = "system:serviceaccount:harrier:harrier-agent", "harrier-agent/0.1.0", 200
		}), ""},
		{"harrier agent's token listing secrets", auditEv("list", "secrets", "", "", "", func(a *api.Audit) {
			a.User, a.UserAgent, a.Code = "system:serviceaccount:harrier:harrier-agent", "harrier-agent/0.1.0", 200
		}), "sa-suspicious-op"},
		{"sa client-go", auditEv("get", "configmaps", "default", "c", "", func(a *api.Audit) {
			a.User, a.UserAgent, a.Code = "system:serviceaccount:default:web", "app/v1 (linux/amd64) kubernetes/abc", 200
		}), ""},
		{"kube-hunter", auditEv("get", "pods", "", "", "", func(a *api.Audit) { a.UserAgent, a.Code = "kube-hunter", 200 }), "pentest-tool"},
		{"miner", auditEv("create", "pods", "default", "m", podWith(`{"containers":[{"image":"docker.io/someone/xmrig:latest"}]}`)), "mining-image"},
		{"exec", auditEv("create", "pods", "default", "web", "", func(a *api.Audit) { a.Subresource, a.Code = "exec", 101 }), "exec-into-pod"},
		{"exec kube-system", auditEv("get", "pods", "kube-system", "etcd", "", func(a *api.Audit) { a.Subresource, a.Code = "exec", 500 }), "exec-into-system-pod"},
		{"anonymous list", auditEv("list", "secrets", "", "", "", func(a *api.Audit) {
			a.User, a.Groups, a.Code, a.RequestUri = "system:anonymous", []string{"system:unauthenticated"}, 200, "/api/v1/secrets"
		}), "anonymous-access"},
		{"anonymous version", auditEv("get", "", "", "", "", func(a *api.Audit) {
			a.User, a.Groups, a.Code, a.RequestUri = "system:anonymous", []string{"system:unauthenticated"}, 200, "/version"
		}), ""},
		{"truncated object", auditEv("create", "pods", "default", "p", `{"kind":"Pod","spec":{"containers":[{"securityContext":{"privileged":tr`, func(a *api.Audit) { a.ObjectTruncated = true }), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			ids, _ := run(e, tt.ev)
			if tt.want == "" {
				if len(ids) != 0 {
					t.Fatalf("alerts %v, want none", ids)
				}
				return
			}
			if !slices.Contains(ids, tt.want) {
				t.Fatalf("alerts %v, want %s", ids, tt.want)
			}
			if st := e.Stats(); st.EvalErrors != 0 {
				t.Fatalf("%d evaluation errors", st.EvalErrors)
			}
		})
	}
}

// TestAuditObjectDyn: rules can read the parsed request object.
func TestAuditObjectDyn(t *testing.T) {
	path := writeRules(t, `
rules:
  - id: t
    name: t
    kinds: [audit]
    condition: has(audit.obj.spec) && audit.obj.spec.replicas > 5.0
    severity: low
    description: d
    remediation: r
    mitre: [{tactic: Impact, technique_id: T1496, technique: Resource Hijacking}]
`)
	e := newTestEngine(t, Config{}, path)
	ids, _ := run(e, auditEv("create", "deployments", "d", "x", `{"spec":{"replicas":50}}`),
		auditEv("create", "deployments", "d", "y", `{"spec":{"replicas":1}}`), auditEv("create", "deployments", "d", "z", ``))
	if !slices.Equal(ids, []string{"t"}) {
		t.Fatalf("alerts %v", ids)
	}
}

func TestSAAnomalousOp(t *testing.T) {
	e := newTestEngine(t, Config{Baseline: BaselineConfig{LearningPeriod: confval.Duration(time.Minute)}})
	sa := func(verb, resource string, d time.Duration) *api.Event {
		ev := auditEv(verb, resource, "default", "", "", func(a *api.Audit) {
			a.User, a.Code, a.UserAgent = "system:serviceaccount:shop:web", 200, "web/1.0"
		})
		at(d)(ev)
		return ev
	}
	ids, _ := run(e,
		sa("get", "configmaps", 0),                                                         // learning
		sa("get", "configmaps", 2*time.Minute),                                             // known
		sa("list", "secrets", 2*time.Minute),                                               // new after learning
		sa("list", "secrets", 3*time.Minute),                                               // learned when reported
		auditEv("delete", "pods", "default", "p", "", func(a *api.Audit) { a.Code = 200 }), // a user, not an SA
	)
	// The first list of secrets is also a secret read and a sensitive
	// permission the account never used.
	if !slices.Equal(ids, []string{"sa-anomalous-op", "anomalous-secret-access", "sa-permission-anomaly"}) {
		t.Fatalf("alerts %v, want one sa-anomalous-op (and the secret and permission anomalies)", ids)
	}
}
