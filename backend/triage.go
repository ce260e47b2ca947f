package backend

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"

	"github.com/harrier-sec/harrier/backend/export"
)

// Triage is an alert's triage as stored, shown and exported.
type Triage = export.AlertTriage

// Triage states.
const (
	TriageNew           = "new"
	TriageInProgress    = "in_progress"
	TriageResolved      = "resolved"
	TriageFalsePositive = "false_positive"
)

// TriageStates lists the states in the order an analyst moves through
// them.
var TriageStates = []string{TriageNew, TriageInProgress, TriageResolved, TriageFalsePositive}

// Bounds of triage input.
const (
	maxCommentBytes   = 4000
	maxTriageComments = 500
)

// TriageRequest is a change an analyst asks for (POST
// /api/v1/alerts/{id}/triage): each field set is changed; Assignee ""
// unassigns, nil leaves it.
type TriageRequest struct {
	State    string  `json:"state,omitempty"`
	Assignee *string `json:"assignee,omitempty"`
	Comment  string  `json:"comment,omitempty"`
}

// TriageEdit is a TriageRequest checked and stamped: what replicas apply.
type TriageEdit struct {
	ID       string    `json:"id"`
	AlertID  string    `json:"alert_id"`
	Time     time.Time `json:"time"`
	User     string    `json:"user"`
	State    string    `json:"state,omitempty"`
	Assignee *string   `json:"assignee,omitempty"`
	Comment  string    `json:"comment,omitempty"`
}

// Triage returns alertID's triage; an alert nobody touched is new.
func (c *Console) Triage(ctx context.Context, alertID string) (Triage, error) {
	t := Triage{AlertID: alertID, State: TriageNew}
	err := c.db.View(func(txn *badger.Txn) error {
		_, err := getJSON(txn, key(prefixTriage, alertID), &t)
		return err
	})
	if err != nil {
		return Triage{}, fmt.Errorf("triage of %s: %w", alertID, err)
	}
	return t, nil
}

// SetTriage checks req against the alert and the users, then applies it
// on every replica with its audit entry.
func (c *Console) SetTriage(ctx context.Context, by *principal, alertID string, req TriageRequest) (Triage, error) {
	if _, err := c.journal.Alert(ctx, alertID); err != nil {
		return Triage{}, err
	}
	var problems []string
	if req.State != "" && !slices.Contains(TriageStates, req.State) {
		problems = append(problems, fmt.Sprintf("state %q: want %s", req.State, strings.Join(TriageStates, ", ")))
	}
	cur, err := c.Triage(ctx, alertID)
	if err != nil {
		return Triage{}, err
	}
	// A stored user, or the one asking (a user signed in with the site's
	// identity provider is not stored), or whoever it is assigned to now.
	if a := req.Assignee; a != nil && *a != "" && *a != by.Name && *a != cur.Assignee {
		if _, err := c.User(ctx, *a); errors.Is(err, ErrNotFound) {
			problems = append(problems, fmt.Sprintf("assignee %q: no such user", *a))
		} else if err != nil {
			return Triage{}, err
		}
	}
	req.Comment = strings.TrimSpace(req.Comment)
	if len(req.Comment) > maxCommentBytes || !utf8.ValidString(req.Comment) {
		problems = append(problems, fmt.Sprintf("comment: want at most %d bytes of UTF-8", maxCommentBytes))
	}
	if req.Comment != "" && len(cur.Comments) >= maxTriageComments {
		problems = append(problems, fmt.Sprintf("comment: the alert has %d comments, the most it keeps", maxTriageComments))
	}
	if req.State == "" && req.Assignee == nil && req.Comment == "" {
		problems = append(problems, "nothing to change: give a state, an assignee or a comment")
	}
	if len(problems) > 0 {
		return Triage{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	now := c.now().UTC()
	edit := TriageEdit{ID: randomHex(8), AlertID: alertID, Time: now, User: by.Name, State: req.State, Assignee: req.Assignee, Comment: req.Comment}
	var detail []string
	if req.State != "" {
		detail = append(detail, "state "+req.State)
	}
	if req.Assignee != nil {
		detail = append(detail, "assignee "+cmp.Or(*req.Assignee, "none"))
	}
	if req.Comment != "" {
		detail = append(detail, "comment "+clip(req.Comment, 200))
	}
	audit := newAudit(now, by, "triage.update", alertID, strings.Join(detail, "; "))
	if err := c.change(ctx, consoleChange{Triage: &edit, Audit: audit}); err != nil {
		return Triage{}, fmt.Errorf("triage of %s: %w", alertID, err)
	}
	return c.Triage(ctx, alertID)
}

// applyTriage applies an edit to the stored triage and appends the new
// triage to the export journal (kind triage), with the audit entry, in
// one transaction. An edit already in the history is not applied again.
func (c *Console) applyTriage(ch consoleChange) error {
	e := *ch.Triage
	err := c.journal.journalUpdate(export.KindTriage, func(txn *badger.Txn, add func([]byte) error) error {
		t := Triage{AlertID: e.AlertID, State: TriageNew}
		if _, err := getJSON(txn, key(prefixTriage, e.AlertID), &t); err != nil {
			return err
		}
		for _, h := range t.History {
			if strings.HasPrefix(h.ID, e.ID+"/") {
				return nil
			}
		}
		record := func(field, from, to string) {
			t.History = append(t.History, export.TriageChange{ID: e.ID + "/" + field, Time: e.Time, User: e.User, Field: field, From: from, To: to})
		}
		if e.State != "" && e.State != t.State {
			record("state", t.State, e.State)
			t.State = e.State
		}
		if e.Assignee != nil && *e.Assignee != t.Assignee {
			record("assignee", t.Assignee, *e.Assignee)
			t.Assignee = *e.Assignee
		}
		if e.Comment != "" {
			record("comment", "", clip(e.Comment, 200))
			t.Comments = append(t.Comments, export.TriageComment{Time: e.Time, User: e.User, Text: e.Comment})
		}
		t.Updated, t.UpdatedBy = e.Time, e.User
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if err := txn.Set(key(prefixTriage, e.AlertID), b); err != nil {
			return err
		}
		if err := add(b); err != nil {
			return err
		}
		return putAudit(txn, ch.Audit)
	})
	if err != nil {
		return fmt.Errorf("store triage of %s: %w", e.AlertID, err)
	}
	return nil
}
