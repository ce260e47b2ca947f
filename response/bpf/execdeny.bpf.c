// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Kill at exec: when a program whose file (device, inode) is in exec_deny
 * has just been exec'd, SIGKILL it from sched_process_exec, where the new
 * image is in place but none of its instructions has run. An audit entry
 * only reports. Every hit is reported on the exec_hits ring buffer.
 *
 * The kernel types come from the sensor's hand-declared, CO-RE relocated
 * kernel_types.h. Attach points: tp_btf, else raw_tp (user space picks).
 */
#include "../../sensor/bpf/kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SIGKILL 9

/* An executable's identity: the kernel's dev_t of its file system
 * (MAJOR << 20 | MINOR) and its inode number. */
struct exec_key {
	u64 dev;
	u64 ino;
};

/* What to do: the deny entry's index in user space's list, and whether to
 * kill (1) or only report (0). */
struct exec_action {
	u32 entry;
	u32 kill;
};

/* One hit, for user space's record. */
struct exec_hit {
	u64 start_boottime;
	u64 dev;
	u64 ino;
	u32 tgid;
	u32 entry;
	u32 kill;
	s32 signal_result;
};

/* Keep exec_hit in the object's BTF for bpf2go. */
const struct exec_hit *unused_exec_hit __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exec_key);
	__type(value, struct exec_action);
} exec_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} exec_hits SEC(".maps");

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct file *exe = BPF_CORE_READ(bprm, file);
	struct exec_key key = {};
	key.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	struct exec_action *act = bpf_map_lookup_elem(&exec_deny, &key);
	if (!act)
		return 0;
	s32 res = 0;
	if (act->kill)
		res = bpf_send_signal(SIGKILL);
	struct exec_hit *hit = bpf_ringbuf_reserve(&exec_hits, sizeof(*hit), 0);
	if (!hit)
		return 0;
	hit->start_boottime = BPF_CORE_READ(task, start_boottime);
	hit->dev = key.dev;
	hit->ino = key.ino;
	hit->tgid = BPF_CORE_READ(task, tgid);
	hit->entry = act->entry;
	hit->kill = act->kill;
	hit->signal_result = res;
	bpf_ringbuf_submit(hit, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec_deny, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec_deny, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}
