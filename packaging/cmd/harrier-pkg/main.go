// Command harrier-pkg builds what a site installs Harrier from: deb and rpm
// packages, the OCI image, the Kubernetes manifests rendered from the chart,
// the SBOM and the air-gapped bundle. The Makefile's package, image,
// manifests and bundle targets call it from packaging/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/packaging/internal/bundle"
	"github.com/harrier-sec/harrier/packaging/internal/chart"
	"github.com/harrier-sec/harrier/packaging/internal/nfpkg"
	"github.com/harrier-sec/harrier/packaging/internal/ociimage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "harrier-pkg:", err)
		os.Exit(1)
	}
}

const usage = `usage: harrier-pkg COMMAND [flags]
  package   deb and rpm per architecture from dist/bin/linux-<arch>/harrier
  image     OCI layout tarball (multi-arch index) and Docker archives per architecture
  nats-image  the nats-server image of the chart's backend replicas (-binary, -version)
  manifests kubernetes/harrier.yaml rendered from the Helm chart (--check: fail if stale)
  bundle    the air-gapped bundle: all of the above, chart, SBOMs, INSTALL.md, SHA256SUMS`

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "package":
		return cmdPackage(args[1:])
	case "image":
		return cmdImage(args[1:])
	case "nats-image":
		return cmdNATSImage(args[1:])
	case "manifests":
		return cmdManifests(args[1:])
	case "bundle":
		return cmdBundle(args[1:])
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

// common are the flags every command shares.
type common struct {
	version string
	dist    string
	arches  string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.version, "version", "0.1.0", "version (semver, no leading v)")
	fs.StringVar(&c.dist, "dist", "../dist", "output directory; binaries are read from <dist>/bin/linux-<arch>/harrier")
	fs.StringVar(&c.arches, "arch", "amd64,arm64", "architectures, comma-separated")
}

func (c *common) archList() []string { return strings.Split(c.arches, ",") }

func (c *common) binary(arch string) string {
	return filepath.Join(c.dist, "bin", "linux-"+arch, "harrier")
}

// mtime is SOURCE_DATE_EPOCH (the Makefile sets it to the last commit's
// time) so that packages and image layers are reproducible; else now.
func mtime() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func cmdPackage(args []string) error {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	var c common
	c.register(fs)
	formats := fs.String("format", "deb,rpm", "package formats, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mt, err := mtime()
	if err != nil {
		return err
	}
	for _, arch := range c.archList() {
		for _, format := range strings.Split(*formats, ",") {
			out, err := nfpkg.Build(nfpkg.Options{
				Format: format, Arch: arch, Version: c.version, Binary: c.binary(arch),
				SrcDir: ".", Readme: "../README.md", MTime: mt, OutDir: filepath.Join(c.dist, "packages"),
			})
			if err != nil {
				return err
			}
			fmt.Println(out)
		}
	}
	return nil
}

func cmdImage(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	mt, err := mtime()
	if err != nil {
		return err
	}
	bins := map[string]string{}
	for _, arch := range c.archList() {
		bins[arch] = c.binary(arch)
	}
	res, err := ociimage.Build(ociimage.Options{Version: c.version, Binaries: bins, MTime: mt, OutDir: filepath.Join(c.dist, "image")})
	if err != nil {
		return err
	}
	fmt.Println(res.Ref)
	fmt.Println(res.OCI)
	for _, arch := range c.archList() {
		fmt.Println(res.Docker[arch])
	}
	return nil
}

// cmdNATSImage builds the nats-server image the chart's backend replicas
// use, from a static nats-server binary (tests/nats/build.sh builds one
// from the nats-server module) for this machine's architecture.
func cmdNATSImage(args []string) error {
	fs := flag.NewFlagSet("nats-image", flag.ContinueOnError)
	bin := fs.String("binary", "", "static nats-server binary (required)")
	version := fs.String("version", "", "its version, e.g. 2.15.3 (required; the chart's backend.cluster.nats.image.tag)")
	dist := fs.String("dist", "../dist", "output directory (image/ under it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *bin == "" || *version == "" {
		return errors.New("nats-image: -binary and -version are required")
	}
	mt, err := mtime()
	if err != nil {
		return err
	}
	res, err := ociimage.Build(ociimage.Options{Spec: ociimage.NATSServer, Version: strings.TrimPrefix(*version, "v"),
		Binaries: map[string]string{runtime.GOARCH: *bin}, MTime: mt, OutDir: filepath.Join(*dist, "image")})
	if err != nil {
		return err
	}
	fmt.Println(res.Ref)
	fmt.Println(res.OCI)
	fmt.Println(res.Docker[runtime.GOARCH])
	return nil
}

// PlainManifestsFile is where the generated manifests are committed.
const plainManifestsFile = "kubernetes/harrier.yaml"

func cmdManifests(args []string) error {
	fs := flag.NewFlagSet("manifests", flag.ContinueOnError)
	check := fs.Bool("check", false, "do not write; fail if "+plainManifestsFile+" differs from the chart")
	if err := fs.Parse(args); err != nil {
		return err
	}
	text, err := chart.PlainManifests("helm/harrier", "")
	if err != nil {
		return err
	}
	if *check {
		cur, err := os.ReadFile(plainManifestsFile)
		if err != nil {
			return fmt.Errorf("read %s: %w", plainManifestsFile, err)
		}
		if string(cur) != text {
			return fmt.Errorf("%s is stale: run `make manifests` and commit", plainManifestsFile)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(plainManifestsFile), 0o755); err != nil {
		return fmt.Errorf("manifests dir: %w", err)
	}
	if err := os.WriteFile(plainManifestsFile, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write manifests: %w", err)
	}
	fmt.Println(plainManifestsFile)
	return nil
}

func cmdBundle(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	mt, err := mtime()
	if err != nil {
		return err
	}
	bins := map[string]string{}
	for _, arch := range c.archList() {
		bins[arch] = c.binary(arch)
	}
	out, err := bundle.Build(bundle.Options{Version: c.version, Binaries: bins, SrcDir: ".", Readme: "../README.md", MTime: mt, OutDir: c.dist})
	if err != nil {
		return err
	}
	fmt.Println(out)
	return nil
}
