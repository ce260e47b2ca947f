#!/usr/bin/env bash
# As-deployed benchmark: no monitor, `harrier agent` + `harrier backend`
# (QUIC, mTLS, on loopback), `harrier run`, Debian's auditd with comparable
# rules and `harrier events --discard` (the sensor alone), side by side on
# the same storms and on nginx under ab. Builds bin/harrier, loadgen and the
# driver; installs nginx, apache2-utils and auditd with apt when missing,
# without starting their services. Extra arguments go to the driver, e.g.:
#
#   sudo bash tests/bench/deployed.sh
#   sudo bash tests/bench/deployed.sh -rounds 3 -storms exec,nginx -monitors agent,auditd
#   sudo bash tests/bench/deployed.sh -profile tests/bench/results/profiles
#
# See tests/bench/README.md. Writes tests/bench/results/deployed.json.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" deployed.sh

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
{ command -v auditd && command -v auditctl; } >/dev/null 2>&1 || missing+=(auditd)
if ((${#missing[@]})); then
	# A package's service must not start (nginx would listen on port 80):
	# a temporary policy-rc.d refuses every start, unless one is there.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	echo "deployed.sh: installing ${missing[*]}" >&2
	rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 || rc=$?
	[[ -n $made_policy ]] && rm -f "$policy"
	((rc == 0)) || exit "$rc"
fi

go build -trimpath -o bin/harrier .
go build -o tests/bench/bin/loadgen ./tests/bench/loadgen
go build -o tests/bench/bin/deployed ./tests/bench/deployed

exec tests/bench/bin/deployed -harrier bin/harrier -loadgen tests/bench/bin/loadgen "$@"
