# Sourced by build.sh here and by ../cluster/*.sh.

# The version a go.mod requires module $1 at.
required() { awk -v m="$1" '{for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v[0-9]/) {print $(i+1); exit}}' "$2"; }

# kube_ldflags VERSION: the version stamp Kubernetes' own build (hack/lib/
# version.sh) links in. Without it the binaries call themselves
# v0.0.0-master, and clients that check the server's version (Helm's
# kubeVersion, kubectl's skew warning) refuse or complain.
kube_ldflags() {
	local v="$1" major minor p
	major="${v#v}"
	major="${major%%.*}"
	minor="${v#v*.}"
	minor="${minor%%.*}"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
			"$p" "$v" "$p" "$major" "$p" "$minor" "$p"
	done
	# No symbol table or DWARF: test binaries, and a shorter cold link.
	printf -- '-s -w'
}

# stamped BINARY VERSION: the binary exists and says it is VERSION (a cache
# filled before the stamp was added is rebuilt; only the link step reruns).
stamped() { [ -x "$1" ] && [ "$("$1" --version 2>/dev/null)" = "Kubernetes $2" ]; }

# cache_root: where the test tools are built once and kept, by version:
# HARRIER_KUBE_CACHE, else /var/cache/harrier-test for root, else the
# user's cache directory.
cache_root() {
	if [ -n "${HARRIER_KUBE_CACHE:-}" ]; then
		echo "$HARRIER_KUBE_CACHE"
	elif [ "$(id -u)" = 0 ]; then
		echo /var/cache/harrier-test
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/harrier-test"
	fi
}
