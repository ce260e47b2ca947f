#!/usr/bin/env bash
# Stops, starts or restarts the test cluster's kube-apiserver, as a
# control-plane node's admin would: to take the API server away from the
# agents (pod context must survive), or to load the audit webhook
# configuration placed in the cluster's harrier/ directory.
#
#   apiserver.sh stop|start|restart
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
dir="$cluster_dir"
[ "$(id -u)" = 0 ] || { echo "apiserver.sh: needs root" >&2; exit 1; }
[ -x "$dir/run/kube-apiserver.sh" ] || { echo "apiserver.sh: no cluster in $dir (make cluster-up)" >&2; exit 1; }

# ready: the API server answers /readyz, or has died (then its log says why).
ready() {
	local pid
	pid="$(cat "$dir/run/kube-apiserver.pid")"
	if [ ! -d "/proc/$pid" ]; then
		echo "apiserver.sh: kube-apiserver exited; the end of $dir/logs/kube-apiserver.log:" >&2
		tail -n 3 "$dir/logs/kube-apiserver.log" >&2
		exit 1
	fi
	curl -fsk --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" "https://$node_ip:6443/readyz"
}
up() {
	start kube-apiserver "$dir/run/kube-apiserver.sh"
	wait_for kube-apiserver 60 ready
}
case "${1:-}" in
stop) stop kube-apiserver 2 ;;
start) up ;;
restart) stop kube-apiserver 2; up ;;
*) echo "usage: apiserver.sh stop|start|restart" >&2; exit 2 ;;
esac
