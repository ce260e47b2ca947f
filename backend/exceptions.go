package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
)

// The site's alert exceptions: analysts make them from an alert ("don't
// alert on this again when …"); the set is versioned like the response
// policies, replicated through the control stream, and every agent is sent
// each new version over the control channel and applies it to its
// analytics engine at once (analytics.Engine.SetRuntimeExceptions).
const (
	prefixExceptions = "X/" // X/set → JSON ExceptionSet
	// maxExceptions bounds the set every agent holds and checks per match.
	maxExceptions = 1000
	// MaxExceptionTTL bounds an exception's life: they are meant to be
	// revisited, not forgotten.
	MaxExceptionTTL = 366 * 24 * time.Hour
	// maxExceptionField bounds one pattern.
	maxExceptionField = 1024
)

// Exception scopes: where an exception applies beyond its fields.
const (
	ScopeWorkload  = "workload"  // the alert's namespace and workload
	ScopeNamespace = "namespace" // the alert's namespace
	ScopeCluster   = "cluster"   // the alert's cluster (every cluster when it names none)
)

// ExceptionScopes are the scopes, narrowest first.
var ExceptionScopes = []string{ScopeWorkload, ScopeNamespace, ScopeCluster}

// ExceptionSet is every exception in force at the backend, with its
// version (0: never set).
type ExceptionSet struct {
	Version    uint64          `json:"version"`
	Updated    time.Time       `json:"updated,omitzero"`
	UpdatedBy  string          `json:"updated_by,omitempty"`
	Exceptions []SiteException `json:"exceptions"`
}

// SiteException is one exception as the backend keeps it.
type SiteException struct {
	analytics.RuntimeException
	Scope string `json:"scope"`
	// Version is the set's version that added it: an agent applying that
	// version or a later one has it.
	Version   uint64    `json:"version"`
	AlertID   string    `json:"alert_id,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// ExceptionRequest is what an analyst asks for (POST /api/v1/exceptions and
// the alert page's form): each field set must match; empty fields match
// anything.
type ExceptionRequest struct {
	// AlertID names the alert it was made from (recorded; and the cluster
	// of a cluster scope comes from it).
	AlertID string `json:"alert_id,omitempty"`
	// Detection limits it to one detection; "" covers every detection.
	Detection string `json:"detection,omitempty"`
	// Scope is workload, namespace or cluster.
	Scope       string `json:"scope"`
	Cluster     string `json:"cluster,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Workload    string `json:"workload,omitempty"`
	Image       string `json:"image,omitempty"`
	Process     string `json:"process,omitempty"`
	Command     string `json:"command,omitempty"`
	Destination string `json:"destination,omitempty"`
	Path        string `json:"path,omitempty"`
	// ExpiresIn is a Go duration ("720h"), at most MaxExceptionTTL.
	ExpiresIn string `json:"expires_in"`
	Reason    string `json:"reason,omitempty"`
}

// exceptionChange adds or deletes one exception, as replicas exchange it.
type exceptionChange struct {
	Add    *SiteException `json:"add,omitempty"`
	Delete string         `json:"delete,omitempty"`
	By     string         `json:"by"`
	Time   time.Time      `json:"time"`
}

// Exceptions returns the set in force.
func (c *ResponseControl) Exceptions(ctx context.Context) (ExceptionSet, error) {
	var s ExceptionSet
	err := c.db.View(func(txn *badger.Txn) error {
		_, err := getJSON(txn, key(prefixExceptions, "set"), &s)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("read exceptions: %w", err)
	}
	return s, ctx.Err()
}

func one(s string) []string {
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	return []string{s}
}

// exceptionFrom validates req and makes the exception it asks for.
func (c *ResponseControl) exceptionFrom(ctx context.Context, req ExceptionRequest, by string) (SiteException, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	for name, v := range map[string]string{"detection": req.Detection, "cluster": req.Cluster, "namespace": req.Namespace, "workload": req.Workload,
		"image": req.Image, "process": req.Process, "command": req.Command, "destination": req.Destination, "path": req.Path, "reason": req.Reason} {
		if len(v) > maxExceptionField {
			return SiteException{}, bad("%s: %d bytes, at most %d", name, len(v), maxExceptionField)
		}
	}
	if req.AlertID != "" {
		a, err := c.store.Alert(ctx, req.AlertID)
		if err != nil {
			return SiteException{}, fmt.Errorf("%w: alert %q: %w", ErrInvalid, req.AlertID, err)
		}
		if req.Cluster == "" && req.Scope == ScopeCluster {
			req.Cluster = a.GetCluster()
		}
	}
	switch req.Scope {
	case ScopeWorkload:
		if strings.TrimSpace(req.Namespace) == "" || strings.TrimSpace(req.Workload) == "" {
			return SiteException{}, bad("scope workload needs the namespace and the workload")
		}
	case ScopeNamespace:
		if strings.TrimSpace(req.Namespace) == "" {
			return SiteException{}, bad("scope namespace needs the namespace")
		}
		req.Workload = ""
	case ScopeCluster:
		req.Namespace, req.Workload = "", ""
	default:
		return SiteException{}, bad("scope %q: want one of %s", req.Scope, strings.Join(ExceptionScopes, ", "))
	}
	ttl, err := time.ParseDuration(req.ExpiresIn)
	if err != nil || ttl <= 0 || ttl > MaxExceptionTTL {
		return SiteException{}, bad("expires_in %q: want a duration up to %s", req.ExpiresIn, MaxExceptionTTL)
	}
	now := c.now().UTC()
	x := SiteException{RuntimeException: analytics.RuntimeException{ID: "exc-" + randomHex(8), Detection: strings.TrimSpace(req.Detection),
		Namespaces: one(req.Namespace), Workloads: one(req.Workload), Images: one(req.Image), Processes: one(req.Process),
		Commands: one(req.Command), Destinations: one(req.Destination), Paths: one(req.Path), Expires: now.Add(ttl),
		Cluster: strings.TrimSpace(req.Cluster)},
		Scope: req.Scope, AlertID: req.AlertID, Reason: strings.TrimSpace(req.Reason), Created: now, CreatedBy: by}
	if err := x.Validate(); err != nil {
		return SiteException{}, bad("%v", err)
	}
	return x, nil
}

// AddException validates req and makes it part of the next version, which
// every agent is sent at once.
func (c *ResponseControl) AddException(ctx context.Context, req ExceptionRequest, by string) (SiteException, error) {
	x, err := c.exceptionFrom(ctx, req, by)
	if err != nil {
		return SiteException{}, err
	}
	if cur, err := c.Exceptions(ctx); err != nil {
		return SiteException{}, err
	} else if len(cur.Exceptions) >= maxExceptions {
		return SiteException{}, fmt.Errorf("%w: the site has %d exceptions, the most agents take; delete some first", ErrInvalid, len(cur.Exceptions))
	}
	if err := c.change(ctx, controlChange{Exception: &exceptionChange{Add: &x, By: by, Time: x.Created}}); err != nil {
		return SiteException{}, fmt.Errorf("store exception: %w", err)
	}
	set, err := c.Exceptions(ctx)
	if err != nil {
		return SiteException{}, err
	}
	for _, e := range set.Exceptions {
		if e.ID == x.ID {
			c.log.Info("alert exception added", "exception", x.ID, "detection", x.Detection, "scope", x.Scope, "by", by, "version", e.Version)
			return e, nil
		}
	}
	return SiteException{}, fmt.Errorf("exception %s not stored", x.ID)
}

// DeleteException removes one exception in the next version.
func (c *ResponseControl) DeleteException(ctx context.Context, id, by string) error {
	set, err := c.Exceptions(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(set.Exceptions, func(e SiteException) bool { return e.ID == id }) {
		return fmt.Errorf("exception %q: %w", id, ErrNotFound)
	}
	if err := c.change(ctx, controlChange{Exception: &exceptionChange{Delete: id, By: by, Time: c.now().UTC()}}); err != nil {
		return fmt.Errorf("delete exception: %w", err)
	}
	c.log.Info("alert exception deleted", "exception", id, "by", by)
	return nil
}

// applyException makes ch the next version: as applyPolicies, the next
// number in a single backend and the stream sequence in a replicated one
// (a change applied again is not a new one).
func (c *ResponseControl) applyException(ch exceptionChange, seq uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	applied := false
	err := c.db.Update(func(txn *badger.Txn) error {
		var set ExceptionSet
		if _, err := getJSON(txn, key(prefixExceptions, "set"), &set); err != nil {
			return err
		}
		var version uint64
		switch {
		case seq == 0:
			version = set.Version + 1
		case seq <= set.Version:
			return nil // applied before
		default:
			version = seq
		}
		switch {
		case ch.Add != nil:
			x := *ch.Add
			x.Version = version
			set.Exceptions = append(set.Exceptions, x)
		case ch.Delete != "":
			set.Exceptions = slices.DeleteFunc(set.Exceptions, func(e SiteException) bool { return e.ID == ch.Delete })
		default:
			return errors.New("exception change: empty")
		}
		set.Version, set.Updated, set.UpdatedBy = version, ch.Time, ch.By
		applied = true
		return setJSON(txn, key(prefixExceptions, "set"), set, 0)
	})
	if err != nil {
		return fmt.Errorf("store exceptions: %w", err)
	}
	if applied {
		c.wake("")
	}
	return nil
}

// exceptionBundle is set as agents are sent it.
func exceptionBundle(set ExceptionSet) *api.ExceptionBundle {
	b := &api.ExceptionBundle{Version: set.Version}
	for _, x := range set.Exceptions {
		b.Exceptions = append(b.Exceptions, &api.AlertException{Id: x.ID, Detection: x.Detection, Cluster: x.Cluster,
			Namespaces: x.Namespaces, Workloads: x.Workloads, Images: x.Images, Processes: x.Processes, Commands: x.Commands,
			Destinations: x.Destinations, Paths: x.Paths, Expires: timestamppb.New(x.Expires)})
	}
	return b
}
