#!/usr/bin/env bash
# Builds the scale-out tests' nats-server from the Go module proxy into the
# test cache, keyed by its version and this module's go.sum, and prints the
# binary's path. A warm cache returns at once; cold, on 2 shared cores, the
# build takes about a minute.
#
#   HARRIER_KUBE_CACHE  cache root (default /var/cache/harrier-test, or
#                       $XDG_CACHE_HOME/harrier-test when not root), shared
#                       with ../kubeapi/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
go="${GO:-go}"

. "$here/../kubeapi/lib.sh"
version="$(required github.com/nats-io/nats-server/v2 "$here/go.mod")"
if [ -z "$version" ]; then
	echo "build.sh: cannot read nats-server's version from $here/go.mod" >&2
	exit 1
fi
root="$(cache_root)"
key="$version-$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
dir="$root/nats-server-$key"
if [ ! -x "$dir/nats-server" ]; then
	echo "building nats-server $version into $dir" >&2
	mkdir -p "$dir"
	(cd "$here" && CGO_ENABLED=0 "$go" build -trimpath -ldflags="-s -w" -o "$dir/nats-server.tmp" github.com/nats-io/nats-server/v2)
	mv "$dir/nats-server.tmp" "$dir/nats-server"
fi
echo "$dir/nats-server"
