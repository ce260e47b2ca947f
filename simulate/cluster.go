package simulate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/api"
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
	// RootCAs, when set, is what an https:// APIURL's certificate must
	// chain to (a backend with apiTLS, e.g. the Helm chart's).
	RootCAs *x509.CertPool
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
	b := newBackendClient(o.APIURL, o.Token, o.RootCAs)
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

	if err := waitReady(ctx, k, ns, pods, o.ReadyTimeout, w.pollWaiting); err != nil {
		return nil, err
	}
	o.Log.Info("pods ready", "namespace", ns, "pods", len(pods))
	sent, done, err := followDriver(ctx, k, ns, o.DriverTimeout, w.pollWaiting, o.Log)
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
	if err := w.pollWaiting(ctx); err != nil {
		return rep, err
	}
	explain(rep, w)
	if w.pollErrors > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the backend did not answer %d polls (restarting?); they were waited out", w.pollErrors))
	}
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
