// Package kubeclient builds the REST clients harrier reaches the Kubernetes
// API server with, setting what they share in one place: the user agent the
// API server's audit log names them by, the client-side rate limit, and a
// scheme that knows only the API groups the caller names. client-go's
// clientset, typed clients and informer factory link the scheme of every
// API group, which would add ~40 MB to the harrier binary.
//
// No client has a whole-request timeout (rest.Config.Timeout): it would cut
// watches, which stay open for minutes. Callers bound requests with their
// context; client-go's transport bounds dialling and the TLS handshake.
// Requests and responses are JSON: the API server's protobuf encoding would
// need every object type to be registered for it, and the lists harrier
// reads are small.
package kubeclient

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// QPS and Burst bound each client's request rate: client-go's own
	// defaults, spelled out so that there is one place to change them. A
	// configuration that sets its own (a test's API server) keeps them.
	QPS   = 5
	Burst = 10
)

// Load returns the client configuration of the kubeconfig file or, with
// none, the in-cluster one (the pod's service account), whose requests
// carry userAgent.
func Load(kubeconfig, userAgent string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeconfig != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	} else if rc, err = rest.InClusterConfig(); err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	rc.UserAgent = userAgent
	return rc, nil
}

// Clients makes REST clients, one per API group version, that share one
// scheme.
type Clients struct {
	rc     *rest.Config
	codecs runtime.NegotiatedSerializer
	// Params encodes list and watch options as query parameters.
	Params runtime.ParameterCodec
}

// New prepares clients of the API server rc names for the API groups that
// addToScheme register (such as corev1.AddToScheme). It does not contact
// the API server.
func New(rc *rest.Config, addToScheme ...func(*runtime.Scheme) error) (*Clients, error) {
	if rc == nil {
		return nil, errors.New("kube client: nil rest config")
	}
	scheme := runtime.NewScheme()
	for _, add := range addToScheme {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("kube client scheme: %w", err)
		}
	}
	return &Clients{rc: rc, codecs: serializer.NewCodecFactory(scheme).WithoutConversion(),
		Params: runtime.NewParameterCodec(scheme)}, nil
}

// For returns a client of gv's resources.
func (c *Clients) For(gv schema.GroupVersion) (rest.Interface, error) {
	cfg := rest.CopyConfig(c.rc)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	if gv.Group == "" {
		cfg.APIPath = "/api" // the core group's legacy path
	}
	cfg.NegotiatedSerializer = c.codecs
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS, cfg.Burst = QPS, Burst
	}
	r, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube client %s: %w", gv, err)
	}
	return r, nil
}
