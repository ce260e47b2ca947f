package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/kube/kubeclient"
)

// namespaceNameLabel is set on every namespace by the API server.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// WebhookConfiguration builds the guard's ValidatingWebhookConfiguration
// from cfg (defaults applied): one webhook for CREATE and UPDATE of pods
// and of the workloads with pod templates, skipping exempt namespaces (and
// exempt labels, when the selector has one requirement and so can be
// negated; the handler applies it in every case), with caBundle the CA
// that signed the serving certificate.
func WebhookConfiguration(cfg Config, caBundle []byte) (*admissionregv1.ValidatingWebhookConfiguration, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if len(caBundle) == 0 {
		return nil, errors.New("admission registration: empty caBundle")
	}
	client := admissionregv1.WebhookClientConfig{CABundle: caBundle}
	switch {
	case cfg.URL != "":
		u := cfg.URL
		client.URL = &u
	case cfg.Service != nil:
		port := cfg.Service.Port
		if port == 0 {
			port = 443
		}
		path := ValidatePath
		client.Service = &admissionregv1.ServiceReference{Namespace: cfg.Service.Namespace, Name: cfg.Service.Name,
			Port: &port, Path: &path}
	default:
		return nil, errors.New("admission registration: kube.admission needs url or service")
	}
	failure := admissionregv1.Ignore
	if cfg.FailurePolicy == FailurePolicyFail {
		failure = admissionregv1.Fail
	}
	sideEffects := admissionregv1.SideEffectClassNone
	match := admissionregv1.Equivalent
	timeout := cfg.TimeoutSeconds
	scope := admissionregv1.NamespacedScope
	ops := []admissionregv1.OperationType{admissionregv1.Create, admissionregv1.Update}
	rule := func(group string, resources ...string) admissionregv1.RuleWithOperations {
		return admissionregv1.RuleWithOperations{Operations: ops, Rule: admissionregv1.Rule{
			APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: resources, Scope: &scope}}
	}
	var nsSelector *metav1.LabelSelector
	if len(cfg.ExemptNamespaces) > 0 {
		nsSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn, Values: cfg.ExemptNamespaces}}}
	}
	objSelector, err := notSelector(cfg.ExemptLabels)
	if err != nil {
		return nil, err
	}
	return &admissionregv1.ValidatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionregv1.SchemeGroupVersion.String(), Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: cfg.WebhookName, Labels: map[string]string{
			"app.kubernetes.io/name": "harrier", "app.kubernetes.io/component": "admission",
			"app.kubernetes.io/managed-by": "harrier-agent"}},
		Webhooks: []admissionregv1.ValidatingWebhook{{
			Name:         cfg.WebhookName + ".harrier.io",
			ClientConfig: client,
			Rules: []admissionregv1.RuleWithOperations{
				rule("", "pods", "pods/ephemeralcontainers"),
				rule("apps", "deployments", "statefulsets", "daemonsets", "replicasets"),
				rule("batch", "jobs", "cronjobs"),
			},
			FailurePolicy:           &failure,
			MatchPolicy:             &match,
			NamespaceSelector:       nsSelector,
			ObjectSelector:          objSelector,
			SideEffects:             &sideEffects,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, nil
}

// notSelector is an objectSelector for the objects that do NOT match
// selector, when it is one requirement; otherwise nil (match all).
func notSelector(selector string) (*metav1.LabelSelector, error) {
	if selector == "" {
		return nil, nil
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("kube.admission.exemptLabels: %w", err)
	}
	reqs, _ := sel.Requirements()
	if len(reqs) != 1 {
		return nil, nil
	}
	r := reqs[0]
	values := r.ValuesUnsorted()
	var op metav1.LabelSelectorOperator
	switch r.Operator() {
	case selection.Equals, selection.DoubleEquals, selection.In:
		op = metav1.LabelSelectorOpNotIn
	case selection.NotEquals, selection.NotIn:
		op = metav1.LabelSelectorOpIn
	case selection.Exists:
		op, values = metav1.LabelSelectorOpDoesNotExist, nil
	case selection.DoesNotExist:
		op, values = metav1.LabelSelectorOpExists, nil
	default: // Gt, Lt: no LabelSelector operator negates them
		return nil, nil
	}
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: r.Key(), Operator: op, Values: values}}}, nil
}

// Registrar creates, updates and deletes the guard's webhook object
// through REST clients whose scheme knows admissionregistration/v1 and
// rbac/v1 only (the clientset would link every API group).
type Registrar struct {
	c    rest.Interface
	rbac rest.Interface
}

// NewRegistrar connects to the API server rc names.
func NewRegistrar(rc *rest.Config) (*Registrar, error) {
	cs, err := kubeclient.New(rc, admissionregv1.AddToScheme, rbacv1.AddToScheme)
	if err != nil {
		return nil, fmt.Errorf("admission client: %w", err)
	}
	c, err := cs.For(admissionregv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("admission client: %w", err)
	}
	rbac, err := cs.For(rbacv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("admission client: %w", err)
	}
	return &Registrar{c: c, rbac: rbac}, nil
}

// OwnedBy makes vwc a dependent of ClusterRole name, so that deleting the
// role deletes the registration too (the garbage collector does, in the
// background). The reference does not block the role's deletion.
func (r *Registrar) OwnedBy(ctx context.Context, vwc *admissionregv1.ValidatingWebhookConfiguration, name string) error {
	role := &rbacv1.ClusterRole{}
	if err := r.rbac.Get().Resource("clusterroles").Name(name).Do(ctx).Into(role); err != nil {
		return fmt.Errorf("admission registration: owner clusterrole %s: %w", name, err)
	}
	vwc.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole", Name: role.Name, UID: role.UID,
	}}
	return nil
}

const vwcResource = "validatingwebhookconfigurations"

// specHashAnnotation holds a hash of the webhooks as built, so that the
// agents of every node applying the same object at start-up write it once
// instead of racing to replace it.
const specHashAnnotation = "harrier.io/webhook-hash"

// Apply creates vwc, or replaces the existing object of that name unless
// it already holds these webhooks. A conflicting concurrent write (another
// node's agent) is retried.
func (r *Registrar) Apply(ctx context.Context, vwc *admissionregv1.ValidatingWebhookConfiguration) error {
	// The owner is part of what is compared: a reinstall makes a new role.
	spec, err := json.Marshal(struct {
		Webhooks []admissionregv1.ValidatingWebhook
		Owners   []metav1.OwnerReference
	}{vwc.Webhooks, vwc.OwnerReferences})
	if err != nil {
		return fmt.Errorf("validatingwebhookconfiguration %s: %w", vwc.Name, err)
	}
	sum := sha256.Sum256(spec)
	want := vwc.DeepCopy()
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	want.Annotations[specHashAnnotation] = hex.EncodeToString(sum[:])
	for attempt := 0; ; attempt++ {
		err := r.apply(ctx, want)
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) || attempt == 4 {
			return err
		}
	}
}

func (r *Registrar) apply(ctx context.Context, want *admissionregv1.ValidatingWebhookConfiguration) error {
	existing := &admissionregv1.ValidatingWebhookConfiguration{}
	err := r.c.Get().Resource(vwcResource).Name(want.Name).Do(ctx).Into(existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.c.Post().Resource(vwcResource).Body(want).Do(ctx).Error(); err != nil {
			return fmt.Errorf("create validatingwebhookconfiguration %s: %w", want.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get validatingwebhookconfiguration %s: %w", want.Name, err)
	}
	if existing.Annotations[specHashAnnotation] == want.Annotations[specHashAnnotation] {
		return nil
	}
	update := want.DeepCopy()
	update.ResourceVersion = existing.ResourceVersion
	if err := r.c.Put().Resource(vwcResource).Name(want.Name).Body(update).Do(ctx).Error(); err != nil {
		return fmt.Errorf("update validatingwebhookconfiguration %s: %w", want.Name, err)
	}
	return nil
}

// Get returns the webhook object called name.
func (r *Registrar) Get(ctx context.Context, name string) (*admissionregv1.ValidatingWebhookConfiguration, error) {
	out := &admissionregv1.ValidatingWebhookConfiguration{}
	if err := r.c.Get().Resource(vwcResource).Name(name).Do(ctx).Into(out); err != nil {
		return nil, fmt.Errorf("get validatingwebhookconfiguration %s: %w", name, err)
	}
	return out, nil
}

// Delete removes the webhook object called name (on disable or
// uninstall); one that is already gone is not an error.
func (r *Registrar) Delete(ctx context.Context, name string) error {
	err := r.c.Delete().Resource(vwcResource).Name(name).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete validatingwebhookconfiguration %s: %w", name, err)
	}
	return nil
}

// Register builds the webhook object from cfg and applies it.
func Register(ctx context.Context, rc *rest.Config, cfg Config, caBundle []byte) error {
	vwc, err := WebhookConfiguration(cfg, caBundle)
	if err != nil {
		return err
	}
	r, err := NewRegistrar(rc)
	if err != nil {
		return err
	}
	if cfg.OwnerClusterRole != "" {
		if err := r.OwnedBy(ctx, vwc, cfg.OwnerClusterRole); err != nil {
			return err
		}
	}
	return r.Apply(ctx, vwc)
}

// Unregister deletes the webhook object cfg names (default
// "harrier-admission").
func Unregister(ctx context.Context, rc *rest.Config, cfg Config) error {
	r, err := NewRegistrar(rc)
	if err != nil {
		return err
	}
	return r.Delete(ctx, cfg.WithDefaults().WebhookName)
}
