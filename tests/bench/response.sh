#!/usr/bin/env bash
# Response benchmark: kill-at-exec and kill-process-tree latency (p50/p99),
# and what the response hooks add to exec and connect storms. Runs as root;
# extra arguments go to the driver, e.g.:
#
#   sudo bash tests/bench/response.sh
#   sudo bash tests/bench/response.sh -kills 2000 -rounds 9 -out /tmp/response.json
#
# See tests/bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" response.sh
go build -o tests/bench/bin/response ./tests/bench/response

exec tests/bench/bin/response "$@"
