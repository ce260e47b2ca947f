#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this machine for the tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
# (Debian's, with its own config, root, state and socket), the kubelet,
# kube-proxy and CoreDNS, every image imported from local archives. Prints
# the admin kubeconfig's path. down.sh takes it all away again.
#
# Network: the pods live on bridge harrier0 (10.244.0.1/24), made here; the
# API server and the kubelet listen on the bridge's address, everything else
# on loopback. Packets may be forwarded only from the bridge to the bridge,
# so no pod reaches, and no cluster component routes, any other address.
#
#   HARRIER_CLUSTER_DIR  state directory (default /var/lib/harrier-cluster)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
go="${GO:-go}"
. "$here/lib.sh"
dir="$cluster_dir"

[ "$(id -u)" = 0 ] || { echo "up.sh: needs root" >&2; exit 1; }
if [ -e "$dir" ]; then
	echo "up.sh: $dir exists; tearing the old cluster down first" >&2
	"$here/down.sh"
fi

# Debian packages the node needs beyond `make deps`.
missing=
for p in containerd runc containernetworking-plugins iptables conntrack busybox-static iproute2 openssl gcc libc6-dev curl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing Debian packages:$missing" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

root="$(GO="$go" "$here/build.sh")"
cache_paths

trap 'echo "up.sh failed: logs in $dir/logs; make cluster-down (tests/cluster/down.sh) cleans up" >&2' ERR
if [ -e /var/lib/harrier ]; then
	echo "up.sh: /var/lib/harrier exists (Harrier installed or run on this machine?): the test cluster's agent keeps its data there (the chart's spoolHostPath); move it away first" >&2
	exit 1
fi
if [ -S "$containerd_state/containerd.sock" ] && ctr --address "$containerd_state/containerd.sock" version >/dev/null 2>&1; then
	echo "up.sh: a containerd is running on $containerd_state/containerd.sock; the test cluster's needs that state directory: stop it first" >&2
	exit 1
fi
mkdir -p "$dir"/{pki,etcd,logs,run,harrier,kubelet,pod-logs,cni/net.d,cni/ipam,containerd/root,containerd/opt,volumes}
chmod 700 "$dir"

# What down.sh restores: the kernel settings the kubelet changes and which
# fixed directories existed before.
{
	for s in $kubelet_sysctls; do echo "sysctl $s $(sysctl -n "$s")"; done
	for d in $fixed_dirs; do [ -e "$d" ] && echo "existed $d"; done
	for c in /sys/fs/cgroup/*/kubepods; do [ -e "$c" ] && echo "existed $c"; done
	[ -d "$containerd_state" ] && find "$containerd_state" -mindepth 1 -maxdepth 2 -printf 'state %p\n'
	true
} >"$dir/host-state"

echo "$tdir/clustertool" >"$dir/clustertool-path"
echo "$hdir/helm" >"$dir/helm-path"
node="$(hostname | tr 'A-Z' 'a-z')"
echo "$node" >"$dir/node-name"

# --- network --------------------------------------------------------------
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
# Service addresses are reached from the host through the bridge (kube-proxy
# rewrites them to pod addresses); one without endpoints dies there instead
# of following the default route.
ip route add "$service_cidr" dev "$bridge" src "$node_ip"
# Forwarding on the bridge only (the CNI bridge plugin would turn on
# net.ipv4.ip_forward for every interface, hence isGateway: false below).
sysctl -qw "net.ipv4.conf.$bridge.forwarding=1"
iptables -N HARRIER-CLUSTER
iptables -A HARRIER-CLUSTER -i "$bridge" -o "$bridge" -j ACCEPT
iptables -A HARRIER-CLUSTER -i "$bridge" -j DROP
iptables -A HARRIER-CLUSTER -o "$bridge" -j DROP
iptables -I FORWARD 1 -j HARRIER-CLUSTER

# --- certificates ---------------------------------------------------------
pki="$dir/pki"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj "/CN=harrier-test-cluster-ca" -addext basicConstraints=critical,CA:TRUE \
	-addext keyUsage=critical,keyCertSign,cRLSign -keyout "$pki/ca.key" -out "$pki/ca.crt"
# issue NAME CN [O] [SANs]
# (KEY: newkey argument, default an EC P-256 key)
issue() {
	local name="$1" cn="$2" o="${3:-}" san="${4:-}" subj="/CN=$2"
	[ -n "$o" ] && subj="/O=$o/CN=$cn"
	# shellcheck disable=SC2086
	openssl_quiet req -newkey ${KEY:-ec -pkeyopt ec_paramgen_curve:P-256} -nodes -subj "$subj" \
		-keyout "$pki/$name.key" -out "$pki/$name.csr"
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"; else echo "extendedKeyUsage=clientAuth"; fi
	} >"$pki/$name.ext"
	openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
		-days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
	rm "$pki/$name.csr" "$pki/$name.ext"
}
# RSA, as kubeadm makes it: busybox wget's TLS (the simulator's victims) does
# not complete a handshake with an ECDSA server certificate.
KEY=rsa:2048 issue apiserver kube-apiserver "" "IP:$node_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
issue admin harrier-test-admin system:masters
issue controller-manager system:kube-controller-manager
issue scheduler system:kube-scheduler
issue kube-proxy system:kube-proxy
issue kubelet-client "system:node:$node" system:nodes
issue kubelet "$node" "" "IP:$node_ip,DNS:$node"
openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
openssl_quiet pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# kubeconfig NAME CERT
kubeconfig() {
	cat >"$dir/$1.kubeconfig" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		  - name: harrier-test
		    cluster: {server: "https://$node_ip:6443", certificate-authority: "$pki/ca.crt"}
		users:
		  - name: $1
		    user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
		contexts:
		  - name: harrier-test
		    context: {cluster: harrier-test, user: $1}
		current-context: harrier-test
	EOF
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet kubelet-client
kubectl() { "$kdir/kubectl" --kubeconfig="$dir/admin.kubeconfig" "$@"; }

# --- processes ------------------------------------------------------------
etcd_url="http://127.0.0.1:$etcd_port"
start etcd "$edir/etcd" --name=harrier-test --data-dir="$dir/etcd" --unsafe-no-fsync \
	--listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
	--listen-peer-urls="http://127.0.0.1:$((etcd_port + 1))" --initial-advertise-peer-urls="http://127.0.0.1:$((etcd_port + 1))" \
	--initial-cluster="harrier-test=http://127.0.0.1:$((etcd_port + 1))" --listen-metrics-urls="" --log-level=warn

# The API server is started from a script of its own, so apiserver.sh can
# stop and restart it as a control-plane node's admin would (after adding
# the audit webhook configuration, or to take the API server away). The
# audit flags are the ones the chart's harrier-audit-webhook ConfigMap
# documents, given once its files are in $dir/harrier/ (the kubeadm
# /etc/kubernetes/harrier/ of this cluster).
cat >"$dir/run/kube-apiserver.sh" <<EOF
#!/bin/sh
audit=
if [ -f "$dir/harrier/audit-webhook.yaml" ]; then
	audit="--audit-policy-file=$dir/harrier/audit-policy.yaml --audit-webhook-config-file=$dir/harrier/audit-webhook.yaml --audit-webhook-batch-max-wait=1s"
fi
exec "$kdir/kube-apiserver" \\
	--etcd-servers=$etcd_url \\
	--bind-address=$node_ip --advertise-address=$node_ip --secure-port=6443 \\
	--tls-cert-file=$pki/apiserver.crt --tls-private-key-file=$pki/apiserver.key \\
	--client-ca-file=$pki/ca.crt \\
	--kubelet-client-certificate=$pki/apiserver-kubelet-client.crt --kubelet-client-key=$pki/apiserver-kubelet-client.key \\
	--kubelet-certificate-authority=$pki/ca.crt --kubelet-preferred-address-types=InternalIP \\
	--service-account-key-file=$pki/sa.pub --service-account-signing-key-file=$pki/sa.key \\
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \\
	--service-cluster-ip-range=$service_cidr \\
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \\
	--profiling=false --v=0 \\
	\$audit
EOF
chmod 700 "$dir/run/kube-apiserver.sh"
start kube-apiserver "$dir/run/kube-apiserver.sh"
wait_for kube-apiserver 60 kubectl get --raw /readyz

start kube-controller-manager "$kdir/kube-controller-manager" \
	--kubeconfig="$dir/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$dir/controller-manager.kubeconfig" --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
	--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
	--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
	--controllers='*,bootstrapsigner,tokencleaner' --allocate-node-cidrs=false \
	--service-cluster-ip-range="$service_cidr" --profiling=false --v=0
start kube-scheduler "$kdir/kube-scheduler" \
	--kubeconfig="$dir/scheduler.kubeconfig" \
	--authentication-kubeconfig="$dir/scheduler.kubeconfig" --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
	--bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=0

# --- containerd, CNI and the images ---------------------------------------
sock="$dir/run/containerd.sock"
cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$containerd_state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
# containerd 1.6's task service needs the v1 runtime loaded; no task uses it.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$dir/run/runc-v1"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  # The machine's kernel refuses a container's oom_score_adj below its parent's.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$dir/run/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
# bridge on harrier0 without isGateway (that would enable forwarding
# host-wide); the pods' default route is the bridge's address.
cat >"$dir/cni/net.d/10-harrier.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "harrier-test",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": false, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "rangeStart": "10.244.0.10", "rangeEnd": "10.244.0.250", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
start containerd containerd --config "$dir/containerd.toml" --log-level warn
wait_for containerd 30 ctr --address "$sock" version
for tar in "$pause_tar" "$busybox_tar" "$coredns_tar"; do
	ctr --address "$sock" -n k8s.io images import "$tar" >/dev/null
done
# A pulled image is known by name@digest too; an imported one only by its
# tag, so pods that pin the digest (as careful sites do) need that name.
for ref in "$pause_ref" "$busybox_ref" "$coredns_ref"; do
	digest="$(ctr --address "$sock" -n k8s.io images ls "name==$ref" | awk 'NR == 2 {print $3}')"
	ctr --address "$sock" -n k8s.io images tag "$ref" "${ref%:*}@$digest" >/dev/null
done

# --- the node -------------------------------------------------------------
echo "# the test cluster's pods resolve only through cluster DNS" >"$dir/resolv.conf"
cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is cgroup v1.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$sock
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
clusterDomain: cluster.local
clusterDNS: [$dns_ip]
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
# The images were imported, not pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
EOF
start kubelet "$kdir/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
	--root-dir="$dir/kubelet" --node-ip="$node_ip" --hostname-override="$node" --v=0

cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $node
mode: iptables
clusterCIDR: $pod_cidr
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts on the bridge's address only, never on loopback (which would
# need route_localnet) or the host's other interfaces.
nodePortAddresses: ["$node_ip/32"]
iptables: {localhostNodePorts: false}
# Leave the host's conntrack table size and timeouts alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
start kube-proxy "$kdir/kube-proxy" --config="$dir/kube-proxy.yaml" --v=0

wait_for "node $node Ready" 90 kubectl wait --for=condition=Ready --timeout=5s "node/$node"

# --- cluster DNS ----------------------------------------------------------
sed -e "s|@COREDNS_IMAGE@|$coredns_ref|" -e "s|@DNS_IP@|$dns_ip|" "$here/coredns.yaml" | kubectl apply -f - >/dev/null
wait_for CoreDNS 90 kubectl -n kube-system rollout status deployment/coredns --timeout=5s

# --- storage --------------------------------------------------------------
# No provisioner: statically made volumes on the node, world-writable like
# the local-path provisioner's, for claims without a storage class (hostPath
# volumes take no fsGroup ownership). Eight: the single backend's claim, and
# the replicas step's two backend replicas and three nats-servers, with room.
for i in 0 1 2 3 4 5 6 7; do
	mkdir -m 0777 "$dir/volumes/pv$i"
	chmod 0777 "$dir/volumes/pv$i"
	kubectl apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: PersistentVolume
		metadata: {name: harrier-test-pv$i}
		spec:
		  capacity: {storage: 20Gi}
		  accessModes: [ReadWriteOnce]
		  persistentVolumeReclaimPolicy: Retain
		  hostPath: {path: $dir/volumes/pv$i, type: Directory}
	EOF
done

echo "$dir/admin.kubeconfig"
