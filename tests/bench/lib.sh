# Shared prelude of the benchmark scripts: run from the repository root, as
# root, with Go on PATH (sudo's secure_path usually lacks Go's directory).
# Usage: source tests/bench/lib.sh NAME
set -euo pipefail
bench_name=$1
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ $(id -u) -ne 0 ]]; then
	echo "$bench_name: must run as root (the sensor loads eBPF; the benches read and reset process counters)" >&2
	exit 1
fi
if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin "${HOME:-/root}/go/bin"; do
		if [[ -x $d/go ]]; then
			PATH=$d:$PATH
			break
		fi
	done
fi
command -v go >/dev/null 2>&1 || {
	echo "$bench_name: go not found in PATH" >&2
	exit 1
}
export CGO_ENABLED=0
