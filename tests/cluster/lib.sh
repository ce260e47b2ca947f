# Sourced by build.sh, up.sh and down.sh: where things are. Needs $here (this
# directory) and $root (the cache root ../kubeapi/build.sh prints).

# required, kube_ldflags, stamped
. "$here/../kubeapi/lib.sh"

cache_paths() {
	kube_version="$(required k8s.io/kubernetes "$here/../kubeapi/k8s/go.mod")"
	etcd_version="$(required go.etcd.io/etcd/server/v3 "$here/../kubeapi/etcd/go.mod")"
	coredns_version="$(required github.com/coredns/coredns "$here/coredns/go.mod")"
	helm_version="$(required helm.sh/helm/v4 "$here/../../packaging/go.mod")"
	hdir="$root/helm-$helm_version"
	kdir="$root/kube-$kube_version"
	edir="$root/etcd-$etcd_version"
	# Keyed by the source too: main.go chooses the plugins.
	coredns_key="$coredns_version-$(cat "$here"/coredns/go.mod "$here"/coredns/go.sum "$here"/coredns/*.go | sha256sum | cut -c1-12)"
	cdir="$root/coredns-$coredns_key"
	tdir="$root/clustertool-$(cat "$here"/tool/go.mod "$here"/tool/go.sum "$here"/tool/*.go | sha256sum | cut -c1-12)"
	idir="$root/cluster-images"
	local pause_hash busybox_version
	pause_hash="$(sha256sum "$here/images/pause.c" | cut -c1-12)"
	busybox_version="$(dpkg-query -W -f='${Version}' busybox-static | tr -c 'A-Za-z0-9_.\n-' _)"
	pause_ref="harrier.test/pause:$pause_hash"
	pause_tar="$idir/pause-$pause_hash.tar"
	busybox_ref="harrier.test/busybox:$busybox_version"
	# With the host's openssl, which busybox wget uses for https (see build.sh).
	busybox_tar="$idir/busybox-$busybox_version-openssl-$(dpkg-query -W -f='${Version}' openssl | tr -c 'A-Za-z0-9_.\n-' _).tar"
	coredns_ref="harrier.test/coredns:$coredns_key"
	coredns_tar="$idir/coredns-$coredns_key.tar"
}

# The cluster's state: every file, mount and socket it makes is under $dir
# (HARRIER_CLUSTER_DIR), except what the kubelet and containerd make at
# fixed places, which up.sh records and down.sh removes.
cluster_dir="${HARRIER_CLUSTER_DIR:-/var/lib/harrier-cluster}"
bridge=harrier0
node_ip=10.244.0.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/24
dns_ip=10.96.0.10
# The chart's auditWebhook.clusterIP for this cluster (the API server does
# not resolve cluster DNS names).
audit_ip=10.96.0.250
etcd_port=12379
# iptables chains matching this are the cluster's: kube-proxy's and the
# kubelet's (KUBE-), the CNI portmap plugin's (CNI-) and up.sh's own.
chain_pattern='^(KUBE-|CNI-|HARRIER-CLUSTER)'
# Kernel settings the kubelet changes (setupKernelTunables) and down.sh restores.
kubelet_sysctls="kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# Fixed places the kubelet (whatever --root-dir says) and containerd's shims
# write to; down.sh removes those that did not exist before up.sh.
# /var/lib/harrier is the chart's agent.spoolHostPath: the agent's spool,
# baselines and enrolled certificate on the node.
fixed_dirs="/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /var/lib/harrier"
# containerd's state directory is the default one of a real node, so that
# the chart's default (agent.containerdStateDir) finds the CRI bundles.
# Other users of /run/containerd may have left things there: up.sh records
# what is there (two levels deep) and down.sh removes only the rest.
containerd_state=/run/containerd

# start NAME COMMAND ARGS...: a daemon in its own session, logging to
# logs/NAME.log; down.sh stops it through run/NAME.pid.
start() {
	local name="$1"
	shift
	setsid "$@" >>"$cluster_dir/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$cluster_dir/run/$name.pid"
}

# wait_for WHAT SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
	local what="$1" deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "timed out waiting for $what; logs in $cluster_dir/logs" >&2
			exit 1
		fi
		sleep 0.5
	done
}

# stop NAME [SECONDS]: TERM, then KILL after SECONDS (default 20), the daemon
# started as NAME (only if the pid still runs what was started).
stop() {
	local pidfile="$cluster_dir/run/$1.pid" pid tenths=$((${2:-20} * 10))
	[ -f "$pidfile" ] || return 0
	pid="$(cat "$pidfile")"
	if [ -d "/proc/$pid" ] && grep -qF -- "$1" "/proc/$pid/cmdline" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq "$tenths"); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
		if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
	fi
	rm -f "$pidfile"
}
