package backend

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/vulndb"
)

// SnapshotEvaluator adds the backend's own findings to an inventory
// snapshot as it becomes current: checks that need what only the backend
// holds (the site's vulnerability database).
type SnapshotEvaluator interface {
	// Refresh is called once before a snapshot's items are evaluated.
	Refresh()
	// ItemFindings returns the findings of one inventory item.
	ItemFindings(item *api.InventoryItem) []*api.Finding
}

// VulnCheckID is the posture check of images with known vulnerabilities.
const VulnCheckID = "image-vulnerable"

// ImageVulnChecker is the image-vulnerable posture check: running images
// looked up in the offline vulnerability database (scanner reports in a
// directory, re-read when the directory's files change).
type ImageVulnChecker struct {
	dir string
	min vulndb.Severity
	log *slog.Logger
	db  *vulndb.DB
	sig string // names, sizes and mtimes of the loaded reports
}

// NewImageVulnChecker reads reports from dir; findings are made for images
// with vulnerabilities at or above min.
func NewImageVulnChecker(dir string, min vulndb.Severity, log *slog.Logger) *ImageVulnChecker {
	return &ImageVulnChecker{dir: dir, min: min, log: log}
}

// Refresh reloads the database when its files changed. Bad reports are
// logged with their names and skipped; the others are used.
func (c *ImageVulnChecker) Refresh() {
	sig := dirSignature(c.dir)
	if sig == c.sig && c.db != nil {
		return
	}
	db, problems := vulndb.Load(c.dir)
	for _, p := range problems {
		c.log.Warn("vulnerability report skipped", "error", p)
	}
	c.db, c.sig = db, sig
	if db.Len() > 0 || len(problems) > 0 {
		c.log.Info("vulnerability database loaded", "dir", c.dir, "images", db.Len(), "skipped", len(problems))
	}
}

// ItemFindings reports each image of a top-level object (a workload, or a
// pod without a controller) that the database knows to be vulnerable.
// Pods of a workload are covered by their workload's finding.
func (c *ImageVulnChecker) ItemFindings(it *api.InventoryItem) []*api.Finding {
	if c.db.Len() == 0 || len(it.GetImages()) == 0 || it.GetOwner().GetKind() != "" {
		return nil
	}
	var out []*api.Finding
	for _, ref := range it.GetImages() {
		im, ok := c.db.Lookup(ref, "")
		if !ok {
			continue
		}
		worst := im.Worst(c.min)
		if len(worst) == 0 {
			continue
		}
		out = append(out, vulnFinding(it, ref, im, worst))
	}
	return out
}

func vulnFinding(it *api.InventoryItem, ref string, im *vulndb.Image, worst []vulndb.Vulnerability) *api.Finding {
	counts := im.Counts()
	var summary []string
	for s := vulndb.SeverityCritical; s >= vulndb.SeverityLow; s-- {
		if n := counts[s]; n > 0 {
			summary = append(summary, fmt.Sprintf("%d %s", n, s))
		}
	}
	var top []string
	var fixes []string
	for i, v := range worst {
		if i < 5 {
			desc := v.ID
			if v.Package != "" {
				desc += " in " + v.Package + " " + v.Installed
			}
			top = append(top, desc)
		}
		if v.FixedVersion != "" {
			fixes = append(fixes, v.Package+" "+v.FixedVersion)
		}
	}
	if len(worst) > 5 {
		top = append(top, fmt.Sprintf("and %d more", len(worst)-5))
	}
	slices.Sort(fixes)
	fixes = slices.Compact(fixes)
	remediation := "Rebuild the image on patched base layers and packages, redeploy, and replace its scan report in the vulnerability database."
	if len(fixes) > 0 {
		if len(fixes) > 5 {
			fixes = append(fixes[:5], "…")
		}
		remediation = "Update to fixed versions (" + strings.Join(fixes, ", ") + "), rebuild and redeploy the image, and replace its scan report in the vulnerability database."
	}
	return &api.Finding{
		CheckId:     VulnCheckID,
		Title:       "Image with known vulnerabilities",
		Severity:    severityOf(worst[0].Severity),
		Category:    "images",
		Object:      it.GetObject(),
		Container:   ref, // one finding per object and image
		Detail:      fmt.Sprintf("%s: %s (%s); report %s", ref, strings.Join(summary, ", "), strings.Join(top, "; "), im.Source),
		Remediation: remediation,
		Standards:   []string{"CIS Kubernetes 5.5.1 (image provenance)", "NIST SP 800-190 4.1.1"},
	}
}

func severityOf(s vulndb.Severity) api.Severity {
	switch s {
	case vulndb.SeverityCritical:
		return api.Severity_SEVERITY_CRITICAL
	case vulndb.SeverityHigh:
		return api.Severity_SEVERITY_HIGH
	case vulndb.SeverityMedium:
		return api.Severity_SEVERITY_MEDIUM
	case vulndb.SeverityLow, vulndb.SeverityNegligible:
		return api.Severity_SEVERITY_LOW
	}
	return api.Severity_SEVERITY_INFO
}

// dirSignature changes whenever a file in dir is added, removed or
// rewritten.
func dirSignature(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "error:" + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s|%d|%d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}
