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
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" uplink.sh
go build -o tests/bench/bin/uplink ./tests/bench/uplink

exec tests/bench/bin/uplink -out tests/bench/results/uplink.json "$@"
