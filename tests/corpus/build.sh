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

packages=(nginx-light redis-server redis-tools gcc libc6-dev make logrotate postgresql-15 postgresql-client-15 apt dpkg libc-bin diffutils golang-go systemd debianutils util-linux)

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
# Merge /bin, /sbin and /lib into /usr as Debian 12's usrmerge does (its
# maintainer scripts do not run here): the busybox layer stacked on top
# then owns /bin, and Debian's programs (GNU tar for dpkg-deb, ...) are
# found first in /usr/bin, as on a Debian system.
for d in bin sbin lib lib32 lib64 libx32; do
	if [ -d "$dir/rootfs.tmp/$d" ] && [ ! -L "$dir/rootfs.tmp/$d" ]; then
		mkdir -p "$dir/rootfs.tmp/usr/$d"
		cp -a "$dir/rootfs.tmp/$d/." "$dir/rootfs.tmp/usr/$d/"
		rm -rf "$dir/rootfs.tmp/$d"
		ln -s "usr/$d" "$dir/rootfs.tmp/$d"
	fi
done
ls "$dir"/debs/*.deb | xargs -n1 basename >"$dir/packages.txt"
# A small local package for `apt-get install` inside a container, in two
# versions for an upgrade: a program, a conffile and a postinst that
# records its state, the shape of most packages; 1.1 adds a preinst that
# runs on the upgrade and changes the program.
mkdir -p "$dir/rootfs.tmp/srv/debs"
for version in 1.0 1.1; do
	pkg="$dir/pkg/harrier-corpus-hello-$version"
	mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/etc/corpus-hello"
	printf 'Package: harrier-corpus-hello\nVersion: %s\nArchitecture: all\nMaintainer: Harrier tests <tests@harrier.invalid>\nDescription: benign corpus test package\n' "$version" >"$pkg/DEBIAN/control"
	printf '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n\tmkdir -p /var/lib/corpus-hello\n\techo "configured %s" >/var/lib/corpus-hello/state\nfi\n' "$version" >"$pkg/DEBIAN/postinst"
	if [ "$version" = 1.1 ]; then
		printf '#!/bin/sh\nset -e\nif [ "$1" = upgrade ]; then\n\tcp /var/lib/corpus-hello/state /var/lib/corpus-hello/state.before-upgrade\nfi\n' >"$pkg/DEBIAN/preinst"
		chmod 0755 "$pkg/DEBIAN/preinst"
	fi
	printf '#!/bin/sh\necho hello from the corpus package %s\n' "$version" >"$pkg/usr/bin/corpus-hello"
	printf 'greeting=hello\n' >"$pkg/etc/corpus-hello/hello.conf"
	echo /etc/corpus-hello/hello.conf >"$pkg/DEBIAN/conffiles"
	chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/usr/bin/corpus-hello"
	dpkg-deb --root-owner-group -b "$pkg" "$dir/rootfs.tmp/srv/debs/harrier-corpus-hello_${version}_all.deb" >&2
done
rm -rf "$dir/pkg"
# The same package as an apt repository (a flat one, "deb [trusted=yes]
# http://127.0.0.1:8081/ ./"), a directory per state of the archive:
# /srv/repo/1.0 has version 1.0, /srv/repo/1.1 both. The index is written
# here as dpkg-scanpackages would, from each package's control file.
for state in 1.0 1.1; do
	repo="$dir/rootfs.tmp/srv/repo/$state"
	mkdir -p "$repo"
	for version in 1.0 1.1; do
		if [ "$version" = 1.1 ] && [ "$state" = 1.0 ]; then continue; fi
		deb="harrier-corpus-hello_${version}_all.deb"
		cp "$dir/rootfs.tmp/srv/debs/$deb" "$repo/"
		{
			dpkg-deb -f "$repo/$deb"
			echo "Filename: ./$deb"
			echo "Size: $(stat -c %s "$repo/$deb")"
			echo "SHA256: $(sha256sum "$repo/$deb" | cut -d' ' -f1)"
			echo
		} >>"$repo/Packages"
	done
	gzip -9nk "$repo/Packages"
done
rm -rf "$dir/debs" "$dir/state"
mv "$dir/rootfs.tmp" "$dir/rootfs"
touch "$dir/.complete"
# Layers of older package sets or versions are not used again.
for old in "$root"/corpus-*; do
	[ "$old" = "$dir" ] || rm -rf "$old"
done
echo "$dir/rootfs"
