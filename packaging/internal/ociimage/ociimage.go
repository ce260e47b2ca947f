// Package ociimage builds Harrier's container image (and the NATS server's
// the backend replicas use) without a container engine, with
// go-containerregistry: one layer holding the static binary,
// for each architecture, written as an OCI layout tarball with a multi-arch
// index (ctr images import) and as Docker archives, one per architecture
// (docker load, which does not take an OCI index).
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Repository is the image's name; sites retag it for their own registry.
const Repository = "harrier-sec/harrier"

// Spec is what an image holds and runs: the binary File at /usr/bin/File,
// run with Cmd; DataDir, when set, is made (mode 0700).
type Spec struct {
	Repository, File, Title string
	Cmd                     []string
	DataDir                 string
}

// Harrier is Harrier's image: `harrier agent` by default.
var Harrier = Spec{Repository: Repository, File: "harrier", Title: "harrier", Cmd: []string{"agent"}, DataDir: "var/lib/harrier/"}

// NATSServer is the nats-server image the chart's backend replicas use
// (backend.cluster), from the binary tests/nats/build.sh builds from the
// nats-server module; its version is nats-server's.
var NATSServer = Spec{Repository: "harrier-sec/nats-server", File: "nats-server", Title: "nats-server"}

// Options says what to build.
type Options struct {
	// Spec is the image (default Harrier).
	Spec    Spec
	Version string
	// Binaries maps a Go architecture to its static binary.
	Binaries map[string]string
	// MTime stamps files, the config and the archives (reproducible).
	MTime time.Time
	// OutDir receives <name>-image-<version>.oci.tar and
	// <name>-image-<version>-linux-<arch>.docker.tar (name: the
	// repository's last part).
	OutDir string
}

// Result names the files written.
type Result struct {
	OCI    string
	Docker map[string]string
	Ref    string
}

// Build writes the image archives.
func Build(o Options) (Result, error) {
	if o.Spec.Repository == "" {
		o.Spec = Harrier
	}
	ref, err := name.NewTag(o.Spec.Repository + ":" + o.Version)
	if err != nil {
		return Result{}, fmt.Errorf("image reference: %w", err)
	}
	base := path.Base(o.Spec.Repository)
	// containerd and Kubernetes spell the name fully qualified.
	res := Result{Docker: map[string]string{}, Ref: "docker.io/" + o.Spec.Repository + ":" + o.Version}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return res, fmt.Errorf("output dir: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	arches := make([]string, 0, len(o.Binaries))
	for a := range o.Binaries {
		arches = append(arches, a)
	}
	slices.Sort(arches)
	for _, arch := range arches {
		img, err := image(o.Spec, arch, o.Binaries[arch], o.Version, o.MTime)
		if err != nil {
			return res, fmt.Errorf("image for %s: %w", arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
		p := filepath.Join(o.OutDir, fmt.Sprintf("%s-image-%s-linux-%s.docker.tar", base, o.Version, arch))
		if err := tarball.WriteToFile(p, ref, img); err != nil {
			return res, fmt.Errorf("docker archive for %s: %w", arch, err)
		}
		res.Docker[arch] = p
	}
	res.OCI = filepath.Join(o.OutDir, fmt.Sprintf("%s-image-%s.oci.tar", base, o.Version))
	if err := writeOCI(res.OCI, idx, ref, o.MTime); err != nil {
		return res, err
	}
	return res, nil
}

// image is the single-architecture image: the binary at /usr/bin/<File>,
// for Harrier entrypoint `harrier agent`. It runs as root by default
// because the sensor needs it; nothing in it requires root, so the backend
// (and nats-server) run it under any UID (the chart uses 65532).
func image(spec Spec, arch, binary, version string, mtime time.Time) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	type entry struct {
		name string
		mode int64
		body []byte
	}
	entries := []entry{
		{"tmp/", 0o1777, nil},
		{"usr/", 0o755, nil},
		{"usr/bin/", 0o755, nil},
		{"usr/bin/" + spec.File, 0o755, bin},
	}
	if spec.DataDir != "" {
		entries = append(entries, entry{"var/", 0o755, nil}, entry{"var/lib/", 0o755, nil}, entry{spec.DataDir, 0o700, nil})
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		if e.body != nil {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: mtime}, CreatedBy: "harrier-pkg: static " + spec.File + " binary", Comment: spec.Title + " " + version,
	}})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", arch, v1.Time{Time: mtime}
	cf.Config = v1.Config{
		Entrypoint: []string{"/usr/bin/" + spec.File},
		Cmd:        spec.Cmd,
		Env:        []string{"PATH=/usr/bin"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   spec.Title,
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/harrier-sec/harrier",
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// writeOCI writes an OCI image layout whose index.json names the multi-arch
// index (ref.name for OCI tools, io.containerd.image.name for ctr), and tars
// it.
func writeOCI(path string, idx v1.ImageIndex, ref name.Tag, mtime time.Time) error {
	dir, err := os.MkdirTemp("", "harrier-oci-")
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          "docker.io/" + ref.RepositoryStr() + ":" + ref.TagStr(),
	})); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	return tarDir(path, dir, mtime)
}

// tarDir writes dir's files into a tar with sorted names and fixed times.
func tarDir(path, dir string, mtime time.Time) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	tw := tar.NewWriter(f)
	// WalkDir visits in lexical order, so the archive is reproducible.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg}
		if d.IsDir() {
			h.Name, h.Mode, h.Typeflag = h.Name+"/", 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(body)
		return err
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", path, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar %s: %w", path, err)
	}
	return nil
}
