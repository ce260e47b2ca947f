package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/kube/kubeclient"
)

// Audience is the audience agents' projected service-account tokens carry,
// so that a token meant for the API server cannot enroll and ours is useless
// to anything else.
const Audience = "harrier"

// Extra keys the API server sets in a TokenReview of a pod-bound token.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// inClusterNamespaceFile names the namespace of the pod the backend runs in.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// DefaultServiceAccount is EnrollConfig.ServiceAccount's default: the
// chart's harrier-agent in the backend's own namespace.
func DefaultServiceAccount() string {
	ns := "harrier"
	if b, err := os.ReadFile(inClusterNamespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
		ns = strings.TrimSpace(string(b))
	}
	return ns + "/harrier-agent"
}

// kubeTokenReviewer asks the API server with a TokenReview. The client's
// scheme knows authentication/v1 only (kubeclient): client-go's typed
// AuthenticationV1 client would link the scheme of every API group into
// the one harrier binary (+40 MB).
type kubeTokenReviewer struct {
	client rest.Interface
}

// NewKubeTokenReviewer reviews tokens with the API server rc names; the
// backend's own credentials need create on tokenreviews.
func NewKubeTokenReviewer(rc *rest.Config) (TokenReviewer, error) {
	cs, err := kubeclient.New(rc, authnv1.AddToScheme)
	if err != nil {
		return nil, err
	}
	c, err := cs.For(authnv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return &kubeTokenReviewer{client: c}, nil
}

// LoadKubeTokenReviewer is NewKubeTokenReviewer on the kubeconfig file or,
// with none, the in-cluster configuration. Outside a pod without a
// kubeconfig it returns nil and the reason service-account enrollment is
// off.
func LoadKubeTokenReviewer(kubeconfig string) (TokenReviewer, string, error) {
	if kubeconfig == "" {
		if _, err := rest.InClusterConfig(); errors.Is(err, rest.ErrNotInCluster) {
			return nil, "the backend is not in a Kubernetes pod and backend.enroll.kubeconfig is not set", nil
		}
	}
	rc, err := kubeclient.Load(kubeconfig, "harrier-backend")
	if err != nil {
		return nil, "", err
	}
	r, err := NewKubeTokenReviewer(rc)
	return r, "", err
}

func (k *kubeTokenReviewer) Review(ctx context.Context, token string) (TokenIdentity, error) {
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}}}
	out := &authnv1.TokenReview{}
	if err := k.client.Post().Resource("tokenreviews").Body(review).Do(ctx).Into(out); err != nil {
		return TokenIdentity{}, fmt.Errorf("token review: %w", err)
	}
	st := out.Status
	if !st.Authenticated {
		msg := "service-account token not accepted by the API server"
		if st.Error != "" {
			msg += ": " + st.Error
		}
		return TokenIdentity{}, refuse(statusUnauthorized, "%s", msg)
	}
	// The API server echoes the audiences the token is valid for; an
	// authenticator that ignores audiences would answer none.
	if !slices.Contains(st.Audiences, Audience) {
		return TokenIdentity{}, refuse(statusUnauthorized, "service-account token is not for audience %q", Audience)
	}
	ti := TokenIdentity{Username: st.User.Username}
	if v := st.User.Extra[extraPodName]; len(v) == 1 {
		ti.PodName = v[0]
	}
	if v := st.User.Extra[extraNodeName]; len(v) == 1 {
		ti.NodeName = v[0]
	}
	return ti, nil
}
