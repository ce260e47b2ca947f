#!/usr/bin/env bash
# Replicas benchmark: ingest through the real QUIC uplink into a single
# backend (Badger), one replica over JetStream R1 and two replicas over R3,
# one after the other in one run (see tests/bench/replicas/main.go). The
# nats-server comes from tests/nats/build.sh. Extra arguments go to the
# benchmark, e.g.:
#
#   sudo bash tests/bench/replicas.sh -duration 20s -agents 4
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" replicas.sh
nats_server="$(bash tests/nats/build.sh)"
go build -o tests/bench/bin/replicas ./tests/bench/replicas
mkdir -p tests/bench/results
exec tests/bench/bin/replicas -nats-server "$nats_server" -out tests/bench/results/replicas.json "$@"
