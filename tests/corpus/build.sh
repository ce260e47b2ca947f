#!/usr/bin/env bash
# Builds the benign corpus's root filesystem layer from Debian packages and
# prints its path. The packages below and every package they depend on are
# fetched with apt (from the mirror this machine's sources name, as
# `make deps` uses) and unpacked with `dpkg -x`: no maintainer scripts run,
# nothing is installed on the host. The layer is kept in the test cache
# under a name keyed by the package list and the exact versions apt chose,
# so a warm cache downloads nothing and a point release builds a new one.
#
# The layer has no shell and no /bin applets of its own: the tests stack it
# under internal/ocirun's busybox layer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../kubeapi/lib.sh"

packages=(nginx-light redis-server redis-tools gcc libc6-dev make logrotate postgresql-15 postgresql-client-15)

root="$(cache_root)"
# The versions apt would take, without downloading: the cache key.
versions="$(apt-cache policy "${packages[@]}" | awk '/^[^ ]/ {p=$1} /Candidate:/ {print p, $2}')"
key="$(printf '%s\n%s\n%s\n' "$(sha256sum "$0" | cut -c1-12)" "${packages[*]}" "$versions" | sha256sum | cut -c1-12)"
dir="$root/corpus-$key"
if [ -f "$dir/.complete" ]; then
	echo "$dir/rootfs"
	exit 0
fi

echo "building the benign corpus layer into $dir (${packages[*]})" >&2
rm -rf "$dir"
mkdir -p "$dir/debs/partial" "$dir/state"
# An empty dpkg status: apt resolves the packages' whole dependency closure
# as if nothing were installed, and downloads it into the cache directory
# only (the host's archive cache and dpkg database are not touched).
: >"$dir/state/status"
apt-get -q -y --no-install-recommends \
	-o Dir::State::status="$dir/state/status" \
	-o Dir::Cache::archives="$dir/debs" \
	-o Debug::NoLocking=1 \
	install --download-only "${packages[@]}" >&2
mkdir -p "$dir/rootfs.tmp"
for deb in "$dir"/debs/*.deb; do
	dpkg -x "$deb" "$dir/rootfs.tmp"
done
ls "$dir"/debs/*.deb | xargs -n1 basename >"$dir/packages.txt"
rm -rf "$dir/debs" "$dir/state"
mv "$dir/rootfs.tmp" "$dir/rootfs"
touch "$dir/.complete"
echo "$dir/rootfs"
