package backend

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/harrier-sec/harrier/api"
)

// maxTimelineAlerts bounds the alerts an incident's page and API answer
// read; the incident still counts them all.
const maxTimelineAlerts = 500

func (s *apiServer) incidentSource(w http.ResponseWriter) (IncidentSource, bool) {
	src, ok := s.store.(IncidentSource)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this store does not group incidents")
	}
	return src, ok
}

func incidentQueryFrom(r *http.Request, p *queryParams) IncidentQuery {
	return IncidentQuery{Severity: p.severity(), Node: p.str("node"), Since: p.since(), Limit: p.limit()}
}

// listIncidents serves GET /api/v1/incidents: highest score first.
func (s *apiServer) listIncidents(w http.ResponseWriter, r *http.Request) {
	p := newQueryParams(r, s.cfg.Now(), "severity", "node", "since", "limit")
	q := incidentQueryFrom(r, p)
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	src, ok := s.incidentSource(w)
	if !ok {
		return
	}
	incs, err := src.Incidents(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if incs == nil {
		incs = []Incident{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"incidents": incs})
}

// getIncident serves GET /api/v1/incidents/{id}: the incident and its
// alerts in timeline order (at most maxTimelineAlerts).
func (s *apiServer) getIncident(w http.ResponseWriter, r *http.Request) {
	src, ok := s.incidentSource(w)
	if !ok {
		return
	}
	inc, alerts, err := s.loadIncident(r, src)
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, "incident not found")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	raw := make([]json.RawMessage, 0, len(alerts))
	for _, a := range alerts {
		b, err := protoJSON.Marshal(a)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		raw = append(raw, b)
	}
	writeJSON(w, http.StatusOK, map[string]any{"incident": inc, "alerts": raw})
}

// loadIncident reads the incident named in the path and its first
// maxTimelineAlerts alerts.
func (s *apiServer) loadIncident(r *http.Request, src IncidentSource) (Incident, []*api.Alert, error) {
	inc, err := src.Incident(r.Context(), r.PathValue("id"))
	if err != nil {
		return inc, nil, err
	}
	ids := inc.AlertIDs
	if len(ids) > maxTimelineAlerts {
		ids = ids[:maxTimelineAlerts]
	}
	alerts := make([]*api.Alert, 0, len(ids))
	for _, id := range ids {
		a, err := s.store.Alert(r.Context(), id)
		if errors.Is(err, ErrNotFound) {
			continue // indexed after a commit another reader has not seen
		}
		if err != nil {
			return inc, nil, err
		}
		alerts = append(alerts, a)
	}
	return inc, alerts, nil
}

type incidentsPage struct {
	Title      string
	Error      string
	Incidents  []Incident
	Severities []string
	Severity   string
	Node       string
	Limit      int
}

func (s *apiServer) uiIncidents(w http.ResponseWriter, r *http.Request) {
	p := incidentsPage{Title: "Incidents", Severities: api.SeverityNames()}
	qp := newQueryParams(r, s.cfg.Now(), "severity", "node", "since", "limit")
	q := incidentQueryFrom(r, qp)
	p.Severity, p.Node, p.Limit = qp.str("severity"), q.Node, effectiveLimit(q.Limit)
	code := http.StatusOK
	src, ok := s.store.(IncidentSource)
	switch {
	case qp.err != nil:
		p.Error, code = qp.err.Error(), http.StatusBadRequest
	case !ok:
		p.Error = "This store does not group incidents."
	default:
		var err error
		if p.Incidents, err = src.Incidents(r.Context(), q); err != nil {
			s.log.Error("ui: list incidents", "err", err)
			p.Error, code = "The incidents could not be read; see the backend's log.", http.StatusInternalServerError
		}
	}
	s.render(w, code, s.ui.incidents, p)
}

type incidentPage struct {
	Title    string
	Incident Incident
	Alerts   []*api.Alert
	// Trees are the alerts' processes, one tree per node.
	Trees []NodeTree
	// Shown is how many of the incident's alerts the timeline lists.
	Shown int
	// Respond are each alert's response actions, for a responder (by
	// alert ID); empty for other roles.
	Respond map[string]*respondView
}

func (s *apiServer) uiIncident(w http.ResponseWriter, r *http.Request) {
	src, ok := s.store.(IncidentSource)
	if !ok {
		s.render(w, http.StatusNotFound, s.ui.incidents, incidentsPage{Title: "Not found", Error: "This store does not group incidents."})
		return
	}
	inc, alerts, err := s.loadIncident(r, src)
	switch {
	case errors.Is(err, ErrNotFound):
		s.render(w, http.StatusNotFound, s.ui.incidents, incidentsPage{Title: "Not found", Error: "No incident with that ID."})
		return
	case err != nil:
		s.log.Error("ui: get incident", "err", err)
		s.render(w, http.StatusInternalServerError, s.ui.incidents, incidentsPage{Title: "Error", Error: "The incident could not be read; see the backend's log."})
		return
	}
	p := incidentPage{Title: inc.Title, Incident: inc, Alerts: alerts, Shown: len(alerts), Trees: incidentTrees(alerts)}
	if canRespond(r) && s.cfg.Control != nil {
		p.Respond = map[string]*respondView{}
		for _, a := range alerts {
			if acts := alertActions(a); len(acts) > 0 {
				p.Respond[a.GetId()] = &respondView{AlertID: a.GetId(), Incident: inc.ID, Actions: acts, CanRespond: true}
			}
		}
	}
	s.render(w, http.StatusOK, s.ui.incident, p)
}

// getAlertExplanation serves GET /api/v1/alerts/{id}/explanation: what the
// alert page shows beyond the alert (explain.go).
func (s *apiServer) getAlertExplanation(w http.ResponseWriter, r *http.Request) {
	a, err := s.store.Alert(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrNotFound) {
		writeError(w, http.StatusNotFound, "alert not found")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	x := &explainer{store: s.store, control: s.cfg.Control, rules: s.ui.rules}
	writeJSON(w, http.StatusOK, map[string]any{"explanation": x.explain(r.Context(), a)})
}
