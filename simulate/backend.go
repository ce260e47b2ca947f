package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
)

// backendClient reads alerts from a Harrier backend's API.
type backendClient struct {
	base, token string
	http        *http.Client
}

func newBackendClient(base, token string, roots *x509.CertPool) backendClient {
	c := &http.Client{Timeout: 5 * time.Second}
	if roots != nil {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	}
	return backendClient{base: strings.TrimSuffix(base, "/"), token: token, http: c}
}

// check fails with a clear message when no backend answers or the token is
// refused.
func (b backendClient) check(ctx context.Context) error {
	_, err := b.alerts(ctx, time.Now())
	return err
}

func (b backendClient) alerts(ctx context.Context, since time.Time) ([]*api.Alert, error) {
	u := b.base + "/api/v1/alerts?limit=1000&since=" + url.QueryEscape(since.UTC().Format(time.RFC3339Nano))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("simulation stopped: %w", context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("no Harrier backend answers at %s (start `harrier run`, or pass --api and --token-file): %w", b.base, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("the backend at %s refused the API token (--token-file)", b.base)
	default:
		return nil, fmt.Errorf("the backend at %s answered %s", b.base, resp.Status)
	}
	var list struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("alerts from %s: %w", b.base, err)
	}
	out := make([]*api.Alert, 0, len(list.Alerts))
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	for _, raw := range list.Alerts {
		a := &api.Alert{}
		if err := opts.Unmarshal(raw, a); err != nil {
			return nil, fmt.Errorf("alert from %s: %w", b.base, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// sighting is an alert and when the simulator first saw it at the API.
type sighting struct {
	alert *api.Alert
	seen  time.Time
}

// watcher polls the backend and remembers when each alert of the sandbox's
// victims first became visible.
type watcher struct {
	b     backendClient
	since time.Time
	// victim names the sandbox victim an alert is about ("" when the
	// alert is not the sandbox's): a container ID locally, namespace/pod
	// in a cluster.
	victim func(*api.Alert) string
	seen   map[string]sighting
	order  []string
	// pollErrors counts polls the backend did not answer (waited out).
	pollErrors int
}

// containerPrefix is the local sandbox's victim function: containers whose
// ID starts with prefix.
func containerPrefix(prefix string) func(*api.Alert) string {
	return func(a *api.Alert) string {
		if id := a.GetContainer().GetId(); strings.HasPrefix(id, prefix) {
			return id
		}
		return ""
	}
}

func (w *watcher) poll(ctx context.Context) error {
	alerts, err := w.b.alerts(ctx, w.since)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, a := range alerts {
		if w.victim(a) == "" {
			continue
		}
		if _, ok := w.seen[a.GetId()]; !ok {
			w.seen[a.GetId()] = sighting{alert: a, seen: now}
			w.order = append(w.order, a.GetId())
		}
	}
	return nil
}

// pollWaiting is poll for the waits of a running simulation: a backend
// that does not answer (restarting, its pod rescheduled) is counted and
// waited out, since the agents spool meanwhile; the report's notes say how
// often. Only the first check of a run must find the backend up.
func (w *watcher) pollWaiting(ctx context.Context) error {
	if err := w.poll(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		w.pollErrors++
	}
	return nil
}

// find returns the first-seen alert of detection about victim, if any.
func (w *watcher) find(victim string, detection api.DetectionID) (sighting, bool) {
	for _, id := range w.order {
		s := w.seen[id]
		if api.DetectionID(s.alert.GetDetectionId()) == detection && w.victim(s.alert) == victim {
			return s, true
		}
	}
	return sighting{}, false
}

// waitFor polls until every detection has an alert in container or the
// deadline passes.
//
// A backend that does not answer (restarting, or its pod rescheduled) is
// waited for until the deadline: the agents spool meanwhile, so the alerts
// still come; only a backend still failing at the deadline is an error.
func (w *watcher) waitFor(ctx context.Context, container string, detections []api.DetectionID, deadline time.Time) error {
	for {
		if err := w.poll(ctx); err != nil {
			if ctx.Err() != nil || time.Now().After(deadline) {
				return err
			}
			w.pollErrors++
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(time.Second):
			}
			continue
		}
		missing := false
		for _, d := range detections {
			if _, ok := w.find(container, d); !ok {
				missing = true
			}
		}
		if !missing || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
