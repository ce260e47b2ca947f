#!/usr/bin/env bash
# Sensor overhead benchmark: builds bin/harrier, loadgen and the driver, then
# runs the driver (as root) with its defaults. Extra arguments go to the
# driver, e.g.:
#
#   sudo bash tests/bench/overhead.sh
#   sudo bash tests/bench/overhead.sh -rounds 9 -workloads exec,connect -n exec=2000
#
# See tests/bench/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ $(id -u) -ne 0 ]]; then
	echo "overhead.sh: must run as root (the sensor loads eBPF): sudo bash $0 $*" >&2
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
	echo "overhead.sh: go not found in PATH" >&2
	exit 1
}

export CGO_ENABLED=0
go build -o bin/harrier .
go build -o tests/bench/bin/loadgen ./tests/bench/loadgen
go build -o tests/bench/bin/overhead ./tests/bench/overhead

exec tests/bench/bin/overhead -harrier bin/harrier -loadgen tests/bench/bin/loadgen "$@"
