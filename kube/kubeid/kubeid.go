// Package kubeid parses the IDs a pod's container statuses carry. It is a
// leaf package, so that kube (the pod index) and kube/inventory can share
// it without importing each other.
package kubeid

import "strings"

// ContainerID strips the runtime scheme from a container status ID
// ("containerd://<id>", "cri-o://<id>", "docker://<id>").
func ContainerID(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		return s[i+3:]
	}
	return s
}

// ImageDigest is the digest part of a status imageID
// ("docker.io/library/nginx@sha256:...", "docker-pullable://...@sha256:...",
// "sha256:..."), or "".
func ImageDigest(imageID string) string {
	imageID = ContainerID(imageID)
	if i := strings.LastIndexByte(imageID, '@'); i >= 0 {
		return imageID[i+1:]
	}
	if strings.HasPrefix(imageID, "sha256:") {
		return imageID
	}
	return ""
}
