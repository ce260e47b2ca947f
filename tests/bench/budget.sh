#!/usr/bin/env bash
# Budget benchmark: `harrier agent` (the backend outside; -mode run: the
# all-in-one) in a cgroup limited like the DaemonSet
# (360m CPU, 296 MiB), offered load in rate steps (paced loadgen), with
# per-step CPU, memory, pipeline throughput, drops per stage, alert latency
# and workload slowdown. Extra arguments go to the driver, e.g.:
#
#   sudo bash tests/bench/budget.sh
#   sudo bash tests/bench/budget.sh -steps open-watched:50000,exec:500 -step 20s
#
# Writes tests/bench/results/budget.json and prints a Markdown table.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" budget.sh
go build -trimpath -o bin/harrier .
go build -o tests/bench/bin/loadgen ./tests/bench/loadgen
go build -o tests/bench/bin/budget ./tests/bench/budget
exec tests/bench/bin/budget -harrier bin/harrier -loadgen tests/bench/bin/loadgen "$@"
