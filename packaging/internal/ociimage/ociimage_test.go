package ociimage_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/packaging/internal/ociimage"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

// build makes the image for amd64 and arm64. Both carry this machine's
// binary: what is tested here is the archives' structure and that the host
// architecture's image runs; the bundle test builds real per-arch binaries.
func build(t *testing.T) ociimage.Result {
	t.Helper()
	bin := pkgtest.BuildHarrier(t)
	res, err := ociimage.Build(ociimage.Options{
		Version:  "0.1.0",
		Binaries: map[string]string{"amd64": bin, "arm64": bin},
		MTime:    time.Unix(1_700_000_000, 0),
		OutDir:   t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestImageConfig reads each Docker archive back with go-containerregistry.
func TestImageConfig(t *testing.T) {
	res := build(t)
	for arch, p := range res.Docker {
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch || cf.OS != "linux" {
			t.Errorf("%s: platform %s/%s", p, cf.OS, cf.Architecture)
		}
		if got := append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...); !slices.Equal(got, []string{"/usr/bin/harrier", "agent"}) {
			t.Errorf("%s: entrypoint+cmd %v, want harrier agent", p, got)
		}
		if layers, _ := img.Layers(); len(layers) != 1 {
			t.Errorf("%s: %d layers, want 1", p, len(layers))
		}
	}
}

// containerd starts a private containerd (own root, state and socket under
// a temporary directory) and returns a function running ctr against it.
func containerd(t *testing.T) func(ns string, args ...string) (string, error) {
	t.Helper()
	bin := pkgtest.RequireTool(t, "containerd", "containerd")
	ctr := pkgtest.RequireTool(t, "ctr", "containerd")
	pkgtest.RequireTool(t, "runc", "runc")
	// Short: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &pkgtest.Buffer{}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove containerd dir: %v", err)
		}
	})
	run := func(ns string, args ...string) (string, error) {
		out, err := exec.Command(ctr, append([]string{"--address", sock, "--namespace", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := run("default", "version"); err == nil {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCtrImportsAndRuns imports the OCI layout (both platforms) and the
// Docker archive into Debian's containerd and runs the imported image.
func TestCtrImportsAndRuns(t *testing.T) {
	testenv.RequireRoot(t)
	res := build(t)
	ctr := containerd(t)

	if out, err := ctr("oci", "images", "import", "--all-platforms", res.OCI); err != nil {
		t.Fatalf("ctr import %s: %v\n%s", res.OCI, err, out)
	}
	out, err := ctr("oci", "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, res.Ref) || !strings.Contains(out, "linux/amd64,linux/arm64") {
		t.Errorf("after importing the OCI layout, images ls:\n%s\nwant %s for linux/amd64,linux/arm64", out, res.Ref)
	}
	// Run the host architecture's image: the entrypoint binary works.
	if out, err := ctr("oci", "run", "--rm", res.Ref, "harrier-version", "/usr/bin/harrier", "version"); err != nil ||
		!strings.HasPrefix(out, "harrier ") || !strings.Contains(out, "linux/"+runtime.GOARCH) {
		t.Errorf("ctr run %s harrier version: %v\n%s", res.Ref, err, out)
	}

	docker := res.Docker[runtime.GOARCH]
	if out, err := ctr("docker", "images", "import", docker); err != nil {
		t.Fatalf("ctr import %s: %v\n%s", docker, err, out)
	}
	if out, _ := ctr("docker", "images", "ls"); !strings.Contains(out, res.Ref) {
		t.Errorf("after importing the Docker archive, images ls:\n%s", out)
	}
}

// TestNATSImageRuns builds the nats-server image of the chart's backend
// replicas from the nats-server tests/nats/build.sh builds, checks its
// config and runs it in containerd: the server answers with its version.
func TestNATSImageRuns(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.BuiltTool(t, "nats")
	res, err := ociimage.Build(ociimage.Options{Spec: ociimage.NATSServer, Version: "2.15.3",
		Binaries: map[string]string{runtime.GOARCH: bin}, MTime: time.Unix(1_700_000_000, 0), OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ref != "docker.io/harrier-sec/nats-server:2.15.3" || filepath.Base(res.OCI) != "nats-server-image-2.15.3.oci.tar" {
		t.Errorf("ref %s, archive %s", res.Ref, res.OCI)
	}
	img, err := tarball.ImageFromPath(res.Docker[runtime.GOARCH], nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/bin/nats-server"}) || len(cf.Config.Cmd) != 0 || cf.Config.Labels["org.opencontainers.image.title"] != "nats-server" {
		t.Errorf("config: entrypoint %v, cmd %v, labels %v", cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.Labels)
	}
	ctr := containerd(t)
	if out, err := ctr("oci", "images", "import", res.OCI); err != nil {
		t.Fatalf("ctr import %s: %v\n%s", res.OCI, err, out)
	}
	if out, err := ctr("oci", "run", "--rm", res.Ref, "nats-version", "/usr/bin/nats-server", "--version"); err != nil ||
		!strings.Contains(out, "nats-server: v2.15.3") {
		t.Errorf("ctr run %s nats-server --version: %v\n%s", res.Ref, err, out)
	}
}
