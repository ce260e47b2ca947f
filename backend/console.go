package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/harrier-sec/harrier/internal/badgerkv"
)

// Keys of the console's state: users, browser sessions, triage and the
// audit log. Upper case: the store's lower-case key kinds are the data's.
const (
	prefixUser    = "U/" // U/<name> → JSON User (password and token hashes)
	prefixSession = "S/" // S/<sha256 of the session ID, hex> → JSON session, with TTL at its expiry
	prefixTriage  = "T/" // T/<alert id> → JSON Triage
	prefixAudit   = "A/" // A/<audit entry id: time and random, sortable> → JSON AuditEntry
)

// Console holds who may use the API and UI (users, their tokens and
// sessions), the analysts' triage of alerts, and the audit log of every
// change. In a replicated backend its changes travel as response control
// changes (ResponseControl's replicator), so every replica has the same
// users, triage and audit log; sessions stay with the replica that made
// them.
type Console struct {
	db      *badger.DB
	journal *BadgerStore
	// control carries changes to every replica (ResponseControl.change);
	// nil applies them here only.
	control *ResponseControl
	now     func() time.Time
	log     *slog.Logger
	// SessionTTL is how long a browser session lasts without use.
	sessionTTL time.Duration
	limiter    *loginLimiter
	// dummyHash is compared against when a user does not exist, so that a
	// missing user takes as long as a wrong password.
	dummyHash func() []byte
}

// DefaultSessionTTL is how long a console session lasts since its last use.
const DefaultSessionTTL = 12 * time.Hour

// NewConsole keeps the console's state in st. control, when set, carries
// changes to every replica (and applies them here); see
// ResponseControl.SetConsole.
func NewConsole(st *BadgerStore, control *ResponseControl, log *slog.Logger) *Console {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{db: st.db, journal: st, control: control, now: time.Now, log: log, sessionTTL: DefaultSessionTTL,
		limiter: newLoginLimiter(time.Now)}
	c.dummyHash = sync.OnceValue(func() []byte {
		h, _ := bcrypt.GenerateFromPassword([]byte("harrier-no-such-user"), bcryptCost)
		return h
	})
	if control != nil {
		control.SetConsole(c)
	}
	return c
}

// consoleChange is one change of the console's replicated state with the
// audit entry that records it; both are applied in one transaction.
type consoleChange struct {
	User       *User       `json:"user,omitempty"`
	RemoveUser string      `json:"remove_user,omitempty"`
	Triage     *TriageEdit `json:"triage,omitempty"`
	Audit      *AuditEntry `json:"audit,omitempty"`
}

// change applies ch on every replica (or here in a single backend).
func (c *Console) change(ctx context.Context, ch consoleChange) error {
	if c.control != nil {
		return c.control.change(ctx, controlChange{Console: &ch})
	}
	return c.apply(ch)
}

// apply stores ch. Applying the same change again (a replica replaying
// the stream after a crash) gives the same state: records are keyed by
// IDs the change carries.
func (c *Console) apply(ch consoleChange) error {
	if ch.Triage != nil {
		return c.applyTriage(ch)
	}
	return c.db.Update(func(txn *badger.Txn) error {
		switch {
		case ch.User != nil:
			if err := setJSON(txn, key(prefixUser, ch.User.Name), *ch.User, 0); err != nil {
				return err
			}
		case ch.RemoveUser != "":
			if err := txn.Delete(key(prefixUser, ch.RemoveUser)); err != nil {
				return err
			}
		case ch.Audit == nil:
			return errors.New("console change: empty")
		}
		return putAudit(txn, ch.Audit)
	})
}

func putAudit(txn *badger.Txn, e *AuditEntry) error {
	if e == nil {
		return nil
	}
	return setJSON(txn, key(prefixAudit, e.ID), *e, 0)
}

// AuditEntry records one change: who made it, through which credential,
// what and on what.
type AuditEntry struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// User is the user's name, or the credential's ("api-token",
	// "response-token") when it is not a user's.
	User string `json:"user"`
	Role Role   `json:"role"`
	// Via is how the user was authenticated: session, token (the user's
	// API token), api-token, response-token.
	Via    string `json:"via"`
	Remote string `json:"remote,omitempty"`
	// Action names the change ("triage.update", "user.add", ...), Target
	// what it changed, Detail the rest.
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Outcome is "ok", or the error that refused the change.
	Outcome string `json:"outcome"`
}

// newAudit is an entry for p's action at now, with an ID that sorts by
// time and is unique across replicas.
func newAudit(now time.Time, p *principal, action, target, detail string) *AuditEntry {
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	now = now.UTC()
	e := &AuditEntry{ID: fmt.Sprintf("%019d-%s", now.UnixNano(), hex.EncodeToString(rnd)), Time: now,
		Action: action, Target: target, Detail: detail, Outcome: "ok"}
	if p != nil {
		e.User, e.Role, e.Via, e.Remote = p.Name, p.Role, p.Via, p.Remote
	}
	return e
}

// Audit records an entry on its own (a change the console does not hold
// itself: a response command, a policy push, a revocation).
func (c *Console) Audit(ctx context.Context, e *AuditEntry) error {
	if err := c.change(ctx, consoleChange{Audit: e}); err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditLog returns the newest entries first, at most limit.
func (c *Console) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	out := []AuditEntry{}
	err := c.db.View(func(txn *badger.Txn) error {
		for item := range badgerkv.PrefixReverse(txn, []byte(prefixAudit)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(out) >= limit {
				break
			}
			var e AuditEntry
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
				return fmt.Errorf("audit entry %q: %w", item.Key(), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
