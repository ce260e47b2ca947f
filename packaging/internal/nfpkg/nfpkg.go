// Package nfpkg builds Harrier's deb and rpm packages with nfpm as a
// library: the static binary, both systemd units, default configs as
// conffiles and maintainer scripts per format.
package nfpkg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// scriptsFor gives the maintainer scripts (relative to packaging/) of a
// format Build knows. deb and rpm call them with different arguments, so
// each has its own.
func scriptsFor(format string) (nfpm.Scripts, bool) {
	switch format {
	case "deb":
		return nfpm.Scripts{PostInstall: "scripts/deb/postinst", PreRemove: "scripts/deb/prerm", PostRemove: "scripts/deb/postrm"}, true
	case "rpm":
		return nfpm.Scripts{PreInstall: "scripts/rpm/pre", PostInstall: "scripts/rpm/post", PreRemove: "scripts/rpm/preun", PostRemove: "scripts/rpm/postun"}, true
	}
	return nfpm.Scripts{}, false
}

// Options says what to package.
type Options struct {
	// Format is "deb" or "rpm"; Arch is a Go architecture (amd64, arm64),
	// which nfpm translates (rpm: x86_64, aarch64).
	Format, Arch string
	// Version is semver without a leading v (0.1.0, 1.2.3-rc1).
	Version string
	// Binary is the static harrier binary for Arch.
	Binary string
	// SrcDir is packaging/ (units, configs, scripts); Readme is installed
	// as the documentation the units point to.
	SrcDir, Readme string
	// MTime stamps every file, for reproducible packages.
	MTime time.Time
	// OutDir receives the package under its conventional file name.
	OutDir string
}

// Build writes the package and returns its path.
func Build(o Options) (string, error) {
	scripts, ok := scriptsFor(o.Format)
	if !ok {
		return "", fmt.Errorf("package format %q: want deb or rpm", o.Format)
	}
	src := func(rel string) string { return filepath.Join(o.SrcDir, rel) }
	scripts.PreInstall = resolve(src, scripts.PreInstall)
	scripts.PostInstall = resolve(src, scripts.PostInstall)
	scripts.PreRemove = resolve(src, scripts.PreRemove)
	scripts.PostRemove = resolve(src, scripts.PostRemove)
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: o.MTime}}
	}
	conffile := func(from, to string) *files.Content {
		c := file(from, to, 0o644)
		// deb: a conffile; rpm: %config(noreplace). Either way a local
		// edit survives an upgrade.
		c.Type = files.TypeConfigNoReplace
		return c
	}
	info := &nfpm.Info{
		Name:        "harrier",
		Arch:        o.Arch,
		Platform:    "linux",
		Version:     o.Version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  "Harrier maintainers <harrier@localhost>",
		Vendor:      "Harrier",
		Homepage:    "https://github.com/harrier-sec/harrier",
		License:     "Proprietary",
		Description: "Runtime security for on-prem, air-gapped and edge Linux and Kubernetes nodes\nOne static binary: eBPF node sensor, local spool, QUIC uplink and backend.",
		MTime:       o.MTime,
		Overridables: nfpm.Overridables{
			Contents: files.Contents{
				file(o.Binary, "/usr/bin/harrier", 0o755),
				file(src("systemd/harrier-agent.service"), "/usr/lib/systemd/system/harrier-agent.service", 0o644),
				file(src("systemd/harrier-backend.service"), "/usr/lib/systemd/system/harrier-backend.service", 0o644),
				conffile(src("config/agent.yaml"), "/etc/harrier/agent.yaml"),
				conffile(src("config/backend.yaml"), "/etc/harrier/backend.yaml"),
				file(o.Readme, "/usr/share/doc/harrier/README.md", 0o644),
			},
			Scripts: scripts,
			// useradd, getent and install; all present on any Debian/RHEL.
			Depends: map[string][]string{"deb": {"passwd"}, "rpm": {"shadow-utils"}}[o.Format],
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, o.Format); err != nil {
		return "", fmt.Errorf("%s contents: %w", o.Format, err)
	}
	pkgr, err := nfpm.Get(o.Format)
	if err != nil {
		return "", fmt.Errorf("packager: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("output dir: %w", err)
	}
	out := filepath.Join(o.OutDir, pkgr.ConventionalFileName(info))
	f, err := os.Create(out)
	if err != nil {
		return "", fmt.Errorf("create package: %w", err)
	}
	if err := pkgr.Package(info, f); err != nil {
		return "", errors.Join(fmt.Errorf("build %s: %w", o.Format, err), f.Close(), os.Remove(out))
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", out, err)
	}
	return out, nil
}

func resolve(src func(string) string, rel string) string {
	if rel == "" {
		return ""
	}
	return src(rel)
}
