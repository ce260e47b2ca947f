#!/usr/bin/env bash
# Uplink benchmark: builds tests/bench/bin/uplink and runs it (as root) with
# its defaults — real Badger spool on disk, real QUIC with mutual TLS over
# 127.0.0.1, the backend's BadgerStore in a child process. Extra arguments go
# to the benchmark, e.g.:
#
#   sudo bash tests/bench/uplink.sh
#   sudo bash tests/bench/uplink.sh -phases sustained -rate 40000 -duration 60s
#   sudo bash tests/bench/uplink.sh -backlog 1000000 -quota 128MiB -memlimit 100MiB
#
# See tests/bench/uplink/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ $(id -u) -ne 0 ]]; then
	echo "uplink.sh: must run as root (resets VmHWM via /proc/self/clear_refs; the project's benches run as root): sudo bash $0 $*" >&2
	exit 1
fi

# sudo's secure_path usually lacks Go's directory.
if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin "${HOME:-/root}/go/bin"; do
		if [[ -x $d/go ]]; then
			PATH=$d:$PATH
			break
		fi
	done
fi
command -v go >/dev/null 2>&1 || {
	echo "uplink.sh: go not found in PATH" >&2
	exit 1
}

export CGO_ENABLED=0
go build -o tests/bench/bin/uplink ./tests/bench/uplink

exec tests/bench/bin/uplink -out tests/bench/results/uplink.json "$@"
