package admission

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/harrier-sec/harrier/api"
)

const (
	privilegedPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"apps","labels":{"team":"a"}},
		"spec":{"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}`
	compliantPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"apps"},
		"spec":{"containers":[{"name":"c","image":"busybox"}]}}`
	hostPathDeployment = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"apps"},
		"spec":{"template":{"metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"name":"c","image":"busybox"}],
		"volumes":[{"name":"root","hostPath":{"path":"/"}}]}}}}`
	privilegedCronJob = `{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"cj","namespace":"apps"},
		"spec":{"schedule":"* * * * *","jobTemplate":{"spec":{"template":{"spec":{"restartPolicy":"Never",
		"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}}}}}`
)

// review wraps an object in an AdmissionReview request.
func review(op, group, version, kind, namespace, object string) string {
	req := map[string]any{"uid": "u-1", "operation": op, "namespace": namespace, "name": "x",
		"kind":     map[string]string{"group": group, "version": version, "kind": kind},
		"resource": map[string]string{"group": group, "version": version, "resource": strings.ToLower(kind) + "s"}}
	if object != "" {
		req["object"] = json.RawMessage(object)
	}
	b, _ := json.Marshal(map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
	return string(b)
}

func post(t *testing.T, h http.Handler, body string) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, ValidatePath, strings.NewReader(body)))
	if rec.Code != http.StatusOK {
		return rec.Code, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response: %v: %s", err, rec.Body)
	}
	if out.Response == nil || out.Response.UID != "u-1" {
		t.Fatalf("response without the request's uid: %s", rec.Body)
	}
	return rec.Code, out.Response
}

func TestHandler(t *testing.T) {
	base := Config{Mode: ModeDeny, ExemptLabels: "harrier.io/admission=exempt", ExemptNamespaces: []string{"kube-system", "trusted"}}
	withMode := func(c Config, f func(*Config)) Config { f(&c); return c }
	exemptLabelled := strings.Replace(privilegedPod, `"team":"a"`, `"harrier.io/admission":"exempt"`, 1)
	updatedSame := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"UPDATE",
		"namespace":"apps","kind":{"group":"","version":"v1","kind":"Pod"},"object":` + privilegedPod + `,"oldObject":` + privilegedPod + `}}`
	updatedPrivileged := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"UPDATE",
		"namespace":"apps","kind":{"group":"","version":"v1","kind":"Pod"},"object":` + privilegedPod + `,"oldObject":` + compliantPod + `}}`
	debuggedPod := strings.Replace(compliantPod, `"containers":[`, `"ephemeralContainers":[{"name":"debugger","image":"busybox","securityContext":{"privileged":true}}],"containers":[`, 1)
	debugged := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"UPDATE","subResource":"ephemeralcontainers",
		"namespace":"apps","kind":{"group":"","version":"v1","kind":"Pod"},"object":` + debuggedPod + `,"oldObject":` + compliantPod + `}}`
	tests := []struct {
		name     string
		cfg      Config
		checker  testChecker
		body     string
		code     int
		allowed  bool
		contains string // in the message (denied) or a warning (allowed)
		stat     func(Stats) uint64
	}{
		{"privileged pod denied", base, testChecker{}, review("CREATE", "", "v1", "Pod", "apps", privilegedPod), 200, false,
			`[pss-privileged] container "c": securityContext.privileged: true; fix: set securityContext.privileged to false`, func(s Stats) uint64 { return s.Denied }},
		{"compliant pod admitted", base, testChecker{}, review("CREATE", "", "v1", "Pod", "apps", compliantPod), 200, true, "", func(s Stats) uint64 { return s.Allowed }},
		{"deployment template checked", base, testChecker{}, review("CREATE", "apps", "v1", "Deployment", "apps", hostPathDeployment), 200, false,
			"Deployment apps/d fails 1 control(s)", func(s Stats) uint64 { return s.Denied }},
		{"cronjob template checked", base, testChecker{}, review("CREATE", "batch", "v1", "CronJob", "apps", privilegedCronJob), 200, false,
			"pss-privileged", func(s Stats) uint64 { return s.Denied }},
		{"audit mode warns", withMode(base, func(c *Config) { c.Mode = ModeAudit }), testChecker{}, review("CREATE", "", "v1", "Pod", "apps", privilegedPod), 200, true,
			"harrier: [pss-privileged]", func(s Stats) uint64 { return s.Warned }},
		{"checks filter", withMode(base, func(c *Config) { c.Checks = []string{"pss-privileged"} }), testChecker{},
			review("CREATE", "apps", "v1", "Deployment", "apps", hostPathDeployment), 200, true, "", func(s Stats) uint64 { return s.Allowed }},
		{"exempt namespace", base, testChecker{}, review("CREATE", "", "v1", "Pod", "trusted", strings.Replace(privilegedPod, `"apps"`, `"trusted"`, 1)), 200, true, "", func(s Stats) uint64 { return s.Exempt }},
		{"exempt label", base, testChecker{}, review("CREATE", "", "v1", "Pod", "apps", exemptLabelled), 200, true, "", func(s Stats) uint64 { return s.Exempt }},
		{"unknown kind", base, testChecker{}, review("CREATE", "", "v1", "ConfigMap", "apps", `{"data":{}}`), 200, true, "", func(s Stats) uint64 { return s.Unchecked }},
		{"delete", base, testChecker{}, review("DELETE", "", "v1", "Pod", "apps", ""), 200, true, "", func(s Stats) uint64 { return s.Unchecked }},
		{"update leaving the spec", base, testChecker{}, updatedSame, 200, true, "", func(s Stats) uint64 { return s.Unchecked }},
		{"ephemeral container", base, testChecker{}, debugged, 200, false, `[pss-privileged] container "debugger"`, func(s Stats) uint64 { return s.Denied }},
		{"status subresource", base, testChecker{}, strings.Replace(updatedPrivileged, `"operation":"UPDATE"`, `"operation":"UPDATE","subResource":"status"`, 1), 200, true, "",
			func(s Stats) uint64 { return s.Unchecked }},
		{"update changing the spec", base, testChecker{}, updatedPrivileged, 200, false, "pss-privileged", func(s Stats) uint64 { return s.Denied }},
		{"undecodable object fails open", base, testChecker{}, review("CREATE", "", "v1", "Pod", "apps", `{"spec":{"containers":"nope"}}`), 200, true,
			"could not decode the object", func(s Stats) uint64 { return s.BadObjects }},
		{"object without spec fails open", base, testChecker{}, review("CREATE", "apps", "v1", "Deployment", "apps", `{"metadata":{"name":"d"}}`), 200, true,
			"no pod spec", func(s Stats) uint64 { return s.BadObjects }},
		{"undecodable object, failurePolicy Fail", withMode(base, func(c *Config) { c.FailurePolicy = FailurePolicyFail }), testChecker{},
			review("CREATE", "", "v1", "Pod", "apps", `[1,2]`), 200, false, "could not decode", func(s Stats) uint64 { return s.BadObjects }},
		{"slow checker fails open", withMode(base, func(c *Config) { c.TimeoutSeconds = 1 }), testChecker{delay: 2 * time.Second},
			review("CREATE", "", "v1", "Pod", "apps", privilegedPod), 200, true, "exceeded its 800ms budget", func(s Stats) uint64 { return s.Timeouts }},
		{"panicking checker fails open", base, testChecker{panic: true}, review("CREATE", "", "v1", "Pod", "apps", privilegedPod), 200, true,
			"checker failed on Pod apps/p", func(s Stats) uint64 { return s.Panics }},
		{"garbage", base, testChecker{}, "{not json", 400, false, "", func(s Stats) uint64 { return s.BadReviews }},
		{"wrong kind", base, testChecker{}, `{"apiVersion":"v1","kind":"Pod"}`, 400, false, "", func(s Stats) uint64 { return s.BadReviews }},
		{"no request", base, testChecker{}, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, 400, false, "", func(s Stats) uint64 { return s.BadReviews }},
		{"no uid", base, testChecker{}, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}`, 400, false, "", func(s Stats) uint64 { return s.BadReviews }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var violations []*api.Finding
			h, err := NewHandler(tt.cfg, Options{Checker: tt.checker, OnViolation: func(f *api.Finding, req *admissionv1.AdmissionRequest) {
				mu.Lock()
				defer mu.Unlock()
				if req.UID != "u-1" {
					t.Errorf("violation for request %q", req.UID)
				}
				violations = append(violations, f)
			}})
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			code, resp := post(t, h, tt.body)
			if d := time.Since(began); d > time.Second {
				t.Errorf("answered after %v", d)
			}
			if code != tt.code {
				t.Fatalf("status %d, want %d", code, tt.code)
			}
			if got := tt.stat(h.Stats()); got != 1 {
				t.Errorf("counter = %d, want 1 (%+v)", got, h.Stats())
			}
			if s := h.Stats(); s.Reviews != 1 || s.Allowed+s.Denied+s.BadReviews != 1 {
				t.Errorf("stats do not add up: %+v", s)
			}
			if resp == nil {
				return
			}
			if resp.Allowed != tt.allowed {
				t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, tt.allowed, resp)
			}
			text := strings.Join(resp.Warnings, "\n")
			if !resp.Allowed {
				text = resp.Result.Message
			}
			if tt.contains != "" && !strings.Contains(text, tt.contains) {
				t.Errorf("%q does not contain %q", text, tt.contains)
			}
			if tt.contains == "" && text != "" {
				t.Errorf("unexpected message or warnings: %q", text)
			}
			mu.Lock()
			defer mu.Unlock()
			failed := tt.contains != "" && (strings.Contains(tt.contains, "pss-") || strings.Contains(tt.contains, "fails"))
			if failed != (len(violations) > 0) {
				t.Errorf("OnViolation called %d times", len(violations))
			}
			if tt.name == "audit mode warns" && resp.AuditAnnotations["violations"] != "pss-privileged" {
				t.Errorf("audit annotations %v", resp.AuditAnnotations)
			}
		})
	}
}

func TestHandlerRejectsGet(t *testing.T) {
	h, err := NewHandler(Config{}, Options{Checker: testChecker{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ValidatePath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, ValidatePath, bytes.NewReader(make([]byte, MaxBodyBytes+1))))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", rec.Code)
	}
	if s := h.Stats(); s.BadReviews != 2 {
		t.Fatalf("bad reviews %d, want 2", s.BadReviews)
	}
}

func TestWarningsBounded(t *testing.T) {
	var fs []*api.Finding
	for range 25 {
		fs = append(fs, &api.Finding{CheckId: "c", Detail: strings.Repeat("é", 300)})
	}
	w := warnings(fs)
	if len(w) != maxWarnings {
		t.Fatalf("%d warnings, want %d", len(w), maxWarnings)
	}
	for _, s := range w {
		if len(s) > maxWarningLen || !strings.HasPrefix(s, warningPrefix) {
			t.Fatalf("warning %q", s)
		}
	}
	if !strings.Contains(w[maxWarnings-1], "16 more") {
		t.Fatalf("last warning %q", w[maxWarnings-1])
	}
}

func FuzzDecodeReview(f *testing.F) {
	f.Add([]byte(review("CREATE", "", "v1", "Pod", "apps", privilegedPod)))
	f.Add([]byte(review("CREATE", "apps", "v1", "Deployment", "apps", hostPathDeployment)))
	f.Add([]byte(review("CREATE", "batch", "v1", "CronJob", "apps", privilegedCronJob)))
	f.Add([]byte(review("UPDATE", "batch", "v1", "Job", "apps", `{"spec":{"template":null}}`)))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}`))
	f.Add([]byte(`{not json`))
	h, err := NewHandler(Config{Mode: ModeDeny, ExemptLabels: "a in (b,c)"}, Options{Checker: testChecker{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		review, err := DecodeReview(body)
		if err != nil {
			if review != nil {
				t.Fatal("review with an error")
			}
			return
		}
		resp := h.Review(review.Request, time.Now().Add(time.Second))
		if resp.UID != review.Request.UID {
			t.Fatalf("uid %q, want %q", resp.UID, review.Request.UID)
		}
		if !resp.Allowed && (resp.Result == nil || resp.Result.Message == "") {
			t.Fatal("denied without a message")
		}
	})
}
