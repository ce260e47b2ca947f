// Package vulndb is Harrier's offline vulnerability database: the image
// scan reports a site already makes (Trivy's `trivy image -f json`, Grype's
// `grype -o json`), dropped into a directory, indexed by image digest and
// reference so that posture can say which running images carry known
// vulnerabilities — without network access from the cluster.
//
// Reports are untrusted input: every file is parsed strictly enough to be
// safe and leniently enough to accept what the tools write; a file that is
// neither format is reported with its name and skipped.
package vulndb

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// MaxReportBytes bounds one report file.
const MaxReportBytes = 64 << 20

// Severity orders vulnerabilities; the zero value is unknown.
type Severity int

// Severities as the scanners name them.
const (
	SeverityUnknown Severity = iota
	SeverityNegligible
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

// ParseSeverity reads a scanner's severity name (any case).
func ParseSeverity(s string) Severity {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "critical":
		return SeverityCritical
	case "high":
		return SeverityHigh
	case "medium", "moderate":
		return SeverityMedium
	case "low":
		return SeverityLow
	case "negligible":
		return SeverityNegligible
	}
	return SeverityUnknown
}

func (s Severity) String() string {
	return [...]string{"unknown", "negligible", "low", "medium", "high", "critical"}[s]
}

// Vulnerability is one finding of a scanner in one package of an image.
type Vulnerability struct {
	ID           string // e.g. CVE-2024-3094
	Severity     Severity
	Package      string
	Installed    string
	FixedVersion string // empty: no fix known
	Title        string
}

// Image is the scan result of one image.
type Image struct {
	// Reference is what was scanned (e.g. "registry.site/app:1.2").
	Reference string
	// Digests are the image's repo digests ("repo@sha256:…" reduced to
	// "sha256:…") and image ID.
	Digests []string
	Vulns   []Vulnerability
	// Source is the report file.
	Source string
}

// Counts returns how many vulnerabilities of each severity the image has.
func (im *Image) Counts() map[Severity]int {
	out := map[Severity]int{}
	for _, v := range im.Vulns {
		out[v.Severity]++
	}
	return out
}

// Worst returns the image's vulnerabilities at or above min, most severe
// first, then by ID.
func (im *Image) Worst(min Severity) []Vulnerability {
	var out []Vulnerability
	for _, v := range im.Vulns {
		if v.Severity >= min {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Severity != out[j].Severity {
			return out[i].Severity > out[j].Severity
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// DB indexes scanned images by digest and by reference.
type DB struct {
	byDigest map[string]*Image
	byRef    map[string]*Image
	images   int
}

// Len is the number of images in the database.
func (db *DB) Len() int {
	if db == nil {
		return 0
	}
	return db.images
}

// Lookup finds the scan of a running image: by its digest when known
// (exact), else by its reference (normalised: "nginx" and
// "docker.io/library/nginx:latest" are the same).
func (db *DB) Lookup(ref, digest string) (*Image, bool) {
	if db == nil {
		return nil, false
	}
	if d := digestOf(digest); d != "" {
		if im, ok := db.byDigest[d]; ok {
			return im, true
		}
	}
	if d := digestOf(ref); d != "" {
		if im, ok := db.byDigest[d]; ok {
			return im, true
		}
	}
	im, ok := db.byRef[NormalizeRef(ref)]
	return im, ok
}

// Load reads every *.json report in dir. A missing dir is an empty
// database; unreadable or unrecognised files are returned as problems
// (with their names) and skipped.
func Load(dir string) (*DB, []error) {
	db := &DB{byDigest: map[string]*Image{}, byRef: map[string]*Image{}}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return db, []error{fmt.Errorf("vulnerability database %s: %w", dir, err)}
	}
	var problems []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		images, err := readReport(path)
		if err != nil {
			problems = append(problems, fmt.Errorf("vulnerability report %s: %w", path, err))
			continue
		}
		for _, im := range images {
			db.add(im)
		}
	}
	return db, problems
}

func readReport(path string) ([]*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxReportBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxReportBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxReportBytes)
	}
	images, err := ParseReport(b)
	for _, im := range images {
		im.Source = path
	}
	return images, err
}

func (db *DB) add(im *Image) {
	db.images++
	for _, d := range im.Digests {
		db.byDigest[d] = im
	}
	if r := NormalizeRef(im.Reference); r != "" {
		db.byRef[r] = im
	}
}

// ParseReport decodes a Trivy or Grype JSON report.
func ParseReport(b []byte) ([]*Image, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	switch {
	case probe["ArtifactName"] != nil || probe["Results"] != nil:
		return parseTrivy(b)
	case probe["matches"] != nil:
		return parseGrype(b)
	}
	return nil, errors.New("neither a Trivy (ArtifactName, Results) nor a Grype (matches) report")
}

type trivyReport struct {
	ArtifactName string `json:"ArtifactName"`
	ArtifactType string `json:"ArtifactType"`
	Metadata     struct {
		ImageID     string   `json:"ImageID"`
		RepoDigests []string `json:"RepoDigests"`
		RepoTags    []string `json:"RepoTags"`
	} `json:"Metadata"`
	Results []struct {
		Vulnerabilities []struct {
			VulnerabilityID  string `json:"VulnerabilityID"`
			PkgName          string `json:"PkgName"`
			InstalledVersion string `json:"InstalledVersion"`
			FixedVersion     string `json:"FixedVersion"`
			Severity         string `json:"Severity"`
			Title            string `json:"Title"`
		} `json:"Vulnerabilities"`
	} `json:"Results"`
}

func parseTrivy(b []byte) ([]*Image, error) {
	var r trivyReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("trivy report: %w", err)
	}
	if r.ArtifactType != "" && r.ArtifactType != "container_image" {
		return nil, fmt.Errorf("trivy report of a %q, not a container image", r.ArtifactType)
	}
	im := &Image{Reference: r.ArtifactName}
	for _, d := range append(append([]string{}, r.Metadata.RepoDigests...), r.Metadata.ImageID) {
		im.addDigest(d)
	}
	for _, res := range r.Results {
		for _, v := range res.Vulnerabilities {
			if v.VulnerabilityID == "" {
				continue
			}
			im.Vulns = append(im.Vulns, Vulnerability{ID: v.VulnerabilityID, Severity: ParseSeverity(v.Severity),
				Package: v.PkgName, Installed: v.InstalledVersion, FixedVersion: v.FixedVersion, Title: v.Title})
		}
	}
	if im.Reference == "" && len(im.Digests) == 0 {
		return nil, errors.New("trivy report names no image")
	}
	return []*Image{im}, nil
}

type grypeReport struct {
	Matches []struct {
		Vulnerability struct {
			ID          string `json:"id"`
			Severity    string `json:"severity"`
			Description string `json:"description"`
			Fix         struct {
				Versions []string `json:"versions"`
			} `json:"fix"`
		} `json:"vulnerability"`
		Artifact struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"artifact"`
	} `json:"matches"`
	Source struct {
		Type   string          `json:"type"`
		Target json.RawMessage `json:"target"`
	} `json:"source"`
}

func parseGrype(b []byte) ([]*Image, error) {
	var r grypeReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("grype report: %w", err)
	}
	if r.Source.Type != "" && r.Source.Type != "image" {
		return nil, fmt.Errorf("grype report of a %q, not an image", r.Source.Type)
	}
	var target struct {
		UserInput   string   `json:"userInput"`
		ImageID     string   `json:"imageID"`
		ManifestDig string   `json:"manifestDigest"`
		RepoDigests []string `json:"repoDigests"`
		Tags        []string `json:"tags"`
	}
	if len(r.Source.Target) > 0 && r.Source.Target[0] == '{' {
		if err := json.Unmarshal(r.Source.Target, &target); err != nil {
			return nil, fmt.Errorf("grype report source: %w", err)
		}
	}
	im := &Image{Reference: target.UserInput}
	if im.Reference == "" && len(target.Tags) > 0 {
		im.Reference = target.Tags[0]
	}
	for _, d := range append(append([]string{}, target.RepoDigests...), target.ImageID, target.ManifestDig) {
		im.addDigest(d)
	}
	for _, m := range r.Matches {
		if m.Vulnerability.ID == "" {
			continue
		}
		v := Vulnerability{ID: m.Vulnerability.ID, Severity: ParseSeverity(m.Vulnerability.Severity),
			Package: m.Artifact.Name, Installed: m.Artifact.Version, Title: firstLine(m.Vulnerability.Description)}
		if len(m.Vulnerability.Fix.Versions) > 0 {
			v.FixedVersion = strings.Join(m.Vulnerability.Fix.Versions, ", ")
		}
		im.Vulns = append(im.Vulns, v)
	}
	if im.Reference == "" && len(im.Digests) == 0 {
		return nil, errors.New("grype report names no image")
	}
	return []*Image{im}, nil
}

func (im *Image) addDigest(s string) {
	if d := digestOf(s); d != "" && !slices.Contains(im.Digests, d) {
		im.Digests = append(im.Digests, d)
	}
}

// digestOf returns the "sha256:<hex>" part of s ("repo@sha256:…",
// "docker-pullable://repo@sha256:…", "sha256:…"), or "".
func digestOf(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	alg, hex, ok := strings.Cut(s, ":")
	if !ok || alg != "sha256" || len(hex) != 64 || !isHex(hex) {
		return ""
	}
	return strings.ToLower(s)
}

func isHex(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// NormalizeRef makes image references comparable the way container
// runtimes resolve them: the default registry docker.io, its library/
// namespace for single-name images, the tag latest when none is given; a
// digest is dropped (Lookup matches digests separately).
func NormalizeRef(ref string) string {
	ref = strings.TrimSpace(ref)
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if ref == "" {
		return ""
	}
	name, tag := ref, ""
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		name, tag = ref[:i], ref[i+1:]
	}
	if tag == "" {
		tag = "latest"
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	switch {
	case !hasSlash:
		name = "docker.io/library/" + name
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		name = "docker.io/" + name
	case first == "index.docker.io":
		name = "docker.io/" + rest
	}
	if strings.HasPrefix(name, "docker.io/") && strings.Count(name, "/") == 1 {
		name = "docker.io/library/" + strings.TrimPrefix(name, "docker.io/")
	}
	return strings.ToLower(name) + ":" + tag
}

// firstLine is a description's first line, at most 200 bytes (cut at a
// rune boundary).
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return strings.TrimSpace(s)
}
