package backend

import (
	"errors"
	"net/http"

	"github.com/harrier-sec/harrier/backend/export"
)

// listExports serves GET /api/v1/exports: each destination's state, in
// config order. Targets carry no secrets (webhook URLs lose their query).
func (s *apiServer) listExports(w http.ResponseWriter, _ *http.Request) {
	out := []export.Status{}
	if s.cfg.Exports != nil {
		out = s.cfg.Exports.Status()
	}
	writeJSON(w, http.StatusOK, map[string]any{"exports": out})
}

// listDeadLetters serves GET /api/v1/exports/{name}/dead-letters?limit=N:
// the records the destination refused as malformed, oldest first.
func (s *apiServer) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	p := newQueryParams(r, s.cfg.Now(), "limit")
	limit := p.limit()
	if p.err != nil {
		writeError(w, http.StatusBadRequest, p.err.Error())
		return
	}
	if s.cfg.Exports == nil {
		writeError(w, http.StatusNotFound, "no export of that name")
		return
	}
	dl, err := s.cfg.Exports.DeadLetters(r.Context(), r.PathValue("name"), limit)
	if errors.Is(err, export.ErrUnknownDestination) {
		writeError(w, http.StatusNotFound, "no export of that name")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deadLetters": dl})
}

// uiDeadLettersShown is how many dead letters per destination the exports
// page lists; the API lists them all.
const uiDeadLettersShown = 20

type exportsPage struct {
	Title   string
	Error   string
	Exports []exportRow
}

type exportRow struct {
	export.Status
	DeadLetters []export.DeadLetter
}

// uiExports shows each destination's state, lag and counts, and its
// oldest dead letters with their reasons.
func (s *apiServer) uiExports(w http.ResponseWriter, r *http.Request) {
	p := exportsPage{Title: "Exports"}
	if s.cfg.Exports != nil {
		for _, st := range s.cfg.Exports.Status() {
			// Read even when this run dead-lettered nothing: the list
			// keeps earlier runs' letters.
			dl, err := s.cfg.Exports.DeadLetters(r.Context(), st.Name, uiDeadLettersShown)
			if err != nil {
				s.log.Error("ui: dead letters", "export", st.Name, "err", err)
				p.Error = "The dead letters of " + st.Name + " could not be read; see the backend's log."
			}
			p.Exports = append(p.Exports, exportRow{Status: st, DeadLetters: dl})
		}
	}
	s.render(w, http.StatusOK, s.ui.exports, p)
}
