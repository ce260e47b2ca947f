#!/usr/bin/env bash
# Builds everything the test cluster runs that Debian does not ship, into the
# version-keyed cache tests/kubeapi/build.sh already fills, and prints the
# cache root. A warm cache returns at once.
#
#   kube-<version>/      etcd's sibling: kube-apiserver, kubectl (../kubeapi/build.sh),
#                        kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                        (the same k8s.io/kubernetes module, ../kubeapi/k8s)
#   coredns-<version>-<hash>/  coredns (./coredns: the plugins the cluster uses)
#   helm-<version>/      helm (the CLI of ../../packaging's helm.sh/helm/v4)
#   clustertool-<hash>/  clustertool (./tool), keyed by its source
#   cluster-images/      Docker archives: pause-<hash>.tar (./images/pause.c),
#                        busybox-<deb version>.tar, coredns-<version>-<hash>.tar
#
# Cold, on 2 shared cores, the node binaries take about 15 minutes after the
# API server's build and CoreDNS about 10.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
go="${GO:-go}"

root="$(GO="$go" "$here/../kubeapi/build.sh")"

. "$here/lib.sh"
cache_paths

missing=()
for b in kube-controller-manager kube-scheduler kubelet kube-proxy; do
	stamped "$kdir/$b" "$kube_version" || missing+=("k8s.io/kubernetes/cmd/$b")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "building ${missing[*]##*/} $kube_version into $kdir" >&2
	mkdir -p "$kdir/tmp-node"
	(cd "$here/../kubeapi/k8s" && CGO_ENABLED=0 "$go" build -trimpath -ldflags "$(kube_ldflags "$kube_version")" -o "$kdir/tmp-node/" "${missing[@]}")
	mv "$kdir"/tmp-node/* "$kdir/"
	rmdir "$kdir/tmp-node"
fi

if [ ! -x "$cdir/coredns" ]; then
	echo "building coredns $coredns_version into $cdir" >&2
	mkdir -p "$cdir"
	(cd "$here/coredns" && CGO_ENABLED=0 "$go" build -trimpath -ldflags="-s -w" -o "$cdir/coredns.tmp" .)
	mv "$cdir/coredns.tmp" "$cdir/coredns"
fi

# The Helm CLI operators install the chart with, at the version of the SDK
# packaging/ renders it with (a tool of that module).
if [ ! -x "$hdir/helm" ]; then
	echo "building helm $helm_version into $hdir" >&2
	mkdir -p "$hdir"
	(cd "$here/../../packaging" && CGO_ENABLED=0 "$go" build -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version" -o "$hdir/helm.tmp" helm.sh/helm/v4/cmd/helm)
	mv "$hdir/helm.tmp" "$hdir/helm"
fi

if [ ! -x "$tdir/clustertool" ]; then
	echo "building clustertool into $tdir" >&2
	mkdir -p "$tdir"
	(cd "$here/tool" && CGO_ENABLED=0 "$go" build -trimpath -o "$tdir/clustertool.tmp" .)
	mv "$tdir/clustertool.tmp" "$tdir/clustertool"
fi

mkdir -p "$idir"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

if [ ! -s "$pause_tar" ]; then
	echo "building the pause image" >&2
	mkdir -p "$scratch/pause"
	gcc -static -Os -Wall -Wextra -Werror -o "$scratch/pause/pause" "$here/images/pause.c"
	strip "$scratch/pause/pause"
	"$tdir/clustertool" image -ref "$pause_ref" -rootfs "$scratch/pause" \
		-entrypoint /pause -out "$pause_tar"
fi

if [ ! -s "$busybox_tar" ]; then
	echo "building the busybox image" >&2
	mkdir -p "$scratch/busybox/bin" "$scratch/busybox/tmp" "$scratch/busybox/etc"
	chmod 1777 "$scratch/busybox/tmp"
	cp /bin/busybox "$scratch/busybox/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[ "$applet" = busybox ] || ln -s busybox "$scratch/busybox/bin/$applet"
	done
	# busybox wget does https through `openssl s_client` when there is one;
	# its own TLS client cannot complete a handshake with the Go API server
	# (the simulator's recon step asks it with the pod's token).
	for f in /usr/bin/openssl $(ldd /usr/bin/openssl | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}'); do
		mkdir -p "$scratch/busybox$(dirname "$f")"
		cp -L "$f" "$scratch/busybox$f"
	done
	printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$scratch/busybox/etc/passwd"
	printf 'root:x:0:\nnobody:x:65534:\n' >"$scratch/busybox/etc/group"
	"$tdir/clustertool" image -ref "$busybox_ref" -rootfs "$scratch/busybox" \
		-cmd /bin/sh -out "$busybox_tar"
fi

if [ ! -s "$coredns_tar" ]; then
	echo "building the coredns image" >&2
	mkdir -p "$scratch/coredns"
	cp "$cdir/coredns" "$scratch/coredns/coredns"
	"$tdir/clustertool" image -ref "$coredns_ref" -rootfs "$scratch/coredns" \
		-entrypoint /coredns -out "$coredns_tar"
fi

echo "$root"
