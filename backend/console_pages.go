package backend

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/export"
)

// The agent's resource budget (the DaemonSet's limits): the agents page
// shows each agent's CPU and RSS against it.
const (
	budgetCPUCores = 0.36
	budgetRSSBytes = 296 << 20
)

// offlineAfter is when an agent counts as offline: three of its usual
// gaps between uploads, and never less than two minutes (heartbeats are
// seconds apart, but a restart takes a while).
func offlineAfter(usual time.Duration) time.Duration {
	return max(3*usual, 2*time.Minute)
}

type agentsPage struct {
	Title   string
	Error   string
	Now     time.Time
	Agents  []agentRow
	Offline int
	// BudgetCPU and BudgetRSS are the budget as shown.
	BudgetCPU float64
	BudgetRSS uint64
	// Behind counts the agents without the backend's current exceptions
	// or response policies.
	Behind int
}

type agentRow struct {
	AgentInfo
	Silent         time.Duration
	Offline        bool
	Revoked        bool
	Control        *AgentControl
	Versions       AgentVersions
	CPUPercent     int // of the budget
	RSSPercent     int
	Drops          []Count
	DropsTotal     uint64
	GapsTotal      uint64
	SpoolAge       time.Duration
	ProbesAttached int
}

func (s *apiServer) uiAgents(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	p := agentsPage{Title: "Agents", Now: now, BudgetCPU: budgetCPUCores, BudgetRSS: budgetRSSBytes}
	agents, err := s.store.Agents(r.Context())
	if err != nil {
		s.log.Error("ui: list agents", "err", err)
		p.Error = "The agents could not be read; see the backend's log."
		s.render(w, http.StatusInternalServerError, s.ui.agents, p)
		return
	}
	var controls map[string]AgentControl
	if s.cfg.Control != nil {
		if controls, err = s.cfg.Control.AgentControls(r.Context()); err != nil {
			s.log.Error("ui: agent controls", "err", err)
			p.Error = "The agents' response control state could not be read; see the backend's log."
		}
	}
	versions, err := s.agentVersions(r.Context(), agents, controls)
	if err != nil {
		s.log.Error("ui: agent versions", "err", err)
		p.Error = "The backend's current exceptions and response policies could not be read; see the backend's log."
	}
	var revoked map[string]time.Time
	if s.cfg.Identity != nil {
		revoked = s.cfg.Identity.Revoked()
	}
	for _, a := range agents {
		row := agentRow{AgentInfo: a, Silent: now.Sub(a.LastSeen)}
		row.Offline = row.Silent > offlineAfter(a.UsualGap)
		_, row.Revoked = revoked[a.ID]
		if c, ok := controls[a.ID]; ok {
			row.Control = &c
		}
		row.Versions = versions[a.ID]
		if row.Versions.Behind() {
			p.Behind++
		}
		for _, n := range a.Gaps {
			row.GapsTotal += n
		}
		if h := a.Health; h != nil {
			row.CPUPercent = int(h.GetCpuCores() / budgetCPUCores * 100)
			row.RSSPercent = int(float64(h.GetRssBytes()) / budgetRSSBytes * 100)
			for stage, n := range h.GetDrops() {
				row.Drops = append(row.Drops, Count{stage, int(n)})
				row.DropsTotal += n
			}
			slices.SortFunc(row.Drops, func(a, b Count) int { return cmp.Or(cmp.Compare(b.N, a.N), strings.Compare(a.Name, b.Name)) })
			if t := pbTime(h.GetSpoolOldest()); !t.IsZero() && h.GetSpoolRecords() > 0 {
				row.SpoolAge = now.Sub(t)
			}
			for _, pr := range h.GetProbes() {
				if pr.GetAttached() {
					row.ProbesAttached++
				}
			}
		}
		if row.Offline {
			p.Offline++
		}
		p.Agents = append(p.Agents, row)
	}
	// Offline first, then by node.
	slices.SortStableFunc(p.Agents, func(a, b agentRow) int {
		if a.Offline != b.Offline {
			if a.Offline {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	s.render(w, http.StatusOK, s.ui.agents, p)
}

// overviewSource is what the overview page reads; BadgerStore has it.
type overviewSource interface {
	Overview(ctx context.Context, since, until time.Time, buckets int) (Overview, error)
}

// Overview aggregates alerts and incidents for the overview page.
func (s *BadgerStore) Overview(ctx context.Context, since, until time.Time, buckets int) (Overview, error) {
	if err := ctx.Err(); err != nil {
		return Overview{}, err
	}
	return s.incidents.overview(since, until, buckets), nil
}

type overviewRange struct {
	Name    string
	Span    time.Duration
	Buckets int
}

// overviewRanges are the overview's time ranges and their bucket counts.
func overviewRanges() []overviewRange {
	return []overviewRange{{"1h", time.Hour, 12}, {"24h", 24 * time.Hour, 24}, {"7d", 7 * 24 * time.Hour, 28}, {"30d", 30 * 24 * time.Hour, 30}}
}

type overviewPage struct {
	Title          string
	Error          string
	Range          string
	Ranges         []string
	Overview       Overview
	AlertChart     Chart
	IncidentChart  Chart
	TopIncidents   []Incident
	Checks         []checkCount
	FindingsShown  int
	Exports        []export.Status
	ExportsEnabled bool
}

type checkCount struct {
	Check, Title string
	Severity     api.Severity
	N            int
}

func (s *apiServer) uiOverview(w http.ResponseWriter, r *http.Request) {
	p := overviewPage{Title: "Overview", Range: "24h"}
	ranges := overviewRanges()
	for _, rg := range ranges {
		p.Ranges = append(p.Ranges, rg.Name)
	}
	qp := newQueryParams(r, s.cfg.Now(), "range")
	if v := qp.str("range"); v != "" {
		p.Range = v
	}
	i := slices.IndexFunc(ranges, func(rg overviewRange) bool { return rg.Name == p.Range })
	if qp.err == nil && i < 0 {
		qp.fail("range", "want one of "+strings.Join(p.Ranges, ", "))
	}
	if qp.err != nil {
		p.Error = qp.err.Error()
		s.render(w, http.StatusBadRequest, s.ui.overview, p)
		return
	}
	rg := ranges[i]
	// Buckets end on a bucket boundary after now, so the page is stable
	// within a bucket.
	bucket := rg.Span / time.Duration(rg.Buckets)
	until := s.cfg.Now().UTC().Truncate(bucket).Add(bucket)
	since := until.Add(-rg.Span)
	if src, ok := s.store.(overviewSource); ok {
		o, err := src.Overview(r.Context(), since, until, rg.Buckets)
		if err != nil {
			s.log.Error("ui: overview", "err", err)
			p.Error = "The overview could not be computed; see the backend's log."
		}
		p.Overview = o
		p.AlertChart = stackedChart("Alerts first seen", o.Alerts, since, o.Bucket)
		p.IncidentChart = stackedChart("Incidents started", o.Incidents, since, o.Bucket)
	}
	if src, ok := s.store.(IncidentSource); ok {
		incs, err := src.Incidents(r.Context(), IncidentQuery{Since: since, Limit: 5})
		if err != nil {
			s.log.Error("ui: overview incidents", "err", err)
		}
		p.TopIncidents = incs
	}
	findings, err := s.store.Findings(r.Context(), FindingQuery{Limit: MaxLimit})
	if err != nil {
		s.log.Error("ui: overview findings", "err", err)
		p.Error = "The findings could not be read; see the backend's log."
	}
	p.FindingsShown = len(findings)
	byCheck := map[string]*checkCount{}
	for _, f := range findings {
		c := byCheck[f.GetCheckId()]
		if c == nil {
			c = &checkCount{Check: f.GetCheckId(), Title: f.GetTitle()}
			byCheck[f.GetCheckId()] = c
		}
		c.N++
		c.Severity = max(c.Severity, f.GetSeverity())
	}
	for _, c := range byCheck {
		p.Checks = append(p.Checks, *c)
	}
	slices.SortFunc(p.Checks, func(a, b checkCount) int {
		return cmp.Or(cmp.Compare(b.Severity, a.Severity), cmp.Compare(b.N, a.N), strings.Compare(a.Check, b.Check))
	})
	if s.cfg.Exports != nil {
		p.ExportsEnabled = true
		p.Exports = s.cfg.Exports.Status()
	}
	s.render(w, http.StatusOK, s.ui.overview, p)
}
