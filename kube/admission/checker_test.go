package admission

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harrier-sec/harrier/api"
)

// testChecker is a small real checker (privileged containers, hostPath
// volumes) standing in for the posture package in these tests.
type testChecker struct {
	delay time.Duration // sleep first: a checker slower than the budget
	panic bool
}

func (c testChecker) CheckPodSpec(meta metav1.ObjectMeta, spec *corev1.PodSpec, ref *api.ObjectRef) []*api.Finding {
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	if c.panic {
		panic("checker bug")
	}
	var out []*api.Finding
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, e := range spec.EphemeralContainers {
		all = append(all, corev1.Container{Name: e.Name, SecurityContext: e.SecurityContext})
	}
	for _, ctr := range all {
		if sc := ctr.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			out = append(out, &api.Finding{CheckId: "pss-privileged", Title: "Privileged container",
				Severity: api.Severity_SEVERITY_HIGH, Category: "pod-security", Object: ref, Container: ctr.Name,
				Detail: "securityContext.privileged: true", Remediation: "set securityContext.privileged to false"})
		}
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			out = append(out, &api.Finding{CheckId: "pss-host-path", Title: "hostPath volume",
				Severity: api.Severity_SEVERITY_MEDIUM, Category: "pod-security", Object: ref,
				Detail: "volume " + v.Name + " mounts host path " + v.HostPath.Path, Remediation: "use a PersistentVolumeClaim or emptyDir"})
		}
	}
	return out
}
