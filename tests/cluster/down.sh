#!/usr/bin/env bash
# Tears down what up.sh brought up and leaves the machine as it found it: no
# processes, mounts, interfaces, iptables chains or cgroups of the cluster,
# the kubelet's kernel settings restored, and the fixed directories the
# kubelet and containerd made removed. Safe to run when nothing is up, and
# after a half-finished up.sh.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
dir="$cluster_dir"

[ "$(id -u)" = 0 ] || { echo "down.sh: needs root" >&2; exit 1; }
failed=0
warn() { echo "down.sh: $*" >&2; failed=1; }

# The kubelet first, so nothing restarts what follows stops.
stop kubelet
sock="$dir/run/containerd.sock"
tool="$(cat "$dir/clustertool-path" 2>/dev/null)"
if [ -S "$sock" ] && [ -n "$tool" ]; then
	# Every pod's sandbox stopped and removed through the CRI: containers
	# killed, CNI DEL (veth, IPAM), network namespace and shm unmounted.
	"$tool" cri-reset -socket "$sock" || warn "cri-reset failed"
fi
stop kube-proxy
stop containerd
# Shims whose containerd is gone (after a crash) still name its socket.
for p in /proc/[0-9]*; do
	if grep -qF -- "$sock" "$p/cmdline" 2>/dev/null; then kill -KILL "${p#/proc/}" 2>/dev/null; fi
done
stop kube-scheduler
stop kube-controller-manager
# The API server would spend its grace period flushing audit batches to a
# webhook that may never have answered; its state dies with etcd's anyway.
stop kube-apiserver 2
stop etcd 1

# Mounts under the state directory, deepest first (volumes of pods the
# kubelet had no time to unmount, overlay rootfs, netns, shm).
if [ -d "$dir" ]; then
	findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || warn "cannot unmount $m"
	done
fi

# iptables: rules in the built-in chains that jump to the cluster's chains,
# then the chains themselves (kube-proxy's, the kubelet's, CNI portmap's and
# up.sh's own), in every table, IPv4 and IPv6.
for ipt in iptables ip6tables; do
	command -v "$ipt" >/dev/null || continue
	for table in filter nat mangle raw; do
		rules="$("$ipt" -t "$table" -S 2>/dev/null)" || continue
		echo "$rules" | awk -v p="$chain_pattern" '$1 == "-A" && $2 !~ p && ($0 ~ "-j (KUBE-|CNI-|HARRIER-CLUSTER)")' |
			while read -r line; do
				# shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
				eval "$ipt -t $table -D ${line#-A }" || warn "$ipt -t $table: cannot delete: $line"
			done
		chains="$(echo "$rules" | awk -v p="$chain_pattern" '$1 == "-N" && $2 ~ p {print $2}')"
		for c in $chains; do "$ipt" -t "$table" -F "$c"; done
		for c in $chains; do "$ipt" -t "$table" -X "$c" || warn "$ipt -t $table: cannot delete chain $c"; done
	done
done

# Pod interfaces go with their network namespaces; the bridge (and its route
# and forwarding setting) with this.
if ip link show "$bridge" >/dev/null 2>&1; then ip link del "$bridge" || warn "cannot delete $bridge"; fi

if [ -f "$dir/host-state" ]; then
	# The cgroups the kubelet made (cgroupfs driver, one tree per v1 hierarchy).
	for c in /sys/fs/cgroup/*/kubepods; do
		[ -d "$c" ] || continue
		grep -qxF "existed $c" "$dir/host-state" && continue
		find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
		[ -d "$c" ] && warn "cannot remove cgroup $c"
	done
	while read -r kind a b; do
		[ "$kind" = sysctl ] && { sysctl -qw "$a=$b" || warn "cannot restore $a=$b"; }
	done <"$dir/host-state"
	# containerd's state (shared with other users of /run/containerd):
	# mounts under it (rootfs, netns, shm), then what was not there before,
	# deepest first.
	if [ -d "$containerd_state" ]; then
		findmnt -rn -o TARGET | awk -v d="$containerd_state/" 'index($0, d) == 1' | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" || warn "cannot unmount $m"
		done
		find "$containerd_state" -mindepth 1 -maxdepth 2 | sort -r | while read -r p; do
			grep -qxF "state $p" "$dir/host-state" || rm -rf "$p" || warn "cannot remove $p"
		done
	fi
	for d in $fixed_dirs; do
		grep -qxF "existed $d" "$dir/host-state" && continue
		[ -e "$d" ] || continue
		if [ "$d" = "$containerd_state" ]; then
			rmdir "$containerd_state" 2>/dev/null
			continue
		fi
		if findmnt -rn -o TARGET | grep -q "^$d/"; then warn "mounts left under $d"; continue; fi
		rm -rf "$d"
	done
fi

if [ -d "$dir" ] && ! findmnt -rn -o TARGET | grep -q "^$dir/"; then
	rm -rf "$dir"
fi
exit "$failed"
