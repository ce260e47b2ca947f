package admission

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/harrier-sec/harrier/api"
)

// PodChecker evaluates a pod spec (from a Pod or a workload's template)
// and returns the controls it fails. meta is the pod's (or template's)
// metadata; ref names the object under review. It must be safe for
// concurrent use.
type PodChecker interface {
	CheckPodSpec(meta metav1.ObjectMeta, spec *corev1.PodSpec, ref *api.ObjectRef) []*api.Finding
}

// MaxBodyBytes bounds one review: the API server's largest object, twice
// (object and oldObject), and the envelope.
const MaxBodyBytes = 8 << 20

// Limits on what a response carries: the API server truncates long or
// many warnings.
const (
	maxWarnings     = 10
	maxWarningLen   = 256
	maxMessageLen   = 4096
	annotationKey   = "violations"
	warningPrefix   = "harrier: "
	statusForDenial = http.StatusForbidden
)

// Stats counts every review by outcome. Reviews = BadReviews + Allowed +
// Denied; the other counters say why.
type Stats struct {
	Reviews    uint64 // requests to /validate
	BadReviews uint64 // not an AdmissionReview: HTTP 400
	Allowed    uint64 // admitted (including everything below but Denied)
	Denied     uint64 // refused: failed controls in deny mode, or errors with failurePolicy Fail
	Warned     uint64 // admitted with failed controls (audit mode)
	Exempt     uint64 // exempt namespace or labels
	Unchecked  uint64 // kinds without a pod spec, subresources, deletes, updates that leave the pod spec alone
	BadObjects uint64 // a pod or workload whose object did not decode
	Timeouts   uint64 // evaluation exceeded the budget
	Panics     uint64 // the checker panicked
}

type counters struct {
	reviews, badReviews, allowed, denied, warned, exempt, unchecked, badObjects, timeouts, panics atomic.Uint64
}

// Options are a Handler's collaborators.
type Options struct {
	// Checker evaluates pod specs (required).
	Checker PodChecker
	// OnViolation is called for every failed control of a checked object,
	// in both modes (the object is then refused in deny mode and admitted
	// in audit mode), before the answer is written; the agent turns each
	// into an event for its engine (admission-violation). It runs on the
	// API server's request path and must not block. Optional.
	OnViolation func(*api.Finding, *admissionv1.AdmissionRequest)
	Log         *slog.Logger
}

// Handler serves /validate: it decodes the review, extracts the pod spec,
// runs the checker within the budget and answers per mode.
type Handler struct {
	cfg         Config
	checker     PodChecker
	onViolation func(*api.Finding, *admissionv1.AdmissionRequest)
	log         *slog.Logger
	checks      map[string]bool // nil: all
	exemptNS    map[string]bool
	exemptSel   labels.Selector // nil: none
	budget      time.Duration
	n           counters
}

// NewHandler prepares a handler for cfg (defaults applied).
func NewHandler(cfg Config, opts Options) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Checker == nil {
		return nil, errors.New("admission: no pod checker")
	}
	cfg = cfg.WithDefaults()
	h := &Handler{cfg: cfg, checker: opts.Checker, onViolation: opts.OnViolation, log: opts.Log,
		exemptNS: map[string]bool{}, budget: cfg.Budget()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Checks) > 0 {
		h.checks = map[string]bool{}
		for _, id := range cfg.Checks {
			h.checks[id] = true
		}
	}
	for _, ns := range cfg.ExemptNamespaces {
		h.exemptNS[ns] = true
	}
	if cfg.ExemptLabels != "" {
		sel, err := labels.Parse(cfg.ExemptLabels)
		if err != nil {
			return nil, fmt.Errorf("kube.admission.exemptLabels: %w", err)
		}
		h.exemptSel = sel
	}
	return h, nil
}

// Stats returns the handler's counters.
func (h *Handler) Stats() Stats {
	n := &h.n
	return Stats{Reviews: n.reviews.Load(), BadReviews: n.badReviews.Load(), Allowed: n.allowed.Load(),
		Denied: n.denied.Load(), Warned: n.warned.Load(), Exempt: n.exempt.Load(), Unchecked: n.unchecked.Load(),
		BadObjects: n.badObjects.Load(), Timeouts: n.timeouts.Load(), Panics: n.panics.Load()}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	h.n.reviews.Add(1)
	if r.Method != http.MethodPost {
		h.n.badReviews.Add(1)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		h.n.badReviews.Add(1)
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		h.log.Warn("admission: bad request body", "remote", r.RemoteAddr, "error", err)
		http.Error(w, "bad body", code)
		return
	}
	review, err := DecodeReview(body)
	if err != nil {
		h.n.badReviews.Add(1)
		h.log.Warn("admission: undecodable review", "remote", r.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := h.Review(review.Request, received.Add(h.budget))
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil { // cannot happen with these types; answer per policy anyway
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Review decides one request, evaluating no later than deadline.
func (h *Handler) Review(req *admissionv1.AdmissionRequest, deadline time.Time) *admissionv1.AdmissionResponse {
	resp := h.review(req, deadline)
	resp.UID = req.UID
	if resp.Allowed {
		h.n.allowed.Add(1)
	} else {
		h.n.denied.Add(1)
	}
	return resp
}

func (h *Handler) review(req *admissionv1.AdmissionRequest, deadline time.Time) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	// Of the subresources only ephemeral containers (kubectl debug) change
	// what runs; the object under review is then the whole Pod.
	subresourceChecked := req.SubResource == "ephemeralcontainers" && req.Kind.Group == "" && req.Kind.Kind == "Pod"
	if (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) || (req.SubResource != "" && !subresourceChecked) {
		h.n.unchecked.Add(1)
		return allow
	}
	src, err := decodeObject(req)
	if errors.Is(err, errUnchecked) {
		h.n.unchecked.Add(1)
		return allow
	}
	if err != nil {
		h.n.badObjects.Add(1)
		h.log.Warn("admission: undecodable object", "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name, "error", err)
		return h.failure("could not decode the object: " + err.Error())
	}
	if h.exemptNS[src.meta.Namespace] || (h.exemptSel != nil && h.exemptSel.Matches(labels.Set(src.meta.Labels))) {
		h.n.exempt.Add(1)
		return allow
	}
	if src.meta.DeletionTimestamp != nil || (req.Operation == admissionv1.Update && h.specUnchanged(req, src)) {
		// Finalizers, labels, owner references of an existing object:
		// refusing them would wedge deletion and garbage collection.
		h.n.unchecked.Add(1)
		return allow
	}
	findings, err := h.check(src, deadline)
	if err != nil {
		return h.failure(err.Error())
	}
	if len(findings) == 0 {
		return allow
	}
	if h.onViolation != nil {
		for _, f := range findings {
			h.onViolation(f, req)
		}
	}
	if h.cfg.Mode == ModeDeny {
		return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: statusForDenial, Reason: metav1.StatusReasonForbidden,
			Message: denyMessage(src.ref, findings),
		}}
	}
	h.n.warned.Add(1)
	ids := make([]string, 0, len(findings))
	for _, f := range findings {
		ids = append(ids, f.GetCheckId())
	}
	allow.Warnings = warnings(findings)
	allow.AuditAnnotations = map[string]string{annotationKey: strings.Join(ids, ",")}
	return allow
}

// specUnchanged reports whether an update leaves the pod spec as it was.
func (h *Handler) specUnchanged(req *admissionv1.AdmissionRequest, src *podSource) bool {
	old := *req
	old.Object = req.OldObject
	prev, err := decodeObject(&old)
	return err == nil && reflect.DeepEqual(prev.spec, src.spec)
}

// failure answers for an object the guard could not evaluate, per
// failurePolicy: admit with a warning (Ignore) or refuse (Fail).
func (h *Handler) failure(reason string) *admissionv1.AdmissionResponse {
	msg := "admission guard could not evaluate this object: " + reason
	if h.cfg.FailurePolicy == FailurePolicyFail {
		return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Reason: metav1.StatusReasonInternalError,
			Message: "harrier " + truncate(msg, maxMessageLen) + " (failurePolicy Fail)",
		}}
	}
	return &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{truncate(warningPrefix+msg+"; admitted (failurePolicy Ignore)", maxWarningLen)}}
}

// check runs the checker until deadline. A checker that overruns is left
// to finish on its own goroutine; its result is discarded.
func (h *Handler) check(src *podSource, deadline time.Time) ([]*api.Finding, error) {
	type result struct {
		findings []*api.Finding
		panicked any
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{panicked: p}
			}
		}()
		done <- result{findings: h.checker.CheckPodSpec(src.tmpl, src.spec, src.ref)}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case r := <-done:
		if r.panicked != nil {
			h.n.panics.Add(1)
			h.log.Error("admission: checker panicked", "object", refString(src.ref), "panic", fmt.Sprint(r.panicked))
			return nil, fmt.Errorf("checker failed on %s", refString(src.ref))
		}
		if h.checks == nil {
			return r.findings, nil
		}
		kept := r.findings[:0:0]
		for _, f := range r.findings {
			if h.checks[f.GetCheckId()] {
				kept = append(kept, f)
			}
		}
		return kept, nil
	case <-timer.C:
		h.n.timeouts.Add(1)
		h.log.Warn("admission: evaluation exceeded its budget", "object", refString(src.ref), "budget", h.budget)
		return nil, fmt.Errorf("evaluation of %s exceeded its %v budget", refString(src.ref), h.budget)
	}
}

func refString(r *api.ObjectRef) string {
	if r.GetNamespace() == "" {
		return r.GetKind() + " " + r.GetName()
	}
	return r.GetKind() + " " + r.GetNamespace() + "/" + r.GetName()
}

// describe is one finding on one line: check, container, what failed,
// how to fix it.
func describe(f *api.Finding) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]", f.GetCheckId())
	if f.GetContainer() != "" {
		fmt.Fprintf(&b, " container %q:", f.GetContainer())
	}
	switch {
	case f.GetDetail() != "":
		b.WriteString(" " + f.GetDetail())
	case f.GetTitle() != "":
		b.WriteString(" " + f.GetTitle())
	}
	if f.GetRemediation() != "" {
		b.WriteString("; fix: " + f.GetRemediation())
	}
	return b.String()
}

func denyMessage(ref *api.ObjectRef, findings []*api.Finding) string {
	var b strings.Builder
	fmt.Fprintf(&b, "harrier admission guard: %s fails %d control(s):", refString(ref), len(findings))
	for _, f := range findings {
		b.WriteString("\n- " + describe(f))
	}
	return truncate(b.String(), maxMessageLen)
}

func warnings(findings []*api.Finding) []string {
	var out []string
	for i, f := range findings {
		if i == maxWarnings-1 && len(findings) > maxWarnings {
			out = append(out, fmt.Sprintf("%s%d more failed controls", warningPrefix, len(findings)-i))
			break
		}
		out = append(out, truncate(warningPrefix+describe(f), maxWarningLen))
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
