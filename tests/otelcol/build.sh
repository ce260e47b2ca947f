#!/usr/bin/env bash
# Builds the exports tests' OpenTelemetry Collector (./main.go: the OTLP
# receiver and the file exporter only) from the Go module proxy into the
# test cache, keyed by the collector's version and this module's source,
# and prints the binary's path. A warm cache returns at once; cold, on 2
# shared cores, the build takes a few minutes.
#
#   HARRIER_KUBE_CACHE  cache root (default /var/cache/harrier-test, or
#                       $XDG_CACHE_HOME/harrier-test when not root), shared
#                       with ../kubeapi/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
go="${GO:-go}"

. "$here/../kubeapi/lib.sh"
version="$(required go.opentelemetry.io/collector/otelcol "$here/go.mod")"
if [ -z "$version" ]; then
	echo "build.sh: cannot read the collector's version from $here/go.mod" >&2
	exit 1
fi
root="$(cache_root)"
# Keyed by the source too: main.go chooses the components.
key="$version-$(cat "$here/go.mod" "$here/go.sum" "$here"/*.go | sha256sum | cut -c1-12)"
dir="$root/otelcol-$key"
if [ ! -x "$dir/otelcol" ]; then
	echo "building the OpenTelemetry Collector $version into $dir" >&2
	mkdir -p "$dir"
	(cd "$here" && CGO_ENABLED=0 "$go" build -trimpath -ldflags="-s -w" -o "$dir/otelcol.tmp" .)
	mv "$dir/otelcol.tmp" "$dir/otelcol"
fi
echo "$dir/otelcol"
