package kube

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeBundle(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNodeStateLookup(t *testing.T) {
	root := t.TempDir()
	cfg := NodeStateConfig{ContainerdRoot: filepath.Join(root, "containerd"), CRIORoot: filepath.Join(root, "crio")}
	containerd := func(id string) string {
		return filepath.Join(cfg.ContainerdRoot, "io.containerd.runtime.v2.task", "k8s.io", id, "config.json")
	}
	crio := func(id string) string {
		return filepath.Join(cfg.CRIORoot, "overlay-containers", id, "userdata", "config.json")
	}
	writeBundle(t, containerd("aaa111"), `{"ociVersion":"1.1.0","process":{"args":["nginx"]},"annotations":{
		"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"web",
		"io.kubernetes.cri.image-name":"docker.io/library/nginx:1.27","io.kubernetes.cri.sandbox-name":"web-7d9c-abcde",
		"io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"9f1d-uid"}}`)
	writeBundle(t, containerd("sandbox1"), `{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`)
	writeBundle(t, containerd("broken1"), `{"annotations":`)
	writeBundle(t, crio("bbb222"), `{"annotations":{"io.kubernetes.pod.name":"db-0","io.kubernetes.pod.namespace":"data",
		"io.kubernetes.pod.uid":"c0ffee-uid","io.kubernetes.container.name":"postgres","io.kubernetes.cri-o.ImageName":"postgres:16"}}`)
	ns := NewNodeState(cfg)
	tests := []struct {
		id                             string
		ok                             bool
		pod, namespace, uid, name, img string
	}{
		{"aaa111", true, "web-7d9c-abcde", "shop", "9f1d-uid", "web", "docker.io/library/nginx:1.27"},
		{"bbb222", true, "db-0", "data", "c0ffee-uid", "postgres", "postgres:16"},
		{"sandbox1", false, "", "", "", "", ""},
		{"broken1", false, "", "", "", "", ""},
		{"unknown", false, "", "", "", "", ""},
		{"../../../etc", false, "", "", "", "", ""},
		{"", false, "", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c, ok := ns.Lookup(tt.id)
			if ok != tt.ok {
				t.Fatalf("found %v, want %v (%v)", ok, tt.ok, c)
			}
			if !ok {
				return
			}
			if c.GetPodName() != tt.pod || c.GetPodNamespace() != tt.namespace || c.GetPodUid() != tt.uid ||
				c.GetName() != tt.name || c.GetImage() != tt.img {
				t.Errorf("got %v", c)
			}
		})
	}
	if st := ns.Stats(); st.Found != 2 || st.Unreadable != 1 {
		t.Errorf("stats %+v, want 2 found and 1 unreadable", st)
	}

	// A miss is remembered for a while, then looked up again: a container
	// whose bundle appears later is found.
	now := time.Now()
	ns.now = func() time.Time { return now }
	if _, ok := ns.Lookup("late1"); ok {
		t.Fatal("found before its bundle exists")
	}
	writeBundle(t, containerd("late1"), `{"annotations":{"io.kubernetes.cri.sandbox-name":"late","io.kubernetes.cri.sandbox-namespace":"ns"}}`)
	if _, ok := ns.Lookup("late1"); ok {
		t.Fatal("the miss was not cached")
	}
	now = now.Add(nodeStateMissTTL + time.Second)
	if c, ok := ns.Lookup("late1"); !ok || c.GetPodName() != "late" {
		t.Fatalf("after the miss expired: %v %v", c, ok)
	}
	// A hit is cached: the bundle going away does not matter.
	if err := os.RemoveAll(filepath.Dir(containerd("aaa111"))); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.Lookup("aaa111"); !ok {
		t.Fatal("cached hit lost")
	}
}

func TestNodeStateConfigValidate(t *testing.T) {
	for mode, ok := range map[string]bool{"": true, "auto": true, "on": true, "off": true, "yes": false} {
		if err := (NodeStateConfig{Mode: mode}).Validate(); (err == nil) != ok {
			t.Errorf("mode %q: %v", mode, err)
		}
	}
}

func TestParseBundleAnnotationsBad(t *testing.T) {
	for _, in := range []string{"", "[]", `{"annotations":[1,2]}`, `{"annotations":{"a":1}}`, strings.Repeat("{", 100)} {
		if _, err := ParseBundleAnnotations(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func FuzzParseBundleAnnotations(f *testing.F) {
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.sandbox-name":"x"}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","process":{"args":["a"]},"annotations":null}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ann, err := ParseBundleAnnotations(bytes.NewReader(b))
		if err != nil && ann != nil {
			t.Fatal("annotations with an error")
		}
	})
}

func TestNodeStateCheck(t *testing.T) {
	root := t.TempDir()
	cfg := NodeStateConfig{ContainerdRoot: filepath.Join(root, "containerd"), CRIORoot: filepath.Join(root, "crio")}
	err := NewNodeState(cfg).Check()
	if err == nil || !strings.Contains(err.Error(), cfg.ContainerdRoot) || !strings.Contains(err.Error(), cfg.CRIORoot) ||
		!strings.Contains(err.Error(), "containerdStateDir") {
		t.Fatalf("no runtime state: %v, want both places and the setting to change", err)
	}
	for _, dir := range []string{
		filepath.Join(cfg.ContainerdRoot, "io.containerd.runtime.v2.task", "k8s.io"),
		filepath.Join(cfg.CRIORoot, "overlay-containers"),
	} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := NewNodeState(cfg).Check(); err != nil {
			t.Errorf("with %s: %v", dir, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
}
