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
