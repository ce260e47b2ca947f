package chart_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/transport"

	"github.com/harrier-sec/harrier/packaging/internal/chart"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

// replicaValues deploy the backend as three replicas over the chart's NATS
// cluster.
var replicaValues = map[string]any{"backend": map[string]any{"replicas": 3, "cluster": map[string]any{"enabled": true}}}

// TestBackendReplicas: backend.cluster.enabled makes the backend a
// StatefulSet of backend.replicas pods with a volume each, runs three
// nats-servers (StatefulSet, routed to each other by name, from the
// nats-server image's values), points every replica's config at them and
// every agent at every replica; only the replicas reach NATS's clients'
// port.
func TestBackendReplicas(t *testing.T) {
	objs := decode(t, replicaValues)
	if d := find[*appsv1.Deployment](objs); len(d) != 0 {
		t.Errorf("a backend Deployment besides the replicas: %s", d[0].Name)
	}
	for _, pvc := range find[*corev1.PersistentVolumeClaim](objs) {
		t.Errorf("PersistentVolumeClaim %s: replicas take theirs from the StatefulSet's template", pvc.Name)
	}
	sets := map[string]*appsv1.StatefulSet{}
	for _, s := range find[*appsv1.StatefulSet](objs) {
		sets[s.Name] = s
	}
	be, nats := sets["harrier-backend"], sets["harrier-nats"]
	if be == nil || nats == nil {
		t.Fatalf("StatefulSets %v: want harrier-backend and harrier-nats", sets)
	}
	if *be.Spec.Replicas != 3 || be.Spec.ServiceName != "harrier-backend-pods" || len(be.Spec.VolumeClaimTemplates) != 1 ||
		be.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("backend StatefulSet: replicas %d, service %q, claims %v", *be.Spec.Replicas, be.Spec.ServiceName, be.Spec.VolumeClaimTemplates)
	}
	for _, v := range be.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			t.Errorf("backend pod has a data volume %+v besides its claim", v)
		}
	}
	if *nats.Spec.Replicas != 3 || nats.Spec.ServiceName != "harrier-nats" {
		t.Errorf("NATS StatefulSet: replicas %d, service %q", *nats.Spec.Replicas, nats.Spec.ServiceName)
	}
	c := nats.Spec.Template.Spec.Containers[0]
	// The tag is the version `make nats-image` builds: tests/nats/go.mod's.
	gomod, err := os.ReadFile(filepath.Join(pkgtest.RepoRoot(t), "tests", "nats", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	natsVersion := ""
	for line := range strings.Lines(string(gomod)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/nats-io/nats-server/v2" {
			natsVersion = strings.TrimPrefix(f[1], "v")
		}
	}
	if want := "docker.io/harrier-sec/nats-server:" + natsVersion; natsVersion == "" || c.Image != want {
		t.Errorf("NATS image %s, want %s (the nats-server tests/nats/go.mod names)", c.Image, want)
	}
	wantRoutes := "--routes=nats://harrier-nats-0.harrier-nats.harrier.svc:6222,nats://harrier-nats-1.harrier-nats.harrier.svc:6222,nats://harrier-nats-2.harrier-nats.harrier.svc:6222"
	if !slices.Contains(c.Args, wantRoutes) || !slices.Contains(c.Args, "--jetstream") || !slices.Contains(c.Args, "--store_dir=/data") {
		t.Errorf("NATS args %v: want JetStream on /data and %s", c.Args, wantRoutes)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("NATS container's security context %+v", sc)
	}

	cfg := backendConfig(t, replicaValues)
	if cfg.Cluster == nil {
		t.Fatal("backend config has no cluster section")
	}
	wantServers := []string{"nats://harrier-nats-0.harrier-nats.harrier.svc:4222", "nats://harrier-nats-1.harrier-nats.harrier.svc:4222",
		"nats://harrier-nats-2.harrier-nats.harrier.svc:4222"}
	if !slices.Equal(cfg.Cluster.Servers, wantServers) || cfg.Cluster.Replicas != 3 || cfg.Cluster.EventsMaxBytes != 4<<30 ||
		cfg.Cluster.EventsMaxAge.Std() != 72*time.Hour {
		t.Errorf("backend cluster config %+v", cfg.Cluster)
	}
	if cfg.Cluster.ReplicaName != "" {
		t.Errorf("replicaName %q: each pod names itself (its host name)", cfg.Cluster.ReplicaName)
	}

	up := agentConfigs(t, replicaValues).Uplink
	wantFallback := []string{"harrier-backend-0.harrier-backend-pods.harrier.svc:9471", "harrier-backend-1.harrier-backend-pods.harrier.svc:9471",
		"harrier-backend-2.harrier-backend-pods.harrier.svc:9471"}
	if up.Addr != "harrier-backend.harrier.svc:9471" || !slices.Equal(up.FallbackAddrs, wantFallback) || up.ServerName != "harrier-backend.harrier.svc" {
		t.Errorf("agent uplink: addr %s, fallbackAddrs %v, serverName %s", up.Addr, up.FallbackAddrs, up.ServerName)
	}

	svcs := map[string]*corev1.Service{}
	for _, s := range find[*corev1.Service](objs) {
		svcs[s.Name] = s
	}
	for _, name := range []string{"harrier-backend", "harrier-backend-pods", "harrier-nats"} {
		if svcs[name] == nil {
			t.Errorf("no Service %s", name)
		}
	}
	if s := svcs["harrier-backend-pods"]; s != nil && s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("harrier-backend-pods is not headless: %q", s.Spec.ClusterIP)
	}
	pols := find[*networkingv1.NetworkPolicy](objs)
	if len(pols) != 1 {
		t.Fatalf("%d NetworkPolicies, want harrier-nats's", len(pols))
	}
	for _, rule := range pols[0].Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port.IntValue() == 4222 && (len(rule.From) != 1 || rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "backend") {
				t.Errorf("NATS clients' port open to %v, want the backend's pods only", rule.From)
			}
		}
	}

	// The single backend stays as it was: no NATS, no fallbacks.
	objs = decode(t, nil)
	if len(find[*appsv1.StatefulSet](objs)) != 0 || len(find[*networkingv1.NetworkPolicy](objs)) != 0 {
		t.Error("the default values render a StatefulSet or a NetworkPolicy")
	}
	if up := agentConfigs(t, nil).Uplink; len(up.FallbackAddrs) != 0 {
		t.Errorf("default agent fallbackAddrs %v", up.FallbackAddrs)
	}
	if backendConfig(t, nil).Cluster != nil {
		t.Error("default backend config has a cluster section")
	}
}

// TestBackendReplicasRefused: settings the replicas cannot run with are
// refused before anything renders, saying why.
func TestBackendReplicasRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		values map[string]any
		want   string
	}{
		"replicas without the cluster": {map[string]any{"backend": map[string]any{"replicas": 2}}, "needs backend.cluster.enabled"},
		"stream wider than NATS": {map[string]any{"backend": map[string]any{"cluster": map[string]any{"enabled": true, "streamReplicas": 3,
			"nats": map[string]any{"replicas": 1}}}}, "cannot exceed"},
		"even NATS cluster": {map[string]any{"backend": map[string]any{"cluster": map[string]any{"enabled": true,
			"nats": map[string]any{"replicas": 2}}}}, "replicas"},
		"tiny events stream": {map[string]any{"backend": map[string]any{"cluster": map[string]any{"eventsMaxBytes": 10}}}, "eventsMaxBytes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := chart.Render(chartDir(t), "harrier", tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestBackendReplicasNATSTLS: with backend.cluster.nats.tlsSecret the NATS
// servers take only TLS with a verified client certificate and the replicas
// connect with theirs, from the same Secret. The rendered server flags and
// the rendered backend config are then run for real: a nats-server with the
// chart's TLS flags (paths moved to a temporary directory holding the
// Secret's files) and a replica connecting with the chart's cluster section
// make the stream; without the client certificate the server refuses.
func TestBackendReplicasNATSTLS(t *testing.T) {
	values := map[string]any{"backend": map[string]any{"replicas": 2, "cluster": map[string]any{"enabled": true,
		"nats": map[string]any{"tlsSecret": "harrier-nats-tls"}}}}
	objs := decode(t, values)
	var nats, be *appsv1.StatefulSet
	for _, s := range find[*appsv1.StatefulSet](objs) {
		switch s.Name {
		case "harrier-nats":
			nats = s
		case "harrier-backend":
			be = s
		}
	}
	if nats == nil || be == nil {
		t.Fatal("no harrier-nats or harrier-backend StatefulSet")
	}
	secretItems := func(pod corev1.PodSpec, volume string) (secret string, keys []string) {
		for _, v := range pod.Volumes {
			if v.Name == volume && v.Secret != nil {
				for _, it := range v.Secret.Items {
					keys = append(keys, it.Key)
				}
				return v.Secret.SecretName, keys
			}
		}
		return "", nil
	}
	if s, keys := secretItems(nats.Spec.Template.Spec, "tls"); s != "harrier-nats-tls" || !slices.Equal(keys, []string{"ca.crt", "nats.crt", "nats.key"}) {
		t.Errorf("NATS pod's TLS volume: Secret %q, keys %v", s, keys)
	}
	if s, keys := secretItems(be.Spec.Template.Spec, "nats-tls"); s != "harrier-nats-tls" || !slices.Equal(keys, []string{"ca.crt", "client.crt", "client.key"}) {
		t.Errorf("backend pod's NATS TLS volume: Secret %q, keys %v", s, keys)
	}
	cfg := backendConfig(t, values).Cluster
	if cfg == nil || !strings.HasPrefix(cfg.Servers[0], "tls://") || cfg.CAFile != "/etc/harrier/nats/ca.crt" ||
		cfg.CertFile != "/etc/harrier/nats/client.crt" || cfg.KeyFile != "/etc/harrier/nats/client.key" {
		t.Fatalf("backend cluster config %+v", cfg)
	}

	// The Secret's files, as the values' comment says to make them (the
	// server's name here is the loopback address the test's server has).
	secret := t.TempDir()
	caCert, caKey, err := transport.NewCA("nats test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := transport.IssueAgent(caCert, caKey, "harrier-backend-nats", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2][]byte{"ca": {caCert, nil}, "nats": {srvCert, srvKey}, "client": {cliCert, cliKey}} {
		if err := transport.WriteFiles(secret, name, pair[0], pair[1]); err != nil {
			t.Fatal(err)
		}
	}
	var tlsFlags []string
	for _, a := range nats.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--tls") {
			tlsFlags = append(tlsFlags, strings.ReplaceAll(a, "/etc/nats/tls/", secret+"/"))
		}
	}
	if len(tlsFlags) != 4 {
		t.Fatalf("NATS TLS flags %v", tlsFlags)
	}
	node := natstest.Single(t, tlsFlags...)
	c := *cfg
	c.Servers = []string{strings.Replace(node.URL(), "nats://", "tls://", 1)}
	c.Replicas = 1
	for _, f := range []*string{&c.CAFile, &c.CertFile, &c.KeyFile} {
		*f = filepath.Join(secret, filepath.Base(*f))
	}
	ensure := func(c replicate.Config) error {
		nc, err := replicate.Connect(c, "harrier-chart-test")
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return replicate.EnsureStream(ctx, js, c)
	}
	if err := ensure(c); err != nil {
		t.Errorf("a replica with the chart's cluster config: %v", err)
	}
	noCert := c
	noCert.CertFile, noCert.KeyFile = "", ""
	if err := ensure(noCert); err == nil {
		t.Error("the chart's NATS flags let a replica without a client certificate in")
	}
}
