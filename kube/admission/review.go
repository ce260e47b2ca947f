package admission

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
)

// errUnchecked marks objects the guard has nothing to say about (kinds
// without a pod spec); they are admitted.
var errUnchecked = errors.New("not a pod or workload")

// DecodeReview parses an admission.k8s.io/v1 AdmissionReview request: the
// envelope must name the group and kind, and carry a request with a UID
// (the response must echo it).
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("admission review: %w", err)
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("admission review: apiVersion %q kind %q, want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, errors.New("admission review: no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("admission review: request has no uid")
	}
	return &review, nil
}

// podSource is the part of an object the checks read.
type podSource struct {
	meta metav1.ObjectMeta // the object's own metadata
	// tmpl is the pod template's metadata (the object's for a Pod).
	tmpl metav1.ObjectMeta
	spec *corev1.PodSpec
	ref  *api.ObjectRef
}

// The shapes decoded per kind: only metadata and the path to the pod
// template, so neither apps/v1 nor batch/v1 is linked.
type (
	podObject struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     *corev1.PodSpec   `json:"spec"`
	}
	templateObject struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     *struct {
			Template *corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	cronJobObject struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     *struct {
			JobTemplate *struct {
				Spec *struct {
					Template *corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			} `json:"jobTemplate"`
		} `json:"spec"`
	}
)

// podShape says where the pod spec of a kind is ("" for kinds without
// one). Any version: the pod template sits at the same path in each.
func podShape(group, kind string) string {
	switch {
	case group == "" && kind == "Pod":
		return "pod"
	case group == "apps" && (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet"),
		group == "batch" && kind == "Job":
		return "template"
	case group == "batch" && kind == "CronJob":
		return "cronjob"
	}
	return ""
}

// decodeObject extracts the pod spec of req's object. It returns
// errUnchecked for other kinds, and an error for an object of a checked
// kind that does not decode or has no pod spec.
func decodeObject(req *admissionv1.AdmissionRequest) (*podSource, error) {
	shape := podShape(req.Kind.Group, req.Kind.Kind)
	if shape == "" {
		return nil, errUnchecked
	}
	raw := req.Object.Raw
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("%s %s/%s: request has no object", req.Kind.Kind, req.Namespace, req.Name)
	}
	src := &podSource{}
	var err error
	switch shape {
	case "pod":
		var o podObject
		if err = json.Unmarshal(raw, &o); err == nil {
			src.meta, src.tmpl, src.spec = o.Metadata, o.Metadata, o.Spec
		}
	case "template":
		var o templateObject
		if err = json.Unmarshal(raw, &o); err == nil {
			src.meta = o.Metadata
			if o.Spec != nil && o.Spec.Template != nil {
				src.tmpl, src.spec = o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
			}
		}
	case "cronjob":
		var o cronJobObject
		if err = json.Unmarshal(raw, &o); err == nil {
			src.meta = o.Metadata
			if s := o.Spec; s != nil && s.JobTemplate != nil && s.JobTemplate.Spec != nil && s.JobTemplate.Spec.Template != nil {
				t := s.JobTemplate.Spec.Template
				src.tmpl, src.spec = t.ObjectMeta, &t.Spec
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", req.Kind.Kind, req.Namespace, req.Name, err)
	}
	if src.spec == nil {
		return nil, fmt.Errorf("%s %s/%s: no pod spec in the object", req.Kind.Kind, req.Namespace, req.Name)
	}
	// On CREATE with generateName the name is not yet set, and the
	// namespace may only be in the request.
	if src.meta.Namespace == "" {
		src.meta.Namespace = req.Namespace
	}
	if src.tmpl.Namespace == "" {
		src.tmpl.Namespace = src.meta.Namespace
	}
	name := src.meta.Name
	if name == "" {
		name = req.Name
	}
	if name == "" {
		name = src.meta.GenerateName
	}
	apiVersion := req.Kind.Version
	if req.Kind.Group != "" {
		apiVersion = req.Kind.Group + "/" + req.Kind.Version
	}
	src.ref = &api.ObjectRef{ApiVersion: apiVersion, Kind: req.Kind.Kind, Namespace: src.meta.Namespace,
		Name: name, Uid: string(src.meta.UID)}
	return src, nil
}
