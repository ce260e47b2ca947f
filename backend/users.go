package backend

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// Role is what a user may do; each role may do what the ones before it
// may.
type Role string

// The roles, least to most.
const (
	// RoleViewer reads alerts, findings, inventory, exports and triage.
	RoleViewer Role = "viewer"
	// RoleAnalyst also changes triage (state, assignee, comments).
	RoleAnalyst Role = "analyst"
	// RoleResponder also asks agents for response actions.
	RoleResponder Role = "responder"
	// RoleAdmin also manages users, bootstrap tokens, revocations, the
	// response policies, and reads the audit log.
	RoleAdmin Role = "admin"
)

// Roles lists the roles, least to most.
var Roles = []Role{RoleViewer, RoleAnalyst, RoleResponder, RoleAdmin}

// ParseRole checks a role's name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("role %q: want viewer, analyst, responder or admin", s)
	}
	return r, nil
}

// Allows reports whether r may do what need may.
func (r Role) Allows(need Role) bool {
	return slices.Index(Roles, r) >= slices.Index(Roles, need) && slices.Contains(Roles, need)
}

// User is a local user of the console and the API.
type User struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	// PasswordHash is bcrypt's; empty: the user has API tokens only.
	PasswordHash string      `json:"password_hash,omitempty"`
	Tokens       []UserToken `json:"tokens,omitempty"`
}

// UserToken is one of a user's API tokens: only its SHA-256 is kept (the
// token is 32 random bytes, so a fast hash is enough; passwords get
// bcrypt).
type UserToken struct {
	ID      string    `json:"id"`
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
}

// UserView is a user as the API shows it: no hashes.
type UserView struct {
	Name        string    `json:"name"`
	Role        Role      `json:"role"`
	Created     time.Time `json:"created"`
	CreatedBy   string    `json:"created_by"`
	HasPassword bool      `json:"has_password"`
	Tokens      []string  `json:"tokens"`
}

func (u User) view() UserView {
	v := UserView{Name: u.Name, Role: u.Role, Created: u.Created, CreatedBy: u.CreatedBy, HasPassword: u.PasswordHash != "", Tokens: []string{}}
	for _, t := range u.Tokens {
		v.Tokens = append(v.Tokens, t.ID)
	}
	return v
}

// userTokenPrefix starts every user's API token, so that it is told from
// the generated api-token and found by secret scanners.
const userTokenPrefix = "hrr_"

// Bounds of what a user is made with.
const (
	minPasswordLen = 12
	maxPasswordLen = 72                 // bcrypt's limit
	bcryptCost     = bcrypt.DefaultCost // 10: ~60 ms a check here
)

var userNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// reservedNames are the names of the credentials that are not users.
var reservedNames = []string{"api-token", "response-token"}

// ErrConflict is a change that clashes with what is stored (a user that
// exists already).
var ErrConflict = errors.New("conflict")

// AddUser makes a user; password may be empty (tokens only).
func (c *Console) AddUser(ctx context.Context, by *principal, name string, role Role, password string) (UserView, error) {
	if !userNameRE.MatchString(name) || slices.Contains(reservedNames, name) {
		return UserView{}, fmt.Errorf("%w: user name %q: want 1 to 64 of a-z 0-9 . _ @ - (starting with a letter or digit), not api-token or response-token", ErrInvalid, name)
	}
	if !slices.Contains(Roles, role) {
		return UserView{}, fmt.Errorf("%w: role %q: want viewer, analyst, responder or admin", ErrInvalid, role)
	}
	u := User{Name: name, Role: role, Created: c.now().UTC(), CreatedBy: by.Name}
	if password != "" {
		if len(password) < minPasswordLen || len(password) > maxPasswordLen {
			return UserView{}, fmt.Errorf("%w: password: want %d to %d bytes", ErrInvalid, minPasswordLen, maxPasswordLen)
		}
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
		if err != nil {
			return UserView{}, fmt.Errorf("hash password: %w", err)
		}
		u.PasswordHash = string(h)
	}
	if _, err := c.User(ctx, name); err == nil {
		return UserView{}, fmt.Errorf("%w: user %s exists; remove it first", ErrConflict, name)
	} else if !errors.Is(err, ErrNotFound) {
		return UserView{}, err
	}
	audit := newAudit(c.now(), by, "user.add", name, "role "+string(role))
	if err := c.change(ctx, consoleChange{User: &u, Audit: audit}); err != nil {
		return UserView{}, fmt.Errorf("add user %s: %w", name, err)
	}
	c.log.Info("user added", "user", name, "role", role, "by", by.Name)
	return u.view(), nil
}

// RemoveUser deletes a user; its sessions end at their next use.
func (c *Console) RemoveUser(ctx context.Context, by *principal, name string) error {
	if _, err := c.User(ctx, name); err != nil {
		return err
	}
	if err := c.change(ctx, consoleChange{RemoveUser: name, Audit: newAudit(c.now(), by, "user.remove", name, "")}); err != nil {
		return fmt.Errorf("remove user %s: %w", name, err)
	}
	c.log.Info("user removed", "user", name, "by", by.Name)
	return nil
}

// SetUserRole changes a user's role; the user's sessions and tokens have
// the new role at their next use.
func (c *Console) SetUserRole(ctx context.Context, by *principal, name string, role Role) (UserView, error) {
	if !slices.Contains(Roles, role) {
		return UserView{}, fmt.Errorf("%w: role %q: want viewer, analyst, responder or admin", ErrInvalid, role)
	}
	u, err := c.User(ctx, name)
	if err != nil {
		return UserView{}, err
	}
	if u.Role == role {
		return u.view(), nil
	}
	audit := newAudit(c.now(), by, "user.role", name, string(u.Role)+" → "+string(role))
	u.Role = role
	if err := c.change(ctx, consoleChange{User: &u, Audit: audit}); err != nil {
		return UserView{}, fmt.Errorf("role of %s: %w", name, err)
	}
	c.log.Info("user role changed", "user", name, "role", role, "by", by.Name)
	return u.view(), nil
}

// NewUserToken makes an API token for the user name and returns it: the
// only time it is seen, only its hash is kept.
func (c *Console) NewUserToken(ctx context.Context, by *principal, name string) (id, token string, err error) {
	u, err := c.User(ctx, name)
	if err != nil {
		return "", "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	token = userTokenPrefix + hex.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	id = hex.EncodeToString(sum[:4])
	u.Tokens = append(u.Tokens, UserToken{ID: id, SHA256: hex.EncodeToString(sum[:]), Created: c.now().UTC()})
	if err := c.change(ctx, consoleChange{User: &u, Audit: newAudit(c.now(), by, "user.token", name, "token "+id)}); err != nil {
		return "", "", fmt.Errorf("token for %s: %w", name, err)
	}
	return id, token, nil
}

// User returns the stored user name (ErrNotFound when there is none).
func (c *Console) User(ctx context.Context, name string) (User, error) {
	var u User
	err := c.db.View(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, key(prefixUser, name), &u)
		if err == nil && !ok {
			err = fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return err
	})
	return u, err
}

// Users lists the users by name.
func (c *Console) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := c.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.Prefix(txn, []byte(prefixUser)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			var u User
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &u) }); err != nil {
				return fmt.Errorf("user %q: %w", item.Key(), err)
			}
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// userByToken finds the user whose API token tok is. Users are few (a
// site's analysts): a scan is fast enough, and there is no index to keep.
func (c *Console) userByToken(ctx context.Context, tok string) (User, bool, error) {
	if !strings.HasPrefix(tok, userTokenPrefix) {
		return User{}, false, nil
	}
	sum := sha256.Sum256([]byte(tok))
	want := []byte(hex.EncodeToString(sum[:]))
	users, err := c.Users(ctx)
	if err != nil {
		return User{}, false, err
	}
	for _, u := range users {
		for _, t := range u.Tokens {
			if subtle.ConstantTimeCompare([]byte(t.SHA256), want) == 1 {
				return u, true, nil
			}
		}
	}
	return User{}, false, nil
}

// checkPassword returns the user when name and password match.
func (c *Console) checkPassword(ctx context.Context, name, password string) (User, bool, error) {
	u, err := c.User(ctx, name)
	if errors.Is(err, ErrNotFound) || (err == nil && u.PasswordHash == "") {
		_ = bcrypt.CompareHashAndPassword(c.dummyHash(), []byte(password))
		return User{}, false, nil
	}
	if err != nil {
		return User{}, false, err
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return User{}, false, nil
	}
	return u, true, nil
}
