package posture

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
)

// CheckPodSpec evaluates the pod-level checks (pod security, limits,
// images, token automount, default namespace, env secrets) on one pod spec,
// a pod's or a workload template's. meta supplies the annotations (AppArmor,
// seccomp) and, when ref has none, the namespace. The findings' IDs are
// computed for an empty cluster name and the service account's own
// automount setting is unknown here (a pod that does not disable it is
// reported). A nil spec yields nothing.
func CheckPodSpec(meta metav1.ObjectMeta, spec *corev1.PodSpec, ref *api.ObjectRef, cfg Config) []*api.Finding {
	e := newEvaluator(cfg, "", "", time.Now())
	if ref == nil {
		ref = &api.ObjectRef{ApiVersion: "v1", Kind: "Pod", Namespace: meta.Namespace, Name: meta.Name, Uid: string(meta.UID)}
	}
	e.podSpec(&meta, spec, ref)
	return e.out
}

// container is the part of a container, init container or ephemeral
// container the checks read.
type container struct {
	name      string
	image     string
	sc        *corev1.SecurityContext
	ports     []corev1.ContainerPort
	env       []corev1.EnvVar
	envFrom   []corev1.EnvFromSource
	resources corev1.ResourceRequirements
	ephemeral bool
}

func containersOf(spec *corev1.PodSpec) []container {
	var out []container
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			out = append(out, container{name: c.Name, image: c.Image, sc: c.SecurityContext, ports: c.Ports,
				env: c.Env, envFrom: c.EnvFrom, resources: c.Resources})
		}
	}
	for _, c := range spec.EphemeralContainers {
		out = append(out, container{name: c.Name, image: c.Image, sc: c.SecurityContext, ports: c.Ports,
			env: c.Env, envFrom: c.EnvFrom, ephemeral: true})
	}
	return out
}

// baselineCaps are the capabilities PSS baseline allows adding.
var baselineCaps = []string{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}

// dangerousCaps raise pss-capabilities to high: each is a known path to the
// node or to other containers.
var dangerousCaps = []string{"ALL", "SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "SYS_RAWIO", "NET_ADMIN", "BPF",
	"PERFMON", "DAC_READ_SEARCH", "SYS_BOOT", "SYS_TIME"}

// safeSysctls is PSS baseline's allowed set.
var safeSysctls = []string{"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}

// selinuxTypes is PSS baseline's allowed set of SELinux types.
var selinuxTypes = []string{"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

// restrictedVolumes is PSS restricted's allowed set (JSON field names).
var restrictedVolumes = []string{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

// sensitiveHostPaths give node or runtime control, or node secrets, when
// mounted (or when an ancestor of them is).
var sensitiveHostPaths = []string{"/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var/run", "/run",
	"/var/lib/kubelet", "/var/lib/docker", "/var/lib/containerd", "/var/lib/etcd", "/var/log"}

func normCap(c corev1.Capability) string {
	return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_")
}

func sensitiveHostPath(p string) bool {
	p = path.Clean("/" + p)
	if p == "/" {
		return true
	}
	for _, s := range sensitiveHostPaths {
		if p == s || strings.HasPrefix(p, s+"/") || strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	return false
}

// volumeType is a volume's source field name ("hostPath", "nfs", ...), ""
// when it has none.
func volumeType(v corev1.VolumeSource) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	for k := range m {
		return k
	}
	return ""
}

func (e *evaluator) podSpec(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ref *api.ObjectRef) {
	if spec == nil || ref == nil {
		return
	}
	if ref.Namespace == "" && meta != nil && meta.Namespace != "" {
		ref = &api.ObjectRef{ApiVersion: ref.ApiVersion, Kind: ref.Kind, Namespace: meta.Namespace, Name: ref.Name, Uid: ref.Uid}
	}
	var annotations map[string]string
	if meta != nil {
		annotations = meta.Annotations
	}
	o := e.object(ref)
	defer o.flush()
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	ctrs := containersOf(spec)

	// Baseline, pod level.
	var hostNS []string
	for _, h := range []struct {
		on   bool
		name string
	}{{spec.HostNetwork, "hostNetwork"}, {spec.HostPID, "hostPID"}, {spec.HostIPC, "hostIPC"}} {
		if h.on {
			hostNS = append(hostNS, h.name+": true")
		}
	}
	if len(hostNS) > 0 {
		o.fail(CheckHostNamespaces, "", strings.Join(hostNS, ", "), 0)
	}
	for _, v := range spec.Volumes {
		if hp := v.HostPath; hp != nil {
			sev := api.Severity_SEVERITY_MEDIUM
			if sensitiveHostPath(hp.Path) {
				sev = api.Severity_SEVERITY_HIGH
			}
			o.fail(CheckHostPath, "", fmt.Sprintf("volume %q mounts hostPath %s", v.Name, hp.Path), sev)
			continue // also outside the restricted set, but reported once, here
		}
		if t := volumeType(v.VolumeSource); t != "" && !slices.Contains(restrictedVolumes, t) {
			o.fail(CheckVolumeTypes, "", fmt.Sprintf("volume %q is of type %s", v.Name, t), 0)
		}
	}
	if p := psc.SeccompProfile; p != nil && p.Type == corev1.SeccompProfileTypeUnconfined {
		o.fail(CheckSeccompUnconfined, "", "securityContext.seccompProfile.type: Unconfined", 0)
	}
	if strings.EqualFold(annotations[corev1.SeccompPodAnnotationKey], "unconfined") {
		o.fail(CheckSeccompUnconfined, "", corev1.SeccompPodAnnotationKey+": unconfined", 0)
	}
	if p := psc.AppArmorProfile; p != nil && p.Type == corev1.AppArmorProfileTypeUnconfined {
		o.fail(CheckAppArmor, "", "securityContext.appArmorProfile.type: Unconfined", 0)
	}
	if d := selinuxProblem(psc.SELinuxOptions); d != "" {
		o.fail(CheckSELinux, "", "securityContext.seLinuxOptions: "+d, 0)
	}
	for _, s := range psc.Sysctls {
		if !slices.Contains(safeSysctls, s.Name) {
			o.fail(CheckSysctls, "", fmt.Sprintf("sysctl %s is outside the safe set", s.Name), 0)
		}
	}

	// Workload hygiene, pod level.
	if ref.Namespace == metav1.NamespaceDefault {
		o.fail(CheckDefaultNamespace, "", "runs in namespace default", 0)
	}
	e.tokenAutomount(o, ref.Namespace, spec)

	for _, c := range ctrs {
		e.containerChecks(o, c, psc, annotations)
	}
}

func (e *evaluator) tokenAutomount(o *object, namespace string, spec *corev1.PodSpec) {
	if a := spec.AutomountServiceAccountToken; a != nil {
		if *a {
			o.fail(CheckTokenAutomount, "", "automountServiceAccountToken: true", 0)
		}
		return
	}
	sa := spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if a, ok := e.saAutomount[namespace+"/"+sa]; ok && a != nil && !*a {
		return
	}
	o.fail(CheckTokenAutomount, "", fmt.Sprintf("service account %q token is mounted (automountServiceAccountToken is not false on the pod or the service account)", sa), 0)
}

func selinuxProblem(o *corev1.SELinuxOptions) string {
	if o == nil {
		return ""
	}
	var bad []string
	if !slices.Contains(selinuxTypes, o.Type) {
		bad = append(bad, "type "+o.Type)
	}
	if o.User != "" {
		bad = append(bad, "user "+o.User)
	}
	if o.Role != "" {
		bad = append(bad, "role "+o.Role)
	}
	return strings.Join(bad, ", ")
}

func (e *evaluator) containerChecks(o *object, c container, psc *corev1.PodSecurityContext, annotations map[string]string) {
	sc := c.sc
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	n := c.name

	// Baseline.
	if sc.Privileged != nil && *sc.Privileged {
		o.fail(CheckPrivileged, n, "securityContext.privileged: true", 0)
	}
	for _, p := range c.ports {
		if p.HostPort != 0 {
			o.fail(CheckHostPorts, n, fmt.Sprintf("hostPort %d", p.HostPort), 0)
		}
	}
	var added, restrictedAdded []string
	sev := api.Severity_SEVERITY_MEDIUM
	var drops []string
	if caps := sc.Capabilities; caps != nil {
		for _, a := range caps.Add {
			name := normCap(a)
			if name != "NET_BIND_SERVICE" {
				restrictedAdded = append(restrictedAdded, name)
			}
			if slices.Contains(baselineCaps, name) {
				continue
			}
			added = append(added, name)
			if slices.Contains(dangerousCaps, name) {
				sev = api.Severity_SEVERITY_HIGH
			}
		}
		for _, d := range caps.Drop {
			drops = append(drops, normCap(d))
		}
	}
	if len(added) > 0 {
		o.fail(CheckCapabilities, n, "capabilities.add: "+strings.Join(added, ", "), sev)
	}
	containerSeccomp := sc.SeccompProfile
	if p := containerSeccomp; p != nil && p.Type == corev1.SeccompProfileTypeUnconfined {
		o.fail(CheckSeccompUnconfined, n, "securityContext.seccompProfile.type: Unconfined", 0)
	}
	if strings.EqualFold(annotations[corev1.SeccompContainerAnnotationKeyPrefix+n], "unconfined") {
		o.fail(CheckSeccompUnconfined, n, corev1.SeccompContainerAnnotationKeyPrefix+n+": unconfined", 0)
	}
	if p := sc.AppArmorProfile; p != nil && p.Type == corev1.AppArmorProfileTypeUnconfined {
		o.fail(CheckAppArmor, n, "securityContext.appArmorProfile.type: Unconfined", 0)
	}
	if strings.EqualFold(annotations[corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix+n], "unconfined") {
		o.fail(CheckAppArmor, n, corev1.DeprecatedAppArmorBetaContainerAnnotationKeyPrefix+n+": unconfined", 0)
	}
	if d := selinuxProblem(sc.SELinuxOptions); d != "" {
		o.fail(CheckSELinux, n, "securityContext.seLinuxOptions: "+d, 0)
	}
	if sc.ProcMount != nil && *sc.ProcMount == corev1.UnmaskedProcMount {
		o.fail(CheckProcMount, n, "securityContext.procMount: Unmasked", 0)
	}

	// Restricted.
	nonRoot, user := psc.RunAsNonRoot, psc.RunAsUser
	if sc.RunAsNonRoot != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if sc.RunAsUser != nil {
		user = sc.RunAsUser
	}
	switch {
	case user != nil && *user == 0:
		o.fail(CheckRunAsNonRoot, n, "runAsUser: 0", 0)
	case nonRoot == nil || !*nonRoot:
		o.fail(CheckRunAsNonRoot, n, "runAsNonRoot is not true", 0)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		o.fail(CheckPrivilegeEscal, n, "allowPrivilegeEscalation is not false", 0)
	}
	if !slices.Contains(drops, "ALL") {
		o.fail(CheckDropAll, n, "capabilities.drop does not include ALL", 0)
	}
	if len(restrictedAdded) > 0 {
		o.fail(CheckDropAll, n, "capabilities.add beyond NET_BIND_SERVICE: "+strings.Join(restrictedAdded, ", "), 0)
	}
	seccomp := psc.SeccompProfile
	if containerSeccomp != nil {
		seccomp = containerSeccomp
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost &&
		seccomp.Type != corev1.SeccompProfileTypeUnconfined) { // Unconfined is pss-seccomp-unconfined's
		o.fail(CheckSeccompRequired, n, "no RuntimeDefault or Localhost seccomp profile", 0)
	}

	// Resources (ephemeral containers cannot set any).
	if !c.ephemeral {
		var missing []string
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.resources.Limits[r]; !ok {
				missing = append(missing, string(r))
			}
		}
		if len(missing) > 0 {
			o.fail(CheckLimits, n, "no limit for "+strings.Join(missing, " and "), 0)
		}
	}

	e.imageChecks(o, n, c.image)
	envChecks(o, c)
}

func (e *evaluator) imageChecks(o *object, container, image string) {
	if image == "" {
		return
	}
	ref := ParseImage(image)
	if ref.Digest == "" {
		if ref.Tag == "" || ref.Tag == "latest" {
			o.fail(CheckImageLatest, container, fmt.Sprintf("image %s has no version tag", image), 0)
		}
		o.fail(CheckImageDigest, container, fmt.Sprintf("image %s is not pinned by digest", image), 0)
	}
	if len(e.cfg.AllowedRegistries) > 0 && !ref.Allowed(e.cfg.AllowedRegistries) {
		o.fail(CheckImageRegistry, container, fmt.Sprintf("image %s is from %s, not an allowed registry", image, ref.Registry), 0)
	}
}

// ImageRef is a parsed image reference.
type ImageRef struct {
	Registry   string // "docker.io" for Docker Hub
	Repository string // with "library/" for Docker Hub official images
	Tag        string
	Digest     string
}

// ParseImage splits an image reference ("nginx", "reg:5000/a/b:1.2@sha256:...").
// It does not validate: a malformed reference yields what it can.
func ParseImage(image string) ImageRef {
	var r ImageRef
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image, r.Digest = image[:i], image[i+1:]
	}
	if i := strings.LastIndexByte(image, ':'); i >= 0 && !strings.Contains(image[i+1:], "/") {
		image, r.Tag = image[:i], image[i+1:]
	}
	first, rest, found := strings.Cut(image, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Registry, r.Repository = first, rest
	} else {
		r.Registry, r.Repository = "docker.io", image
		if !found {
			r.Repository = "library/" + image
		}
	}
	return r
}

// Allowed reports whether the image is from one of allowed: a registry
// host, or a registry/repository prefix.
func (r ImageRef) Allowed(allowed []string) bool {
	full := r.Registry + "/" + r.Repository
	for _, a := range allowed {
		a = strings.TrimSuffix(a, "/")
		if a == r.Registry || full == a || strings.HasPrefix(full, a+"/") {
			return true
		}
	}
	return false
}

// secretWords mark an environment variable name as holding a secret.
var secretWords = []string{"PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "KEY", "APIKEY", "CREDENTIAL", "CREDENTIALS", "PRIVATE"}

// notSecretSuffixes name something about a secret rather than the secret
// (PASSWORD_FILE is a path).
var notSecretSuffixes = []string{"FILE", "PATH", "DIR", "URL", "URI", "NAME", "USER", "USERNAME", "ID", "ENDPOINT",
	"HOST", "PORT", "REF", "LENGTH", "ENABLED", "REQUIRED", "MODE"}

// notSecretValues are flags, not secrets.
var notSecretValues = []string{"true", "false", "yes", "no", "on", "off", "enabled", "disabled", "none", "null"}

// SecretLikeName reports whether an environment variable name suggests it
// holds a secret.
func SecretLikeName(name string) bool {
	words := strings.FieldsFunc(strings.ToUpper(name), func(r rune) bool {
		return (r < 'A' || r > 'Z') && (r < '0' || r > '9')
	})
	if len(words) == 0 || slices.Contains(notSecretSuffixes, words[len(words)-1]) {
		return false
	}
	for _, w := range words {
		if slices.Contains(secretWords, w) {
			return true
		}
	}
	return false
}

func envChecks(o *object, c container) {
	var literal, refs []string
	for _, v := range c.env {
		if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil {
			refs = append(refs, fmt.Sprintf("%s from secret %s", v.Name, v.ValueFrom.SecretKeyRef.Name))
			continue
		}
		val := strings.TrimSpace(v.Value)
		if val == "" || strings.HasPrefix(val, "$(") || slices.Contains(notSecretValues, strings.ToLower(val)) {
			continue
		}
		if SecretLikeName(v.Name) {
			literal = append(literal, v.Name) // the name only: never copy the value
		}
	}
	for _, f := range c.envFrom {
		if f.SecretRef != nil {
			refs = append(refs, "envFrom secret "+f.SecretRef.Name)
		}
	}
	sort.Strings(literal)
	if len(literal) > 0 {
		o.fail(CheckEnvSecretLiteral, c.name, "literal value in "+strings.Join(literal, ", "), 0)
	}
	if len(refs) > 0 {
		o.fail(CheckEnvSecretRef, c.name, strings.Join(refs, ", "), 0)
	}
}
