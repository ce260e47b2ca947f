package backend

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig turns on "Sign in with <provider>" on the console: an OpenID
// Connect authorization-code flow (with PKCE, state and nonce) against the
// site's identity provider. The user's role comes from a claim of the ID
// token that lists their groups; a user in none of the mapped groups is
// refused.
type OIDCConfig struct {
	// ProviderName is shown on the button ("Sign in with <name>"); default
	// the issuer's host.
	ProviderName string `json:"providerName,omitempty"`
	// Issuer is the provider's issuer URL; its discovery document is
	// <issuer>/.well-known/openid-configuration. https, or http on
	// loopback only.
	Issuer string `json:"issuer"`
	// ClientID and the file holding the client secret, as registered at
	// the provider for this console.
	ClientID         string `json:"clientID"`
	ClientSecretFile string `json:"clientSecretFile"`
	// RedirectURL is this console's callback as registered at the
	// provider: <the console's URL>/oidc/callback.
	RedirectURL string `json:"redirectURL"`
	// Scopes asked for; default openid, email, profile. openid is always
	// asked for.
	Scopes []string `json:"scopes,omitempty"`
	// GroupsClaim is the ID token's claim listing the user's groups or
	// roles (default "groups"); a string or a list of strings.
	GroupsClaim string `json:"groupsClaim,omitempty"`
	// UserClaim names the user in the console and the audit log as
	// oidc:<value> (default "email"; the subject when the token lacks it).
	UserClaim string `json:"userClaim,omitempty"`
	// Roles maps a group (a value of GroupsClaim) to the Harrier role its
	// members get: viewer, analyst, responder or admin. A user in several
	// mapped groups gets the highest of their roles.
	Roles map[string]Role `json:"roles"`
	// CAFile, when set, holds the CA certificates that the provider's TLS
	// certificate must chain to (a site's own CA); default the system's.
	CAFile string `json:"caFile,omitempty"`
}

// oidcCallbackPath is where the provider sends the browser back.
const oidcCallbackPath = "/oidc/callback"

// Validate reports every problem with c, each naming its field.
func (c OIDCConfig) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("oidc.issuer: required (the identity provider's issuer URL)"))
	} else if err := checkOIDCURL(c.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("oidc.issuer %q: %w", c.Issuer, err))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("oidc.clientID: required (the client ID registered at the provider)"))
	}
	if c.ClientSecretFile == "" {
		errs = append(errs, errors.New("oidc.clientSecretFile: required (a file holding the client secret)"))
	}
	if c.RedirectURL == "" {
		errs = append(errs, errors.New("oidc.redirectURL: required (<the console's URL>"+oidcCallbackPath+")"))
	} else if err := checkOIDCURL(c.RedirectURL); err != nil {
		errs = append(errs, fmt.Errorf("oidc.redirectURL %q: %w", c.RedirectURL, err))
	} else if u, _ := url.Parse(c.RedirectURL); u.Path != oidcCallbackPath {
		errs = append(errs, fmt.Errorf("oidc.redirectURL %q: the path must be %s", c.RedirectURL, oidcCallbackPath))
	}
	for _, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\n") {
			errs = append(errs, fmt.Errorf("oidc.scopes: %q is not a scope", s))
		}
	}
	if len(c.Roles) == 0 {
		errs = append(errs, errors.New("oidc.roles: required: map at least one group to a role (viewer, analyst, responder or admin)"))
	}
	for g, r := range c.Roles {
		if !slices.Contains(Roles, r) {
			errs = append(errs, fmt.Errorf("oidc.roles[%q]: role %q: want viewer, analyst, responder or admin", g, r))
		}
	}
	return errors.Join(errs...)
}

// checkOIDCURL: an absolute URL, https unless on loopback (where tests and
// a provider on the same host live).
func checkOIDCURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("want an absolute http(s) URL")
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return errors.New("want https (http only on loopback): codes and tokens must not cross a network in the clear")
		}
	}
	return nil
}

func (c OIDCConfig) withDefaults() OIDCConfig {
	if c.ProviderName == "" {
		if u, err := url.Parse(c.Issuer); err == nil {
			c.ProviderName = u.Hostname()
		}
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if !slices.Contains(c.Scopes, oidc.ScopeOpenID) {
		c.Scopes = append([]string{oidc.ScopeOpenID}, c.Scopes...)
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = "groups"
	}
	if c.UserClaim == "" {
		c.UserClaim = "email"
	}
	return c
}

// How OIDC sign-in bounds its work.
const (
	// oidcTimeout bounds each call to the provider.
	oidcTimeout = 10 * time.Second
	// oidcRetryEvery spaces discovery attempts while the provider is
	// unreachable.
	oidcRetryEvery = 5 * time.Second
	// oidcFlowTTL is how long a browser may take at the provider.
	oidcFlowTTL = 10 * time.Minute
	// maxOIDCFlows bounds the sign-ins in progress held in memory.
	maxOIDCFlows = 10000
	// oidcFlowCookie binds a sign-in in progress to the browser that began
	// it. SameSite=Lax: it must come back with the provider's redirect.
	oidcFlowCookie = "harrier_oidc"
)

// OIDCLogin signs console users in with the site's identity provider.
// Discovery is retried while the provider is unreachable, so that the
// backend starts (and local users sign in) without it.
type OIDCLogin struct {
	cfg    OIDCConfig
	secret string
	client *http.Client
	log    *slog.Logger
	// retryEvery is oidcRetryEvery (tests shorten it).
	retryEvery time.Duration

	mu       sync.Mutex
	provider *oidc.Provider
	lastErr  error
	lastTry  time.Time
	// flows are the sign-ins in progress, by the ID in the browser's
	// oidcFlowCookie.
	flows map[string]oidcFlow
}

// oidcFlow is one sign-in in progress: what the callback must match.
type oidcFlow struct {
	state, nonce, verifier string
	expires                time.Time
}

// NewOIDCLogin reads the client secret and CA, and starts discovery in
// the background. Bad configuration is an error that names the field; an
// unreachable provider is not (see Status).
func NewOIDCLogin(cfg OIDCConfig, log *slog.Logger) (*OIDCLogin, error) {
	return newOIDCLogin(cfg, log, oidcRetryEvery)
}

func newOIDCLogin(cfg OIDCConfig, log *slog.Logger, retryEvery time.Duration) (*OIDCLogin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := os.ReadFile(cfg.ClientSecretFile)
	if err != nil {
		return nil, fmt.Errorf("oidc.clientSecretFile: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return nil, fmt.Errorf("oidc.clientSecretFile %s: empty", cfg.ClientSecretFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc.caFile %s: no PEM certificate in it", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	o := &OIDCLogin{cfg: cfg, secret: secret, client: &http.Client{Transport: tr, Timeout: oidcTimeout}, log: log,
		retryEvery: retryEvery, flows: map[string]oidcFlow{}}
	go func() { _, _ = o.discover(context.Background()) }()
	return o, nil
}

// ProviderName is what the button names.
func (o *OIDCLogin) ProviderName() string { return o.cfg.ProviderName }

// Status is the last discovery error (nil: discovered, or not tried yet).
func (o *OIDCLogin) Status() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return nil
	}
	return o.lastErr
}

// discover returns the provider, fetching its discovery document unless it
// has it (at most once per oidcRetryEvery while it fails).
func (o *OIDCLogin) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	if o.provider != nil {
		defer o.mu.Unlock()
		return o.provider, nil
	}
	if !o.lastTry.IsZero() && time.Since(o.lastTry) < o.retryEvery {
		defer o.mu.Unlock()
		return nil, o.lastErr
	}
	o.lastTry = time.Now()
	o.mu.Unlock()

	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.client), oidcTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.lastErr = fmt.Errorf("identity provider %s (oidc.issuer %s) unreachable or invalid: %w", o.cfg.ProviderName, o.cfg.Issuer, err)
		o.log.Warn("OIDC discovery failed; local sign-in works, OIDC sign-in retries", "issuer", o.cfg.Issuer, "err", err)
		return nil, o.lastErr
	}
	if o.provider == nil {
		o.provider, o.lastErr = p, nil
		o.log.Info("OIDC provider discovered", "issuer", o.cfg.Issuer, "provider", o.cfg.ProviderName)
	}
	return o.provider, nil
}

func (o *OIDCLogin) oauth2Config(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.secret, Endpoint: p.Endpoint(),
		RedirectURL: o.cfg.RedirectURL, Scopes: o.cfg.Scopes}
}

// begin records a new sign-in and returns its cookie ID and the provider's
// URL to send the browser to.
func (o *OIDCLogin) begin(ctx context.Context) (flowID, authURL string, err error) {
	p, err := o.discover(ctx)
	if err != nil {
		return "", "", err
	}
	f := oidcFlow{state: randomHex(16), nonce: randomHex(16), verifier: oauth2.GenerateVerifier(), expires: time.Now().Add(oidcFlowTTL)}
	flowID = randomHex(32)
	o.mu.Lock()
	if len(o.flows) >= maxOIDCFlows {
		now := time.Now()
		for id, f := range o.flows {
			if now.After(f.expires) {
				delete(o.flows, id)
			}
		}
	}
	full := len(o.flows) >= maxOIDCFlows
	if !full {
		o.flows[flowID] = f
	}
	o.mu.Unlock()
	if full {
		return "", "", errors.New("too many sign-ins in progress; try again in a few minutes")
	}
	authURL = o.oauth2Config(p).AuthCodeURL(f.state, oidc.Nonce(f.nonce), oauth2.S256ChallengeOption(f.verifier))
	return flowID, authURL, nil
}

// take removes and returns the sign-in flowID (once: a replayed callback
// finds nothing).
func (o *OIDCLogin) take(flowID string) (oidcFlow, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.flows[flowID]
	delete(o.flows, flowID)
	if ok && time.Now().After(f.expires) {
		return oidcFlow{}, false
	}
	return f, ok
}

// oidcIdentity is who the provider vouched for.
type oidcIdentity struct {
	// Name is oidc:<UserClaim or subject>.
	Name   string
	Role   Role
	Groups []string
}

// errOIDCRefused is a sign-in the user can do nothing about but ask an
// admin (no mapped group); its message is shown.
var errOIDCRefused = errors.New("refused")

// finish checks the callback's state against flow, exchanges the code
// (with the PKCE verifier) and verifies the ID token: signature, issuer,
// audience, expiry (go-oidc) and nonce; then maps the groups to a role.
func (o *OIDCLogin) finish(ctx context.Context, f oidcFlow, state, code string) (oidcIdentity, error) {
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(f.state)) != 1 {
		return oidcIdentity{}, errors.New("state does not match the sign-in this browser began")
	}
	if code == "" {
		return oidcIdentity{}, errors.New("the provider sent no code")
	}
	p, err := o.discover(ctx)
	if err != nil {
		return oidcIdentity{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, o.client), oidcTimeout)
	defer cancel()
	tok, err := o.oauth2Config(p).Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return oidcIdentity{}, fmt.Errorf("exchange the code at the provider: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return oidcIdentity{}, errors.New("the provider's token response has no ID token")
	}
	idt, err := p.VerifierContext(oidc.ClientContext(ctx, o.client), &oidc.Config{ClientID: o.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return oidcIdentity{}, fmt.Errorf("ID token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.nonce)) != 1 {
		return oidcIdentity{}, errors.New("ID token: nonce does not match the sign-in this browser began")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return oidcIdentity{}, fmt.Errorf("ID token claims: %w", err)
	}
	return o.identity(idt.Subject, claims)
}

// identity names the user and maps their groups to the highest role.
func (o *OIDCLogin) identity(subject string, claims map[string]any) (oidcIdentity, error) {
	name := subject
	if v, ok := claims[o.cfg.UserClaim].(string); ok && v != "" {
		name = v
	}
	id := oidcIdentity{Name: "oidc:" + name}
	switch g := claims[o.cfg.GroupsClaim].(type) {
	case string:
		id.Groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				id.Groups = append(id.Groups, s)
			}
		}
	}
	best := -1
	for _, g := range id.Groups {
		if r, ok := o.cfg.Roles[g]; ok {
			best = max(best, slices.Index(Roles, r))
		}
	}
	if best < 0 {
		return id, fmt.Errorf("%w: %s signed in at %s but is in none of the groups that give a Harrier role (claim %q: %s; oidc.roles maps %s); ask an admin to add you to one",
			errOIDCRefused, name, o.cfg.ProviderName, o.cfg.GroupsClaim, quotedList(id.Groups), quotedList(slices.Sorted(maps.Keys(o.cfg.Roles))))
	}
	id.Role = Roles[best]
	return id, nil
}

func quotedList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// oidcButton is the login page's OIDC part.
type oidcButton struct {
	Name  string
	Error string
}

func (s *apiServer) oidcButton() *oidcButton {
	if s.cfg.OIDC == nil {
		return nil
	}
	b := &oidcButton{Name: s.cfg.OIDC.ProviderName()}
	if err := s.cfg.OIDC.Status(); err != nil {
		b.Error = err.Error()
	}
	return b
}

// oidcStart sends the browser to the provider (GET /oidc/login).
func (s *apiServer) oidcStart(w http.ResponseWriter, r *http.Request) {
	o := s.cfg.OIDC
	if o == nil || s.console == nil {
		s.renderLogin(w, http.StatusNotFound, "Sign-in with an identity provider is not configured on this backend.")
		return
	}
	flowID, authURL, err := o.begin(r.Context())
	if err != nil {
		s.log.Warn("OIDC sign-in could not begin", "remote", remoteHost(r), "err", err)
		s.renderLogin(w, http.StatusServiceUnavailable, "Sign-in with "+o.ProviderName()+" is not available now: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcFlowCookie, Value: flowID, Path: "/oidc/", MaxAge: int(oidcFlowTTL.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, authURL, http.StatusFound)
}

// oidcCallback finishes the sign-in (GET /oidc/callback) and opens the
// same kind of session a local user gets.
func (s *apiServer) oidcCallback(w http.ResponseWriter, r *http.Request) {
	o := s.cfg.OIDC
	if o == nil || s.console == nil {
		s.renderLogin(w, http.StatusNotFound, "Sign-in with an identity provider is not configured on this backend.")
		return
	}
	addr := remoteHost(r)
	http.SetCookie(w, &http.Cookie{Name: oidcFlowCookie, Value: "", Path: "/oidc/", MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
	refuse := func(code int, reason, msg string, err error) {
		s.cfg.Metrics.add(metricLoginRefused, 1, reason)
		s.log.Warn("OIDC sign-in refused", "reason", reason, "remote", addr, "err", err)
		s.renderLogin(w, code, msg)
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		refuse(http.StatusUnauthorized, "oidc_provider_error", fmt.Sprintf("%s refused the sign-in: %s %s", o.ProviderName(), clip(e, 100), clip(q.Get("error_description"), 300)), errors.New(e))
		return
	}
	ck, err := r.Cookie(oidcFlowCookie)
	var f oidcFlow
	ok := false
	if err == nil {
		f, ok = o.take(ck.Value)
	}
	if !ok {
		refuse(http.StatusBadRequest, "oidc_no_flow", "This sign-in expired or was begun in another browser; sign in again.", errors.New("no sign-in in progress for this browser"))
		return
	}
	id, err := o.finish(r.Context(), f, q.Get("state"), q.Get("code"))
	if errors.Is(err, errOIDCRefused) {
		refuse(http.StatusForbidden, "oidc_no_role", strings.TrimPrefix(err.Error(), errOIDCRefused.Error()+": "), err)
		return
	}
	if err != nil {
		refuse(http.StatusUnauthorized, "oidc_invalid", "Sign-in with "+o.ProviderName()+" failed: "+err.Error(), err)
		return
	}
	sid, sess, err := s.console.newSessionFor(session{User: id.Name, OIDC: true, Role: id.Role, Remote: addr})
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	p := &principal{Name: id.Name, Role: id.Role, Via: viaSession, Remote: addr}
	if err := s.console.Audit(r.Context(), newAudit(s.cfg.Now(), p, "login", "", "oidc "+o.cfg.Issuer+" groups "+strings.Join(id.Groups, ","))); err != nil {
		s.log.Error("audit entry not stored", "action", "login", "user", id.Name, "err", err)
	}
	s.log.Info("signed in", "user", id.Name, "role", id.Role, "via", "oidc", "remote", addr, "expires", sess.Expires)
	s.setSessionCookie(w, r, sid)
	// A page, not a redirect: the browser arrived from the provider's site,
	// and a SameSite=Strict cookie is not sent on a redirect chain that
	// began cross-site; this page's own navigation is same-site.
	s.render(w, http.StatusOK, s.ui.signedIn, signedInPage{Title: "Signed in", User: id.Name, Role: id.Role})
}

type signedInPage struct {
	Title string
	User  string
	Role  Role
}
