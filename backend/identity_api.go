package backend

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/harrier-sec/harrier/transport"
)

// maxEnrollBody bounds enroll, renew and token requests: a CSR and a token
// fit in a few KiB.
const maxEnrollBody = 64 << 10

// readBody reads a bounded request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return nil, false
	}
	return b, true
}

// identityError answers err: an IdentityError with its status and message,
// anything else as an internal error.
func (s *apiServer) identityError(w http.ResponseWriter, r *http.Request, err error) {
	if ie, ok := errors.AsType[*IdentityError](err); ok {
		s.log.Info("identity request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "status", ie.Status, "reason", ie.Msg)
		writeError(w, ie.Status, ie.Msg)
		return
	}
	s.internalError(w, r, err)
}

func (s *apiServer) withIdentity(h func(http.ResponseWriter, *http.Request, *Identity)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Identity == nil {
			writeError(w, http.StatusServiceUnavailable, "enrollment and revocation are not available on this API")
			return
		}
		h(w, r, s.cfg.Identity)
	})
}

// enroll is POST /api/v1/enroll: no bearer token, the credential is in the
// body (a service-account token or a bootstrap token).
func (s *apiServer) enroll(w http.ResponseWriter, r *http.Request, id *Identity) {
	if r.TLS == nil {
		writeError(w, http.StatusForbidden, "enrollment needs HTTPS (backend.apiTLS)")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := decodeEnrollRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	iss, err := id.Enroll(r.Context(), req)
	if err != nil {
		s.identityError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, iss)
}

// renew is POST /api/v1/renew, authenticated by the agent's current client
// certificate (verified by the TLS layer against the agents' CA).
func (s *apiServer) renew(w http.ResponseWriter, r *http.Request, id *Identity) {
	if r.TLS == nil {
		writeError(w, http.StatusForbidden, "renewal needs HTTPS (backend.apiTLS)")
		return
	}
	agentID, err := transport.AgentID(*r.TLS)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "renewal needs the agent's client certificate: "+err.Error())
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := decodeRenewRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	iss, err := id.Renew(agentID, req.CSR)
	if err != nil {
		s.identityError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, iss)
}

// tokenRequest is a POST /api/v1/tokens body.
type tokenRequest struct {
	TTL  string `json:"ttl,omitempty"`
	Uses int    `json:"uses,omitempty"`
}

func (s *apiServer) createToken(w http.ResponseWriter, r *http.Request, id *Identity) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req := tokenRequest{}
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, "ttl: "+err.Error())
			return
		}
		ttl = d
	}
	uses := req.Uses
	if uses == 0 {
		uses = DefaultTokenUses
	}
	tok, expires, err := id.CreateBootstrapToken(ttl, uses)
	if err != nil {
		s.identityError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "expires": expires, "uses": uses})
}

func (s *apiServer) revoke(w http.ResponseWriter, r *http.Request, id *Identity) {
	agentID := r.PathValue("id")
	if err := id.Revoke(agentID); err != nil {
		s.identityError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent_id": agentID, "revoked": true})
}

func (s *apiServer) unrevoke(w http.ResponseWriter, r *http.Request, id *Identity) {
	agentID := r.PathValue("id")
	if err := id.Unrevoke(agentID); err != nil {
		s.identityError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent_id": agentID, "revoked": false})
}
