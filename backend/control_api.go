package backend

import (
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/harrier-sec/harrier/api"
)

// The response routes: reading needs a viewer (or the response token);
// asking for actions a responder, changing the policies an admin — or the
// response token, which keeps its meaning. The API token may read them
// only (see permitted).
//
//	GET  /api/v1/response/policies
//	PUT  /api/v1/response/policies            body: the policy file (YAML)
//	POST /api/v1/response/commands            body: CommandRequest (JSON)
//	GET  /api/v1/response/commands?agent=&limit=
//	GET  /api/v1/response/commands/{id}
func (s *apiServer) routeResponse(mux *http.ServeMux) {
	read := func(h http.HandlerFunc) http.Handler { return s.withControl(s.guard(RoleViewer, true, false, h)) }
	write := func(need Role, action string, h http.HandlerFunc) http.Handler {
		return s.withControl(s.guard(need, true, false, s.audited(action, h)))
	}
	mux.Handle("GET /api/v1/response/policies", read(s.getPolicies))
	mux.Handle("PUT /api/v1/response/policies", write(RoleAdmin, "response.policies", s.putPolicies))
	mux.Handle("POST /api/v1/response/commands", write(RoleResponder, "response.command", s.postCommand))
	mux.Handle("GET /api/v1/response/commands", read(s.listCommands))
	mux.Handle("GET /api/v1/response/commands/{id}", read(s.getCommand))
}

// respondedBy names the response credential in records.
const respondedBy = "response-token"

// requester names who asked, in records: the user, or the credential.
func requester(r *http.Request) string {
	if p := principalFrom(r); p != nil {
		return p.Name
	}
	return respondedBy
}

func (s *apiServer) withControl(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Control == nil {
			writeError(w, http.StatusServiceUnavailable, "response control is not running on this backend")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *apiServer) controlError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		s.internalError(w, r, err)
	}
}

func (s *apiServer) getPolicies(w http.ResponseWriter, r *http.Request) {
	p, err := s.cfg.Control.Policies(r.Context())
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	agents, err := s.cfg.Control.AgentControls(r.Context())
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"policies": p, "agents": agents})
}

func (s *apiServer) putPolicies(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPolicyBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	p, err := s.cfg.Control.SetPolicies(r.Context(), raw, requester(r))
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	p.YAML = "" // the caller has it
	writeJSON(w, http.StatusOK, map[string]any{"policies": p})
}

func (s *apiServer) postCommand(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req CommandRequest
	if err := decodeStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rec, err := s.cfg.Control.Issue(r.Context(), req, requester(r))
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"command": rec})
}

func (s *apiServer) listCommands(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "limit: want a positive number")
			return
		}
		limit = n
	}
	recs, err := s.cfg.Control.Commands(r.Context(), r.URL.Query().Get("agent"), limit)
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	for i := range recs {
		recs[i].Signed = nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"commands": recs})
}

func (s *apiServer) getCommand(w http.ResponseWriter, r *http.Request) {
	rec, err := s.cfg.Control.Command(r.Context(), r.PathValue("id"))
	if err != nil {
		s.controlError(w, r, err)
		return
	}
	rec.Signed = nil
	writeJSON(w, http.StatusOK, map[string]any{"command": rec})
}

type responsePage struct {
	Title    string
	Error    string
	Policies PolicyState
	Agents   []responseAgentRow
	Commands []CommandRecord
	Records  []*api.Event
	Now      string
}

type responseAgentRow struct {
	ID, Source, Answered, Error string
	Version                     uint64
	Behind                      bool
}

// uiResponse shows the policies, what each agent applies, the commands and
// the actions recorded.
func (s *apiServer) uiResponse(w http.ResponseWriter, r *http.Request) {
	p := responsePage{Title: "Response", Now: s.cfg.Now().UTC().Format("2006-01-02 15:04:05Z")}
	fail := func(what string, err error) {
		s.log.Error("ui: response", "what", what, "err", err)
		p.Error = "The " + what + " could not be read; see the backend's log."
	}
	ctx := r.Context()
	var controls map[string]AgentControl
	if c := s.cfg.Control; c == nil {
		p.Error = "Response control is not running on this backend."
	} else {
		var err error
		if p.Policies, err = c.Policies(ctx); err != nil {
			fail("policies", err)
		}
		if controls, err = c.AgentControls(ctx); err != nil {
			fail("agents' answers", err)
		}
		if p.Commands, err = c.Commands(ctx, "", DefaultLimit); err != nil {
			fail("commands", err)
		}
	}
	agents, err := s.store.Agents(ctx)
	if err != nil {
		fail("agents", err)
	}
	for _, a := range agents {
		row := responseAgentRow{ID: a.ID, Source: a.Health.GetResponsePoliciesSource(), Version: a.Health.GetResponsePoliciesVersion(), Answered: "—"}
		if ac, ok := controls[a.ID]; ok {
			row.Answered, row.Error = ac.Answered.UTC().Format("2006-01-02 15:04:05Z"), ac.PoliciesError
		}
		row.Behind = row.Source == "backend" && row.Version != p.Policies.Version
		p.Agents = append(p.Agents, row)
	}
	if p.Records, err = s.store.Events(ctx, EventQuery{Kind: api.EventKind_EVENT_KIND_RESPONSE, Limit: DefaultLimit}); err != nil {
		fail("response records", err)
	}
	s.render(w, http.StatusOK, s.ui.response, p)
}
