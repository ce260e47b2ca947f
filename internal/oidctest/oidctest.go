// Package oidctest runs a real OpenID Provider on 127.0.0.1 for tests:
// zitadel/oidc's op package (discovery, authorization with PKCE, token,
// keys) with its example's in-memory storage and login form, users of the
// test's choosing with a groups claim in their ID tokens, and a hook that
// tampers with the ID token on its way out (another key, another
// audience, another nonce), to check that a relying party refuses it.
package oidctest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is a user of the provider.
type User struct {
	ID, Username, Password, Email string
	// Groups go into the ID token's "groups" claim.
	Groups []string
}

// Client is the relying party registered at the provider.
type Client struct {
	ID, Secret  string
	RedirectURL string
}

// Tamper changes an ID token's claims; Key, when set, signs the result
// instead of the provider's own key.
type Tamper struct {
	Claims func(claims map[string]any)
	Key    *rsa.PrivateKey
}

// Provider is a running OpenID Provider.
type Provider struct {
	// Issuer is its issuer URL (http://127.0.0.1:<port>).
	Issuer string
	srv    *httptest.Server
	key    *rsa.PrivateKey
	keyID  string

	mu     sync.Mutex
	tamper *Tamper
}

// Start runs a provider for client with users on a loopback port until
// the test ends.
func Start(t testing.TB, client Client, users ...User) *Provider {
	t.Helper()
	return StartOn(t, nil, client, users...)
}

// StartOn is Start on ln (nil: a new loopback port), for a test that
// points a relying party at an address before the provider runs there.
func StartOn(t testing.TB, ln net.Listener, client Client, users ...User) *Provider {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	if ln != nil {
		_ = srv.Listener.Close()
		srv.Listener = ln
	}
	issuer := "http://" + srv.Listener.Addr().String()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	us := userStore{users: map[string]*storage.User{}, groups: map[string][]string{}}
	for _, u := range users {
		us.users[u.ID] = &storage.User{ID: u.ID, Username: u.Username, Password: u.Password, Email: u.Email, EmailVerified: true}
		us.groups[u.ID] = u.Groups
	}
	st := &groupsStorage{
		Storage: storage.NewStorageWithClients(us, map[string]*storage.Client{
			client.ID: storage.WebClient(client.ID, client.Secret, client.RedirectURL),
		}),
		users: us,
		key:   signingKey{key: key, id: "oidctest-key"},
	}
	p := &Provider{Issuer: issuer, srv: srv, key: key, keyID: st.key.id}
	// A nil logger: SetupServer would make any other the process default.
	router := exampleop.SetupServer(issuer, st, nil, false)
	srv.Config.Handler = p.tamperTokens(router)
	srv.Start()
	t.Cleanup(srv.Close)
	return p
}

// SetTamper makes the next token responses carry a changed ID token (nil:
// untouched).
func (p *Provider) SetTamper(tm *Tamper) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = tm
}

// SignIn fills the provider's login form that loginPage (the response the
// browser reached after following the relying party's redirect) shows,
// and follows the redirects back to the relying party with c; it returns
// the relying party's answer to the callback (or, when c stops redirects,
// the provider's redirect to it).
func (p *Provider) SignIn(ctx context.Context, c *http.Client, loginPage *http.Response, username, password string) (*http.Response, error) {
	id := loginPage.Request.URL.Query().Get("authRequestID")
	if id == "" || !strings.HasPrefix(loginPage.Request.URL.String(), p.Issuer+"/login/") {
		return nil, fmt.Errorf("not the provider's login page: %s", loginPage.Request.URL)
	}
	form := url.Values{"username": {username}, "password": {password}, "id": {id}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+"/login/username", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

// tamperTokens rewrites the ID token of token responses when a tamper is
// set.
func (p *Provider) tamperTokens(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		tm := p.tamper
		p.mu.Unlock()
		if tm == nil || r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var resp map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &resp) == nil {
			if raw, ok := resp["id_token"].(string); ok {
				if changed, err := p.resign(raw, tm); err == nil {
					resp["id_token"] = changed
					body, _ = json.Marshal(resp)
				} else {
					http.Error(w, "oidctest: tamper: "+err.Error(), http.StatusInternalServerError)
					return
				}
			}
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = io.Copy(w, bytes.NewReader(body))
	})
}

// resign decodes raw's claims, lets tm change them and signs them again
// with tm.Key or the provider's key (under the provider's key ID, so that
// a relying party picks the provider's public key to check it).
func (p *Provider) resign(raw string, tm *Tamper) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("ID token has %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", err
	}
	if tm.Claims != nil {
		tm.Claims(claims)
	}
	key := p.key
	if tm.Key != nil {
		key = tm.Key
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: p.keyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	sig, err := signer.Sign(b)
	if err != nil {
		return "", err
	}
	return sig.CompactSerialize()
}

// userStore holds the test's users (storage.UserStore).
type userStore struct {
	users  map[string]*storage.User
	groups map[string][]string
}

func (u userStore) GetUserByID(id string) *storage.User { return u.users[id] }
func (u userStore) GetUserByUsername(name string) *storage.User {
	for _, v := range u.users {
		if v.Username == name {
			return v
		}
	}
	return nil
}
func (u userStore) ExampleClientID() string { return storage.ServiceUserID }

// groupsStorage is the example's storage with the provider's own signing
// key (so that a tamper can sign with it) and the user's email and groups
// in every ID token.
type groupsStorage struct {
	*storage.Storage
	users userStore
	key   signingKey
}

func (s *groupsStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, token, scopes); err != nil {
		return err
	}
	u := s.users.GetUserByID(token.GetSubject())
	if u == nil {
		return fmt.Errorf("oidctest: no user %q", token.GetSubject())
	}
	info.Email, info.EmailVerified = u.Email, true
	info.AppendClaims("groups", s.users.groups[u.ID])
	return nil
}

func (s *groupsStorage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }
func (s *groupsStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}
func (s *groupsStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey(s.key)}, nil
}

type signingKey struct {
	key *rsa.PrivateKey
	id  string
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey signingKey

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }
