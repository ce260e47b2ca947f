package bundle_test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"

	"github.com/harrier-sec/harrier/packaging/internal/bundle"
	"github.com/harrier-sec/harrier/packaging/internal/pkgtest"
)

// crossBuild builds the release binary for arch as `make dist-bin` does.
func crossBuild(t *testing.T, arch string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "harrier")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=9.8.7", "-o", bin, ".")
	cmd.Dir = pkgtest.RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", arch, err, out)
	}
	return bin
}

// extract unpacks the bundle into a fresh directory and returns its top.
func extract(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(h.Name, "..") {
			t.Fatalf("unsafe name %q in bundle", h.Name)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
	return filepath.Join(dir, "harrier-9.8.7")
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestBundle builds the air-gapped bundle from real amd64 and arm64
// binaries and checks that it is complete, that every checksum verifies and
// that each part is what it says.
func TestBundle(t *testing.T) {
	root := pkgtest.RepoRoot(t)
	bins := map[string]string{"amd64": crossBuild(t, "amd64"), "arm64": crossBuild(t, "arm64")}
	out, err := bundle.Build(bundle.Options{
		Version: "9.8.7", Binaries: bins,
		SrcDir: filepath.Join(root, "packaging"), Readme: filepath.Join(root, "README.md"),
		MTime: time.Unix(1_700_000_000, 0), OutDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(out) != "harrier-9.8.7-bundle.tar.gz" {
		t.Errorf("bundle named %s", filepath.Base(out))
	}
	top := extract(t, out)

	want := []string{
		"INSTALL.md", "SHA256SUMS",
		"bin/linux-amd64/harrier", "bin/linux-arm64/harrier",
		"packages/harrier_9.8.7_amd64.deb", "packages/harrier_9.8.7_arm64.deb",
		"packages/harrier-9.8.7-1.x86_64.rpm", "packages/harrier-9.8.7-1.aarch64.rpm",
		"image/harrier-image-9.8.7.oci.tar",
		"image/harrier-image-9.8.7-linux-amd64.docker.tar", "image/harrier-image-9.8.7-linux-arm64.docker.tar",
		"helm/harrier-9.8.7.tgz", "kubernetes/harrier.yaml",
		"systemd/harrier-agent.service", "systemd/harrier-backend.service", "config/agent.yaml", "config/backend.yaml",
		"sbom/harrier-9.8.7-linux-amd64.cdx.json", "sbom/harrier-9.8.7-linux-arm64.cdx.json",
	}
	for _, w := range want {
		if _, err := os.Stat(filepath.Join(top, w)); err != nil {
			t.Errorf("bundle lacks %s", w)
		}
	}

	// SHA256SUMS lists every other file, and each sum is right.
	f, err := os.Open(filepath.Join(top, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var listed []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("bad SHA256SUMS line %q", sc.Text())
		}
		listed = append(listed, name)
		if got := sha256File(t, filepath.Join(top, name)); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", name, got, sum)
		}
	}
	for _, w := range want {
		if w != "SHA256SUMS" && !slices.Contains(listed, w) {
			t.Errorf("SHA256SUMS does not list %s", w)
		}
	}
	if tool, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command(tool, "--check", "--strict", "--quiet", "SHA256SUMS")
		cmd.Dir = top
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	}

	// Binaries: the right machine, static (no interpreter), CGO off.
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		p := filepath.Join(top, "bin", "linux-"+arch, "harrier")
		ef, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if ef.Machine != machine {
			t.Errorf("%s: machine %v, want %v", p, ef.Machine, machine)
		}
		for _, prog := range ef.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", p)
			}
		}
		ef.Close()

		// The SBOM describes this very binary.
		sf, err := os.Open(filepath.Join(top, "sbom", "harrier-9.8.7-linux-"+arch+".cdx.json"))
		if err != nil {
			t.Fatal(err)
		}
		var bom cdx.BOM
		if err := cdx.NewBOMDecoder(sf, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
			t.Fatalf("SBOM %s: %v", arch, err)
		}
		sf.Close()
		if bom.BOMFormat != "CycloneDX" || bom.Metadata == nil || bom.Metadata.Component == nil ||
			bom.Metadata.Component.Hashes == nil || (*bom.Metadata.Component.Hashes)[0].Value != sha256File(t, p) {
			t.Errorf("SBOM %s does not carry the binary's SHA-256", arch)
		}
		var names []string
		for _, c := range *bom.Components {
			names = append(names, c.Name)
		}
		for _, dep := range []string{"stdlib", "github.com/cilium/ebpf", "github.com/quic-go/quic-go", "github.com/dgraph-io/badger/v4", "github.com/coreos/go-systemd/v22"} {
			if !slices.Contains(names, dep) {
				t.Errorf("SBOM %s lacks %s", arch, dep)
			}
		}
		if slices.Contains(names, "helm.sh/helm/v4") {
			t.Errorf("SBOM %s lists helm, which the binary does not link", arch)
		}
	}

	// The chart carries the bundle's version; the manifests' image too.
	ch, err := loader.Load(filepath.Join(top, "helm", "harrier-9.8.7.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Version != "9.8.7" || ch.Metadata.AppVersion != "9.8.7" {
		t.Errorf("chart version %s appVersion %s", ch.Metadata.Version, ch.Metadata.AppVersion)
	}
	// Its entries are dated MTime, as the bundle's are, not by the checkout.
	for _, f := range append(append([]*common.File{{Name: "Chart.yaml", ModTime: ch.ModTime}}, ch.Templates...), ch.Files...) {
		if !f.ModTime.Equal(time.Unix(1_700_000_000, 0)) {
			t.Errorf("chart entry %s dated %v, want the bundle's MTime", f.Name, f.ModTime)
		}
	}
	if m, _ := os.ReadFile(filepath.Join(top, "kubernetes", "harrier.yaml")); !strings.Contains(string(m), "image: docker.io/harrier-sec/harrier:9.8.7") {
		t.Error("bundle manifests do not use the bundle's image tag")
	}
	inst, _ := os.ReadFile(filepath.Join(top, "INSTALL.md"))
	if !strings.Contains(string(inst), "harrier_9.8.7_amd64.deb") || strings.Contains(string(inst), "{{") {
		t.Error("INSTALL.md is not filled in with the version")
	}

	// The host's own binary from the bundle runs.
	if out, err := exec.Command(filepath.Join(top, "bin", "linux-"+runtime.GOARCH, "harrier"), "version").Output(); err != nil ||
		!strings.HasPrefix(string(out), "harrier 9.8.7 ") {
		t.Errorf("bundled binary: harrier version = %q, %v", out, err)
	}
}
