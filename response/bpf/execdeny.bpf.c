// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Kill at exec: when a program whose file (device, inode) is in exec_deny
 * has just been exec'd, SIGKILL it from sched_process_exec, where the new
 * image is in place but none of its instructions has run. An audit entry
 * only reports. Every hit is reported on the exec_hits ring buffer.
 *
 * Drift: an executable in an overlayfs upper (writable) layer, i.e. written
 * in (or copied up to) a container's root file system after it started, is
 * a hit when its task's cgroup (v2 id) is in drift_cgroups, else when
 * drift_all holds an action (mode != 0) for every container.
 *
 * Names: an executable whose file name (its dentry's), or the name execve
 * was given (the task's comm after exec, at most 15 bytes), is a key of
 * exec_deny_names: known miners and attack tools wherever they are, in a
 * container's image or copied in.
 *
 * Hashes: when user space lists sha256 hashes (have_hashes), an exec of a
 * file that is in none of the above and whose (device, inode, ctime) is not
 * in hash_checked is reported (REASON_HASH_CHECK, nothing done): user space
 * hashes it, kills the process if the hash is listed and puts the file in
 * hash_denied (so its next exec dies before its first instruction), else
 * marks it checked. Both keep the ctime the file was hashed at: a changed
 * file, or another file that reused the inode number, has another ctime
 * and is checked again.
 *
 * The kernel types come from the sensor's hand-declared, CO-RE relocated
 * kernel_types.h. Attach points: tp_btf, else raw_tp (user space picks).
 */
#include "../../sensor/bpf/kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "../../sensor/bpf/inode_ctime.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SIGKILL 9
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/* Why an exec is a hit. */
#define REASON_LISTED 0
#define REASON_DRIFT 1
#define REASON_NAME 2
#define REASON_HASH_CHECK 3
#define REASON_HASH 4

/* A file name, NUL-padded; longer names are cut to NAME_LEN - 1 bytes. */
#define NAME_LEN 32
struct name_key {
	char name[NAME_LEN];
};

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
	u64 cgroup_id;
	/* bpf_ktime_get_boot_ns() when the signal was sent (or not). */
	u64 hit_boottime;
	u32 tgid;
	u32 entry;
	u32 kill;
	s32 signal_result;
	u32 reason;
	u32 pad;
	/* For REASON_HASH_CHECK: the file's ctime when it was exec'd. */
	struct file_ctime ctime;
	/* The path given to execve, for the record (the process is gone by
	 * the time user space reads this). */
	char filename[128];
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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct name_key);
	__type(value, struct exec_action);
} exec_deny_names SEC(".maps");

/* Files hashed by user space and not listed, with their ctime then. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct exec_key);
	__type(value, struct file_ctime);
} hash_checked SEC(".maps");

/* Files whose hash is listed: the action, for this ctime only. */
struct hash_verdict {
	struct file_ctime ctime;
	struct exec_action act;
};

/* Keep hash_verdict in the object's BTF for bpf2go. */
const struct hash_verdict *unused_hash_verdict __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct exec_key);
	__type(value, struct hash_verdict);
} hash_denied SEC(".maps");

/* Drift actions per container cgroup (v2 id, the cgroup directory's inode). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct exec_action);
} drift_cgroups SEC(".maps");

/* [0]: the drift action for every container; all_set 0 means none. */
struct drift_all_action {
	struct exec_action act;
	u32 all_set;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct drift_all_action);
} drift_all SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} exec_hits SEC(".maps");

/* in_upper says whether inode is an overlayfs inode with an upper dentry:
 * the file lives in (or was copied up to) the writable layer. */
static __always_inline int in_upper(struct inode *ino)
{
	if (BPF_CORE_READ(ino, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return 0;
	struct ovl_inode *oi = (void *)ino - bpf_core_field_offset(struct ovl_inode, vfs_inode);
	return BPF_CORE_READ(oi, __upperdentry) != 0;
}

static __always_inline struct exec_action *drift_action(struct inode *ino, u64 cgid)
{
	if (!in_upper(ino))
		return 0;
	struct exec_action *act = bpf_map_lookup_elem(&drift_cgroups, &cgid);
	if (act)
		return act;
	u32 zero = 0;
	struct drift_all_action *all = bpf_map_lookup_elem(&drift_all, &zero);
	if (all && all->all_set)
		return &all->act;
	return 0;
}

/* Set by user space at load when any sha256 is listed. */
volatile const u32 have_hashes = 0;

/* Set by user space at load when any name is listed: without names an exec
 * costs no name reads or lookups. */
volatile const u32 have_names = 0;

static __always_inline struct exec_action *name_action(struct file *exe)
{
	if (!have_names)
		return 0;
	struct name_key key = {};
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), BPF_CORE_READ(exe, f_path.dentry, d_name.name));
	struct exec_action *act = bpf_map_lookup_elem(&exec_deny_names, &key);
	if (act)
		return act;
	__builtin_memset(&key, 0, sizeof(key));
	bpf_get_current_comm(key.name, 16);
	return bpf_map_lookup_elem(&exec_deny_names, &key);
}

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct file *exe = BPF_CORE_READ(bprm, file);
	struct inode *ino = BPF_CORE_READ(exe, f_inode);
	struct exec_key key = {};
	key.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	key.ino = BPF_CORE_READ(ino, i_ino);
	u32 reason = REASON_LISTED;
	u64 cgid = bpf_get_current_cgroup_id();
	struct exec_action *act = bpf_map_lookup_elem(&exec_deny, &key);
	if (!act) {
		act = name_action(exe);
		reason = REASON_NAME;
	}
	if (!act) {
		act = drift_action(ino, cgid);
		reason = REASON_DRIFT;
	}
	struct file_ctime ctime = {};
	struct exec_action check = {};
	if (!act && have_hashes) {
		ctime = inode_ctime(ino);
		struct hash_verdict *v = bpf_map_lookup_elem(&hash_denied, &key);
		if (v && v->ctime.sec == ctime.sec && v->ctime.nsec == ctime.nsec) {
			act = &v->act;
			reason = REASON_HASH;
		} else {
			struct file_ctime *seen = bpf_map_lookup_elem(&hash_checked, &key);
			if (seen && seen->sec == ctime.sec && seen->nsec == ctime.nsec)
				return 0;
			act = &check;
			reason = REASON_HASH_CHECK;
		}
	}
	if (!act)
		return 0;
	s32 res = 0;
	if (act->kill)
		res = bpf_send_signal(SIGKILL);
	struct exec_hit *hit = bpf_ringbuf_reserve(&exec_hits, sizeof(*hit), 0);
	if (!hit)
		return 0;
	hit->hit_boottime = bpf_ktime_get_boot_ns();
	hit->start_boottime = BPF_CORE_READ(task, start_boottime);
	hit->dev = key.dev;
	hit->ino = key.ino;
	hit->cgroup_id = cgid;
	hit->tgid = BPF_CORE_READ(task, tgid);
	hit->entry = act->entry;
	hit->kill = act->kill;
	hit->signal_result = res;
	hit->reason = reason;
	hit->pad = 0;
	hit->ctime = ctime;
	bpf_probe_read_kernel_str(hit->filename, sizeof(hit->filename), BPF_CORE_READ(bprm, filename));
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
