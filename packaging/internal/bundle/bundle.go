// Package bundle assembles the air-gapped bundle: binaries, deb and rpm,
// image archives, chart and manifests, SBOMs, INSTALL.md and SHA256SUMS, in
// one reproducible tar.gz.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"

	"github.com/harrier-sec/harrier/packaging/internal/chart"
	"github.com/harrier-sec/harrier/packaging/internal/nfpkg"
	"github.com/harrier-sec/harrier/packaging/internal/ociimage"
	"github.com/harrier-sec/harrier/packaging/internal/sbom"
)

// Options says what goes into the bundle.
type Options struct {
	Version string
	// Binaries maps a Go architecture to its static harrier binary.
	Binaries map[string]string
	// SrcDir is packaging/; Readme the repository's README.md.
	SrcDir, Readme string
	MTime          time.Time
	// OutDir receives harrier-<version>-bundle.tar.gz.
	OutDir string
}

// Build writes the bundle and returns its path.
func Build(o Options) (string, error) {
	stage, err := os.MkdirTemp("", "harrier-bundle-")
	if err != nil {
		return "", fmt.Errorf("staging dir: %w", err)
	}
	defer os.RemoveAll(stage)
	top := "harrier-" + o.Version
	root := filepath.Join(stage, top)
	steps := []struct {
		what string
		do   func() error
	}{
		{"binaries", func() error { return o.binaries(root) }},
		{"packages", func() error { return o.packages(root) }},
		{"image", func() error {
			_, err := ociimage.Build(ociimage.Options{Version: o.Version, Binaries: o.Binaries, MTime: o.MTime, OutDir: filepath.Join(root, "image")})
			return err
		}},
		{"chart", func() error { return o.chart(root) }},
		{"systemd units and configs", func() error { return o.files(root) }},
		{"SBOM", func() error { return o.sboms(root) }},
		{"INSTALL.md", func() error { return o.install(root) }},
		{"SHA256SUMS", func() error { return checksums(root) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return "", fmt.Errorf("bundle %s: %w", s.what, err)
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("output dir: %w", err)
	}
	out := filepath.Join(o.OutDir, fmt.Sprintf("harrier-%s-bundle.tar.gz", o.Version))
	if err := tarGz(out, stage, top, o.MTime); err != nil {
		return "", err
	}
	return out, nil
}

func (o Options) binaries(root string) error {
	for arch, bin := range o.Binaries {
		if err := copyFile(bin, filepath.Join(root, "bin", "linux-"+arch, "harrier"), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (o Options) packages(root string) error {
	for arch, bin := range o.Binaries {
		for _, format := range []string{"deb", "rpm"} {
			if _, err := nfpkg.Build(nfpkg.Options{Format: format, Arch: arch, Version: o.Version, Binary: bin,
				SrcDir: o.SrcDir, Readme: o.Readme, MTime: o.MTime, OutDir: filepath.Join(root, "packages")}); err != nil {
				return err
			}
		}
	}
	return nil
}

// chart packages the chart as helm package would (harrier-<v>.tgz), with
// version and appVersion set to the bundle's and every entry dated MTime
// (Helm would use the files' own times), and renders the manifests.
func (o Options) chart(root string) error {
	dir := filepath.Join(o.SrcDir, "helm", "harrier")
	ch, err := loader.Load(dir)
	if err != nil {
		return fmt.Errorf("load chart: %w", err)
	}
	ch.Metadata.Version, ch.Metadata.AppVersion = o.Version, o.Version
	ch.StampModTimes(o.MTime)
	if err := os.MkdirAll(filepath.Join(root, "helm"), 0o755); err != nil {
		return err
	}
	if _, err := chartutil.Save(ch, filepath.Join(root, "helm")); err != nil {
		return fmt.Errorf("package chart: %w", err)
	}
	text, err := chart.PlainManifests(dir, o.Version)
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(root, "kubernetes", "harrier.yaml"), []byte(text), 0o644)
}

func (o Options) files(root string) error {
	for _, f := range []string{"systemd/harrier-agent.service", "systemd/harrier-backend.service", "config/agent.yaml", "config/backend.yaml"} {
		if err := copyFile(filepath.Join(o.SrcDir, f), filepath.Join(root, f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (o Options) sboms(root string) error {
	for arch, bin := range o.Binaries {
		bom, err := sbom.FromBinary(bin, o.Version, arch, o.MTime)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := sbom.Write(&buf, bom); err != nil {
			return err
		}
		name := fmt.Sprintf("harrier-%s-linux-%s.cdx.json", o.Version, arch)
		if err := writeFile(filepath.Join(root, "sbom", name), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (o Options) install(root string) error {
	tmpl, err := template.ParseFiles(filepath.Join(o.SrcDir, "INSTALL.md.tmpl"))
	if err != nil {
		return fmt.Errorf("INSTALL.md template: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, o); err != nil {
		return fmt.Errorf("INSTALL.md: %w", err)
	}
	return writeFile(filepath.Join(root, "INSTALL.md"), buf.Bytes(), 0o644)
}

// checksums writes SHA256SUMS in the format `sha256sum -c` reads, for every
// file in the bundle.
func checksums(root string) error {
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(root, "SHA256SUMS"), []byte(b.String()), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	return writeFile(dst, b, mode)
}

func writeFile(p string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("mkdir for %s: %w", p, err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// tarGz archives stage/top with sorted names, fixed times and owners.
func tarGz(out, stage, top string, mtime time.Time) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	zw := gzip.NewWriter(f)
	zw.ModTime = mtime
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(filepath.Join(stage, top), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(stage, p)
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: int64(st.Mode().Perm()), Format: tar.FormatPAX}
		if d.IsDir() {
			h.Name += "/"
			h.Typeflag = tar.TypeDir
			return tw.WriteHeader(h)
		}
		h.Typeflag, h.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
