package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/kube/kubeclient"
)

// kubeClient reaches the API server with REST clients whose scheme holds
// core/v1, networking/v1 and discovery/v1 only (see package kubeclient).
type kubeClient struct {
	core, networking, discovery rest.Interface
	params                      runtime.ParameterCodec
}

func newKubeClient(rc *rest.Config) (*kubeClient, error) {
	cs, err := kubeclient.New(rc, corev1.AddToScheme, networkingv1.AddToScheme, discoveryv1.AddToScheme)
	if err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	k := &kubeClient{params: cs.Params}
	for _, c := range []struct {
		gv     schema.GroupVersion
		client *rest.Interface
	}{{corev1.SchemeGroupVersion, &k.core}, {networkingv1.SchemeGroupVersion, &k.networking}, {discoveryv1.SchemeGroupVersion, &k.discovery}} {
		if *c.client, err = cs.For(c.gv); err != nil {
			return nil, fmt.Errorf("simulate: %w", err)
		}
	}
	return k, nil
}

// kubeObject is an object the simulator creates.
type kubeObject interface {
	runtime.Object
	metav1.Object
}

// resourceOf names the REST resource of obj and the client that serves it.
func (k *kubeClient) resourceOf(obj runtime.Object) (rest.Interface, string, error) {
	switch obj.(type) {
	case *corev1.Namespace:
		return k.core, "namespaces", nil
	case *corev1.ServiceAccount:
		return k.core, "serviceaccounts", nil
	case *corev1.ConfigMap:
		return k.core, "configmaps", nil
	case *corev1.Service:
		return k.core, "services", nil
	case *corev1.Pod:
		return k.core, "pods", nil
	case *networkingv1.NetworkPolicy:
		return k.networking, "networkpolicies", nil
	}
	return nil, "", fmt.Errorf("simulate: no resource for %T", obj)
}

// create creates obj and fills it with what the API server returned.
func (k *kubeClient) create(ctx context.Context, obj kubeObject) error {
	c, res, err := k.resourceOf(obj)
	if err != nil {
		return err
	}
	req := c.Post().Resource(res)
	if ns := obj.GetNamespace(); ns != "" && res != "namespaces" {
		req = req.Namespace(ns)
	}
	if err := req.Body(obj).Do(ctx).Into(obj); err != nil {
		return fmt.Errorf("create %s %s: %w", res, obj.GetName(), err)
	}
	return nil
}

func (k *kubeClient) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	err := k.core.Get().Namespace(ns).Resource("pods").Name(name).Do(ctx).Into(p)
	return p, err
}

func (k *kubeClient) getService(ctx context.Context, ns, name string) (*corev1.Service, error) {
	s := &corev1.Service{}
	err := k.core.Get().Namespace(ns).Resource("services").Name(name).Do(ctx).Into(s)
	return s, err
}

// endpointSlices lists the EndpointSlices of Service ns/name.
func (k *kubeClient) endpointSlices(ctx context.Context, ns, name string) (*discoveryv1.EndpointSliceList, error) {
	l := &discoveryv1.EndpointSliceList{}
	opts := &metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name}
	err := k.discovery.Get().Namespace(ns).Resource("endpointslices").VersionedParams(opts, k.params).Do(ctx).Into(l)
	return l, err
}

func (k *kubeClient) listNamespaces(ctx context.Context, selector string) (*corev1.NamespaceList, error) {
	l := &corev1.NamespaceList{}
	err := k.core.Get().Resource("namespaces").VersionedParams(&metav1.ListOptions{LabelSelector: selector}, k.params).Do(ctx).Into(l)
	return l, err
}

// followLog streams a container's log as it is written.
func (k *kubeClient) followLog(ctx context.Context, ns, pod, container string) (io.ReadCloser, error) {
	return k.core.Get().Namespace(ns).Resource("pods").Name(pod).SubResource("log").
		VersionedParams(&corev1.PodLogOptions{Container: container, Follow: true}, k.params).Stream(ctx)
}

// deleteNamespace removes what the simulator labelled in ns, then ns
// itself (foreground propagation). Objects already gone are fine.
func (k *kubeClient) deleteNamespace(ctx context.Context, ns string) error {
	grace := int64(1)
	list := metav1.ListOptions{LabelSelector: managedBySelector}
	var errs []error
	for _, r := range []struct {
		c   rest.Interface
		res string
	}{{k.core, "pods"}, {k.core, "services"}, {k.core, "configmaps"}, {k.core, "serviceaccounts"}, {k.networking, "networkpolicies"}} {
		err := r.c.Delete().Namespace(ns).Resource(r.res).VersionedParams(&list, k.params).
			Body(&metav1.DeleteOptions{GracePeriodSeconds: &grace}).Do(ctx).Error()
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s in %s: %w", r.res, ns, err))
		}
	}
	fg := metav1.DeletePropagationForeground
	err := k.core.Delete().Resource("namespaces").Name(ns).Body(&metav1.DeleteOptions{PropagationPolicy: &fg}).Do(ctx).Error()
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean-up of namespace %s: %w", ns, errors.Join(errs...))
	}
	return nil
}
