#!/usr/bin/env bash
# Scheduler evidence for a budget run: samples, every 2 s while the run's
# `harrier agent` lives, what the agent's threads got from the CPU scheduler
# (/proc/PID/task/*/schedstat: ns on CPU, ns runnable but waiting,
# timeslices; voluntary and involuntary switches), its cgroup's cpu.stat
# (periods, throttled) and the sensor's drop counters from its /metrics, and
# the same for a control: busy loops in cgroups of their own weighted like
# the agent's (cpu.shares 368), one also limited like it (36 ms / 100 ms),
# one not. cgroup v1 cpu hierarchy (what this VM has). Example:
#
#   sudo bash tests/bench/budget-sched.sh /tmp/sched &
#   sudo bash tests/bench/budget.sh -steps storm:0 -step 20s -baseline=false -requests
#
# Writes OUT/agent.txt and OUT/control.txt; the cgroups it makes are removed
# when the agent exits.
set -u
out=${1:?usage: budget-sched.sh OUTDIR}
mkdir -p "$out"
cpu=/sys/fs/cgroup/cpu
[ -f "$cpu/cpu.shares" ] || { echo "budget-sched.sh: no cgroup v1 cpu hierarchy at $cpu" >&2; exit 1; }
pid=
for _ in $(seq 1 600); do
	pid=$(pgrep -f 'harrier[-a-z]* agent -c' | head -1)
	[ -n "$pid" ] && break
	sleep 0.5
done
[ -n "$pid" ] || { echo "budget-sched.sh: no harrier agent started within 5 min" >&2; exit 1; }
cfg=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^-c$/{n;p}')
metrics=$(awk '/^metricsAddr:/{print $2}' "$cfg" 2>/dev/null)
agentcg=$cpu$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' "/proc/$pid/cgroup")

declare -A hog cg
for v in limited unlimited; do
	cg[$v]=$cpu/harrier-sched-control-$v-$$
	mkdir "${cg[$v]}"
	echo 368 >"${cg[$v]}/cpu.shares"
	[ "$v" = limited ] && echo 36000 >"${cg[$v]}/cpu.cfs_quota_us"
	sh -c 'while :; do :; done' &
	hog[$v]=$!
	echo "${hog[$v]}" >"${cg[$v]}/cgroup.procs"
done
trap 'kill ${hog[limited]} ${hog[unlimited]} 2>/dev/null; sleep 0.5; rmdir ${cg[limited]} ${cg[unlimited]}' EXIT

while kill -0 "$pid" 2>/dev/null; do
	now="$(date +%s.%N) load $(cut -d' ' -f1-3 /proc/loadavg)"
	{
		echo "== $now"
		for t in /proc/$pid/task/*; do
			echo "task ${t##*/} $(cat "$t/comm") schedstat $(cat "$t/schedstat")" \
				"$(grep -E '^nr_(in)?voluntary_switches' "$t/sched" | awk '{printf "%s=%s ", $1, $3}')"
		done
		echo "cpu.stat $(tr '\n' ' ' <"$agentcg/cpu.stat")"
		[ -n "$metrics" ] && curl -s -m 1 "http://$metrics/metrics" |
			grep -E '^harrier_sensor_(kernel_ring_full|kernel_shed|queue_shed|queue_dropped|received)'
	} >>"$out/agent.txt" 2>/dev/null
	echo "$now limited $(cat "/proc/${hog[limited]}/schedstat") unlimited $(cat "/proc/${hog[unlimited]}/schedstat")" >>"$out/control.txt"
	sleep 2
done
