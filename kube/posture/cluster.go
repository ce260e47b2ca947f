package posture

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/inventory"
)

const rbacV1 = "rbac.authorization.k8s.io/v1"

// Evaluate runs the enabled checks on a snapshot. Pod specs are evaluated
// on their top-level workload when the snapshot holds it, bare pods on
// their own. Checks that need a kind the snapshot could not list (e.g.
// network-policy-missing without NetworkPolicies) are skipped rather than
// guessed. Findings are ordered by object, check and container.
func Evaluate(snap *inventory.Snapshot, cluster, node string, cfg Config) []*api.Finding {
	if snap == nil {
		return nil
	}
	e := newEvaluator(cfg, cluster, node, snap.Time)
	if !snap.Failed("ServiceAccount") {
		e.saAutomount = map[string]*bool{}
		for i := range snap.ServiceAccounts {
			sa := &snap.ServiceAccounts[i]
			e.saAutomount[sa.Namespace+"/"+sa.Name] = sa.AutomountServiceAccountToken
		}
	}
	owners := snap.Owners()
	template := func(apiVersion, kind string, m *metav1.ObjectMeta, t *corev1.PodTemplateSpec) {
		meta := t.ObjectMeta
		meta.Namespace, meta.Name = m.Namespace, m.Name
		e.podSpec(&meta, &t.Spec, inventory.Ref(apiVersion, kind, m))
	}
	for i := range snap.Deployments {
		d := &snap.Deployments[i]
		template("apps/v1", "Deployment", &d.ObjectMeta, &d.Spec.Template)
	}
	for i := range snap.StatefulSets {
		d := &snap.StatefulSets[i]
		template("apps/v1", "StatefulSet", &d.ObjectMeta, &d.Spec.Template)
	}
	for i := range snap.DaemonSets {
		d := &snap.DaemonSets[i]
		template("apps/v1", "DaemonSet", &d.ObjectMeta, &d.Spec.Template)
	}
	for i := range snap.ReplicaSets {
		d := &snap.ReplicaSets[i]
		if !owners.ControlledInSnapshot(d) {
			template("apps/v1", "ReplicaSet", &d.ObjectMeta, &d.Spec.Template)
		}
	}
	for i := range snap.Jobs {
		d := &snap.Jobs[i]
		if !owners.ControlledInSnapshot(d) {
			template("batch/v1", "Job", &d.ObjectMeta, &d.Spec.Template)
		}
	}
	for i := range snap.CronJobs {
		d := &snap.CronJobs[i]
		template("batch/v1", "CronJob", &d.ObjectMeta, &d.Spec.JobTemplate.Spec.Template)
	}
	podsByNS := map[string]int{}
	for i := range snap.Pods {
		p := &snap.Pods[i]
		podsByNS[p.Namespace]++
		if owners.ControlledInSnapshot(p) {
			continue
		}
		e.podSpec(&p.ObjectMeta, &p.Spec, inventory.Ref("v1", "Pod", p))
	}
	e.rbac(snap)
	e.services(snap)
	if !snap.Failed("Pod") && !snap.Failed("NetworkPolicy") {
		e.networkPolicies(snap, podsByNS)
	}
	sortFindings(e.out)
	return e.out
}

// rbacDefault reports whether an RBAC object is one the API server
// bootstraps (or a system component's), which the RBAC checks skip.
func rbacDefault(m metav1.Object) bool {
	return m.GetLabels()["kubernetes.io/bootstrapping"] == "rbac-defaults" || strings.HasPrefix(m.GetName(), "system:")
}

func (e *evaluator) rbac(snap *inventory.Snapshot) {
	type binding struct {
		ref      *api.ObjectRef
		roleRef  rbacv1.RoleRef
		subjects []rbacv1.Subject
		cluster  bool
		def      bool
	}
	var bindings []binding
	for i := range snap.ClusterRoleBindings {
		b := &snap.ClusterRoleBindings[i]
		bindings = append(bindings, binding{inventory.Ref(rbacV1, "ClusterRoleBinding", b), b.RoleRef, b.Subjects, true, rbacDefault(b)})
	}
	for i := range snap.RoleBindings {
		b := &snap.RoleBindings[i]
		bindings = append(bindings, binding{inventory.Ref(rbacV1, "RoleBinding", b), b.RoleRef, b.Subjects, false, rbacDefault(b)})
	}
	for _, b := range bindings {
		if b.def {
			continue
		}
		o := e.object(b.ref)
		if b.roleRef.Kind == "ClusterRole" && b.roleRef.Name == "cluster-admin" {
			where := "cluster-wide"
			if !b.cluster {
				where = "in namespace " + b.ref.Namespace
			}
			o.fail(CheckClusterAdmin, "", fmt.Sprintf("grants cluster-admin %s to %s", where, inventory.Subjects(b.subjects)), 0)
		}
		for _, s := range b.subjects {
			if (s.Kind == rbacv1.UserKind && s.Name == "system:anonymous") || (s.Kind == rbacv1.GroupKind && s.Name == "system:unauthenticated") {
				o.fail(CheckAnonymous, "", fmt.Sprintf("binds %s/%s to %s %s", b.roleRef.Kind, b.roleRef.Name, s.Kind, s.Name), 0)
			}
		}
		o.flush()
	}
	type role struct {
		ref   *api.ObjectRef
		rules []rbacv1.PolicyRule
	}
	var roles []role
	for i := range snap.ClusterRoles {
		r := &snap.ClusterRoles[i]
		if !rbacDefault(r) {
			roles = append(roles, role{inventory.Ref(rbacV1, "ClusterRole", r), r.Rules})
		}
	}
	for i := range snap.Roles {
		r := &snap.Roles[i]
		if !rbacDefault(r) {
			roles = append(roles, role{inventory.Ref(rbacV1, "Role", r), r.Rules})
		}
	}
	for _, r := range roles {
		o := e.object(r.ref)
		for _, rule := range r.rules {
			var wild []string
			if slices.Contains(rule.Verbs, "*") {
				wild = append(wild, "verbs")
			}
			if slices.Contains(rule.Resources, "*") {
				wild = append(wild, "resources")
			}
			if len(wild) > 0 {
				o.fail(CheckRBACWildcard, "", fmt.Sprintf("'*' in %s (apiGroups %v, resources %v, verbs %v)",
					strings.Join(wild, " and "), rule.APIGroups, rule.Resources, rule.Verbs), 0)
			}
		}
		if r.ref.Kind == "ClusterRole" && readsSecrets(r.rules) {
			var by []string
			for _, b := range bindings {
				if b.cluster && b.roleRef.Kind == "ClusterRole" && b.roleRef.Name == r.ref.Name {
					by = append(by, b.ref.Name)
				}
			}
			if len(by) > 0 {
				o.fail(CheckSecretsRead, "", "can read secrets in every namespace, bound by ClusterRoleBinding "+strings.Join(by, ", "), 0)
			}
		}
		o.flush()
	}
}

// readsSecrets reports whether rules allow get, list or watch on all
// secrets (rules restricted to resourceNames are not "all").
func readsSecrets(rules []rbacv1.PolicyRule) bool {
	for _, r := range rules {
		if len(r.ResourceNames) > 0 {
			continue
		}
		group := slices.Contains(r.APIGroups, "") || slices.Contains(r.APIGroups, "*")
		res := slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, "*")
		verb := slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "get" || v == "list" || v == "watch" || v == "*" })
		if group && res && verb {
			return true
		}
	}
	return false
}

// adminUIWords in a service's name or labels suggest a dashboard or admin
// interface, which raises service-exposed to high.
var adminUIWords = []string{"dashboard", "admin", "grafana", "kibana", "jenkins", "argocd", "argo-cd", "prometheus",
	"alertmanager", "portainer", "rancher", "jupyter", "kubeflow", "console", "weave-scope", "airflow", "traefik"}

// AdminUILike returns the word that makes a name or label value look like
// an admin UI, or "".
func AdminUILike(values ...string) string {
	for _, v := range values {
		v = strings.ToLower(v)
		for _, w := range adminUIWords {
			if strings.Contains(v, w) {
				return w
			}
		}
	}
	return ""
}

func (e *evaluator) services(snap *inventory.Snapshot) {
	for i := range snap.Services {
		s := &snap.Services[i]
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer && s.Spec.Type != corev1.ServiceTypeNodePort {
			continue
		}
		o := e.object(inventory.Ref("v1", "Service", s))
		var ports []string
		for _, p := range s.Spec.Ports {
			if p.NodePort != 0 {
				ports = append(ports, fmt.Sprintf("%d (node port %d)", p.Port, p.NodePort))
			} else {
				ports = append(ports, fmt.Sprint(p.Port))
			}
		}
		detail := fmt.Sprintf("type %s, ports %s", s.Spec.Type, strings.Join(ports, ", "))
		sev := api.Severity_SEVERITY_MEDIUM
		values := []string{s.Name}
		for _, v := range s.Labels {
			values = append(values, v)
		}
		slices.Sort(values[1:])
		if w := AdminUILike(values...); w != "" {
			sev = api.Severity_SEVERITY_HIGH
			detail += fmt.Sprintf("; looks like an admin UI (%q)", w)
		}
		if len(s.Spec.LoadBalancerSourceRanges) > 0 {
			detail += "; source ranges " + strings.Join(s.Spec.LoadBalancerSourceRanges, ",")
		}
		o.fail(CheckExposedService, "", detail, sev)
		o.flush()
	}
}

func (e *evaluator) networkPolicies(snap *inventory.Snapshot, podsByNS map[string]int) {
	covered := map[string]bool{}
	for i := range snap.NetworkPolicies {
		covered[snap.NetworkPolicies[i].Namespace] = true
	}
	uids := map[string]*corev1.Namespace{}
	for i := range snap.Namespaces {
		uids[snap.Namespaces[i].Name] = &snap.Namespaces[i]
	}
	names := make([]string, 0, len(podsByNS))
	for ns := range podsByNS {
		names = append(names, ns)
	}
	slices.Sort(names)
	for _, ns := range names {
		if covered[ns] {
			continue
		}
		ref := &api.ObjectRef{ApiVersion: "v1", Kind: "Namespace", Name: ns}
		if n := uids[ns]; n != nil {
			ref.Uid = string(n.UID)
		}
		o := e.object(ref)
		// A namespace is cluster-scoped: exemption goes by its name.
		if !e.cfg.exempt(ns) {
			o.fail(CheckNetworkPolicy, "", fmt.Sprintf("%d pods and no NetworkPolicy", podsByNS[ns]), 0)
		}
		o.flush()
	}
}
