package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/transport"
)

// identityChange is one change of the enrollment and revocation state. A
// single backend applies it at once; a replicated one through the
// cluster's stream, so that every replica applies every change in the same
// order: a revocation made at one replica refuses the agent at all of
// them, and a bootstrap token's uses are counted once for the site.
// Decisions that depend on time use At, the time the change was made, not
// the time a replica applies it, so that a replica catching up decides as
// the others did.
type identityChange struct {
	At time.Time `json:"at"`
	// Nonce lets the replica that made the change learn how its own apply
	// went (an enrollment refused in the stream's order).
	Nonce    string        `json:"nonce,omitempty"`
	Revoke   string        `json:"revoke,omitempty"`
	Unrevoke string        `json:"unrevoke,omitempty"`
	Token    *tokenChange  `json:"token,omitempty"`
	Enroll   *enrollChange `json:"enroll,omitempty"`
}

// tokenChange makes a bootstrap token: only its hash travels.
type tokenChange struct {
	Hash  string         `json:"hash"`
	Token bootstrapToken `json:"token"`
}

// enrollChange records an agent's newest certificate; TokenHash, for a
// bootstrap enrollment, is the token whose use it takes.
type enrollChange struct {
	AgentID   string    `json:"agent_id"`
	Kind      string    `json:"kind,omitempty"` // "": a renewal, keeps the kind
	NotAfter  time.Time `json:"not_after"`
	TokenHash string    `json:"token_hash,omitempty"`
}

// identityEnvelope marks an identity change in the stream's control
// subject, which the response control's changes share.
type identityEnvelope struct {
	Identity json.RawMessage `json:"identity,omitempty"`
}

// tokenGrace keeps an expired bootstrap token's record a day past its
// expiry (decisions compare with its Expires, not its presence): a replica
// applying an enrollment up to a day late finds the token the others
// found.
const tokenGrace = 24 * time.Hour

// SetReplicator makes id a replica's: changes go through r, which applies
// them here too (ApplyControl) in the stream's order. Call it before
// serving.
func (id *Identity) SetReplicator(r ControlReplicator) { id.replicator = r }

// change applies ch here, or through the replicator, and returns how this
// replica's apply went.
func (id *Identity) change(ch identityChange) error {
	if id.replicator == nil {
		return id.apply(ch, 0)
	}
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	ch.Nonce = hex.EncodeToString(nonce[:])
	inner, err := json.Marshal(ch)
	if err != nil {
		return err
	}
	b, err := json.Marshal(identityEnvelope{Identity: inner})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	id.mu.Lock()
	id.waiting[ch.Nonce] = done
	id.mu.Unlock()
	defer func() {
		id.mu.Lock()
		delete(id.waiting, ch.Nonce)
		id.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := id.replicator.Replicate(ctx, b); err != nil {
		return refuse(statusUnavailable, "the cluster's stream did not take the change: %v", err)
	}
	select {
	case err := <-done:
		return err
	default:
		// Applied before (a replay): nothing more to learn.
		return nil
	}
}

// ApplyControl applies an identity change from the cluster's stream with
// its stream sequence.
func (id *Identity) ApplyControl(seq uint64, change []byte) error {
	var ch identityChange
	if err := json.Unmarshal(change, &ch); err != nil {
		return fmt.Errorf("identity change: %w", err)
	}
	if err := ch.valid(); err != nil {
		return err
	}
	err := id.apply(ch, seq)
	id.mu.Lock()
	if done, ok := id.waiting[ch.Nonce]; ok && ch.Nonce != "" {
		done <- err
		delete(id.waiting, ch.Nonce)
	}
	id.mu.Unlock()
	if _, refused := errors.AsType[*IdentityError](err); refused {
		// A refusal is a decision every replica makes alike, not a
		// failure to apply.
		return nil
	}
	return err
}

// valid checks a change read from the stream: the agent IDs it names and
// the token hash are well formed.
func (ch identityChange) valid() error {
	for _, agentID := range []string{ch.Revoke, ch.Unrevoke} {
		if agentID == "" {
			continue
		}
		if err := transport.ValidAgentID(agentID); err != nil {
			return fmt.Errorf("identity change: %w", err)
		}
	}
	if ch.Enroll != nil {
		if err := transport.ValidAgentID(ch.Enroll.AgentID); err != nil {
			return fmt.Errorf("identity change: enrollment: %w", err)
		}
		if h := ch.Enroll.TokenHash; h != "" && !validHash(h) {
			return errors.New("identity change: enrollment: token hash is not 64 hex digits")
		}
	}
	if ch.Token != nil && !validHash(ch.Token.Hash) {
		return errors.New("identity change: token hash is not 64 hex digits")
	}
	return nil
}

func validHash(h string) bool {
	b, err := hex.DecodeString(h)
	return err == nil && len(b) == 32
}

// apply makes ch; seq is its stream sequence (0 in a single backend).
func (id *Identity) apply(ch identityChange, seq uint64) error {
	var revoked, unrevoked string
	err := id.db.Update(func(txn *badger.Txn) error {
		if seq > 0 {
			var last uint64
			if _, err := getJSON(txn, []byte(keyIdentitySeq), &last); err != nil {
				return err
			}
			if seq <= last {
				return nil // applied before: a replay after a crash changes nothing
			}
			if err := setJSON(txn, []byte(keyIdentitySeq), seq, 0); err != nil {
				return err
			}
		}
		switch {
		case ch.Revoke != "":
			revoked = ch.Revoke
			return setJSON(txn, key(prefixRevoked, ch.Revoke), revocation{RevokedAt: ch.At}, 0)
		case ch.Unrevoke != "":
			unrevoked = ch.Unrevoke
			return txn.Delete(key(prefixRevoked, ch.Unrevoke))
		case ch.Token != nil:
			ttl := ch.Token.Token.Expires.Sub(id.cfg.Now()) + tokenGrace
			if ttl <= 0 {
				return nil // long gone: a replica far behind
			}
			return setJSON(txn, key(prefixBootstrap, ch.Token.Hash), ch.Token.Token, ttl)
		case ch.Enroll != nil:
			return id.applyEnroll(txn, *ch.Enroll, ch.At)
		}
		return errors.New("identity change: empty")
	})
	if _, refused := errors.AsType[*IdentityError](err); refused {
		return err
	}
	if err != nil {
		return fmt.Errorf("store identity change: %w", err)
	}
	id.mu.Lock()
	if revoked != "" {
		id.revoked[revoked] = ch.At
	}
	if unrevoked != "" {
		delete(id.revoked, unrevoked)
	}
	id.mu.Unlock()
	switch {
	case revoked != "":
		if id.onRevoke != nil {
			id.onRevoke(revoked)
		}
		id.log.Warn("agent revoked", "agent", revoked)
	case unrevoked != "":
		id.log.Info("agent unrevoked", "agent", unrevoked)
	}
	return nil
}

// applyEnroll checks, in the stream's order, what the enrolling replica
// checked before signing (the agent not revoked; the token known, not
// expired, not used up; the ID not held), then records the enrollment and
// takes the token's use. Two replicas enrolling with a token's last use at
// once: the first in the stream wins, the other's certificate is never
// handed out.
func (id *Identity) applyEnroll(txn *badger.Txn, e enrollChange, at time.Time) error {
	if err := id.revokedError(e.AgentID); err != nil {
		return err
	}
	var prev Enrollment
	found, err := getJSON(txn, key(prefixEnrolled, e.AgentID), &prev)
	if err != nil {
		return err
	}
	if e.TokenHash != "" {
		var tok bootstrapToken
		ok, err := getJSON(txn, key(prefixBootstrap, e.TokenHash), &tok)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			return refuse(statusUnauthorized, "unknown bootstrap token (expired tokens are forgotten; make a new one with `harrier tokens create`)")
		case !at.Before(tok.Expires):
			return refuse(statusUnauthorized, "bootstrap token expired at %s", tok.Expires.UTC().Format(time.RFC3339))
		case tok.UsesLeft <= 0:
			return refuse(statusUnauthorized, "bootstrap token is used up")
		case found && at.Before(prev.NotAfter):
			return refuse(statusConflict, "agent ID %s is already enrolled (its certificate is valid until %s): revoke it first (harrier agents revoke %s), or enroll under another ID",
				e.AgentID, prev.NotAfter.UTC().Format(time.RFC3339), e.AgentID)
		}
		tok.UsesLeft--
		if err := setJSON(txn, key(prefixBootstrap, e.TokenHash), tok, tok.Expires.Sub(id.cfg.Now())+tokenGrace); err != nil {
			return err
		}
	}
	if e.Kind != "" || !found {
		prev = Enrollment{Kind: cmpOr(e.Kind, "certificate"), EnrolledAt: at}
	} else {
		prev.RenewedAt = at
	}
	prev.NotAfter = e.NotAfter
	return setJSON(txn, key(prefixEnrolled, e.AgentID), prev, 0)
}
