// Package posture evaluates configuration checks (recommendations, not
// alerts) on an inventory snapshot: Pod Security Standards baseline and
// restricted controls, resource limits, image references, service account
// tokens, RBAC, exposed services, namespaces without NetworkPolicies,
// secrets in environment variables, and the kubelet configuration of the
// node. Each failed control is an api.Finding with a stable ID.
//
// Pods are evaluated once through their controlling workload when the
// snapshot holds it (a Deployment of 50 replicas yields findings on the
// Deployment), bare pods on their own. CheckPodSpec is the pod-spec entry
// point the admission webhook reuses.
package posture

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/api"
)

// Config is the `kube.posture` section of the agent's configuration.
type Config struct {
	// Checks, when not empty, are the only checks evaluated (by ID);
	// empty: all checks.
	Checks []string `json:"checks,omitempty"`
	// Disabled checks are skipped (applied after Checks).
	Disabled []string `json:"disabled,omitempty"`
	// AllowedRegistries turns on image-registry: images must come from one
	// of these registries ("registry.example.com") or repository prefixes
	// ("registry.example.com/team"); Docker Hub images are "docker.io/...".
	// Empty: the check is off.
	AllowedRegistries []string `json:"allowedRegistries,omitempty"`
	// ExemptNamespaces are skipped by the checks marked exemptible (pod
	// security, limits, images, tokens, env, network policies); RBAC and
	// exposed services are never exempt. Absent (null):
	// DefaultExemptNamespaces(); [] exempts none.
	ExemptNamespaces []string `json:"exemptNamespaces"`
}

// DefaultExemptNamespaces is ExemptNamespaces' default: the control
// plane's own namespaces, whose components legitimately run privileged.
func DefaultExemptNamespaces() []string {
	return []string{"kube-system", "kube-public", "kube-node-lease"}
}

// Validate reports unknown check IDs and empty list entries.
func (c Config) Validate() error {
	var errs []error
	for _, list := range []struct {
		name string
		ids  []string
	}{{"checks", c.Checks}, {"disabled", c.Disabled}} {
		for _, id := range list.ids {
			if _, ok := lookup(id); !ok {
				errs = append(errs, fmt.Errorf("kube.posture.%s: unknown check %q", list.name, id))
			}
		}
	}
	for _, r := range c.AllowedRegistries {
		if strings.TrimSpace(r) == "" || strings.Contains(r, "://") {
			errs = append(errs, fmt.Errorf("kube.posture.allowedRegistries: %q must be a registry host or repository prefix", r))
		}
	}
	for _, ns := range c.ExemptNamespaces {
		if strings.TrimSpace(ns) == "" {
			errs = append(errs, errors.New("kube.posture.exemptNamespaces: empty namespace"))
		}
	}
	return errors.Join(errs...)
}

// enabled says whether check id runs under c.
func (c Config) enabled(id string) bool {
	if len(c.Checks) > 0 && !slices.Contains(c.Checks, id) {
		return false
	}
	if slices.Contains(c.Disabled, id) {
		return false
	}
	if id == CheckImageRegistry && len(c.AllowedRegistries) == 0 {
		return false
	}
	return true
}

func (c Config) exempt(namespace string) bool {
	list := c.ExemptNamespaces
	if list == nil {
		list = DefaultExemptNamespaces()
	}
	return namespace != "" && slices.Contains(list, namespace)
}

// Check describes one control.
type Check struct {
	ID          string
	Title       string
	Severity    api.Severity // the default; some checks raise it (e.g. sensitive hostPath)
	Category    string
	Remediation string
	Standards   []string
	// Exemptible checks are skipped in Config.ExemptNamespaces.
	Exemptible bool
}

// Check IDs.
const (
	CheckPrivileged        = "pss-privileged"
	CheckHostNamespaces    = "pss-host-namespaces"
	CheckHostPath          = "pss-host-path"
	CheckHostPorts         = "pss-host-ports"
	CheckCapabilities      = "pss-capabilities"
	CheckSeccompUnconfined = "pss-seccomp-unconfined"
	CheckAppArmor          = "pss-apparmor-unconfined"
	CheckSELinux           = "pss-selinux"
	CheckProcMount         = "pss-proc-mount"
	CheckSysctls           = "pss-sysctls"
	CheckRunAsNonRoot      = "pss-run-as-non-root"
	CheckPrivilegeEscal    = "pss-privilege-escalation"
	CheckDropAll           = "pss-capabilities-drop-all"
	CheckSeccompRequired   = "pss-seccomp-required"
	CheckVolumeTypes       = "pss-volume-types"
	CheckLimits            = "resources-limits"
	CheckImageLatest       = "image-latest"
	CheckImageDigest       = "image-no-digest"
	CheckImageRegistry     = "image-registry"
	CheckTokenAutomount    = "sa-token-automount"
	CheckDefaultNamespace  = "default-namespace"
	CheckEnvSecretLiteral  = "env-secret-literal"
	CheckEnvSecretRef      = "env-secret-ref"
	CheckClusterAdmin      = "rbac-cluster-admin-binding"
	CheckRBACWildcard      = "rbac-wildcard"
	CheckSecretsRead       = "rbac-secrets-read"
	CheckAnonymous         = "rbac-anonymous"
	CheckExposedService    = "service-exposed"
	CheckNetworkPolicy     = "network-policy-missing"
	CheckKubeletAnonymous  = "kubelet-anonymous-auth"
	CheckKubeletReadOnly   = "kubelet-read-only-port"
	CheckKubeletAuthz      = "kubelet-authz-always-allow"
	// The kubelet tunes kernel settings (panic, overcommit) to its liking
	// unless told to fail on a difference instead.
	CheckKubeletKernelDefaults = "kubelet-kernel-defaults-unprotected"
)

const (
	catPodSecurity = "pod-security"
	catWorkload    = "workload"
	catImages      = "images"
	catSecrets     = "secrets"
	catRBAC        = "rbac"
	catNetwork     = "network"
	catNode        = "node"
)

const (
	pssBaseline   = "PSS baseline"
	pssRestricted = "PSS restricted"
)

// checks is the catalogue; Checks returns a copy.
var checks = []Check{
	{CheckPrivileged, "Privileged container", api.Severity_SEVERITY_HIGH, catPodSecurity,
		"Remove securityContext.privileged or set it to false.", []string{pssBaseline, "CIS 5.2.2"}, true},
	{CheckHostNamespaces, "Host namespaces shared", api.Severity_SEVERITY_HIGH, catPodSecurity,
		"Do not set hostNetwork, hostPID or hostIPC.", []string{pssBaseline, "CIS 5.2.3", "CIS 5.2.4", "CIS 5.2.5"}, true},
	{CheckHostPath, "hostPath volume", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Replace hostPath volumes with PersistentVolumeClaims, configMaps or emptyDir.", []string{pssBaseline, "CIS 5.2.12"}, true},
	{CheckHostPorts, "Host port", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Remove hostPort; expose the pod through a Service.", []string{pssBaseline, "CIS 5.2.13"}, true},
	{CheckCapabilities, "Capabilities beyond the baseline set added", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Remove the added capabilities from securityContext.capabilities.add.", []string{pssBaseline, "CIS 5.2.9"}, true},
	{CheckSeccompUnconfined, "Seccomp profile Unconfined", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Set securityContext.seccompProfile.type to RuntimeDefault.", []string{pssBaseline}, true},
	{CheckAppArmor, "AppArmor profile unconfined", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Use the runtime/default AppArmor profile or a localhost profile.", []string{pssBaseline}, true},
	{CheckSELinux, "Custom SELinux options", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Use only the container_t, container_init_t, container_kvm_t or container_engine_t types and no custom user or role.", []string{pssBaseline}, true},
	{CheckProcMount, "Unmasked /proc mount", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Remove securityContext.procMount or set it to Default.", []string{pssBaseline}, true},
	{CheckSysctls, "Unsafe sysctls", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Set only the safe sysctls in securityContext.sysctls.", []string{pssBaseline}, true},
	{CheckRunAsNonRoot, "Container may run as root", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Set securityContext.runAsNonRoot: true and a non-zero runAsUser.", []string{pssRestricted, "CIS 5.2.6"}, true},
	{CheckPrivilegeEscal, "Privilege escalation allowed", api.Severity_SEVERITY_MEDIUM, catPodSecurity,
		"Set securityContext.allowPrivilegeEscalation: false.", []string{pssRestricted, "CIS 5.2.5"}, true},
	{CheckDropAll, "Capabilities not dropped", api.Severity_SEVERITY_LOW, catPodSecurity,
		"Set securityContext.capabilities.drop: [ALL] and add back at most NET_BIND_SERVICE.", []string{pssRestricted, "CIS 5.2.8"}, true},
	{CheckSeccompRequired, "No seccomp profile", api.Severity_SEVERITY_LOW, catPodSecurity,
		"Set securityContext.seccompProfile.type: RuntimeDefault (pod or container).", []string{pssRestricted, "CIS 5.7.2"}, true},
	{CheckVolumeTypes, "Volume type outside the restricted set", api.Severity_SEVERITY_LOW, catPodSecurity,
		"Use only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret volumes.", []string{pssRestricted}, true},
	{CheckLimits, "No CPU or memory limit", api.Severity_SEVERITY_LOW, catWorkload,
		"Set resources.limits.cpu and resources.limits.memory.", []string{"NSA hardening"}, true},
	{CheckImageLatest, "Image without tag or :latest", api.Severity_SEVERITY_MEDIUM, catImages,
		"Reference images by an immutable version tag or digest.", []string{"NSA hardening"}, true},
	{CheckImageDigest, "Image not pinned by digest", api.Severity_SEVERITY_LOW, catImages,
		"Reference images by digest (image@sha256:...).", nil, true},
	{CheckImageRegistry, "Image from a registry outside the allow-list", api.Severity_SEVERITY_MEDIUM, catImages,
		"Pull images only from the allowed registries (kube.posture.allowedRegistries).", nil, true},
	{CheckTokenAutomount, "Service account token automounted", api.Severity_SEVERITY_LOW, catWorkload,
		"Set automountServiceAccountToken: false on the pod or its service account unless it calls the API server.", []string{"CIS 5.1.6"}, true},
	{CheckDefaultNamespace, "Workload in the default namespace", api.Severity_SEVERITY_LOW, catWorkload,
		"Run workloads in their own namespaces.", []string{"CIS 5.7.4"}, false},
	{CheckEnvSecretLiteral, "Secret-like literal in an environment variable", api.Severity_SEVERITY_MEDIUM, catSecrets,
		"Move the value into a Secret and reference it (or mount it as a file).", []string{"CIS 5.4.1"}, true},
	{CheckEnvSecretRef, "Secret exposed as an environment variable", api.Severity_SEVERITY_INFO, catSecrets,
		"Prefer mounting secrets as files over environment variables.", []string{"CIS 5.4.1"}, true},
	{CheckClusterAdmin, "Binding to cluster-admin", api.Severity_SEVERITY_HIGH, catRBAC,
		"Bind a role with only the permissions needed instead of cluster-admin.", []string{"CIS 5.1.1"}, false},
	{CheckRBACWildcard, "Wildcard in role rules", api.Severity_SEVERITY_MEDIUM, catRBAC,
		"List the verbs and resources needed instead of '*'.", []string{"CIS 5.1.3"}, false},
	{CheckSecretsRead, "Cluster-wide read access to secrets", api.Severity_SEVERITY_HIGH, catRBAC,
		"Grant get/list/watch on secrets per namespace (RoleBinding), and only where needed.", []string{"CIS 5.1.2"}, false},
	{CheckAnonymous, "Anonymous or unauthenticated subject bound", api.Severity_SEVERITY_CRITICAL, catRBAC,
		"Remove system:anonymous and system:unauthenticated from the binding's subjects.", []string{"CIS 5.1.1"}, false},
	{CheckExposedService, "Service exposed outside the cluster", api.Severity_SEVERITY_MEDIUM, catNetwork,
		"Use a ClusterIP Service behind an authenticated ingress, or restrict loadBalancerSourceRanges.", nil, false},
	{CheckNetworkPolicy, "Namespace without NetworkPolicy", api.Severity_SEVERITY_MEDIUM, catNetwork,
		"Add a default-deny NetworkPolicy and allow only the needed traffic.", []string{"CIS 5.3.2"}, true},
	{CheckKubeletAnonymous, "Kubelet anonymous authentication enabled", api.Severity_SEVERITY_HIGH, catNode,
		"Set authentication.anonymous.enabled: false in the kubelet configuration.", []string{"CIS 4.2.1"}, false},
	{CheckKubeletReadOnly, "Kubelet read-only port open", api.Severity_SEVERITY_MEDIUM, catNode,
		"Set readOnlyPort: 0 in the kubelet configuration.", []string{"CIS 4.2.4"}, false},
	{CheckKubeletAuthz, "Kubelet authorization AlwaysAllow", api.Severity_SEVERITY_CRITICAL, catNode,
		"Set authorization.mode: Webhook in the kubelet configuration.", []string{"CIS 4.2.2"}, false},
	{CheckKubeletKernelDefaults, "Kubelet may change the node's kernel settings", api.Severity_SEVERITY_LOW, catNode,
		"Set protectKernelDefaults: true in the kubelet configuration, after setting the kernel parameters the kubelet expects (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1).", []string{"CIS 4.2.6", "DISA STIG V-242434"}, false},
}

// Checks lists every check.
func Checks() []Check {
	out := make([]Check, len(checks))
	for i, c := range checks {
		c.Standards = slices.Clone(c.Standards)
		out[i] = c
	}
	return out
}

func lookup(id string) (Check, bool) {
	i := slices.IndexFunc(checks, func(c Check) bool { return c.ID == id })
	if i < 0 {
		return Check{}, false
	}
	return checks[i], true
}
