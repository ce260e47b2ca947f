// Package response decides and takes actions against what an alert names:
// response policies (YAML, strict) match alerts and name actions, each
// policy in audit mode (record what it would have done) or enforce mode.
//
// It imports api and the process helpers only; the agent wires it after
// analytics.
package response

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
)

// The policy file's identity.
const (
	APIVersion = "harrier.io/v1"
	Kind       = "ResponsePolicies"
)

// Modes.
const (
	ModeAudit   = "audit"
	ModeEnforce = "enforce"
)

// Actions. Only these are known; a policy naming another is refused.
const (
	// ActionKillProcessTree kills the alert's process and every descendant,
	// verified by start time, stopped first so that none forks away.
	ActionKillProcessTree = "kill-process-tree"
)

// Actions lists the actions a policy may name.
func Actions() []string {
	return []string{ActionKillProcessTree, ActionBlockNetwork, ActionIsolateNetwork, ActionPauseContainer, ActionStopContainer, ActionQuarantine}
}

// containerOnly are the actions on a container as a whole.
func containerOnly(action string) bool {
	return action == ActionBlockNetwork || action == ActionIsolateNetwork || action == ActionPauseContainer || action == ActionStopContainer
}

// Where an alert's process ran.
const (
	WhereAny       = "any"
	WhereContainer = "container"
	WhereHost      = "host"
)

// File is a response policy file.
type File struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Policies   []Policy `json:"policies,omitempty"`
	// ExecDeny are executables killed at exec (see ExecDeny).
	ExecDeny []ExecDeny `json:"execDeny,omitempty"`
}

// Policy matches alerts and names the actions to take on them.
type Policy struct {
	Name    string   `json:"name"`
	Mode    string   `json:"mode"`
	Match   Match    `json:"match"`
	Actions []string `json:"actions"`
	// AllowProtected names the protected targets (kubelet, runtime,
	// kube-system) this policy may act on; none by default.
	AllowProtected []string `json:"allowProtected,omitempty"`
	// RateLimit bounds the actions the policy enforces (see RateLimit).
	RateLimit RateLimit `json:"rateLimit,omitzero"`
}

// Match selects alerts; every field set must match, an unset one matches
// all.
type Match struct {
	// Detections are detection IDs.
	Detections []string `json:"detections,omitempty"`
	// MinSeverity is the lowest severity matched.
	MinSeverity api.Severity `json:"minSeverity,omitempty"`
	// Namespaces are pod namespaces (an alert from the host has none).
	Namespaces []string `json:"namespaces,omitempty"`
	// PodLabels must all be on the alert's pod.
	PodLabels map[string]string `json:"podLabels,omitempty"`
	// Images are globs (path.Match) over the container's image reference.
	Images []string `json:"images,omitempty"`
	// Where is "container", "host" or "any" (default).
	Where string `json:"where,omitempty"`
}

// Load reads and validates a policy file.
func Load(file string) (*File, error) {
	var f File
	if err := confval.LoadYAML(file, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate reports every problem of the file, each naming its policy.
func (f *File) Validate() error {
	var errs []error
	if f.APIVersion != APIVersion {
		errs = append(errs, fmt.Errorf("apiVersion %q: want %s", f.APIVersion, APIVersion))
	}
	if f.Kind != Kind {
		errs = append(errs, fmt.Errorf("kind %q: want %s", f.Kind, Kind))
	}
	seen := map[string]bool{}
	for i, p := range f.Policies {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("policies[%d] %q: %s", i, p.Name, fmt.Sprintf(format, args...)))
		}
		switch {
		case p.Name == "":
			bad("name is required")
		case seen[p.Name]:
			bad("name used twice")
		}
		seen[p.Name] = true
		if p.Mode != ModeAudit && p.Mode != ModeEnforce {
			bad("mode %q: want %s or %s", p.Mode, ModeAudit, ModeEnforce)
		}
		if len(p.Actions) == 0 {
			bad("no actions")
		}
		for _, e := range validateAllowProtected(p.AllowProtected) {
			bad("%s", e)
		}
		for _, e := range p.RateLimit.validate() {
			bad("%s", e)
		}
		for _, a := range p.Actions {
			if !slices.Contains(Actions(), a) {
				bad("action %q: want one of %s", a, strings.Join(Actions(), ", "))
			}
		}
		m := p.Match
		if len(m.Detections) == 0 && m.MinSeverity == api.Severity_SEVERITY_UNSPECIFIED {
			// Killing on every alert of every kind is never what a site means.
			bad("match needs detections or minSeverity")
		}
		for _, g := range m.Images {
			if _, err := path.Match(g, ""); err != nil {
				bad("image glob %q: %v", g, err)
			}
		}
		switch m.Where {
		case "", WhereAny, WhereContainer, WhereHost:
		default:
			bad("where %q: want %s, %s or %s", m.Where, WhereContainer, WhereHost, WhereAny)
		}
		for _, a := range p.Actions {
			if containerOnly(a) && m.Where != WhereContainer {
				bad("%s needs where: container (a host process's cgroup is a whole service)", a)
			}
		}
		if m.Where == WhereHost && (len(m.Namespaces) > 0 || len(m.PodLabels) > 0 || len(m.Images) > 0) {
			bad("where: host cannot match namespaces, pod labels or images")
		}
	}
	for i, d := range f.ExecDeny {
		if err := d.validate(); err != nil {
			errs = append(errs, fmt.Errorf("execDeny[%d] %q: %w", i, d.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Decision is one action a policy takes on an alert.
type Decision struct {
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	Action string `json:"action"`
}

// Decide returns the actions the policies take on a, in policy order; an
// action named by several policies is taken once, by the first that
// enforces it (else the first that audits it).
func (f *File) Decide(a *api.Alert) []Decision {
	var out []Decision
	for _, p := range f.Policies {
		if !p.Match.matches(a) {
			continue
		}
		for _, act := range p.Actions {
			i := slices.IndexFunc(out, func(d Decision) bool { return d.Action == act })
			switch {
			case i < 0:
				out = append(out, Decision{Policy: p.Name, Mode: p.Mode, Action: act})
			case out[i].Mode == ModeAudit && p.Mode == ModeEnforce:
				out[i] = Decision{Policy: p.Name, Mode: p.Mode, Action: act}
			}
		}
	}
	return out
}

func (m Match) matches(a *api.Alert) bool {
	if len(m.Detections) > 0 && !slices.Contains(m.Detections, a.GetDetectionId()) {
		return false
	}
	if m.MinSeverity != api.Severity_SEVERITY_UNSPECIFIED && a.GetSeverity() < m.MinSeverity {
		return false
	}
	c := a.GetContainer()
	inContainer := c.GetId() != ""
	switch m.Where {
	case WhereContainer:
		if !inContainer {
			return false
		}
	case WhereHost:
		if inContainer {
			return false
		}
	}
	if len(m.Namespaces) > 0 && !slices.Contains(m.Namespaces, c.GetPodNamespace()) {
		return false
	}
	for k, v := range m.PodLabels {
		if got, ok := c.GetLabels()[k]; !ok || got != v {
			return false
		}
	}
	if len(m.Images) > 0 {
		matched := false
		for _, g := range m.Images {
			if ok, _ := path.Match(g, c.GetImage()); ok {
				matched = true
				break
			}
		}
		if !matched {
			return false
		}
	}
	return true
}
