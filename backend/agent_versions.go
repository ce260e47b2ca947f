package backend

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
)

// AgentVersions is what an agent runs of the site's configuration, against
// what the backend has now: the agents API and page show it, and mark an
// agent that is behind.
type AgentVersions struct {
	// Rules fingerprints the detection rules the agent runs (16 hex digits;
	// empty: an agent too old to report it); RulesLoaded counts them.
	// RulesCommon is the version most agents run, RulesDiffer: this agent
	// runs other rules than most (a rule file not rolled out everywhere).
	Rules       string `json:"rules"`
	RulesLoaded uint32 `json:"rules_loaded"`
	RulesCommon string `json:"rules_common,omitempty"`
	RulesDiffer bool   `json:"rules_differ"`
	// Exceptions is the alert exceptions version the agent applies,
	// ExceptionsCurrent the backend's; behind when they differ.
	Exceptions        uint64 `json:"exceptions"`
	ExceptionsCurrent uint64 `json:"exceptions_current"`
	ExceptionsBehind  bool   `json:"exceptions_behind"`
	// PoliciesSource is where the agent's response policies come from
	// ("backend", "file" or "" for none); Policies their version,
	// PoliciesCurrent the backend's. An agent on the backend's policies is
	// behind when the versions differ; one on its own file never is.
	PoliciesSource  string `json:"policies_source"`
	Policies        uint64 `json:"policies"`
	PoliciesCurrent uint64 `json:"policies_current"`
	PoliciesBehind  bool   `json:"policies_behind"`
}

// Behind reports whether the agent lacks the backend's current exceptions
// or response policies.
func (v AgentVersions) Behind() bool { return v.ExceptionsBehind || v.PoliciesBehind }

// agentVersions works out each agent's versions (by agent ID) from its
// last heartbeat and control acknowledgement and the backend's current
// exceptions and policies.
func (s *apiServer) agentVersions(ctx context.Context, agents []AgentInfo, controls map[string]AgentControl) (map[string]AgentVersions, error) {
	var excCurrent, polCurrent uint64
	if c := s.cfg.Control; c != nil {
		set, err := c.Exceptions(ctx)
		if err != nil {
			return nil, fmt.Errorf("alert exceptions: %w", err)
		}
		pol, err := c.Policies(ctx)
		if err != nil {
			return nil, err
		}
		excCurrent, polCurrent = set.Version, pol.Version
	}
	rulesCount := map[string]int{}
	for _, a := range agents {
		if v := a.Health.GetRulesVersion(); v != "" {
			rulesCount[v]++
		}
	}
	// The most common version; ties go to the smaller string, so that the
	// choice does not change between page loads.
	common := ""
	for _, v := range slices.Sorted(maps.Keys(rulesCount)) {
		if common == "" || cmp.Compare(rulesCount[v], rulesCount[common]) > 0 {
			common = v
		}
	}
	out := make(map[string]AgentVersions, len(agents))
	for _, a := range agents {
		h := a.Health
		v := AgentVersions{Rules: h.GetRulesVersion(), RulesLoaded: h.GetRulesLoaded(), Exceptions: h.GetExceptionsVersion(),
			ExceptionsCurrent: excCurrent, PoliciesSource: h.GetResponsePoliciesSource(), Policies: h.GetResponsePoliciesVersion(),
			PoliciesCurrent: polCurrent}
		if ac, ok := controls[a.ID]; ok && v.Exceptions == 0 {
			v.Exceptions = ac.ExceptionsVersion // an agent too old to put it in its heartbeat
		}
		if len(rulesCount) > 1 && v.Rules != "" {
			v.RulesCommon, v.RulesDiffer = common, v.Rules != common
		}
		// Without response control (a bare API) the backend has no current
		// versions to be behind.
		known := s.cfg.Control != nil
		v.ExceptionsBehind = known && excCurrent > 0 && v.Exceptions != excCurrent
		v.PoliciesBehind = known && v.PoliciesSource == "backend" && v.Policies != polCurrent
		out[a.ID] = v
	}
	return out, nil
}
