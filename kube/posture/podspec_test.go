package posture

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/yaml"

	"github.com/harrier-sec/harrier/api"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// goodSpec passes every pod check.
func goodSpec() *corev1.PodSpec {
	return &corev1.PodSpec{
		AutomountServiceAccountToken: new(false),
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: new(true), RunAsUser: new(int64(1000)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/app:1.0@" + testDigest,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: new(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
	}
}

// keys are "check[container]" or "check[container]=SEVERITY" when withSev.
func keys(fs []*api.Finding, withSev bool) []string {
	var out []string
	for _, f := range fs {
		k := f.CheckId + "[" + f.Container + "]"
		if withSev {
			k += "=" + strings.TrimPrefix(f.Severity.String(), "SEVERITY_")
		}
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestCheckPodSpec(t *testing.T) {
	sc := func(s *corev1.PodSpec) *corev1.SecurityContext { return s.Containers[0].SecurityContext }
	tests := []struct {
		name string
		ns   string
		meta metav1.ObjectMeta
		edit func(*corev1.PodSpec)
		cfg  Config
		want []string // with severities when an entry has "="
	}{
		{name: "compliant", edit: func(*corev1.PodSpec) {}},
		{name: "privileged", edit: func(s *corev1.PodSpec) { sc(s).Privileged = new(true) },
			want: []string{"pss-privileged[app]=HIGH"}},
		{name: "host namespaces", edit: func(s *corev1.PodSpec) { s.HostPID, s.HostNetwork = true, true },
			want: []string{"pss-host-namespaces[]=HIGH"}},
		{name: "hostPath plain", edit: func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/data"}}}}
		}, want: []string{"pss-host-path[]=MEDIUM"}},
		{name: "hostPath sensitive wins", edit: func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/data"}}},
				{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, want: []string{"pss-host-path[]=HIGH"}},
		{name: "hostPath ancestor of sensitive", edit: func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "var", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/"}}}}
		}, want: []string{"pss-host-path[]=HIGH"}},
		{name: "host port", edit: func(s *corev1.PodSpec) {
			s.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
		},
			want: []string{"pss-host-ports[app]=MEDIUM"}},
		{name: "baseline capability only fails restricted", edit: func(s *corev1.PodSpec) { sc(s).Capabilities.Add = []corev1.Capability{"CHOWN"} },
			want: []string{"pss-capabilities-drop-all[app]=LOW"}},
		{name: "NET_BIND_SERVICE allowed", edit: func(s *corev1.PodSpec) { sc(s).Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"} }},
		{name: "NET_RAW medium", edit: func(s *corev1.PodSpec) { sc(s).Capabilities.Add = []corev1.Capability{"NET_RAW"} },
			want: []string{"pss-capabilities-drop-all[app]=LOW", "pss-capabilities[app]=MEDIUM"}},
		{name: "CAP_SYS_ADMIN high", edit: func(s *corev1.PodSpec) { sc(s).Capabilities.Add = []corev1.Capability{"cap_sys_admin"} },
			want: []string{"pss-capabilities-drop-all[app]=LOW", "pss-capabilities[app]=HIGH"}},
		{name: "seccomp unconfined pod level", edit: func(s *corev1.PodSpec) {
			s.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
		}, want: []string{"pss-seccomp-unconfined[]"}},
		{name: "seccomp container overrides pod", edit: func(s *corev1.PodSpec) {
			s.SecurityContext.SeccompProfile = nil
			sc(s).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: new("p.json")}
		}},
		{name: "no seccomp", edit: func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil },
			want: []string{"pss-seccomp-required[app]=LOW"}},
		{name: "seccomp unconfined annotation", meta: metav1.ObjectMeta{Annotations: map[string]string{
			"container.seccomp.security.alpha.kubernetes.io/app": "unconfined"}}, edit: func(*corev1.PodSpec) {},
			want: []string{"pss-seccomp-unconfined[app]"}},
		{name: "apparmor field", edit: func(s *corev1.PodSpec) {
			sc(s).AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}, want: []string{"pss-apparmor-unconfined[app]"}},
		{name: "apparmor annotation", meta: metav1.ObjectMeta{Annotations: map[string]string{
			"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}}, edit: func(*corev1.PodSpec) {},
			want: []string{"pss-apparmor-unconfined[app]"}},
		{name: "selinux custom type", edit: func(s *corev1.PodSpec) { sc(s).SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"} },
			want: []string{"pss-selinux[app]"}},
		{name: "selinux allowed type and level", edit: func(s *corev1.PodSpec) {
			s.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "container_t", Level: "s0:c1,c2"}
		}},
		{name: "proc mount unmasked", edit: func(s *corev1.PodSpec) { sc(s).ProcMount = new(corev1.UnmaskedProcMount) },
			want: []string{"pss-proc-mount[app]"}},
		{name: "sysctls", edit: func(s *corev1.PodSpec) {
			s.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.tcp_syncookies", Value: "1"}, {Name: "kernel.msgmax", Value: "1"}}
		}, want: []string{"pss-sysctls[]"}},
		{name: "root user", edit: func(s *corev1.PodSpec) { sc(s).RunAsUser = new(int64(0)) },
			want: []string{"pss-run-as-non-root[app]=MEDIUM"}},
		{name: "non-root unset", edit: func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil },
			want: []string{"pss-run-as-non-root[app]"}},
		{name: "non-root set on the container only", edit: func(s *corev1.PodSpec) {
			s.SecurityContext.RunAsNonRoot = nil
			sc(s).RunAsNonRoot = new(true)
		}},
		{name: "privilege escalation unset", edit: func(s *corev1.PodSpec) { sc(s).AllowPrivilegeEscalation = nil },
			want: []string{"pss-privilege-escalation[app]"}},
		{name: "volume types", edit: func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				{Name: "nfs", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}}}
		}, want: []string{"pss-volume-types[]=LOW"}},
		{name: "limits", edit: func(s *corev1.PodSpec) {
			s.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}
		}, want: []string{"resources-limits[app]=LOW"}},
		{name: "untagged image", edit: func(s *corev1.PodSpec) { s.Containers[0].Image = "nginx" },
			want: []string{"image-latest[app]=MEDIUM", "image-no-digest[app]=LOW"}},
		{name: "tagged image without digest", edit: func(s *corev1.PodSpec) { s.Containers[0].Image = "localhost:5000/nginx:1.27" },
			want: []string{"image-no-digest[app]"}},
		{name: "latest pinned by digest", edit: func(s *corev1.PodSpec) { s.Containers[0].Image = "nginx:latest@" + testDigest }},
		{name: "registry allow-list", cfg: Config{AllowedRegistries: []string{"registry.example"}},
			edit: func(s *corev1.PodSpec) {
				s.InitContainers = []corev1.Container{{Name: "init", Image: "docker.io/library/busybox:1@" + testDigest,
					SecurityContext: s.Containers[0].SecurityContext, Resources: s.Containers[0].Resources}}
			}, want: []string{"image-registry[init]=MEDIUM"}},
		{name: "registry allow-list by repository prefix", cfg: Config{AllowedRegistries: []string{"docker.io/library"}},
			edit: func(s *corev1.PodSpec) { s.Containers[0].Image = "busybox:1@" + testDigest }},
		{name: "token from service account default", edit: func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = nil },
			want: []string{"sa-token-automount[]=LOW"}},
		{name: "default namespace", ns: "default", edit: func(*corev1.PodSpec) {}, want: []string{"default-namespace[]"}},
		{name: "env secrets", edit: func(s *corev1.PodSpec) {
			s.Containers[0].Env = []corev1.EnvVar{
				{Name: "DB_PASSWORD", Value: "x1"}, {Name: "AWS_SECRET_ACCESS_KEY", Value: "abc"},
				{Name: "PASSWORD_FILE", Value: "/run/secrets/pw"}, {Name: "TOKEN_ENABLED", Value: "true"},
				{Name: "API_KEY", Value: "$(OTHER)"}, {Name: "PWD", Value: "/app"}, {Name: "EMPTY_TOKEN"},
				{Name: "FROM_SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
				{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}},
			}
			s.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{}}}
		}, want: []string{"env-secret-literal[app]=MEDIUM", "env-secret-ref[app]=INFO"}},
		{name: "exempt namespace by default", ns: "kube-system", edit: func(s *corev1.PodSpec) {
			sc(s).Privileged = new(true)
			s.HostNetwork = true
		}},
		{name: "exemption list replaced", ns: "kube-system", cfg: Config{ExemptNamespaces: []string{}},
			edit: func(s *corev1.PodSpec) { sc(s).Privileged = new(true) }, want: []string{"pss-privileged[app]"}},
		{name: "checks selected", cfg: Config{Checks: []string{CheckPrivileged}}, edit: func(s *corev1.PodSpec) {
			sc(s).Privileged = new(true)
			s.HostNetwork = true
		}, want: []string{"pss-privileged[app]"}},
		{name: "checks disabled", cfg: Config{Disabled: []string{CheckPrivileged}}, edit: func(s *corev1.PodSpec) { sc(s).Privileged = new(true) }},
		{name: "ephemeral container", edit: func(s *corev1.PodSpec) {
			s.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Image: "busybox:1@" + testDigest, SecurityContext: s.Containers[0].SecurityContext}}}
		}},
		// Malformed and partial objects.
		{name: "no containers", edit: func(s *corev1.PodSpec) { s.Containers = nil }},
		{name: "nil security contexts", edit: func(s *corev1.PodSpec) {
			s.SecurityContext = nil
			s.Containers[0].SecurityContext = nil
		}, want: []string{"pss-capabilities-drop-all[app]", "pss-privilege-escalation[app]", "pss-run-as-non-root[app]", "pss-seccomp-required[app]"}},
		{name: "empty container", edit: func(s *corev1.PodSpec) { s.Containers = []corev1.Container{{}} },
			want: []string{"pss-capabilities-drop-all[]", "pss-privilege-escalation[]", "resources-limits[]"}},
		{name: "nil hostPath-free volume and empty capabilities", edit: func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "x"}}
			sc(s).Capabilities = &corev1.Capabilities{}
		}, want: []string{"pss-capabilities-drop-all[app]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := goodSpec()
			tc.edit(spec)
			ns := tc.ns
			if ns == "" {
				ns = "apps"
			}
			meta := tc.meta
			meta.Namespace, meta.Name = ns, "p"
			fs := CheckPodSpec(meta, spec, nil, tc.cfg)
			withSev := slices.ContainsFunc(tc.want, func(s string) bool { return strings.Contains(s, "=") })
			got := keys(fs, false)
			want := make([]string, 0, len(tc.want))
			for _, w := range tc.want {
				want = append(want, strings.Split(w, "=")[0])
			}
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Fatalf("findings %v, want %v (details: %v)", got, want, details(fs))
			}
			if withSev {
				for _, w := range tc.want {
					if strings.Contains(w, "=") && !slices.Contains(keys(fs, true), w) {
						t.Errorf("want %s, got %v", w, keys(fs, true))
					}
				}
			}
			for _, f := range fs {
				if f.Object.GetNamespace() != ns || f.Object.GetName() != "p" || f.Id == "" || f.Detail == "" {
					t.Errorf("finding %v", f)
				}
			}
		})
	}
}

func details(fs []*api.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.CheckId+": "+f.Detail)
	}
	return out
}

// TestCheckPodSpecNil: nothing to evaluate is no finding and no panic.
func TestCheckPodSpecNil(t *testing.T) {
	if fs := CheckPodSpec(metav1.ObjectMeta{}, nil, nil, Config{}); len(fs) != 0 {
		t.Errorf("nil spec: %v", fs)
	}
	fs := CheckPodSpec(metav1.ObjectMeta{}, &corev1.PodSpec{}, &api.ObjectRef{}, Config{})
	if !slices.Equal(keys(fs, false), []string{"sa-token-automount[]"}) {
		t.Errorf("empty spec: %v", keys(fs, false))
	}
}

func TestFindingIDStable(t *testing.T) {
	ref := &api.ObjectRef{Kind: "Deployment", Namespace: "a", Name: "web", Uid: "1"}
	id := FindingID("pss-privileged", "c1", ref, "app")
	for _, other := range []string{
		FindingID("pss-privileged", "c2", ref, "app"),
		FindingID("pss-host-path", "c1", ref, "app"),
		FindingID("pss-privileged", "c1", ref, "sidecar"),
		FindingID("pss-privileged", "c1", &api.ObjectRef{Kind: "Deployment", Namespace: "b", Name: "web"}, "app"),
		// No ambiguity from concatenation.
		FindingID("pss-privileged", "c1", &api.ObjectRef{Kind: "Deployment", Namespace: "aw", Name: "eb"}, "app"),
	} {
		if other == id {
			t.Errorf("ID collision for %s", other)
		}
	}
	if again := FindingID("pss-privileged", "c1", &api.ObjectRef{Kind: "Deployment", Namespace: "a", Name: "web", Uid: "2"}, "app"); again != id {
		t.Error("ID depends on the UID")
	}
}

func TestParseImage(t *testing.T) {
	tests := []struct {
		in   string
		want ImageRef
	}{
		{"nginx", ImageRef{Registry: "docker.io", Repository: "library/nginx"}},
		{"nginx:1.27", ImageRef{Registry: "docker.io", Repository: "library/nginx", Tag: "1.27"}},
		{"bitnami/redis:7", ImageRef{Registry: "docker.io", Repository: "bitnami/redis", Tag: "7"}},
		{"localhost:5000/a/b", ImageRef{Registry: "localhost:5000", Repository: "a/b"}},
		{"ghcr.io/o/r:v1@sha256:ab", ImageRef{Registry: "ghcr.io", Repository: "o/r", Tag: "v1", Digest: "sha256:ab"}},
		{"reg:5000/x@sha256:ab", ImageRef{Registry: "reg:5000", Repository: "x", Digest: "sha256:ab"}},
		{"", ImageRef{Registry: "docker.io", Repository: "library/"}},
		{"@@::", ImageRef{Registry: "docker.io", Repository: "library/", Digest: "@::"}},
	}
	for _, tc := range tests {
		if got := ParseImage(tc.in); got != tc.want {
			t.Errorf("ParseImage(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestSecretLikeName(t *testing.T) {
	for name, want := range map[string]bool{
		"DB_PASSWORD": true, "password": true, "GITHUB_TOKEN": true, "AWS_SECRET_ACCESS_KEY": true, "api-key": true,
		"PRIVATE_KEY": true, "PASSWORD_FILE": false, "PWD": false, "KEYCLOAK_URL": false, "HOME": false, "TOKEN_PATH": false,
		"": false, "___": false,
	} {
		if got := SecretLikeName(name); got != want {
			t.Errorf("SecretLikeName(%q) = %v", name, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Checks: []string{CheckPrivileged}, Disabled: []string{CheckLimits}, AllowedRegistries: []string{"r.example"}}).Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []Config{
		{Checks: []string{"no-such-check"}},
		{Disabled: []string{"pss-privileged", "nope"}},
		{AllowedRegistries: []string{" "}},
		{AllowedRegistries: []string{"https://r.example"}},
		{ExemptNamespaces: []string{""}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	// Every catalogued check has what a finding needs, and a unique ID.
	seen := map[string]bool{}
	for _, c := range Checks() {
		if seen[c.ID] || c.Title == "" || c.Remediation == "" || c.Category == "" || c.Severity == api.Severity_SEVERITY_UNSPECIFIED {
			t.Errorf("check %+v", c)
		}
		seen[c.ID] = true
	}
}

// TestConfigStrictYAML decodes the section as the agent does (YAML → JSON,
// unknown fields rejected): absent exemptNamespaces means the defaults, []
// means none.
func TestConfigStrictYAML(t *testing.T) {
	decode := func(src string) (Config, error) {
		js, err := yaml.YAMLToJSON([]byte(src))
		if err != nil {
			return Config{}, err
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		var c Config
		err = dec.Decode(&c)
		return c, err
	}
	c, err := decode("disabled: [image-no-digest]\nallowedRegistries: [r.example]\n")
	if err != nil || c.Validate() != nil || !c.exempt("kube-system") || c.enabled(CheckImageDigest) || !c.enabled(CheckImageRegistry) {
		t.Errorf("%+v %v", c, err)
	}
	c, err = decode("exemptNamespaces: []\n")
	if err != nil || c.exempt("kube-system") {
		t.Errorf("[]: %+v %v", c, err)
	}
	if _, err := decode("exemptNamespace: [a]\n"); err == nil {
		t.Error("unknown field accepted")
	}
}
