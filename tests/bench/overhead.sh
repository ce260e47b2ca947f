#!/usr/bin/env bash
# Sensor overhead benchmark: builds bin/harrier, loadgen and the driver, then
# runs the driver (as root) with its defaults. Extra arguments go to the
# driver, e.g.:
#
#   sudo bash tests/bench/overhead.sh
#   sudo bash tests/bench/overhead.sh -rounds 9 -workloads exec,connect -n exec=2000
#
# See tests/bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" overhead.sh
go build -o bin/harrier .
go build -o tests/bench/bin/loadgen ./tests/bench/loadgen
go build -o tests/bench/bin/overhead ./tests/bench/overhead

exec tests/bench/bin/overhead -harrier bin/harrier -loadgen tests/bench/bin/loadgen "$@"
