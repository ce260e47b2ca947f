package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/internal/kubetest"
)

// TestServiceAccountEnrollment enrolls with projected service-account
// tokens reviewed by a real kube-apiserver: the API server itself names the
// node of the pod a token is bound to (user.extra
// authentication.kubernetes.io/node-name), and that name is the agent ID.
func TestServiceAccountEnrollment(t *testing.T) {
	kube := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sa := range []string{"harrier-agent", "other"} {
		if err := kube.EnsureServiceAccount(ctx, "harrier", sa); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kube.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-7"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, sa string) *corev1.Pod {
		p, err := kube.Client.CoreV1().Pods("harrier").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "worker-7",
				Containers: []corev1.Container{{Name: "agent", Image: "harrier"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	agentPod, otherPod := pod("harrier-agent-x1", "harrier-agent"), pod("other-x1", "other")
	token := func(sa string, bound *corev1.Pod, audience string) string {
		req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(3600))}}
		if bound != nil {
			req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		out, err := kube.Client.CoreV1().ServiceAccounts("harrier").CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out.Status.Token
	}

	reviewer, err := NewKubeTokenReviewer(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := enrollPKI(t, t.TempDir())
	id, err := NewIdentity(openTestStore(t, BadgerConfig{}), IdentityConfig{CACert: caCert, CAKey: caKey, Validity: time.Hour,
		ServiceAccount: "harrier/harrier-agent", Reviewer: reviewer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	tests := []struct {
		name, token, agentID string
		status               int
		msg                  string
	}{
		{"pod-bound token of the agent service account", token("harrier-agent", agentPod, Audience), "", 0, ""},
		{"pod-bound token naming its node", token("harrier-agent", agentPod, Audience), "worker-7", 0, ""},
		{"pod-bound token, request names another node", token("harrier-agent", agentPod, Audience), "worker-8", statusForbidden, "bound to a pod on node worker-7"},
		{"token of another service account", token("other", otherPod, Audience), "", statusForbidden, "only service account harrier/harrier-agent"},
		{"token not bound to a pod", token("harrier-agent", nil, Audience), "", statusForbidden, "not bound to a pod"},
		{"token for another audience", token("harrier-agent", agentPod, "https://kubernetes.default.svc"), "", statusUnauthorized, "not accepted"},
		{"garbage", "not-a-jwt", "", statusUnauthorized, "not accepted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := id.Enroll(ctx, EnrollRequest{Kind: KindServiceAccount, Token: tc.token, AgentID: tc.agentID, CSR: string(csr)})
			if tc.status != 0 {
				wantIdentityError(t, err, tc.status, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if iss.AgentID != "worker-7" || !strings.Contains(iss.Certificate, "BEGIN CERTIFICATE") {
				t.Fatalf("issued %+v, want a certificate for worker-7", iss)
			}
		})
	}
	// A revoked node cannot enroll again with its pod's token.
	if err := id.Revoke("worker-7"); err != nil {
		t.Fatal(err)
	}
	_, err = id.Enroll(ctx, EnrollRequest{Kind: KindServiceAccount, Token: token("harrier-agent", agentPod, Audience), CSR: string(csr)})
	wantIdentityError(t, err, statusForbidden, "revoked")
}
