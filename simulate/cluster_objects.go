package simulate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/harrier-sec/harrier/internal/confval"
)

// apiEndpoint is an address the victims may reach the API server at.
type apiEndpoint struct {
	ip   string
	port int32
}

func labels(role, scenario string) map[string]string {
	l := map[string]string{managedByLabel: managedBy, roleLabel: role}
	if scenario != "" {
		l[scenarioLabel] = scenario
	}
	return l
}

func meta(ns, name, role, scenario string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels(role, scenario)}
}

// namespaceObject is the run's namespace. Pod security "privileged": the
// victim's init container needs NET_ADMIN to put the metadata address on
// the pod's own loopback, and runs as root.
func namespaceObject(ns string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
		managedByLabel:                       managedBy,
		"pod-security.kubernetes.io/enforce": "privileged",
		"pod-security.kubernetes.io/warn":    "privileged",
	}}}
}

// baseObjects are what the victims and the attacker need before their
// Services exist: accounts and the victims' files.
func baseObjects(ns string, scenarios []Scenario) []kubeObject {
	no := false
	objs := []kubeObject{
		// The attacker needs no API access at all.
		&corev1.ServiceAccount{ObjectMeta: meta(ns, attackerName, "attacker", ""), AutomountServiceAccountToken: &no},
		&corev1.ConfigMap{ObjectMeta: meta(ns, "victim-www", "victim", ""), Data: map[string]string{
			"index.html": victimIndex, "ping": cgiScript}},
		&corev1.ConfigMap{ObjectMeta: meta(ns, "victim-home", "victim", ""), Data: map[string]string{
			"credentials": fakeAWSCredentials, "app.env": "DATABASE_URL=postgres://app@db/shop\n"}},
	}
	for _, s := range scenarios {
		// Each victim's own account, bound to no role: its real token
		// can do what any authenticated user can, nothing more.
		objs = append(objs, &corev1.ServiceAccount{ObjectMeta: meta(ns, victimName(s.Name), "victim", s.Name)})
	}
	return objs
}

const victimIndex = "<html><body><h1>Demo shop</h1><a href=/cgi-bin/ping?host=127.0.0.1>status</a></body></html>\n"

func attackerService(ns string) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ns, attackerName, "attacker", ""), Spec: corev1.ServiceSpec{
		Selector: labels("attacker", ""),
		Ports: []corev1.ServicePort{
			{Name: "downloads", Port: 8000, TargetPort: intstr.FromInt32(8000)},
			{Name: "pool", Port: 3333, TargetPort: intstr.FromInt32(3333)},
		}}}
}

func victimService(ns, scenario string) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ns, victimName(scenario), "victim", scenario), Spec: corev1.ServiceSpec{
		Selector: labels("victim", scenario),
		Ports:    []corev1.ServicePort{{Name: "http", Port: victimPort, TargetPort: intstr.FromInt32(victimPort)}}}}
}

// clusterStepEnv is what the scenarios' commands use in a cluster: the
// attacker Service, a scan of the attacker pod and the victim itself only,
// and the real API server from the pod's environment.
func clusterStepEnv(attackerIP string) stepEnv {
	return stepEnv{attacker: attackerIP, miner: MinerName,
		scanHosts: []string{attackerPodIP, "$(hostname -i)"},
		apiServer: "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"}
}

// plan is the attacker's script.
func plan(e clusterEnv) ClusterPlan {
	p := ClusterPlan{VictimWait: confval.Duration(e.victimWait)}
	for _, s := range e.scenarios {
		ps := PlanScenario{Name: s.Name, Victim: e.victimIPs[s.Name]}
		for _, st := range s.Steps(clusterStepEnv(e.attackerIP)) {
			ps.Steps = append(ps.Steps, st.Command)
		}
		p.Scenarios = append(p.Scenarios, ps)
	}
	return p
}

func planConfigMap(e clusterEnv) (*corev1.ConfigMap, error) {
	b, err := json.Marshal(plan(e))
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{ObjectMeta: meta(e.ns, planName, "attacker", ""), Data: map[string]string{"plan.json": string(b)}}, nil
}

// restricted is a container that runs as uid, with no capabilities and no
// way to gain privileges.
func restricted(uid int64) *corev1.SecurityContext {
	no, yes := false, true
	return &corev1.SecurityContext{RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &yes,
		AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

// podEnv is the downward API environment the cluster roles check.
func podEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: namespaceEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: podIPEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
	}
}

func smallResources(mem string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse(mem)},
	}
}

func attackerPod(e clusterEnv) *corev1.Pod {
	no, grace := false, int64(1)
	sc := restricted(65534)
	ro := true
	sc.ReadOnlyRootFilesystem = &ro
	return &corev1.Pod{ObjectMeta: meta(e.ns, attackerName, "attacker", ""), Spec: corev1.PodSpec{
		ServiceAccountName:            attackerName,
		AutomountServiceAccountToken:  &no,
		RestartPolicy:                 corev1.RestartPolicyNever,
		TerminationGracePeriodSeconds: &grace,
		EnableServiceLinks:            &no,
		Containers: []corev1.Container{{
			Name: attackerName, Image: e.harrier,
			Command: []string{harrierPath, AttackerCommand, "--cluster", RoleAttackerPod,
				"--plan", "/plan/plan.json", "--miner", harrierPath},
			Env:             podEnv(),
			SecurityContext: sc,
			Resources:       smallResources("128Mi"),
			Ports:           []corev1.ContainerPort{{Name: "downloads", ContainerPort: 8000}, {Name: "pool", ContainerPort: 3333}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8000)}},
				PeriodSeconds: 1},
			VolumeMounts: []corev1.VolumeMount{{Name: "plan", MountPath: "/plan", ReadOnly: true}},
		}},
		Volumes: []corev1.Volume{{Name: "plan", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: planName}}}}},
	}}
}

// victimPod is a scenario's victim: busybox httpd as uid 1000 with the
// vulnerable CGI page, the fake credentials, the real token of an account
// with no permissions, and a sidecar for the fake metadata service and the
// pod's only DNS server, both inside the pod's network namespace.
func victimPod(e clusterEnv, scenario string) *corev1.Pod {
	no, grace := false, int64(1)
	uid, root := int64(victimUID), int64(0)
	ro := true
	sidecar := restricted(65534)
	sidecar.ReadOnlyRootFilesystem = &ro
	initSC := &corev1.SecurityContext{RunAsUser: &root, RunAsNonRoot: &no, AllowPrivilegeEscalation: &no,
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}}}
	exec, secret := int32(0o755), int32(0o440)
	return &corev1.Pod{ObjectMeta: meta(e.ns, victimName(scenario), "victim", scenario), Spec: corev1.PodSpec{
		ServiceAccountName:            victimName(scenario),
		RestartPolicy:                 corev1.RestartPolicyNever,
		TerminationGracePeriodSeconds: &grace,
		EnableServiceLinks:            &no,
		// The pod's only resolver is the sidecar on its loopback: no
		// cluster DNS, no forwarding.
		DNSPolicy: corev1.DNSNone,
		DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"}},
		SecurityContext: &corev1.PodSecurityContext{FSGroup: &uid,
			// The non-root sidecar binds ports 53 and 80 (a namespaced,
			// "safe" sysctl).
			Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}},
		InitContainers: []corev1.Container{{
			Name: "metadata-address", Image: e.image,
			Command:         []string{"sh", "-c", "ip addr add " + metadataIP + "/32 dev lo 2>/dev/null; ip addr show dev lo | grep -q 'inet " + metadataIP + "/32'"},
			SecurityContext: initSC, Resources: smallResources("16Mi"),
		}},
		Containers: []corev1.Container{{
			Name: "web", Image: e.image,
			Command: []string{"httpd", "-f", "-p", fmt.Sprint(victimPort), "-h", "/www"},
			Env: []corev1.EnvVar{{Name: "HOME", Value: "/home/app"}, {Name: "APP_ENV", Value: "production"},
				{Name: PoolEnv, Value: hostPortOf(e.attackerIP, 3333)}},
			SecurityContext: restricted(uid),
			Resources:       smallResources("64Mi"),
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: victimPort}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/index.html", Port: intstr.FromInt32(victimPort)}},
				PeriodSeconds: 1},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "www", MountPath: "/www", ReadOnly: true},
				// The credentials as sites mount a Secret: a directory at
				// ~/.aws (the kernel reports its files under the kubelet's
				// ..<time> directory, which the sensor drops again).
				{Name: "home", MountPath: "/home/app"},
				{Name: "aws", MountPath: "/home/app/.aws", ReadOnly: true},
				{Name: "app-env", MountPath: "/home/app/app.env", SubPath: "app.env", ReadOnly: true},
			},
		}, {
			Name: "fake-metadata-dns", Image: e.harrier,
			Command:         []string{harrierPath, AttackerCommand, "--cluster", RoleVictimSidecar, "--answer", e.attackerIP},
			Env:             podEnv(),
			SecurityContext: sidecar,
			Resources:       smallResources("64Mi"),
		}},
		Volumes: []corev1.Volume{
			{Name: "www", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "victim-www"},
				Items:                []corev1.KeyToPath{{Key: "index.html", Path: "index.html"}, {Key: "ping", Path: "cgi-bin/ping", Mode: &exec}}}}},
			{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: new(resource.MustParse("1Mi"))}}},
			{Name: "aws", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "victim-home"},
				Items:                []corev1.KeyToPath{{Key: "credentials", Path: "credentials", Mode: &secret}}}}},
			{Name: "app-env", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "victim-home"},
				Items:                []corev1.KeyToPath{{Key: "app.env", Path: "app.env"}}}}},
		},
	}}
}

func hostPortOf(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// networkPolicies confine the run: nothing outside the namespace reaches
// the pods (the victims are vulnerable on purpose); the victims may reach
// the attacker, themselves and the API server only; the attacker may
// reach the victims' web servers only. DNS and metadata never leave the
// victim pod, so they need no rule.
func networkPolicies(e clusterEnv) []kubeObject {
	tcp := corev1.ProtocolTCP
	sameNS := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}
	var api []networkingv1.NetworkPolicyEgressRule
	for _, a := range e.apiServer {
		port := intstr.FromInt32(a.port)
		api = append(api, networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: hostCIDR(a.ip)}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}})
	}
	victimPortV := intstr.FromInt32(victimPort)
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	return []kubeObject{
		&networkingv1.NetworkPolicy{ObjectMeta: meta(e.ns, "victims", "victim", ""), Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{roleLabel: "victim"}},
			PolicyTypes: both,
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: sameNS}},
			Egress: append([]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{roleLabel: "attacker"}}},
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{roleLabel: "victim"}}},
			}}}, api...),
		}},
		&networkingv1.NetworkPolicy{ObjectMeta: meta(e.ns, attackerName, "attacker", ""), Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{roleLabel: "attacker"}},
			PolicyTypes: both,
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: sameNS}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{roleLabel: "victim"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &victimPortV}},
			}},
		}},
	}
}

func hostCIDR(ip string) string {
	if strings.Contains(ip, ":") {
		return ip + "/128"
	}
	return ip + "/32"
}

// randomNamespace is harrier-simulate-XXXXX.
func randomNamespace() string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "harrier-simulate-" + string(b)
}

// apiServerEndpoints are the addresses pods reach the API server at: the
// default/kubernetes Service and its EndpointSlices (network policies see the
// translated address on most network plugins).
func apiServerEndpoints(ctx context.Context, k *kubeClient) ([]apiEndpoint, error) {
	svc, err := k.getService(ctx, "default", "kubernetes")
	if err != nil {
		return nil, fmt.Errorf("read the API server's Service default/kubernetes: %w", err)
	}
	var out []apiEndpoint
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		for _, p := range svc.Spec.Ports {
			out = append(out, apiEndpoint{ip: ip, port: p.Port})
		}
	}
	eps, err := k.endpointSlices(ctx, "default", "kubernetes")
	if err != nil {
		return nil, fmt.Errorf("read the API server's endpoints: %w", err)
	}
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			for _, ip := range ep.Addresses {
				for _, p := range s.Ports {
					if p.Port != nil {
						out = append(out, apiEndpoint{ip: ip, port: *p.Port})
					}
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the API server's Service default/kubernetes has no address")
	}
	return out, nil
}
