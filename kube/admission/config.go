// Package admission is Harrier's optional admission guard: a validating
// webhook (admission.k8s.io/v1) that evaluates the pod spec of Pods and of
// the pod templates of workloads with a PodChecker and, per policy, warns
// (audit) or refuses (deny) objects that fail the chosen controls.
//
// It is off by default, exempts namespaces and labelled objects, answers
// well inside the API server's timeout and fails open unless told not to.
// Like package kube it never links client-go's clientset: the registration
// uses a REST client whose scheme holds admissionregistration/v1 only.
package admission

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Modes and failure policies a Config accepts.
const (
	ModeAudit = "audit"
	ModeDeny  = "deny"

	FailurePolicyIgnore = "Ignore"
	FailurePolicyFail   = "Fail"
)

// Defaults.
const (
	DefaultAddr           = ":9475"
	DefaultTimeoutSeconds = 3
	// DefaultWebhookName names the agent's own ValidatingWebhookConfiguration
	// (and its one webhook, with a ".harrier.io" suffix).
	DefaultWebhookName = "harrier-admission"
	// MaxTimeoutSeconds is this guard's ceiling; the API server's is 30.
	MaxTimeoutSeconds = 10
)

// DefaultExemptNamespaces are exempt when ExemptNamespaces is not set.
func DefaultExemptNamespaces() []string { return []string{"kube-system"} }

// Config is the `kube.admission` section of the agent's configuration.
type Config struct {
	// Enabled turns the guard on (default false).
	Enabled bool `json:"enabled,omitempty"`
	// Addr is where the HTTPS webhook listens (default ":9475").
	Addr string `json:"addr,omitempty"`
	// CertFile and KeyFile are the serving certificate; they are re-read
	// when they change on disk (a rotated Secret).
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// CAFile is the CA that signed CertFile: the registration's caBundle.
	CAFile string `json:"caFile,omitempty"`
	// Mode is "audit" (default: admit with warnings and report) or "deny".
	Mode string `json:"mode,omitempty"`
	// Checks are the check IDs to apply; empty: every check the checker has.
	Checks []string `json:"checks,omitempty"`
	// ExemptNamespaces are never checked (default [kube-system]; an
	// explicit [] exempts none).
	ExemptNamespaces []string `json:"exemptNamespaces,omitempty"`
	// ExemptLabels is a label selector ("harrier.io/admission=exempt");
	// objects whose own labels match it are not checked.
	ExemptLabels string `json:"exemptLabels,omitempty"`
	// FailurePolicy is what the API server does when the webhook cannot
	// answer, and what the guard does when it cannot evaluate an object:
	// "Ignore" (default: admit) or "Fail" (refuse).
	FailurePolicy string `json:"failurePolicy,omitempty"`
	// TimeoutSeconds is the API server's wait for an answer (default 3,
	// 1..10); the guard answers within 80% of it.
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
	// Registration: how the API server reaches the webhook, one of URL
	// (https://host:port/validate) or Service.
	URL     string          `json:"url,omitempty"`
	Service *ServiceAddress `json:"service,omitempty"`
	// WebhookName names the ValidatingWebhookConfiguration (default
	// "harrier-admission").
	WebhookName string `json:"webhookName,omitempty"`
	// OwnerClusterRole names a ClusterRole (the chart's harrier-agent) that
	// the webhook object is made a dependent of, so the garbage collector
	// deletes the registration when the installation that owns the role is
	// removed (helm uninstall), even though an agent, not Helm, created it.
	OwnerClusterRole string `json:"ownerClusterRole,omitempty"`
}

// ServiceAddress is an in-cluster Service in front of the webhook.
type ServiceAddress struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port,omitempty"` // default 443
}

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Mode == "" {
		c.Mode = ModeAudit
	}
	if c.ExemptNamespaces == nil {
		c.ExemptNamespaces = DefaultExemptNamespaces()
	}
	if c.FailurePolicy == "" {
		c.FailurePolicy = FailurePolicyIgnore
	}
	if c.TimeoutSeconds == 0 {
		c.TimeoutSeconds = DefaultTimeoutSeconds
	}
	if c.WebhookName == "" {
		c.WebhookName = DefaultWebhookName
	}
	return c
}

// Budget is how long the handler may evaluate one review: 80% of the
// API server's timeout, so the answer arrives before it gives up.
func (c Config) Budget() time.Duration {
	t := c.WithDefaults().TimeoutSeconds
	return time.Duration(t) * time.Second * 8 / 10
}

// Validate reports every problem at once. A disabled guard is checked too,
// so a typo is found before someone turns it on.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("kube.admission."+format, a...)) }
	d := c.WithDefaults()
	switch d.Mode {
	case ModeAudit, ModeDeny:
	default:
		bad("mode %q: must be audit or deny", c.Mode)
	}
	switch d.FailurePolicy {
	case FailurePolicyIgnore, FailurePolicyFail:
	default:
		bad("failurePolicy %q: must be Ignore or Fail", c.FailurePolicy)
	}
	if d.TimeoutSeconds < 1 || d.TimeoutSeconds > MaxTimeoutSeconds {
		bad("timeoutSeconds %d: must be 1..%d", c.TimeoutSeconds, MaxTimeoutSeconds)
	}
	if c.Enabled && (c.CertFile == "" || c.KeyFile == "") {
		bad("certFile and keyFile are required when enabled")
	}
	if _, err := labels.Parse(c.ExemptLabels); err != nil {
		bad("exemptLabels %q: %w", c.ExemptLabels, err)
	}
	for _, ns := range c.ExemptNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			bad("exemptNamespaces: %q is not a namespace name", ns)
		}
	}
	for i, id := range c.Checks {
		if id == "" {
			bad("checks[%d]: empty check ID", i)
		} else if slices.Contains(c.Checks[:i], id) {
			bad("checks: %q listed twice", id)
		}
	}
	if c.URL != "" && c.Service != nil {
		bad("url and service: set one")
	}
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("url %q: must be https://host[:port]/path", c.URL)
		}
	}
	if s := c.Service; s != nil {
		if s.Namespace == "" || s.Name == "" {
			bad("service: namespace and name are required")
		}
		if s.Port < 0 || s.Port > 65535 {
			bad("service.port %d: must be 1..65535", s.Port)
		}
	}
	if msgs := validation.IsDNS1123Subdomain(d.WebhookName); len(msgs) > 0 {
		bad("webhookName %q: not a valid object name", c.WebhookName)
	}
	if c.OwnerClusterRole != "" {
		if msgs := validation.IsDNS1123Subdomain(c.OwnerClusterRole); len(msgs) > 0 {
			bad("ownerClusterRole %q: not a valid object name", c.OwnerClusterRole)
		}
	}
	return errors.Join(errs...)
}

// CABundle reads CAFile for the registration.
func (c Config) CABundle() ([]byte, error) {
	if c.CAFile == "" {
		return nil, errors.New("kube.admission.caFile is not set")
	}
	b, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("kube.admission.caFile: %w", err)
	}
	return b, nil
}

// VerifyServingCert checks what the API server will check when it calls the
// guard: that CertFile is signed by CAFile (the registration's caBundle)
// and names the host the registration points at. A mismatch would
// otherwise show only as TLS errors in the API server's log, with every
// object admitted unchecked (failurePolicy Ignore).
func (c Config) VerifyServingCert() error {
	caPEM, err := c.CABundle()
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("kube.admission.caFile %s: no PEM certificate in it", c.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("kube.admission certFile/keyFile: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("kube.admission.certFile %s: %w", c.CertFile, err)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	host := ""
	switch {
	case c.URL != "":
		u, err := url.Parse(c.URL)
		if err != nil {
			return fmt.Errorf("kube.admission.url: %w", err)
		}
		host = u.Hostname()
	case c.Service != nil:
		// The name the API server verifies for a service reference.
		host = c.Service.Name + "." + c.Service.Namespace + ".svc"
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("kube.admission: the API server would refuse the serving certificate %s for %s with caBundle %s: %w",
			c.CertFile, host, c.CAFile, err)
	}
	return nil
}
