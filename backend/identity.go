package backend

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/internal/badgerkv"
	"github.com/harrier-sec/harrier/transport"
)

// Key layout of identity state (see badger.go for the rest).
const (
	prefixRevoked   = "r/" // r/<agent> → JSON revocation
	prefixEnrolled  = "n/" // n/<agent> → JSON Enrollment
	prefixBootstrap = "t/" // t/<sha256 of the token, hex> → JSON bootstrapToken, with TTL at its expiry
)

// The credentials an agent can present.
const (
	KindServiceAccount = "serviceAccount"
	KindBootstrap      = "bootstrap"
)

// bootstrapTokenPrefix marks a bootstrap token, so that one pasted into the
// wrong place is recognisable (and greppable by secret scanners).
const bootstrapTokenPrefix = "hbt-"

// Bootstrap token limits.
const (
	DefaultTokenTTL  = 24 * time.Hour
	MaxTokenTTL      = 30 * 24 * time.Hour
	DefaultTokenUses = 1
	MaxTokenUses     = 100_000
)

// IdentityError is a refusal the API passes to the client as it is, with
// its HTTP status: the agent logs the message, so it says what to do.
type IdentityError struct {
	Status int
	Msg    string
}

func (e *IdentityError) Error() string { return e.Msg }

func refuse(status int, format string, args ...any) error {
	return &IdentityError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// HTTP statuses of IdentityError (spelled out: net/http is not needed here).
const (
	statusBadRequest   = 400
	statusUnauthorized = 401
	statusForbidden    = 403
	statusConflict     = 409
	statusUnavailable  = 503
)

type revocation struct {
	RevokedAt time.Time `json:"revoked_at"`
}

// Enrollment is how an agent got its newest certificate from the backend.
type Enrollment struct {
	Kind       string    `json:"kind"`
	EnrolledAt time.Time `json:"enrolled_at"`
	RenewedAt  time.Time `json:"renewed_at,omitzero"`
	NotAfter   time.Time `json:"not_after"`
}

type bootstrapToken struct {
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	UsesLeft int       `json:"uses_left"`
}

// TokenIdentity is what the API server said about a service-account token.
type TokenIdentity struct {
	// Username is system:serviceaccount:<namespace>:<name>.
	Username string
	// PodName and NodeName are the pod the token is bound to and its node;
	// empty for a token not bound to a pod.
	PodName, NodeName string
}

// TokenReviewer checks a service-account token with audience "harrier".
// An error wrapping *IdentityError is a refusal; any other is a failure to
// ask.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (TokenIdentity, error)
}

// IdentityConfig configures an Identity.
type IdentityConfig struct {
	// CACert is the agents' CA; CAKey, when set, turns enrollment on.
	CACert, CAKey []byte
	// Validity of the certificates signed (default DefaultCertValidity).
	Validity time.Duration
	// ServiceAccount ("namespace/name") whose pod-bound tokens may enroll.
	ServiceAccount string
	// Reviewer checks service-account tokens; nil turns that kind off, for
	// the reason ReviewerOff gives.
	Reviewer    TokenReviewer
	ReviewerOff string
	// Now is the clock (tests set it).
	Now func() time.Time
}

// Identity decides which agents the backend accepts: revocations, enrolled
// agents and bootstrap tokens (only their hashes) live in the store's
// Badger; with the CA key it signs Enrollment and renewal requests.
// Revocations are also kept in memory, because every QUIC handshake asks.
type Identity struct {
	db  *badger.DB
	cfg IdentityConfig
	log *slog.Logger

	// enrollMu serialises enrollments and renewals, so a bootstrap token's
	// uses and the one-holder-per-ID rule cannot be raced.
	enrollMu sync.Mutex
	// mu guards revoked.
	mu      sync.Mutex
	revoked map[string]time.Time
	// onRevoke closes a revoked agent's live connections.
	onRevoke func(agentID string)
	// replicator, when set (a replicated backend), carries every change
	// to every replica; waiting (guarded by mu) hands this replica's own
	// changes' outcomes back to change (identity_replica.go).
	replicator ControlReplicator
	waiting    map[string]chan error
}

// NewIdentity loads the revocations kept in st.
func NewIdentity(st *BadgerStore, cfg IdentityConfig, log *slog.Logger) (*Identity, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Validity <= 0 {
		cfg.Validity = DefaultCertValidity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	id := &Identity{db: st.db, cfg: cfg, log: log, revoked: map[string]time.Time{}, waiting: map[string]chan error{}}
	err := st.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixRevoked)) {
			var r revocation
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				return err
			}
			id.revoked[string(bytes.TrimPrefix(item.Key(), key(prefixRevoked)))] = r.RevokedAt
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	return id, nil
}

// OnRevoke sets what Revoke calls after persisting (the ingest server's
// Disconnect). Call it before serving.
func (id *Identity) OnRevoke(f func(agentID string)) { id.onRevoke = f }

// EnrollmentOn reports whether the backend can sign certificates.
func (id *Identity) EnrollmentOn() bool { return len(id.cfg.CAKey) > 0 }

// Authorize is the ingest server's check after each handshake.
func (id *Identity) Authorize(agentID string) error {
	id.mu.Lock()
	at, ok := id.revoked[agentID]
	id.mu.Unlock()
	if ok {
		return fmt.Errorf("agent %s was revoked at %s (harrier agents unrevoke %s)", agentID, at.UTC().Format(time.RFC3339), agentID)
	}
	return nil
}

func (id *Identity) revokedError(agentID string) error {
	if err := id.Authorize(agentID); err != nil {
		return &IdentityError{Status: statusForbidden, Msg: err.Error()}
	}
	return nil
}

// Revoke refuses agentID from now on: the revocation is persisted, its live
// connections are closed, and its handshakes, renewals and enrollments are
// refused until Unrevoke.
func (id *Identity) Revoke(agentID string) error {
	if err := transport.ValidAgentID(agentID); err != nil {
		return &IdentityError{Status: statusBadRequest, Msg: err.Error()}
	}
	if err := id.change(identityChange{At: id.cfg.Now(), Revoke: agentID}); err != nil {
		return fmt.Errorf("revoke %s: %w", agentID, err)
	}
	return nil
}

// Unrevoke accepts agentID again; its certificates that have not expired
// are valid again.
func (id *Identity) Unrevoke(agentID string) error {
	if err := transport.ValidAgentID(agentID); err != nil {
		return &IdentityError{Status: statusBadRequest, Msg: err.Error()}
	}
	if err := id.change(identityChange{At: id.cfg.Now(), Unrevoke: agentID}); err != nil {
		return fmt.Errorf("unrevoke %s: %w", agentID, err)
	}
	return nil
}

// Revoked returns every revoked agent with the time of its revocation.
func (id *Identity) Revoked() map[string]time.Time {
	id.mu.Lock()
	defer id.mu.Unlock()
	out := make(map[string]time.Time, len(id.revoked))
	for k, v := range id.revoked {
		out[k] = v
	}
	return out
}

// Enrolled returns every agent that enrolled, by ID.
func (id *Identity) Enrolled(ctx context.Context) (map[string]Enrollment, error) {
	out := map[string]Enrollment{}
	err := id.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, key(prefixEnrolled)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var e Enrollment
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
				return err
			}
			out[string(bytes.TrimPrefix(item.Key(), key(prefixEnrolled)))] = e
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list enrollments: %w", err)
	}
	return out, nil
}

// CreateBootstrapToken makes a token that lets uses agents enroll within
// ttl. The token is returned once; only its hash is stored.
func (id *Identity) CreateBootstrapToken(ttl time.Duration, uses int) (token string, expires time.Time, err error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", time.Time{}, refuse(statusBadRequest, "ttl %v: want more than 0 and at most %v", ttl, MaxTokenTTL)
	}
	if uses < 1 || uses > MaxTokenUses {
		return "", time.Time{}, refuse(statusBadRequest, "uses %d: want 1 to %d", uses, MaxTokenUses)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, fmt.Errorf("bootstrap token: %w", err)
	}
	token = bootstrapTokenPrefix + hex.EncodeToString(raw)
	now := id.cfg.Now()
	expires = now.Add(ttl)
	if err := id.change(identityChange{At: now, Token: &tokenChange{Hash: tokenHash(token),
		Token: bootstrapToken{Created: now, Expires: expires, UsesLeft: uses}}}); err != nil {
		return "", time.Time{}, fmt.Errorf("store bootstrap token: %w", err)
	}
	id.log.Info("bootstrap token created", "expires", expires, "uses", uses)
	return token, expires, nil
}

func tokenKey(token string) []byte { return key(prefixBootstrap, tokenHash(token)) }

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// EnrollRequest is a decoded POST /api/v1/enroll body.
type EnrollRequest struct {
	Kind    string `json:"kind"`
	Token   string `json:"token"`
	AgentID string `json:"agent_id,omitempty"`
	CSR     string `json:"csr"`
}

// Issued is a signed certificate.
type Issued struct {
	AgentID     string    `json:"agent_id"`
	Certificate string    `json:"certificate"`
	NotAfter    time.Time `json:"not_after"`
}

// Enroll checks the request's credential, decides the agent ID and signs
// the request's key for it.
func (id *Identity) Enroll(ctx context.Context, req EnrollRequest) (Issued, error) {
	if !id.EnrollmentOn() {
		return Issued{}, refuse(statusUnavailable, "Enrollment is off on this backend: set backend.caKeyFile (and apiTLS) to turn it on")
	}
	id.enrollMu.Lock()
	defer id.enrollMu.Unlock()
	switch req.Kind {
	case KindServiceAccount:
		return id.enrollServiceAccount(ctx, req)
	case KindBootstrap:
		return id.enrollBootstrap(req)
	}
	return Issued{}, refuse(statusBadRequest, "kind %q: want %s or %s", req.Kind, KindServiceAccount, KindBootstrap)
}

func (id *Identity) enrollServiceAccount(ctx context.Context, req EnrollRequest) (Issued, error) {
	if id.cfg.Reviewer == nil {
		return Issued{}, refuse(statusUnavailable, "service-account Enrollment is off: %s", id.cfg.ReviewerOff)
	}
	ti, err := id.cfg.Reviewer.Review(ctx, req.Token)
	if err != nil {
		return Issued{}, err
	}
	ns, name, _ := strings.Cut(id.cfg.ServiceAccount, "/")
	if want := "system:serviceaccount:" + ns + ":" + name; ti.Username != want {
		return Issued{}, refuse(statusForbidden, "token of %s: only service account %s may enroll", ti.Username, id.cfg.ServiceAccount)
	}
	if ti.PodName == "" || ti.NodeName == "" {
		return Issued{}, refuse(statusForbidden, "token of %s is not bound to a pod on a node: mount a projected serviceAccountToken (audience harrier)", ti.Username)
	}
	agentID := ti.NodeName
	if err := transport.ValidAgentID(agentID); err != nil {
		return Issued{}, refuse(statusForbidden, "node name: %v", err)
	}
	if req.AgentID != "" && req.AgentID != agentID {
		return Issued{}, refuse(statusForbidden, "the token is bound to a pod on node %s, the request names agent %s", agentID, req.AgentID)
	}
	if err := id.revokedError(agentID); err != nil {
		return Issued{}, err
	}
	// The API server vouches for the node: a pod restarted or a node
	// reinstalled enrolls again under the same name.
	iss, err := id.sign(req.CSR, agentID)
	if err != nil {
		return Issued{}, err
	}
	if err := id.change(identityChange{At: id.cfg.Now(), Enroll: &enrollChange{AgentID: agentID, Kind: KindServiceAccount, NotAfter: iss.NotAfter}}); err != nil {
		return Issued{}, err
	}
	id.log.Info("agent enrolled", "agent", agentID, "kind", KindServiceAccount, "pod", ti.PodName, "notAfter", iss.NotAfter)
	return iss, nil
}

func (id *Identity) enrollBootstrap(req EnrollRequest) (Issued, error) {
	agentID := req.AgentID
	if err := transport.ValidAgentID(agentID); err != nil {
		return Issued{}, refuse(statusBadRequest, "agent_id: %v", err)
	}
	now := id.cfg.Now()
	var tok bootstrapToken
	var found bool
	var prev Enrollment
	var enrolled bool
	err := id.db.View(func(txn *badger.Txn) error {
		var err error
		if found, err = getJSON(txn, tokenKey(req.Token), &tok); err != nil {
			return err
		}
		enrolled, err = getJSON(txn, key(prefixEnrolled, agentID), &prev)
		return err
	})
	if err != nil {
		return Issued{}, fmt.Errorf("read bootstrap token: %w", err)
	}
	switch {
	case !found:
		return Issued{}, refuse(statusUnauthorized, "unknown bootstrap token (expired tokens are forgotten; make a new one with `harrier tokens create`)")
	case !now.Before(tok.Expires):
		return Issued{}, refuse(statusUnauthorized, "bootstrap token expired at %s", tok.Expires.UTC().Format(time.RFC3339))
	case tok.UsesLeft <= 0:
		return Issued{}, refuse(statusUnauthorized, "bootstrap token is used up")
	}
	if err := id.revokedError(agentID); err != nil {
		return Issued{}, err
	}
	// A bootstrap token proves no name: an ID whose certificate is still
	// valid is held by its agent, and taking it over needs a revocation.
	if enrolled && now.Before(prev.NotAfter) {
		return Issued{}, refuse(statusConflict, "agent ID %s is already enrolled (its certificate is valid until %s): revoke it first (harrier agents revoke %s), or enroll under another ID",
			agentID, prev.NotAfter.UTC().Format(time.RFC3339), agentID)
	}
	iss, err := id.sign(req.CSR, agentID)
	if err != nil {
		return Issued{}, err
	}
	// The checks above are made again where the use is taken, in the
	// cluster's order: another replica may have taken the last use.
	if err := id.change(identityChange{At: now, Enroll: &enrollChange{AgentID: agentID, Kind: KindBootstrap, NotAfter: iss.NotAfter,
		TokenHash: tokenHash(req.Token)}}); err != nil {
		return Issued{}, err
	}
	tok.UsesLeft--
	id.log.Info("agent enrolled", "agent", agentID, "kind", KindBootstrap, "tokenUsesLeft", tok.UsesLeft, "notAfter", iss.NotAfter)
	return iss, nil
}

// Renew signs a new key for the agent the verified client certificate
// names.
func (id *Identity) Renew(agentID, csrPEM string) (Issued, error) {
	if !id.EnrollmentOn() {
		return Issued{}, refuse(statusUnavailable, "Enrollment is off on this backend: set backend.caKeyFile (and apiTLS) to turn it on")
	}
	id.enrollMu.Lock()
	defer id.enrollMu.Unlock()
	if err := id.revokedError(agentID); err != nil {
		return Issued{}, err
	}
	iss, err := id.sign(csrPEM, agentID)
	if err != nil {
		return Issued{}, err
	}
	if err := id.change(identityChange{At: id.cfg.Now(), Enroll: &enrollChange{AgentID: agentID, NotAfter: iss.NotAfter}}); err != nil {
		return Issued{}, err
	}
	id.log.Info("agent certificate renewed", "agent", agentID, "notAfter", iss.NotAfter)
	return iss, nil
}

func (id *Identity) sign(csrPEM, agentID string) (Issued, error) {
	if _, err := transport.ParseCSR([]byte(csrPEM)); err != nil {
		return Issued{}, refuse(statusBadRequest, "csr: %v", err)
	}
	certPEM, err := transport.SignAgentCSR(id.cfg.CACert, id.cfg.CAKey, []byte(csrPEM), agentID, id.cfg.Validity)
	if err != nil {
		return Issued{}, fmt.Errorf("sign certificate for %s: %w", agentID, err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Issued{}, fmt.Errorf("parse signed certificate: %w", err)
	}
	return Issued{AgentID: agentID, Certificate: string(certPEM), NotAfter: cert.NotAfter}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func setJSON(txn *badger.Txn, k []byte, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e := badger.NewEntry(k, b)
	if ttl > 0 {
		e = e.WithTTL(ttl)
	}
	return txn.SetEntry(e)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// decodeEnrollRequest reads a POST /api/v1/enroll body from an untrusted
// client: one JSON object, no unknown fields, bounded fields.
func decodeEnrollRequest(body []byte) (EnrollRequest, error) {
	var req EnrollRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, err
	}
	switch req.Kind {
	case KindServiceAccount, KindBootstrap:
	default:
		return req, fmt.Errorf("kind %q: want %s or %s", req.Kind, KindServiceAccount, KindBootstrap)
	}
	if req.Token == "" {
		return req, errors.New("token is empty")
	}
	if len(req.Token) > maxTokenBytes {
		return req, fmt.Errorf("token is longer than %d bytes", maxTokenBytes)
	}
	if req.Kind == KindBootstrap || req.AgentID != "" {
		if err := transport.ValidAgentID(req.AgentID); err != nil {
			return req, fmt.Errorf("agent_id: %w", err)
		}
	}
	if req.CSR == "" {
		return req, errors.New("csr is empty")
	}
	return req, nil
}

// renewRequest is a POST /api/v1/renew body.
type renewRequest struct {
	CSR string `json:"csr"`
}

func decodeRenewRequest(body []byte) (renewRequest, error) {
	var req renewRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, err
	}
	if req.CSR == "" {
		return req, errors.New("csr is empty")
	}
	return req, nil
}

// maxTokenBytes bounds a credential: a projected service-account token is
// one to two KiB.
const maxTokenBytes = 16 << 10

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// fields and trailing data.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: data after the JSON object")
	}
	return nil
}
