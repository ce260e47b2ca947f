package admission

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/internal/testpki"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"zero value", Config{}, ""},
		{"enabled", Config{Enabled: true, CertFile: "c", KeyFile: "k", Mode: ModeDeny, FailurePolicy: FailurePolicyFail, TimeoutSeconds: 10,
			ExemptLabels: "a=b,c notin (d)", Checks: []string{"x", "y"}, Service: &ServiceAddress{Namespace: "harrier", Name: "harrier-admission"}}, ""},
		{"enabled without cert", Config{Enabled: true}, "certFile and keyFile are required"},
		{"mode", Config{Mode: "warn"}, `mode "warn"`},
		{"failure policy", Config{FailurePolicy: "ignore"}, `failurePolicy "ignore"`},
		{"timeout too long", Config{TimeoutSeconds: 11}, "timeoutSeconds 11: must be 1..10"},
		{"timeout negative", Config{TimeoutSeconds: -1}, "timeoutSeconds -1"},
		{"selector", Config{ExemptLabels: "a=(b"}, "exemptLabels"},
		{"namespace", Config{ExemptNamespaces: []string{"Kube_System"}}, "not a namespace name"},
		{"duplicate check", Config{Checks: []string{"a", "a"}}, `"a" listed twice`},
		{"url and service", Config{URL: "https://x/validate", Service: &ServiceAddress{Namespace: "a", Name: "b"}}, "set one"},
		{"http url", Config{URL: "http://x/validate"}, "must be https"},
		{"service without name", Config{Service: &ServiceAddress{Namespace: "a"}}, "namespace and name are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	d := Config{}.WithDefaults()
	if d.Enabled || d.Mode != ModeAudit || d.FailurePolicy != FailurePolicyIgnore || d.TimeoutSeconds != 3 ||
		!reflect.DeepEqual(d.ExemptNamespaces, []string{"kube-system"}) || d.Budget() != 2400*time.Millisecond {
		t.Fatalf("defaults %+v", d)
	}
	if got := (Config{ExemptNamespaces: []string{}}).WithDefaults().ExemptNamespaces; len(got) != 0 {
		t.Fatalf("explicit [] became %v", got)
	}
}

func TestNotSelector(t *testing.T) {
	tests := []struct {
		sel  string
		want *metav1.LabelSelectorRequirement
	}{
		{"", nil},
		{"a=b", &metav1.LabelSelectorRequirement{Key: "a", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"b"}}},
		{"a in (b,c)", &metav1.LabelSelectorRequirement{Key: "a", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"b", "c"}}},
		{"a!=b", &metav1.LabelSelectorRequirement{Key: "a", Operator: metav1.LabelSelectorOpIn, Values: []string{"b"}}},
		{"a", &metav1.LabelSelectorRequirement{Key: "a", Operator: metav1.LabelSelectorOpDoesNotExist}},
		{"!a", &metav1.LabelSelectorRequirement{Key: "a", Operator: metav1.LabelSelectorOpExists}},
		{"a=b,c=d", nil}, // not (a and b) is no label selector: the handler alone exempts
		{"a>1", nil},
	}
	for _, tt := range tests {
		got, err := notSelector(tt.sel)
		if err != nil {
			t.Fatalf("%q: %v", tt.sel, err)
		}
		if tt.want == nil {
			if got != nil {
				t.Errorf("%q: %+v, want none", tt.sel, got)
			}
			continue
		}
		if got == nil || len(got.MatchExpressions) != 1 || !reflect.DeepEqual(got.MatchExpressions[0], *tt.want) {
			t.Errorf("%q: %+v, want %+v", tt.sel, got, tt.want)
		}
	}
}

func TestWebhookConfigurationService(t *testing.T) {
	cfg := Config{Mode: ModeDeny, FailurePolicy: FailurePolicyFail, TimeoutSeconds: 5, ExemptNamespaces: []string{},
		Service: &ServiceAddress{Namespace: "harrier", Name: "harrier-admission"}}
	vwc, err := WebhookConfiguration(cfg, []byte("ca"))
	if err != nil {
		t.Fatal(err)
	}
	wh := vwc.Webhooks[0]
	s := wh.ClientConfig.Service
	if vwc.Name != "harrier-admission" || wh.Name != "harrier-admission.harrier.io" || s == nil || *s.Port != 443 || *s.Path != "/validate" ||
		*wh.FailurePolicy != admissionregv1.Fail || *wh.TimeoutSeconds != 5 || wh.NamespaceSelector != nil || wh.ObjectSelector != nil ||
		len(wh.Rules) != 3 || !reflect.DeepEqual(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Fatalf("%+v", vwc)
	}
	if _, err := WebhookConfiguration(Config{}, []byte("ca")); err == nil {
		t.Fatal("no url or service accepted")
	}
	if _, err := WebhookConfiguration(cfg, nil); err == nil {
		t.Fatal("empty caBundle accepted")
	}
}

// TestCertificateReload replaces the serving certificate on disk; new
// connections get the new one.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	issued := time.Now()
	issue := func(cn string) {
		ca, err := testpki.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		pair, err := ca.Issue(testpki.Cert{CommonName: cn, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
		if err != nil {
			t.Fatal(err)
		}
		// Key first: a reload between the two writes fails and is retried.
		if err := os.WriteFile(keyFile, pair.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(certFile, pair.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		// Each pair gets its own modification time, even where the clock's
		// resolution is coarse: the reload keys on it.
		issued = issued.Add(time.Second)
		for _, f := range []string{keyFile, certFile} {
			if err := os.Chtimes(f, issued, issued); err != nil {
				t.Fatal(err)
			}
		}
	}
	issue("first")
	srv, err := NewServer(Config{Enabled: true, CertFile: certFile, KeyFile: keyFile}, Options{Checker: testChecker{}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv.certs.CheckInterval = 0
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	served := func() string {
		// Only which certificate is served matters here, not its chain.
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("serving %q", cn)
	}
	issue("second")
	if cn := served(); cn != "second" {
		t.Fatalf("after rotation serving %q", cn)
	}
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cn := served(); cn != "second" {
		t.Fatalf("after a bad rotation serving %q, want the previous certificate", cn)
	}
}

// TestVerifyServingCert: the checks the API server makes of the guard's
// certificate, made by the agent before it registers.
func TestVerifyServingCert(t *testing.T) {
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(name string, by *testpki.CA, req testpki.Cert) (cert, key string) {
		kp, err := by.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", kp.CertPEM), write(name+".key", kp.KeyPEM)
	}
	svcName := "harrier-admission.harrier.svc"
	good, goodKey := issue("good", ca, testpki.Cert{CommonName: "g", DNSNames: []string{svcName}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	foreign, foreignKey := issue("foreign", other, testpki.Cert{CommonName: "f", DNSNames: []string{svcName}, Server: true})
	misnamed, misnamedKey := issue("misnamed", ca, testpki.Cert{CommonName: "m", DNSNames: []string{"elsewhere.harrier.svc"}, Server: true})
	client, clientKey := issue("client", ca, testpki.Cert{CommonName: "c", DNSNames: []string{svcName}})
	caFile := write("ca.crt", ca.PEM)
	svc := &ServiceAddress{Namespace: "harrier", Name: "harrier-admission"}
	tests := []struct {
		name, cert, key, url string
		want                 string // "" for no error
	}{
		{name: "service", cert: good, key: goodKey},
		{name: "url", cert: good, key: goodKey, url: "https://127.0.0.1:9475/validate"},
		{name: "another CA", cert: foreign, key: foreignKey, want: "unknown authority"},
		{name: "another name", cert: misnamed, key: misnamedKey, want: svcName},
		{name: "another address", cert: good, key: goodKey, url: "https://10.0.0.9:9475/validate", want: "10.0.0.9"},
		{name: "client certificate", cert: client, key: clientKey, want: "usage"},
		{name: "key of another certificate", cert: good, key: clientKey, want: "private key does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{CertFile: tc.cert, KeyFile: tc.key, CAFile: caFile, URL: tc.url}
			if tc.url == "" {
				c.Service = svc
			}
			err := c.VerifyServingCert()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.cert) && !strings.Contains(err.Error(), "keyFile") {
				t.Fatalf("error %v, want one naming the file and %q", err, tc.want)
			}
		})
	}
}
