#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kubectl) from the Go
# module proxy into a cache outside the repository, keyed by version, and
# prints the directory. A warm cache returns at once; a cold build takes about
# 10 minutes on 2 cores (kube-apiserver dominates).
#
#   HARRIER_KUBE_CACHE  cache root (default /var/cache/harrier-test, or
#                       $XDG_CACHE_HOME/harrier-test when not root)
#
# internal/kubetest finds the binaries through the same layout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
go="${GO:-go}"

. "$here/lib.sh"
kube_version="$(required k8s.io/kubernetes "$here/k8s/go.mod")"
etcd_version="$(required go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")"
if [ -z "$kube_version" ] || [ -z "$etcd_version" ]; then
	echo "build.sh: cannot read the versions from $here/*/go.mod" >&2
	exit 1
fi

root="$(cache_root)"
kdir="$root/kube-$kube_version"
edir="$root/etcd-$etcd_version"

if [ ! -x "$edir/etcd" ]; then
	echo "building etcd $etcd_version into $edir" >&2
	mkdir -p "$edir"
	(cd "$here/etcd" && CGO_ENABLED=0 "$go" build -trimpath -ldflags="-s -w" -o "$edir/etcd.tmp" .)
	mv "$edir/etcd.tmp" "$edir/etcd"
fi
if ! stamped "$kdir/kube-apiserver" "$kube_version" || [ ! -x "$kdir/kubectl" ]; then
	echo "building kube-apiserver and kubectl $kube_version into $kdir" >&2
	mkdir -p "$kdir/tmp"
	(cd "$here/k8s" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "$(kube_ldflags "$kube_version")" -o "$kdir/tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
	mv "$kdir/tmp/kube-apiserver" "$kdir/tmp/kubectl" "$kdir/"
	rmdir "$kdir/tmp"
fi
echo "$root"
