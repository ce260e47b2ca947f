package simulate

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// Labels of everything the cluster mode creates; --cleanup deletes the
// namespaces that carry managedBy, and only those.
const (
	managedByLabel    = "app.kubernetes.io/managed-by"
	managedBy         = "harrier-simulate"
	managedBySelector = managedByLabel + "=" + managedBy
	roleLabel         = "harrier-simulate/role"
	scenarioLabel     = "harrier-simulate/scenario"
	// DefaultImage is the victim's image: it needs busybox's sh, httpd
	// (with CGI), wget, nc and ip.
	DefaultImage = "busybox:1.36"
	// attackerName names the attacker's pod, service and account.
	attackerName = "attacker"
	planName     = "attacker-plan"
	harrierPath  = "/usr/bin/harrier"
)

// ClusterOptions configure a simulation in a Kubernetes cluster.
type ClusterOptions struct {
	Scenarios []Scenario
	// APIURL and Token reach the backend the alerts are read from.
	APIURL, Token string
	// Timeout is how long each expected alert may take after its behaviour.
	Timeout time.Duration
	// Kube reaches the cluster's API server.
	Kube *rest.Config
	// Namespace is created for the run and must not exist; empty: a
	// random harrier-simulate-XXXXX.
	Namespace string
	// Image is the victim's busybox image; HarrierImage holds the harrier
	// binary at /usr/bin/harrier (the attacker and the victim's sidecar).
	Image, HarrierImage string
	// ReadyTimeout bounds the wait for every pod to be Ready (default 3m).
	ReadyTimeout time.Duration
	// DriverTimeout bounds the attacker's whole play (default 10m).
	DriverTimeout time.Duration
	// Keep, when set, is called with everything still up after the run;
	// clean-up follows when it returns.
	Keep func(namespace string)
	Log  *slog.Logger
}

// victimName is the pod, Service and service account of a scenario's victim.
func victimName(scenario string) string { return "victim-" + scenario }

// clusterEnv is what the objects need to know about the cluster.
type clusterEnv struct {
	ns             string
	image, harrier string
	attackerIP     string // the attacker Service's ClusterIP
	apiServer      []apiEndpoint
	scenarios      []Scenario
	victimIPs      map[string]string // scenario → victim Service ClusterIP
	victimWait     time.Duration
}

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
				{Name: "home", MountPath: "/home/app", ReadOnly: true},
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
			{Name: "home", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "victim-home"},
				Items:                []corev1.KeyToPath{{Key: "credentials", Path: ".aws/credentials", Mode: &secret}, {Key: "app.env", Path: "app.env"}}}}},
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

// RunCluster plays the scenarios in a namespace of its own in the cluster
// and reads the alerts back from the backend. The namespace is deleted
// before it returns, also on error and when ctx is cancelled.
func RunCluster(ctx context.Context, o ClusterOptions) (rep *Report, err error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 3 * time.Minute
	}
	if o.DriverTimeout <= 0 {
		o.DriverTimeout = 10 * time.Minute
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.HarrierImage == "" {
		return nil, errors.New("simulate: the harrier image is not set")
	}
	if o.Namespace == "" {
		o.Namespace = randomNamespace()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	k, err := newKubeClient(o.Kube)
	if err != nil {
		return nil, err
	}
	b := backendClient{base: strings.TrimSuffix(o.APIURL, "/"), token: o.Token, http: &http.Client{Timeout: 5 * time.Second}}
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	ns := o.Namespace
	w := &watcher{b: b, since: time.Now().Add(-time.Second), victim: podVictim(ns), seen: map[string]sighting{}}

	if err := k.create(ctx, namespaceObject(ns)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("namespace %s exists: the simulator only uses a namespace it creates (choose another --namespace)", ns)
		}
		return nil, err
	}
	defer func() {
		// A fresh context: clean-up must run also when ctx was cancelled.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		cerr := k.deleteNamespace(cctx, ns)
		if cerr == nil {
			o.Log.Info("namespace deleted", "namespace", ns)
		}
		err = errors.Join(err, cerr)
		if err != nil && rep != nil {
			rep.Error = err.Error()
		}
	}()
	o.Log.Info("namespace created", "namespace", ns)

	e := clusterEnv{ns: ns, image: o.Image, harrier: o.HarrierImage, scenarios: o.Scenarios,
		victimIPs: map[string]string{}, victimWait: o.ReadyTimeout}
	if e.apiServer, err = apiServerEndpoints(ctx, k); err != nil {
		return nil, err
	}
	for _, obj := range baseObjects(ns, o.Scenarios) {
		if err := k.create(ctx, obj); err != nil {
			return nil, err
		}
	}
	att := attackerService(ns)
	if err := k.create(ctx, att); err != nil {
		return nil, err
	}
	e.attackerIP = att.Spec.ClusterIP
	pods := []string{}
	for _, s := range o.Scenarios {
		svc := victimService(ns, s.Name)
		if err := k.create(ctx, svc); err != nil {
			return nil, err
		}
		e.victimIPs[s.Name] = svc.Spec.ClusterIP
		if err := k.create(ctx, victimPod(e, s.Name)); err != nil {
			return nil, err
		}
		pods = append(pods, victimName(s.Name))
	}
	for _, np := range networkPolicies(e) {
		if err := k.create(ctx, np); err != nil {
			return nil, err
		}
	}
	cm, err := planConfigMap(e)
	if err != nil {
		return nil, err
	}
	if err := k.create(ctx, cm); err != nil {
		return nil, err
	}
	if err := k.create(ctx, attackerPod(e)); err != nil {
		return nil, err
	}
	pods = append(pods, attackerName)

	if err := waitReady(ctx, k, ns, pods, o.ReadyTimeout, w.poll); err != nil {
		return nil, err
	}
	o.Log.Info("pods ready", "namespace", ns, "pods", len(pods))
	sent, done, err := followDriver(ctx, k, ns, o.DriverTimeout, w.poll, o.Log)
	if err != nil {
		return nil, err
	}
	rep = &Report{}
	for _, s := range o.Scenarios {
		victim := ns + "/" + victimName(s.Name)
		if err := w.waitFor(ctx, victim, append(slices.Clone(s.Expected), s.ClusterOnly...), done.Add(o.Timeout)); err != nil {
			return rep, err
		}
		steps := s.Steps(clusterStepEnv(e.attackerIP))
		at := map[api.DetectionID]time.Time{}
		for i, st := range steps {
			t, ok := sent[stepKey{s.Name, i + 1}]
			if !ok {
				continue
			}
			for _, d := range st.Raises {
				if _, ok := at[d]; !ok {
					at[d] = t
				}
			}
		}
		sr := ScenarioReport{Name: s.Name, Title: s.Title, Container: victim}
		sr.Alerts = append(sr.Alerts, results(w, victim, RoleExpected, s.Expected, at)...)
		// In a cluster the control-plane detections are expected too.
		sr.Alerts = append(sr.Alerts, results(w, victim, RoleExpected, s.ClusterOnly, at)...)
		sr.Alerts = append(sr.Alerts, results(w, victim, RoleExplained, s.Explained, at)...)
		rep.Scenarios = append(rep.Scenarios, sr)
	}
	time.Sleep(time.Second)
	if err := w.poll(ctx); err != nil {
		return rep, err
	}
	explain(rep, w)
	rep.Notes = append(rep.Notes, "latency is measured from the attacker pod's clock to this machine's: keep both in time sync (NTP)")
	if o.Keep != nil {
		o.Keep(ns)
	}
	return rep, nil
}

// results are the report lines of detections about victim; at holds when
// the behaviour of each was sent.
func results(w *watcher, victim, role string, detections []api.DetectionID, at map[api.DetectionID]time.Time) []AlertResult {
	var out []AlertResult
	for _, d := range detections {
		res := AlertResult{Detection: d, Role: role}
		if s, ok := w.find(victim, d); ok {
			res.Seen, res.Alert = true, refOf(s.alert)
			if t, ok := at[d]; ok {
				res.Latency = s.seen.Sub(t)
			}
		}
		out = append(out, res)
	}
	return out
}

// podVictim names the victim pod an alert is about in namespace ns: its
// container's pod for the node's detections, the service account (named
// as its pod) for the control plane's.
func podVictim(ns string) func(*api.Alert) string {
	saPrefix := "system:serviceaccount:" + ns + ":"
	return func(a *api.Alert) string {
		if c := a.GetContainer(); c.GetPodNamespace() == ns && strings.HasPrefix(c.GetPodName(), "victim-") {
			return ns + "/" + c.GetPodName()
		}
		for _, ev := range a.GetEvidence() {
			if u := ev.GetAudit().GetUser(); strings.HasPrefix(u, saPrefix+"victim-") {
				return ns + "/" + strings.TrimPrefix(u, saPrefix)
			}
		}
		return ""
	}
}

// waitReady waits until every pod is Ready, calling tick about every
// 500 ms. A pod that failed, or is not Ready by the timeout, is named in
// the error with its status.
func waitReady(ctx context.Context, k *kubeClient, ns string, pods []string, timeout time.Duration, tick func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		var notReady []*corev1.Pod
		for _, name := range pods {
			p, err := k.getPod(ctx, ns, name)
			if err != nil {
				return fmt.Errorf("pod %s/%s: %w", ns, name, err)
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				return fmt.Errorf("pod %s/%s stopped: %s", ns, name, podStatus(p))
			}
			if !podReady(p) {
				notReady = append(notReady, p)
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var errs []error
			for _, p := range notReady {
				errs = append(errs, fmt.Errorf("pod %s/%s not ready after %v: %s", ns, p.Name, timeout, podStatus(p)))
			}
			return errors.Join(errs...)
		}
		if err := tick(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the pods: %w", context.Cause(ctx))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podStatus says why a pod is where it is, for people.
func podStatus(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	if p.Spec.NodeName == "" {
		parts = append(parts, "not scheduled")
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && (c.Reason != "" || c.Message != "") {
			parts = append(parts, fmt.Sprintf("%s: %s %s", c.Type, c.Reason, c.Message))
		}
	}
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		switch {
		case cs.State.Waiting != nil:
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("container %s terminated: %s (exit %d) %s", cs.Name,
				cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message))
		case !cs.Ready:
			parts = append(parts, fmt.Sprintf("container %s not ready", cs.Name))
		}
	}
	return strings.Join(parts, "; ")
}

type stepKey struct {
	scenario string
	step     int
}

// followDriver follows the attacker pod's log until the driver is done,
// polling the backend meanwhile. It returns when each step was sent and
// when the last one was.
func followDriver(ctx context.Context, k *kubeClient, ns string, timeout time.Duration, tick func(context.Context) error, log *slog.Logger) (map[stepKey]time.Time, time.Time, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the attacker did not finish within %v", timeout))
	defer cancel()
	stream, err := k.followLog(ctx, ns, attackerName, attackerName)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("follow the attacker's log: %w", err)
	}
	defer stream.Close()
	lines := make(chan DriverLine)
	ended := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stream)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			d, ok := parseDriverLine(sc.Bytes())
			if !ok {
				log.Debug("attacker", "line", sc.Text())
				continue
			}
			select {
			case lines <- d:
			case <-ctx.Done():
				return
			}
		}
		ended <- sc.Err()
	}()
	sent := map[stepKey]time.Time{}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case d := <-lines:
			switch d.Event {
			case "step":
				sent[stepKey{d.Scenario, d.Step}] = d.Sent
				log.Debug("step", "scenario", d.Scenario, "step", d.Step, "status", d.Status, "error", d.Error)
			case "error":
				return nil, time.Time{}, fmt.Errorf("attacker: %s", d.Error)
			case "done":
				return sent, time.Now(), nil
			}
		case err := <-ended:
			if err == nil {
				err = io.EOF
			}
			status := "status unknown"
			if p, perr := k.getPod(ctx, ns, attackerName); perr == nil {
				status = podStatus(p)
			}
			return nil, time.Time{}, fmt.Errorf("the attacker's log ended before the play did (%w): pod %s/%s: %s", err, ns, attackerName, status)
		case <-ticker.C:
			if err := tick(ctx); err != nil {
				return nil, time.Time{}, err
			}
		case <-ctx.Done():
			return nil, time.Time{}, context.Cause(ctx)
		}
	}
}

// Cleanup deletes the namespaces an earlier, interrupted cluster run left
// behind: those labelled app.kubernetes.io/managed-by=harrier-simulate,
// and nothing else. It returns their names.
func Cleanup(ctx context.Context, rc *rest.Config) ([]string, error) {
	k, err := newKubeClient(rc)
	if err != nil {
		return nil, err
	}
	list, err := k.listNamespaces(ctx, managedBySelector)
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	var errs []error
	for _, ns := range list.Items {
		if ns.Labels[managedByLabel] != managedBy { // the API server filtered; be sure
			continue
		}
		names = append(names, ns.Name)
		errs = append(errs, k.deleteNamespace(ctx, ns.Name))
	}
	return names, errors.Join(errs...)
}
