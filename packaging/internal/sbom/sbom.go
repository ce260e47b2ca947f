// Package sbom writes a CycloneDX SBOM of a Go binary from the module
// information the Go linker embeds in it (the same data `go version -m`
// prints), so the SBOM lists exactly what was linked, at the versions used.
package sbom

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
)

// FromBinary describes the binary at path: the application (with the
// binary's SHA-256), the Go standard library it was built with, and every
// module linked into it.
func FromBinary(path, version, arch string, mtime time.Time) (*cdx.BOM, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read build info of %s: %w", path, err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return nil, err
	}
	app := cdx.Component{
		BOMRef:     purl(info.Main.Path, "v"+version) + "?goos=linux&goarch=" + arch,
		Type:       cdx.ComponentTypeApplication,
		Name:       "harrier",
		Version:    version,
		PackageURL: purl(info.Main.Path, "v"+version) + "?goos=linux&goarch=" + arch,
		Hashes:     &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: sum}},
	}
	goVersion := strings.TrimPrefix(info.GoVersion, "go")
	components := []cdx.Component{{
		BOMRef: "pkg:golang/stdlib@" + goVersion, Type: cdx.ComponentTypeLibrary,
		Name: "stdlib", Version: goVersion, PackageURL: "pkg:golang/stdlib@" + goVersion,
	}}
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		c := cdx.Component{
			BOMRef:     purl(m.Path, m.Version),
			Type:       cdx.ComponentTypeLibrary,
			Name:       m.Path,
			Version:    m.Version,
			PackageURL: purl(m.Path, m.Version),
			Scope:      cdx.ScopeRequired,
		}
		if m.Sum != "" {
			// The go.sum hash (h1: is a SHA-256 over the module's file
			// list), kept as a property: it is not a hash of one file.
			c.Properties = &[]cdx.Property{{Name: "golang:module:sum", Value: m.Sum}}
		}
		components = append(components, c)
	}
	slices.SortFunc(components, func(a, b cdx.Component) int { return strings.Compare(a.BOMRef, b.BOMRef) })
	refs := make([]string, 0, len(components))
	for _, c := range components {
		refs = append(refs, c.BOMRef)
	}
	var props []cdx.Property
	for _, s := range info.Settings {
		if slices.Contains([]string{"CGO_ENABLED", "GOARCH", "GOOS", "-trimpath", "-ldflags", "vcs.revision", "vcs.time"}, s.Key) {
			props = append(props, cdx.Property{Name: "golang:build:" + s.Key, Value: s.Value})
		}
	}
	bom := cdx.NewBOM()
	// Deterministic: the same binary gives the same SBOM.
	bom.SerialNumber = ""
	bom.Metadata = &cdx.Metadata{
		Timestamp:  mtime.UTC().Format(time.RFC3339),
		Component:  &app,
		Properties: &props,
	}
	bom.Components = &components
	bom.Dependencies = &[]cdx.Dependency{{Ref: app.BOMRef, Dependencies: &refs}}
	return bom, nil
}

// Write encodes bom as CycloneDX JSON.
func Write(w io.Writer, bom *cdx.BOM) error {
	enc := cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.Encode(bom); err != nil {
		return fmt.Errorf("encode SBOM: %w", err)
	}
	return nil
}

func purl(module, version string) string {
	return "pkg:golang/" + module + "@" + version
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
