// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Harrier's node sensor. Every record starts with struct event_header and a
 * struct event_body, followed by up to MAX_STRINGS strings whose lengths are
 * in body.str_len. bpf2go generates the Go side of every type user space
 * shares (the -type list in sensor/gen.go), so a change here reaches Go on
 * `make generate`; sensor/decode.go reads records at the generated offsets.
 *
 * Attach points: tp_btf (preferred) or raw_tp for the scheduler events,
 * because hardened kernels refuse fentry, LSM and kprobes. Syscalls: one
 * program attached to the syscalls:sys_exit_* tracepoint of each syscall the
 * sensor reports (preferred: other syscalls run no BPF), or the same
 * dispatcher on the raw sys_exit tracepoint, which runs for every syscall,
 * when tracefs cannot be had. User space picks one variant per probe at
 * load time.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "inode_ctime.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Event kinds: numbers equal api.EventKind. */
enum event_kind {
	KIND_EXEC = 1,
	KIND_EXIT = 2,
	KIND_FORK = 3,
	KIND_FILE_OPEN = 4,
	KIND_FILE_UNLINK = 5,
	KIND_FILE_RENAME = 6,
	KIND_CONNECT = 7,
	KIND_LISTEN = 8,
	KIND_ACCEPT = 9,
	KIND_PTRACE = 10,
	KIND_MODULE_LOAD = 11,
	KIND_NAMESPACE_CHANGE = 12,
	KIND_MEMFD_CREATE = 13,
	KIND_CREDENTIAL_CHANGE = 14,
	KIND_MOUNT = 15,
	KIND_CHMOD = 16,
	KIND_SIGNAL = 17,
	KIND_DNS_QUERY = 18,
	KIND_MAX = 19,
};

/* Which syscall an in-flight record belongs to; user space decodes body.num[0]. */
enum syscall_id {
	SC_OPENAT = 1,
	SC_OPENAT2,
	SC_OPEN,
	SC_CREAT,
	SC_UNLINKAT,
	SC_UNLINK,
	SC_RMDIR,
	SC_RENAMEAT2,
	SC_RENAMEAT,
	SC_RENAME,
	SC_CONNECT,
	SC_LISTEN,
	SC_ACCEPT,
	SC_ACCEPT4,
	SC_PTRACE,
	SC_INIT_MODULE,
	SC_FINIT_MODULE,
	SC_UNSHARE,
	SC_SETNS,
	SC_CLONE,
	SC_CLONE3,
	SC_MEMFD_CREATE,
	SC_SETUID,
	SC_SETGID,
	SC_SETREUID,
	SC_SETREGID,
	SC_SETRESUID,
	SC_SETRESGID,
	SC_SETFSUID,
	SC_SETFSGID,
	SC_CAPSET,
	SC_MOUNT,
	/* No events: these change what paths mean, so they invalidate dir_cache. */
	SC_UMOUNT2,
	SC_MOVE_MOUNT,
	SC_PIVOT_ROOT,
	SC_CHMOD,
	SC_FCHMOD,
	SC_FCHMODAT,
	SC_FCHMODAT2,
	SC_KILL,
	SC_TKILL,
	SC_TGKILL,
	SC_SENDTO,
	SC_SENDMSG,
	SC_SENDMMSG,
	/* Never hooked as syscalls (far too hot): they name the call that
	 * sent a DNS query seen by the socket-send program. */
	SC_WRITE,
	SC_WRITEV,
};

/* Counter slots in the stats map. */
enum stat_slot {
	STAT_SUBMITTED = 0,         /* + kind */
	STAT_RINGBUF_FULL = 32,     /* + kind: record lost, ring buffer full */
	STAT_PATH_TRUNCATED = 64,   /* path deeper than MAX_PATH_DEPTH */
	STAT_ARGS_TRUNCATED = 65,
	STAT_FILE_FILTERED = 66,    /* file events dropped by the watch filter */
	STAT_DIR_CACHE_HIT = 67,    /* of those, dismissed by dir_cache without a path walk */
	STAT_SHED_READS = 68,       /* read-only opens of ordinary watched paths shed under ring pressure */
	STAT_ENV_UNSCANNED = 69,    /* execs with environment strings past ENV_PTRS_MAX or ENV_CHUNK (LD_PRELOAD there unseen) */
	STAT_FILE_CACHE_HIT = 70,   /* file events dismissed by file_cache without a path walk */
	STAT_SHED_REPEAT = 80,      /* + kind: a repeat (exec, fork, exit) shed under heavy ring pressure */
	STAT_SLOTS = 112,
};

#define MAX_STRINGS 7
#define PATH_MAX 4096
#define NAME_MAX 255
#define MAX_PATH_DEPTH 40
#define MAX_CGROUP_DEPTH 8
#define DATA_SIZE 16384
#define STR_MAX 4096
#define LPM_DATA 256
#define USER_PATH_MAX 1024
/* Environment strings of a new program looked at for LD_PRELOAD: through
 * the envp array on the new stack, ENV_PTRS_MAX strings, their heads read
 * from one copy of the strings' first ENV_CHUNK bytes. */
#define ENV_PTRS_MAX 512
#define ENV_CHUNK 16384

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define AT_EMPTY_PATH 0x1000
#define S_IFMT 0170000
#define S_IFSOCK 0140000
#define IPPROTO_UDP 17
#define IPPROTO_TCP 6
/* In a DNS record's flags, above the syscall id: the payload starts with DNS
 * over TCP's 2-byte length. */
#define DNS_TCP_LENGTH 0x100
#define DNS_PORT 53
/* DNS payload bytes copied: a question fits easily; the rest is not read. */
#define DNS_MAX 256
#define O_WRONLY 01
#define O_RDWR 02
#define O_ACCMODE 03
#define O_RDONLY 00
#define O_CREAT 0100
#define O_TRUNC 01000
#define AF_INET 2
#define AF_INET6 10
#define CLONE_THREAD 0x00010000
#define CLONE_NEW_MASK (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080)
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define TMPFS_MAGIC 0x01021994
#define HUGETLBFS_MAGIC 0x958458f6

#define ORIGIN_OVERLAY_UPPER 1
#define ORIGIN_MEMFD 2
#define ORIGIN_DELETED 4

struct event_header {
	u64 ts_boot_ns;
	u64 start_boot_ns;
	u64 cgroup_id;
	enum event_kind kind;
	u32 len;
	u32 pid;
	u32 tgid;
	u32 ppid;
	u32 uid;
	u32 gid;
	u32 euid;
	u32 egid;
	u32 pidns;
	u32 mntns;
	u32 netns;
	char comm[16];
};

/* The enums stand in for u32 fields and map keys and values. */
_Static_assert(sizeof(enum event_kind) == 4 && sizeof(enum syscall_id) == 4 && sizeof(enum stat_slot) == 4,
	       "enums shared with user space are 32 bits");

struct event_body {
	s64 result;
	u64 num[8];
	u16 str_len[MAX_STRINGS];
	u32 flags;
};

struct event {
	struct event_header h;
	struct event_body b;
	/* STR_MAX of slack so a masked offset plus a bounded length always fits. */
	char data[DATA_SIZE + STR_MAX];
};

struct path_buf {
	/* Built from the end backwards; the slack lets the verifier prove that
	 * a masked offset plus a bounded length stays inside. */
	char buf[2 * PATH_MAX];
	/* Set by build_path: the walk reached the root. */
	u32 complete;
};

/* A syscall being reported: its identifier and arguments. */
struct call {
	u64 args[6];
	enum syscall_id sc;
	u32 pad;
};

struct lpm_key {
	u32 prefixlen;
	u8 data[LPM_DATA];
};

/* Set by user space before load. */
const volatile u32 self_tgid = 0;
const volatile u32 wakeup_bytes = 256 * 1024;
const volatile s32 cgroup_subsys = -1; /* -1: default (v2) hierarchy */
const volatile bool watch_all_files = false;
const volatile u64 ring_size = 8 * 1024 * 1024; /* the events ring's size, for its fill level */
/* This architecture's numbers of write and writev (-1: unknown). */
const volatile s64 nr_write = -1;
const volatile s64 nr_writev = -1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_SLOTS);
	__type(key, enum stat_slot);
	__type(value, u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct event);
} event_scratch SEC(".maps");

/* Processes whose signals are reported (host tgids, or tids for tkill):
 * the sensor itself, filled at load, and whatever user space adds. Signals
 * to anything else never leave the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u8);
} protected_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct path_buf);
} path_scratch SEC(".maps");

/* The new program's envp array and the head of its environment strings. */
struct env_buf {
	u64 ptrs[ENV_PTRS_MAX];
	/* 16 bytes of slack past a masked offset. */
	char chunk[ENV_CHUNK + 16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct env_buf);
} env_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct lpm_key);
} key_scratch SEC(".maps");

/* Watched path prefixes. The value is the path's class: WATCH_ORDINARY, or
 * WATCH_SENSITIVE for credentials and the like, whose events are never shed.
 * Filled by user space from config. */
#define WATCH_ORDINARY 1
#define WATCH_SENSITIVE 2
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct lpm_key);
	__type(value, u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} watch_paths SEC(".maps");

/* Paths watched inside every home directory ("/.ssh/", "/.bash_history"),
 * matched against what follows "/root" or "/home/<user>". Watching whole home
 * directories would report every build, cache and editor file in them. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 128);
	__type(key, struct lpm_key);
	__type(value, u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} home_paths SEC(".maps");

/* Every directory prefix ("/", "/etc/") of a watched path, so the kernel can
 * tell a directory that may hold watched files from one that cannot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct lpm_key);
	__type(value, u8);
} watch_dirs SEC(".maps");

/* dir_cache remembers directories in which no file can be watched, so an
 * open there is dismissed without walking its path: the common case by far.
 * Entries hold the generation they were made in; renames, directory
 * removals and mount changes bump it, since those change what a cached
 * (dentry, mount) means. The inode number guards against a freed dentry's
 * memory being reused by another directory. */
struct dir_key {
	u64 dentry;
	u64 mnt;
	u64 root;
};

struct dir_verdict {
	u64 gen;
	u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct dir_key);
	__type(value, struct dir_verdict);
} dir_cache SEC(".maps");

/* file_cache remembers unwatched files in directories that may hold watched
 * ones (/etc/ld.so.cache next to /etc/shadow: every dynamically linked
 * program opens it), keyed and invalidated like dir_cache, with the file's
 * own dentry and inode. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dir_key);
	__type(value, struct dir_verdict);
} file_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} path_generation SEC(".maps");

static __always_inline u64 current_generation(void)
{
	u32 zero = 0;
	u64 *g = bpf_map_lookup_elem(&path_generation, &zero);
	return g ? *g : 0;
}

static __always_inline void bump_generation(void)
{
	u32 zero = 0;
	u64 *g = bpf_map_lookup_elem(&path_generation, &zero);
	if (g)
		__sync_fetch_and_add(g, 1);
}

static __always_inline void stat_inc(u32 slot)
{
	u64 *v = bpf_map_lookup_elem(&stats, &slot);
	if (v)
		*v += 1;
}

static __always_inline struct event *scratch_event(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&event_scratch, &zero);
}

static __always_inline struct path_buf *scratch_path(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&path_scratch, &zero);
}

static __always_inline u64 cgroup_id_of(struct task_struct *task)
{
	struct cgroup *cg = NULL;
	if (cgroup_subsys < 0) {
		cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	} else {
		struct cgroup_subsys_state *css = NULL;
		struct css_set *cs = BPF_CORE_READ(task, cgroups);
		u32 idx = (u32)cgroup_subsys & 15;
		bpf_probe_read_kernel(&css, sizeof(css), &cs->subsys[idx]);
		if (css)
			cg = BPF_CORE_READ(css, cgroup);
	}
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

/* fill_header describes the current task, which is the actor of every
 * event (the parent, for fork). The task pointer from
 * bpf_get_current_task_btf() is typed, so fields are read with direct loads
 * that the verifier turns into fault-safe ones: far cheaper than a helper
 * call per field, which matters at tens of thousands of events a second. */
static __always_inline void fill_header(struct event *ev, u32 kind)
{
	struct event_header *h = &ev->h;
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = task->cred;
	struct pid *tp = task->thread_pid;
	struct nsproxy *nsp = task->nsproxy;
	unsigned int level = tp->level;
	struct upid up = {};

	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->start_boot_ns = task->group_leader->start_boottime;
	h->cgroup_id = cgroup_id_of(task);
	h->kind = kind;
	h->pid = task->pid;
	h->tgid = task->tgid;
	h->ppid = task->real_parent->tgid;
	h->uid = cred->uid.val;
	h->gid = cred->gid.val;
	h->euid = cred->euid.val;
	h->egid = cred->egid.val;
	/* A variable index into a typed pointer is not allowed; read it. */
	bpf_probe_read_kernel(&up, sizeof(up), &tp->numbers[level & 31]);
	h->pidns = BPF_CORE_READ(up.ns, ns.inum);
	if (nsp) {
		h->mntns = nsp->mnt_ns->ns.inum;
		h->netns = nsp->net_ns->ns.inum;
	} else {
		h->mntns = 0; /* an exiting task has dropped its namespaces */
		h->netns = 0;
	}
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
	__builtin_memset(&ev->b, 0, sizeof(ev->b));
}

/* The repeats of one origin's (the forking process's, or the parent of the
 * process that execs or exits) exec, fork or exit of one command, counted in
 * windows of REPEAT_WINDOW_NS while the ring is under heavy pressure. */
struct repeat_key {
	u32 origin;
	u32 kind;
	char comm[16];
};

struct repeat_window {
	u64 start_ns;
	u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct repeat_key);
	__type(value, struct repeat_window);
} repeats SEC(".maps");

#define REPEAT_WINDOW_NS 1000000000ULL
#define REPEAT_BURST 16

/* shed_repeat reports whether ev, an exec, fork or exit, should be shed:
 * the ring is more than three quarters full (user space is starved of CPU,
 * not merely behind) and its origin already did REPEAT_BURST of the same in
 * this window. A fork+exec storm of one program then stops filling the
 * last quarter, which stays for processes that do something different (an
 * attack in the storm); the first of each burst still cross. */
static __always_inline bool shed_repeat(struct event *ev, u32 kind)
{
	if (kind != KIND_EXEC && kind != KIND_FORK && kind != KIND_EXIT)
		return false;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) <= ring_size / 4 * 3)
		return false;
	struct repeat_key key = { .origin = kind == KIND_FORK ? ev->h.tgid : ev->h.ppid, .kind = kind };
	__builtin_memcpy(key.comm, ev->h.comm, sizeof(key.comm));
	u64 now = ev->h.ts_boot_ns;
	struct repeat_window *w = bpf_map_lookup_elem(&repeats, &key);
	if (!w || now - w->start_ns > REPEAT_WINDOW_NS) {
		/* A race with another CPU here only restarts the window. */
		struct repeat_window fresh = { .start_ns = now, .count = 1 };
		bpf_map_update_elem(&repeats, &key, &fresh, BPF_ANY);
		return false;
	}
	return __sync_fetch_and_add(&w->count, 1) >= REPEAT_BURST;
}

/* submit copies the record into the ring buffer. Wake-ups are batched: the
 * reader is woken only once wakeup_bytes are pending and otherwise drains on
 * its own short timer, which halves the cost of an event storm. */
static __always_inline void submit(struct event *ev, u32 data_len)
{
	u32 kind = ev->h.kind & 31;
	u64 len = sizeof(ev->h) + sizeof(ev->b) + (data_len & (DATA_SIZE - 1));
	if (len > sizeof(*ev))
		return;
	ev->h.len = len;
	if (shed_repeat(ev, kind)) {
		stat_inc(STAT_SHED_REPEAT + kind);
		return;
	}
	u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&events, ev, len, flags) != 0) {
		stat_inc(STAT_RINGBUF_FULL + kind);
		return;
	}
	stat_inc(STAT_SUBMITTED + kind);
}

/* put_str appends a kernel or user string to ev->data at *off as string slot
 * idx (not NUL-terminated on the wire). */
static __always_inline void put_str(struct event *ev, u32 *off, int idx, const void *src, bool user)
{
	u32 o = *off;
	if (o >= DATA_SIZE || idx >= MAX_STRINGS)
		return;
	long n = user ? bpf_probe_read_user_str(&ev->data[o & (DATA_SIZE - 1)], STR_MAX, src)
		      : bpf_probe_read_kernel_str(&ev->data[o & (DATA_SIZE - 1)], STR_MAX, src);
	if (n <= 0)
		return;
	n -= 1; /* drop the NUL */
	ev->b.str_len[idx] = n;
	*off = o + n;
}

/* put_bytes appends n bytes from a kernel buffer. */
static __always_inline void put_bytes(struct event *ev, u32 *off, int idx, const void *src, u32 n)
{
	u32 o = *off;
	if (o >= DATA_SIZE || idx >= MAX_STRINGS || n == 0)
		return;
	n &= (STR_MAX - 1);
	if (bpf_probe_read_kernel(&ev->data[o & (DATA_SIZE - 1)], n, src) != 0)
		return;
	ev->b.str_len[idx] = n;
	*off = o + n;
}

struct walk_ctx {
	struct path_buf *pb;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	u32 pos;
	bool complete;
};

/* walk_step adds one path component; bpf_loop calls it so that the verifier
 * checks the body once instead of once per iteration. */
static long walk_step(u32 i, void *arg)
{
	struct walk_ctx *w = arg;
	struct path_buf *pb = w->pb;
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->complete = true;
		return 1;
	}
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *mnt = w->mnt;
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt) {
			w->complete = true;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		w->vfsmnt = (void *)parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	struct dentry *parent_dentry = BPF_CORE_READ(dentry, d_parent);
	struct qstr name = BPF_CORE_READ(dentry, d_name);
	u32 len = name.len;
	u32 pos = w->pos;
	if (len > NAME_MAX)
		len = NAME_MAX;
	if (pos < len + 1 || pos > PATH_MAX)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&pb->buf[pos & (PATH_MAX - 1)], len & NAME_MAX, name.name);
	pos -= 1;
	pb->buf[pos & (PATH_MAX - 1)] = '/';
	w->pos = pos;
	if (dentry == parent_dentry) {
		/* Root of a pseudo filesystem (pipe:, memfd:, anon_inode:). */
		w->complete = true;
		return 1;
	}
	w->dentry = parent_dentry;
	return 0;
}

/* build_path writes the absolute path of (dentry, vfsmnt) as seen from the
 * task's root into pb, ending at PATH_MAX, and returns its start offset. It
 * walks d_parent and crosses mount points, as d_path does, so relative opens,
 * "..", symlinks and bind mounts all resolve to the real path. */
static __always_inline u32 build_path(struct path_buf *pb, struct dentry *dentry, struct vfsmount *vfsmnt,
				      struct task_struct *task)
{
	struct walk_ctx w = {
		.pb = pb,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt),
		.root_dentry = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.pos = PATH_MAX,
	};
	bpf_loop(MAX_PATH_DEPTH, walk_step, &w, 0);
	pb->complete = w.complete;
	if (!w.complete)
		stat_inc(STAT_PATH_TRUNCATED);
	u32 pos = w.pos;
	if (pos >= PATH_MAX) {
		pos = PATH_MAX - 1;
		pb->buf[pos] = '/';
	}
	return pos;
}

static __always_inline u32 build_file_path(struct path_buf *pb, struct file *f, struct task_struct *task)
{
	return build_path(pb, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), task);
}

/* fd_file returns the current task's open file fd. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *f = NULL;
	struct fdtable *fdt = task->files->fdt;
	unsigned int max = fdt->max_fds;
	struct file **fds = fdt->fd;
	if (fd < 0 || fd >= max)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* HOME_USER_MAX bounds the user name component of /home/<user>/. */
#define HOME_USER_MAX 64

/* home_rest returns the offset in pb->buf of what follows the home directory
 * of the path at pos ("/root/x" gives the offset of "/x", as does
 * "/home/bob/x"), or PATH_MAX when the path is not inside a home directory. */
static __always_inline u32 home_rest(struct path_buf *pb, u32 pos)
{
	char head[6];
	if (pos + sizeof(head) >= PATH_MAX)
		return PATH_MAX;
	if (bpf_probe_read_kernel(head, sizeof(head), &pb->buf[pos & (PATH_MAX - 1)]) != 0)
		return PATH_MAX;
	if (head[0] != '/')
		return PATH_MAX;
	if (head[1] == 'r' && head[2] == 'o' && head[3] == 'o' && head[4] == 't' && head[5] == '/')
		return pos + 5;
	if (!(head[1] == 'h' && head[2] == 'o' && head[3] == 'm' && head[4] == 'e' && head[5] == '/'))
		return PATH_MAX;
	for (u32 i = 6; i < 6 + HOME_USER_MAX; i++) {
		u32 off = pos + i;
		if (off >= PATH_MAX)
			return PATH_MAX;
		if (pb->buf[off & (PATH_MAX - 1)] == '/')
			return i == 6 ? PATH_MAX : off;
	}
	return PATH_MAX;
}

/* watched returns the class of the watched prefix the path at
 * pb->buf[pos..PATH_MAX) starts with (home directory paths are sensitive),
 * or 0 when it is not watched. */
static __always_inline u8 watched(struct path_buf *pb, u32 pos)
{
	u32 zero = 0;
	if (watch_all_files)
		return WATCH_ORDINARY;
	struct lpm_key *key = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!key || pos >= PATH_MAX)
		return 0;
	/* Paths longer than the key compare on their first LPM_DATA-1 bytes. */
	u32 len = PATH_MAX - pos;
	if (len > LPM_DATA - 1)
		len = LPM_DATA - 1;
	/* Mask in asm: clang otherwise reuses the unclamped register. */
	asm volatile("%[l] &= 0xff" : [l] "+r"(len));
	if (bpf_probe_read_kernel(key->data, len, &pb->buf[pos & (PATH_MAX - 1)]) != 0)
		return 0;
	key->prefixlen = len * 8;
	u8 *class = bpf_map_lookup_elem(&watch_paths, key);
	if (class)
		return *class;
	u32 rest = home_rest(pb, pos);
	if (rest >= PATH_MAX)
		return 0;
	len = PATH_MAX - rest;
	if (len > LPM_DATA - 1)
		len = LPM_DATA - 1;
	asm volatile("%[l] &= 0xff" : [l] "+r"(len));
	if (bpf_probe_read_kernel(key->data, len, &pb->buf[rest & (PATH_MAX - 1)]) != 0)
		return 0;
	key->prefixlen = len * 8;
	return bpf_map_lookup_elem(&home_paths, key) ? WATCH_SENSITIVE : 0;
}

/* ring_pressed reports whether the events ring is more than half full. Past
 * that, the bulk of ordinary reads is shed so the room left goes to what
 * detections need: execs, writes, credentials, network. */
static __always_inline bool ring_pressed(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > ring_size / 2;
}

/* dir_unwatchable reports whether no file directly in the directory of the
 * path at pb->buf[pos..PATH_MAX) (whose last component is leaf bytes long)
 * can match a watched prefix: the directory with its trailing slash is not
 * under a watched prefix, and no watched prefix lies below it. */
static __always_inline bool dir_unwatchable(struct path_buf *pb, u32 pos, u32 leaf)
{
	u32 zero = 0;
	if (pos >= PATH_MAX || leaf > NAME_MAX)
		return false;
	u32 dlen = PATH_MAX - pos - leaf; /* includes the trailing '/' */
	if (dlen == 0 || dlen > LPM_DATA - 1)
		return false;
	/* Any directory in a home directory may hold a watched home path. */
	if (home_rest(pb, pos) < PATH_MAX)
		return false;
	struct lpm_key *key = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!key)
		return false;
	__builtin_memset(key, 0, sizeof(*key));
	asm volatile("%[l] &= 0xff" : [l] "+r"(dlen));
	if (bpf_probe_read_kernel(key->data, dlen, &pb->buf[pos & (PATH_MAX - 1)]) != 0)
		return false;
	key->prefixlen = 0; /* watch_dirs keys are exact strings, zero padded */
	if (bpf_map_lookup_elem(&watch_dirs, key))
		return false;
	key->prefixlen = dlen * 8;
	return bpf_map_lookup_elem(&watch_paths, key) == NULL;
}

/* resolve_user_path builds the path named by (dfd, upath) for syscalls that
 * only get a user string: absolute names as given, relative ones joined to
 * the cwd or the directory fd. Returns the start offset or PATH_MAX+1. */
static __always_inline u32 resolve_user_path(struct path_buf *pb, struct task_struct *task, long dfd,
					     const char *upath)
{
	/* The user's string goes to the front of the buffer first, then is
	 * moved so that it ends at PATH_MAX like built paths. */
	long n = bpf_probe_read_user_str(pb->buf, USER_PATH_MAX, upath);
	if (n <= 1)
		return PATH_MAX + 1;
	u32 nlen = (u32)(n - 1) & (USER_PATH_MAX - 1);
	if (pb->buf[0] == '/') {
		u32 start = PATH_MAX - nlen;
		bpf_probe_read_kernel(&pb->buf[start & (PATH_MAX - 1)], nlen, pb->buf);
		return start;
	}
	if (nlen > NAME_MAX)
		return PATH_MAX + 1;
	u32 pos;
	if (dfd == AT_FDCWD) {
		pos = build_path(pb, BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt), task);
	} else {
		struct file *f = fd_file(dfd);
		if (!f)
			return PATH_MAX + 1;
		pos = build_file_path(pb, f, task);
	}
	/* The relative name still sits at the front unless the directory
	 * grew into it. */
	if (pos < USER_PATH_MAX + nlen + 1)
		return PATH_MAX + 1;
	u32 dlen = PATH_MAX - pos;
	u32 npos;
	if (dlen <= 1) {
		npos = PATH_MAX - nlen - 1; /* the directory is "/" */
	} else {
		npos = pos - nlen - 1;
		bpf_probe_read_kernel(&pb->buf[npos & (PATH_MAX - 1)], dlen & (PATH_MAX - 1), &pb->buf[pos & (PATH_MAX - 1)]);
	}
	pb->buf[(PATH_MAX - nlen - 1) & (PATH_MAX - 1)] = '/';
	bpf_probe_read_kernel(&pb->buf[(PATH_MAX - nlen) & (PATH_MAX - 1)], nlen & NAME_MAX, pb->buf);
	return npos;
}

static __always_inline u32 exe_origin(struct file *exe)
{
	u32 flags = 0;
	struct inode *ino = BPF_CORE_READ(exe, f_inode);
	struct dentry *d = BPF_CORE_READ(exe, f_path.dentry);
	unsigned long magic = BPF_CORE_READ(ino, i_sb, s_magic);
	if (BPF_CORE_READ(ino, __i_nlink) == 0)
		flags |= ORIGIN_DELETED;
	if (magic == OVERLAYFS_SUPER_MAGIC) {
		/* The overlay inode is embedded in struct ovl_inode; an upper
		 * dentry means the file lives in (or was copied up to) the
		 * container's writable layer. */
		struct ovl_inode *oi = (void *)ino - bpf_core_field_offset(struct ovl_inode, vfs_inode);
		if (BPF_CORE_READ(oi, __upperdentry))
			flags |= ORIGIN_OVERLAY_UPPER;
	}
	if (magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC) {
		char prefix[6] = {};
		bpf_probe_read_kernel(prefix, sizeof(prefix), BPF_CORE_READ(d, d_name.name));
		if (prefix[0] == 'm' && prefix[1] == 'e' && prefix[2] == 'm' && prefix[3] == 'f' && prefix[4] == 'd' &&
		    prefix[5] == ':')
			flags |= ORIGIN_MEMFD;
	}
	return flags;
}

struct cg_ctx {
	struct path_buf *pb;
	struct kernfs_node *kn;
	u32 pos;
};

static long cgroup_step(u32 i, void *arg)
{
	struct cg_ctx *c = arg;
	struct kernfs_node *kn = c->kn;
	struct path_buf *pb = c->pb;
	struct kernfs_node *parent;
	if (!kn)
		return 1;
	if (bpf_core_field_exists(kn->__parent))
		parent = BPF_CORE_READ(kn, __parent);
	else
		parent = BPF_CORE_READ((struct kernfs_node___pre615 *)kn, parent);
	if (!parent)
		return 1; /* the hierarchy root has no name in the path */
	/* The name is staged at the front of the buffer; the path grows from
	 * the end and stays well clear of it. */
	long n = bpf_probe_read_kernel_str(pb->buf, NAME_MAX + 1, BPF_CORE_READ(kn, name));
	if (n <= 1)
		return 1;
	u32 len = (u32)(n - 1) & NAME_MAX;
	u32 pos = c->pos;
	if (pos < len + 1 || pos > PATH_MAX)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&pb->buf[pos & (PATH_MAX - 1)], len, pb->buf);
	pos -= 1;
	pb->buf[pos & (PATH_MAX - 1)] = '/';
	c->pos = pos;
	c->kn = parent;
	return 0;
}

/* append_cgroup_path writes the task's cgroup path (leaf and up to
 * MAX_CGROUP_DEPTH-1 parents) so user space can name the container even when
 * the process is gone before it could read /proc. */
static __always_inline void append_cgroup_path(struct event *ev, u32 *off, int idx, struct task_struct *task,
					       struct path_buf *pb)
{
	struct kernfs_node *kn = NULL;
	if (cgroup_subsys < 0) {
		kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	} else {
		struct cgroup_subsys_state *css = NULL;
		struct css_set *cs = BPF_CORE_READ(task, cgroups);
		u32 i = (u32)cgroup_subsys & 15;
		bpf_probe_read_kernel(&css, sizeof(css), &cs->subsys[i]);
		if (css)
			kn = BPF_CORE_READ(css, cgroup, kn);
	}
	struct cg_ctx c = {.pb = pb, .kn = kn, .pos = PATH_MAX};
	if (kn)
		bpf_loop(MAX_CGROUP_DEPTH, cgroup_step, &c, 0);
	u32 pos = c.pos;
	if (pos >= PATH_MAX) {
		pos = PATH_MAX - 1;
		pb->buf[pos] = '/';
	}
	put_bytes(ev, off, idx, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
}

/* One standard stream that is a socket, as sent in string slot 5 of an
 * exec record (mirrored in sensor/enrich.go). */
struct stdio_sock {
	u8 fd;
	u8 pad;
	u16 family;
	u16 port; /* host order */
	u16 pad2;
	u8 addr[16];
};

/* append_stdio_sockets reports which of fd 0, 1 and 2 of the new program
 * are sockets, with the peer of inet sockets. exec has already closed the
 * close-on-exec descriptors here, so this is what the program starts with:
 * a shell reading and writing a TCP connection is a reverse shell. */
static __always_inline void append_stdio_sockets(struct event *ev, u32 *off, int idx, struct task_struct *task)
{
	u32 o = *off;
	if (o + 3 * sizeof(struct stdio_sock) > DATA_SIZE || idx >= MAX_STRINGS)
		return;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	u32 n = 0;
#pragma unroll
	for (u32 i = 0; i < 3; i++) {
		struct file *f = NULL;
		if (i >= max)
			break;
		bpf_probe_read_kernel(&f, sizeof(f), &fds[i]);
		if (!f)
			continue;
		if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
			continue;
		struct socket *so = BPF_CORE_READ(f, private_data);
		struct sock *sk = BPF_CORE_READ(so, sk);
		struct stdio_sock s = {.fd = i};
		s.family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (s.family == AF_INET || s.family == AF_INET6)
			s.port = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (s.family == AF_INET)
			bpf_core_read(s.addr, 4, &sk->__sk_common.skc_daddr);
		else if (s.family == AF_INET6)
			bpf_core_read(s.addr, 16, &sk->__sk_common.skc_v6_daddr);
		/* The data area has STR_MAX of slack past DATA_SIZE. Mask in
		 * asm: clang otherwise reuses the unmasked register. */
		u32 at = o + n;
		asm volatile("%[at] &= 0x3fff" : [at] "+r"(at));
		__builtin_memcpy(&ev->data[at], &s, sizeof(s));
		n += sizeof(s);
	}
	if (n > 0) {
		ev->b.str_len[idx] = n;
		*off = o + n;
	}
}

/* ENV_NOT_LOADER: the new stack is not laid out as the ELF loader leaves it. */
#define ENV_NOT_LOADER (~0UL)

/* env_ld_preload finds LD_PRELOAD's value through the envp array the ELF
 * loader left on the new stack (argc, argv, NULL, envp, NULL at sp, the
 * mm's start_stack): one copy of the pointers, one of the strings' first
 * ENV_CHUNK bytes, then a 12-byte compare per string, with no copy of each
 * string. It returns the value's address, 0 when there is none, or
 * ENV_NOT_LOADER. A global function (its arguments plain numbers) so that
 * the verifier checks its loop once, not once per state of the exec
 * handler that reaches the call. */
__noinline unsigned long env_ld_preload(unsigned long sp, long argc, long envc, unsigned long env_start,
					unsigned long env_end)
{
	u32 zero = 0;
	struct env_buf *eb = bpf_map_lookup_elem(&env_scratch, &zero);
	long stack_argc = -1;
	if (!eb || argc < 0 || envc <= 0 || env_end <= env_start ||
	    bpf_probe_read_user(&stack_argc, sizeof(stack_argc), (void *)sp) != 0 || stack_argc != argc)
		return ENV_NOT_LOADER;
	u32 n = envc > ENV_PTRS_MAX ? ENV_PTRS_MAX : envc;
	u32 size = n * 8;
	if (size > sizeof(eb->ptrs))
		return ENV_NOT_LOADER;
	if (bpf_probe_read_user(eb->ptrs, size, (void *)(sp + 8 * ((unsigned long)argc + 2))) != 0)
		return ENV_NOT_LOADER;
	u64 chunk = env_end - env_start;
	if (chunk > ENV_CHUNK)
		chunk = ENV_CHUNK;
	if (bpf_probe_read_user(eb->chunk, chunk, (void *)env_start) != 0)
		return ENV_NOT_LOADER;
	if (eb->ptrs[0] != env_start)
		return ENV_NOT_LOADER; /* not the loader's array */
	u32 scanned = 0;
	unsigned long found = 0;
	for (u32 i = 0; i < ENV_PTRS_MAX; i++) {
		if (i >= n)
			break;
		u64 o = eb->ptrs[i & (ENV_PTRS_MAX - 1)] - env_start;
		/* The strings are in order: one past the chunk ends the scan. */
		if (o + 12 > chunk)
			break;
		char *head = &eb->chunk[o & (ENV_CHUNK - 1)];
		u64 h8;
		u32 t4;
		__builtin_memcpy(&h8, head, 8);
		__builtin_memcpy(&t4, head + 8, 4);
		/* 0 only for "LD_PRELOAD=" and a value whose first byte is no
		 * NUL: one branch, so one path goes on to the next string. */
		u64 miss = (h8 ^ 0x4f4c4552505f444cULL) | ((t4 & 0xffffff) ^ 0x3d4441) | (((u64)(t4 >> 24) - 1) >> 63);
		asm volatile("" : "+r"(miss));
		if (miss == 0) {
			found = env_start + o + 11;
			break;
		}
		scanned++;
	}
	/* Unscanned: strings past ENV_PTRS_MAX, or past a chunk shorter than
	 * the environment. A scan that stopped within the whole environment
	 * stopped at strings too short to hold "LD_PRELOAD=" and a value. */
	if (!found && ((u32)envc > n || (env_end - env_start > ENV_CHUNK && scanned < n)))
		stat_inc(STAT_ENV_UNSCANNED);
	return found;
}

/* append_ld_preload puts the value of LD_PRELOAD in the new program's
 * environment as string slot idx. A stack not laid out as the ELF loader
 * leaves it (no other loader runs on Linux today: a script's or binfmt_misc's
 * interpreter is loaded by it too) is counted as unscanned. */
static __always_inline void append_ld_preload(struct event *ev, u32 *off, int idx, struct mm_struct *mm,
					      struct linux_binprm *bprm)
{
	unsigned long start = BPF_CORE_READ(mm, env_start), end = BPF_CORE_READ(mm, env_end);
	if (start >= end)
		return;
	unsigned long value = env_ld_preload(BPF_CORE_READ(mm, start_stack), BPF_CORE_READ(bprm, argc),
					     BPF_CORE_READ(bprm, envc), start, end);
	if (value == ENV_NOT_LOADER)
		stat_inc(STAT_ENV_UNSCANNED);
	else if (value)
		put_str(ev, off, idx, (void *)value, true);
}

/* ---- scheduler events ---- */

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct event *ev = scratch_event();
	struct path_buf *pb = scratch_path();
	if (!ev || !pb)
		return 0;
	fill_header(ev, KIND_EXEC);
	u32 off = 0;

	/* 0: exe path, resolved from the file actually executed. */
	struct file *exe = BPF_CORE_READ(bprm, file);
	u32 pos = build_file_path(pb, exe, task);
	put_bytes(ev, &off, 0, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
	ev->b.flags = exe_origin(exe);

	/* The new program's capabilities (its credentials are committed by
	 * now): a container whose processes keep the whole bounding set runs
	 * privileged, whatever its runtime. */
	/* raw_tp's task is not a BTF pointer: read through CO-RE, not ->. */
	const struct cred *cred = BPF_CORE_READ(task, cred);
	BPF_CORE_READ_INTO(&ev->b.num[2], cred, cap_effective);
	BPF_CORE_READ_INTO(&ev->b.num[3], cred, cap_bset);

	/* The executed file's identity: user space reads each file's content
	 * once per (device, inode, change time), not once per exec. */
	struct inode *exe_inode = BPF_CORE_READ(exe, f_inode);
	ev->b.num[4] = BPF_CORE_READ(exe_inode, i_ino);
	ev->b.num[5] = BPF_CORE_READ(exe_inode, i_sb, s_dev);
	struct file_ctime ct = inode_ctime(exe_inode);
	ev->b.num[6] = ct.sec;
	ev->b.num[7] = ct.nsec;

	/* 1: argv, NUL separated, read from the new image's stack. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long as = BPF_CORE_READ(mm, arg_start), ae = BPF_CORE_READ(mm, arg_end);
	u64 alen = ae > as ? ae - as : 0;
	if (alen > STR_MAX - 1) {
		alen = STR_MAX - 1;
		ev->b.num[1] = 1; /* args truncated */
		stat_inc(STAT_ARGS_TRUNCATED);
	}
	if (alen > 0 && off < DATA_SIZE) {
		if (bpf_probe_read_user(&ev->data[off & (DATA_SIZE - 1)], alen & (STR_MAX - 1), (void *)as) == 0) {
			ev->b.str_len[1] = alen;
			off += alen;
		}
	}

	/* 2: cwd. */
	pos = build_path(pb, BPF_CORE_READ(task, fs, pwd.dentry), BPF_CORE_READ(task, fs, pwd.mnt), task);
	put_bytes(ev, &off, 2, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);

	/* 3: file name as passed to execve. */
	put_str(ev, &off, 3, BPF_CORE_READ(bprm, filename), false);

	/* 4: cgroup path. */
	append_cgroup_path(ev, &off, 4, task, pb);

	/* 5: which of fd 0-2 are sockets, and their peers. */
	append_stdio_sockets(ev, &off, 5, task);

	/* 6: LD_PRELOAD from the environment. */
	append_ld_preload(ev, &off, 6, mm, bprm);
	submit(ev, off);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tp_btf_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(raw_tp_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

static __always_inline int handle_fork(struct task_struct *parent, struct task_struct *child)
{
	u32 cpid = BPF_CORE_READ(child, pid), ctgid = BPF_CORE_READ(child, tgid);
	if (cpid != ctgid)
		return 0; /* a new thread, not a new process */
	struct event *ev = scratch_event();
	if (!ev)
		return 0;
	fill_header(ev, KIND_FORK);
	ev->b.num[0] = cpid;
	ev->b.num[1] = ctgid;
	ev->b.num[2] = BPF_CORE_READ(child, start_boottime);
	submit(ev, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_btf_fork, struct task_struct *parent, struct task_struct *child)
{
	return handle_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_tp_fork, struct task_struct *parent, struct task_struct *child)
{
	return handle_fork(parent, child);
}

static __always_inline int handle_exit(struct task_struct *task)
{
	/* Only the last thread leaving ends the process. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct event *ev = scratch_event();
	if (!ev)
		return 0;
	fill_header(ev, KIND_EXIT);
	int code = BPF_CORE_READ(task, signal, group_exit_code);
	if (code == 0)
		code = BPF_CORE_READ(task, exit_code);
	ev->b.num[0] = (u32)code;
	submit(ev, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tp_btf_exit, struct task_struct *p)
{
	return handle_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_tp_exit, struct task_struct *p)
{
	return handle_exit(p);
}

/* ---- syscalls ----
 * One dispatcher, on the syscalls:sys_exit_* tracepoints of the reported
 * syscalls or on the raw sys_exit tracepoint. An array indexed by syscall
 * number (filled by user space with this architecture's numbers) names the
 * syscall; on the raw hook it also makes an uninteresting syscall cost one
 * lookup. */

struct pt_regs___x86 {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long r10;
	unsigned long r8;
	unsigned long r9;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct pt_regs___arm64 {
	u64 regs[31];
	u64 orig_x0;
	s32 syscallno;
} __attribute__((preserve_access_index));

struct pt_regs;

#define MAX_SYSCALL_NR 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALL_NR);
	__type(key, u32);
	__type(value, enum syscall_id);
} syscall_ids SEC(".maps");

static __always_inline u32 interest(long nr)
{
	if (nr < 0 || nr >= MAX_SYSCALL_NR)
		return 0;
	u32 key = nr;
	u32 *sc = bpf_map_lookup_elem(&syscall_ids, &key);
	return sc ? *sc : 0;
}

/* The register accessors take the typed pt_regs of the current task (from
 * bpf_task_pt_regs), so they are plain loads rather than helper calls, in
 * both the tp_btf and the raw_tp program. */
static __always_inline void read_args(struct pt_regs *regs, u64 *a)
{
	if (bpf_core_field_exists(((struct pt_regs___x86 *)regs)->orig_ax)) {
		struct pt_regs___x86 *r = (void *)regs;
		a[0] = r->di;
		a[1] = r->si;
		a[2] = r->dx;
		a[3] = r->r10;
		a[4] = r->r8;
		a[5] = r->r9;
	} else {
		struct pt_regs___arm64 *r = (void *)regs;
		a[0] = r->orig_x0;
		a[1] = r->regs[1];
		a[2] = r->regs[2];
		a[3] = r->regs[3];
		a[4] = r->regs[4];
		a[5] = r->regs[5];
	}
}

static __always_inline long syscall_nr(struct pt_regs *regs)
{
	if (bpf_core_field_exists(((struct pt_regs___x86 *)regs)->orig_ax))
		return ((struct pt_regs___x86 *)regs)->orig_ax;
	return ((struct pt_regs___arm64 *)regs)->syscallno;
}

static void dispatch(struct call *in, long ret);

/* sys_exit is the only syscall hook: the argument registers still hold the
 * arguments when the syscall returns (x86-64 preserves them; arm64 keeps the
 * first in orig_x0), so one program per syscall suffices, with no table of
 * calls in flight. What is read is what the syscall actually ran with, even
 * if a tracer rewrote the registers at entry. */
static __always_inline int sys_exit(long ret)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u32 sc = interest(syscall_nr(regs));
	if (!sc)
		return 0;
	if ((u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	struct call in = {.sc = sc};
	read_args(regs, in.args);
	if (sc == SC_CLONE || sc == SC_CLONE3) {
		/* Only namespace creation matters here (the fork event reports
		 * the process), and only once: the child returns 0 too. */
		if (ret == 0)
			return 0;
		if (sc == SC_CLONE3) {
			struct clone_args ca = {};
			bpf_probe_read_user(&ca, sizeof(ca), (void *)in.args[0]);
			in.args[0] = ca.flags; /* report the flags, not the pointer */
		}
		if (!(in.args[0] & CLONE_NEW_MASK))
			return 0;
	}
	dispatch(&in, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(tp_btf_sys_exit, struct pt_regs *regs, long ret)
{
	return sys_exit(ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(raw_tp_sys_exit, struct pt_regs *regs, long ret)
{
	return sys_exit(ret);
}

/* The record of every syscalls:sys_exit_* tracepoint (its tracefs format
 * file): the same layout for each syscall, so one program serves them all. */
struct syscall_exit_record {
	u64 common;
	s32 nr;
	s32 pad;
	long ret;
};

/* The section's hook is nominal: user space attaches this program to the
 * sys_exit_* tracepoint of each reported syscall. */
SEC("tracepoint/syscalls/sys_exit")
int tp_sys_exit(struct syscall_exit_record *ctx)
{
	return sys_exit(ctx->ret);
}

/* File opens: on success the path comes from the opened struct file; on
 * failure from the user's string (the file may not exist). */
static __always_inline void on_open(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct path_buf *pb = scratch_path();
	if (!pb)
		return;
	u64 flags, mode;
	const char *name;
	long dfd = AT_FDCWD;
	switch (in->sc) {
	case SC_OPENAT: {
		dfd = (int)in->args[0];
		name = (const char *)in->args[1];
		flags = in->args[2];
		mode = in->args[3];
		break;
	}
	case SC_OPENAT2: {
		struct open_how how = {};
		bpf_probe_read_user(&how, sizeof(how), (void *)in->args[2]);
		dfd = (int)in->args[0];
		name = (const char *)in->args[1];
		flags = how.flags;
		mode = how.mode;
		break;
	}
	case SC_CREAT:
		name = (const char *)in->args[0];
		flags = O_CREAT | O_WRONLY | O_TRUNC;
		mode = in->args[1];
		break;
	default:
		name = (const char *)in->args[0];
		flags = in->args[1];
		mode = in->args[2];
	}
	u32 pos;
	u8 class;
	if (ret >= 0) {
		struct file *f = fd_file(ret);
		if (!f)
			return;
		struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
		struct dentry *dir = BPF_CORE_READ(d, d_parent);
		struct dir_key key = {
			.dentry = (u64)dir,
			.mnt = (u64)BPF_CORE_READ(f, f_path.mnt),
			.root = (u64)BPF_CORE_READ(task, fs, root.dentry),
		};
		u64 ino = BPF_CORE_READ(dir, d_inode, i_ino);
		u64 gen = current_generation();
		struct dir_verdict *v = bpf_map_lookup_elem(&dir_cache, &key);
		if (v && v->gen == gen && v->ino == ino) {
			stat_inc(STAT_FILE_FILTERED);
			stat_inc(STAT_DIR_CACHE_HIT);
			return;
		}
		struct dir_key fkey = {.dentry = (u64)d, .mnt = key.mnt, .root = key.root};
		u64 fino = BPF_CORE_READ(d, d_inode, i_ino);
		v = bpf_map_lookup_elem(&file_cache, &fkey);
		if (v && v->gen == gen && v->ino == fino) {
			stat_inc(STAT_FILE_FILTERED);
			stat_inc(STAT_FILE_CACHE_HIT);
			return;
		}
		pos = build_file_path(pb, f, task);
		if (pos >= PATH_MAX)
			return;
		class = watched(pb, pos);
		if (!class) {
			stat_inc(STAT_FILE_FILTERED);
			if (!pb->complete || d == dir)
				return;
			u32 leaf = BPF_CORE_READ(d, d_name.len);
			struct dir_verdict nv = {.gen = gen, .ino = ino};
			if (dir_unwatchable(pb, pos, leaf)) {
				bpf_map_update_elem(&dir_cache, &key, &nv, BPF_ANY);
			} else {
				nv.ino = fino;
				bpf_map_update_elem(&file_cache, &fkey, &nv, BPF_ANY);
			}
			return;
		}
	} else {
		pos = resolve_user_path(pb, task, dfd, name);
		if (pos >= PATH_MAX)
			return;
		class = watched(pb, pos);
		if (!class) {
			stat_inc(STAT_FILE_FILTERED);
			return;
		}
	}
	bool read_only = (flags & (O_ACCMODE | O_CREAT | O_TRUNC)) == O_RDONLY;
	if (read_only && class == WATCH_ORDINARY && ring_pressed()) {
		stat_inc(STAT_SHED_READS);
		return;
	}
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_FILE_OPEN);
	ev->b.num[3] = class == WATCH_SENSITIVE;
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	ev->b.num[1] = flags;
	ev->b.num[2] = mode;
	u32 off = 0;
	put_bytes(ev, &off, 0, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
	submit(ev, off);
}


/* Unlink and rename: the names are resolved on exit from the user strings,
 * which are still mapped, against the cwd or directory fd. */
static __always_inline bool emit_user_path(struct event *ev, u32 *off, int idx, struct task_struct *task,
					   long dfd, const char *name, bool filter)
{
	struct path_buf *pb = scratch_path();
	if (!pb)
		return false;
	u32 pos = resolve_user_path(pb, task, dfd, name);
	if (pos >= PATH_MAX)
		return false;
	if (filter && !watched(pb, pos))
		return false;
	put_bytes(ev, off, idx, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
	return true;
}

static __always_inline void on_unlink(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct event *ev = scratch_event();
	if (!ev)
		return;
	long dfd = AT_FDCWD;
	const char *name = (const char *)in->args[0];
	if (in->sc == SC_UNLINKAT) {
		dfd = (int)in->args[0];
		name = (const char *)in->args[1];
	}
	fill_header(ev, KIND_FILE_UNLINK);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	ev->b.num[1] = in->sc == SC_UNLINKAT ? in->args[2] : 0;
	u32 off = 0;
	if (!emit_user_path(ev, &off, 0, task, dfd, name, true)) {
		stat_inc(STAT_FILE_FILTERED);
		return;
	}
	submit(ev, off);
}


static __always_inline void on_rename(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct event *ev = scratch_event();
	if (!ev)
		return;
	long odfd = AT_FDCWD, ndfd = AT_FDCWD;
	const char *oname = (const char *)in->args[0], *nname = (const char *)in->args[1];
	if (in->sc != SC_RENAME) {
		odfd = (int)in->args[0];
		oname = (const char *)in->args[1];
		ndfd = (int)in->args[2];
		nname = (const char *)in->args[3];
	}
	fill_header(ev, KIND_FILE_RENAME);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	u32 off = 0;
	/* Either side being watched makes the rename interesting. */
	bool w_old = emit_user_path(ev, &off, 0, task, odfd, oname, false);
	u32 old_off = off;
	struct path_buf *pb = scratch_path();
	if (!pb)
		return;
	bool w = false;
	if (w_old) {
		u32 pos = PATH_MAX - ev->b.str_len[0];
		bpf_probe_read_kernel(&pb->buf[pos & (PATH_MAX - 1)], ev->b.str_len[0] & (PATH_MAX - 1), ev->data);
		w = watched(pb, pos);
	}
	if (!emit_user_path(ev, &off, 1, task, ndfd, nname, false))
		return;
	if (!w) {
		u32 pos = PATH_MAX - ev->b.str_len[1];
		bpf_probe_read_kernel(&pb->buf[pos & (PATH_MAX - 1)], ev->b.str_len[1] & (PATH_MAX - 1),
				      &ev->data[old_off & (DATA_SIZE - 1)]);
		w = watched(pb, pos);
	}
	if (!w) {
		stat_inc(STAT_FILE_FILTERED);
		return;
	}
	submit(ev, off);
}


/* Network. Addresses go in num[]: family, protocol, local port, remote port,
 * then local address (num[4..5]) and remote address (num[6..7]) as raw bytes. */
static __always_inline struct sock *fd_sock(struct task_struct *task, long fd)
{
	struct file *f = fd_file(fd);
	if (!f)
		return NULL;
	struct socket *s = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(s, sk);
}

static __always_inline void fill_sock(struct event *ev, struct sock *sk)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ev->b.num[0] = family;
	ev->b.num[1] = BPF_CORE_READ(sk, sk_protocol);
	ev->b.num[2] = BPF_CORE_READ(sk, __sk_common.skc_num);
	ev->b.num[3] = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		bpf_core_read(&ev->b.num[4], 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(&ev->b.num[6], 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		bpf_core_read(&ev->b.num[4], 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(&ev->b.num[6], 4, &sk->__sk_common.skc_daddr);
	}
}

static __always_inline void on_connect(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct sockaddr_in6 sa = {};
	bpf_probe_read_user(&sa, sizeof(sa), (void *)in->args[1]);
	if (sa.sin6_family != AF_INET && sa.sin6_family != AF_INET6)
		return;
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_CONNECT);
	ev->b.result = ret;
	struct sock *sk = fd_sock(task, (int)in->args[0]);
	if (sk)
		fill_sock(ev, sk);
	/* The destination asked for is authoritative, also when connect failed. */
	ev->b.num[0] = sa.sin6_family;
	ev->b.num[3] = __builtin_bswap16(sa.sin6_port);
	ev->b.num[6] = 0;
	ev->b.num[7] = 0;
	if (sa.sin6_family == AF_INET) {
		struct sockaddr_in *s4 = (void *)&sa;
		ev->b.num[6] = s4->sin_addr;
	} else {
		__builtin_memcpy(&ev->b.num[6], sa.sin6_addr, 16);
	}
	submit(ev, 0);
}


static __always_inline void on_sock_fd(struct call *in, long ret, u32 kind, long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct sock *sk = fd >= 0 ? fd_sock(task, fd) : NULL;
	if (sk) {
		u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family != AF_INET && family != AF_INET6)
			return;
	} else if (ret >= 0) {
		return;
	}
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, kind);
	ev->b.result = ret;
	if (sk)
		fill_sock(ev, sk);
	ev->b.num[0] |= (u64)in->sc << 32;
	if (kind == KIND_LISTEN)
		ev->b.num[3] = in->args[1]; /* backlog; a listener has no peer */
	submit(ev, 0);
}

static __always_inline void on_listen(struct call *in, long ret)
{
	on_sock_fd(in, ret, KIND_LISTEN, (int)in->args[0]);
}

static __always_inline void on_accept(struct call *in, long ret)
{
	if (ret < 0)
		return; /* EAGAIN on non-blocking sockets is noise */
	on_sock_fd(in, ret, KIND_ACCEPT, ret);
}


/* Events whose interesting data are the numeric arguments. */
static __always_inline void emit_args(struct call *in, long ret, u32 kind, const char *ustr, const char *ustr2)
{
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, kind);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
#pragma unroll
	for (int i = 0; i < 6; i++)
		ev->b.num[i + 1] = in->args[i];
	u32 off = 0;
	if (ustr)
		put_str(ev, &off, 0, ustr, true);
	if (ustr2)
		put_str(ev, &off, 1, ustr2, true);
	submit(ev, off);
}

static __always_inline void on_ptrace(struct call *in, long ret)
{
	emit_args(in, ret, KIND_PTRACE, NULL, NULL);
}

static __always_inline void on_module(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct event *ev = scratch_event();
	struct path_buf *pb = scratch_path();
	if (!ev || !pb)
		return;
	fill_header(ev, KIND_MODULE_LOAD);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	u32 off = 0;
	if (in->sc == SC_FINIT_MODULE) {
		struct file *f = fd_file((int)in->args[0]);
		if (f) {
			u32 pos = build_file_path(pb, f, task);
			put_bytes(ev, &off, 0, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
		}
		put_str(ev, &off, 1, (const char *)in->args[1], true);
	} else {
		put_str(ev, &off, 1, (const char *)in->args[2], true);
	}
	submit(ev, off);
}

static __always_inline void on_ns(struct call *in, long ret)
{
	emit_args(in, ret, KIND_NAMESPACE_CHANGE, NULL, NULL);
}

static __always_inline void on_memfd(struct call *in, long ret)
{
	emit_args(in, ret, KIND_MEMFD_CREATE, (const char *)in->args[0], NULL);
}

static __always_inline void on_cred(struct call *in, long ret)
{
	if (in->sc == SC_CAPSET) {
		/* Replace the data pointer with the first capability words. */
		u32 data[3] = {};
		bpf_probe_read_user(data, sizeof(data), (void *)in->args[1]);
		in->args[2] = data[0]; /* effective */
		in->args[3] = data[1]; /* permitted */
		in->args[4] = data[2]; /* inheritable */
	}
	emit_args(in, ret, KIND_CREDENTIAL_CHANGE, NULL, NULL);
}

static __always_inline void on_mount(struct call *in, long ret)
{
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_MOUNT);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	ev->b.num[1] = in->args[3];
	u32 off = 0;
	put_str(ev, &off, 0, (const char *)in->args[0], true);
	put_str(ev, &off, 1, (const char *)in->args[1], true);
	put_str(ev, &off, 2, (const char *)in->args[2], true);
	submit(ev, off);
}

/* chmod: reported when the new mode sets an execute bit (the "download,
 * chmod +x, run" pattern) or the path is watched. fchmod, and fchmodat2 with
 * AT_EMPTY_PATH, name the file by fd: its path comes from the struct file,
 * like opens. The path-string calls join a relative name to the cwd or
 * directory fd (as unlink does) without resolving symlinks or "..": on exit
 * there is no struct file for the name, and walking it again here could
 * race with renames anyway. */
static __always_inline void on_chmod(struct call *in, long ret)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct path_buf *pb = scratch_path();
	if (!pb)
		return;
	long dfd = AT_FDCWD, fd = -1;
	const char *name = NULL;
	u64 mode;
	switch (in->sc) {
	case SC_CHMOD:
		name = (const char *)in->args[0];
		mode = in->args[1];
		break;
	case SC_FCHMOD:
		fd = (int)in->args[0];
		mode = in->args[1];
		break;
	default:
		dfd = (int)in->args[0];
		name = (const char *)in->args[1];
		mode = in->args[2];
		if (in->sc == SC_FCHMODAT2 && (in->args[3] & AT_EMPTY_PATH)) {
			char c = 0;
			bpf_probe_read_user(&c, 1, name);
			if (c == 0) {
				fd = dfd;
				name = NULL;
			}
		}
	}
	mode &= 07777;
	u32 pos = PATH_MAX + 1;
	if (name) {
		pos = resolve_user_path(pb, task, dfd, name);
	} else {
		struct file *f = fd_file(fd);
		if (f)
			pos = build_file_path(pb, f, task);
	}
	bool have_path = pos < PATH_MAX;
	if (!(mode & 0111) && !(have_path && watched(pb, pos))) {
		stat_inc(STAT_FILE_FILTERED);
		return;
	}
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_CHMOD);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	ev->b.num[1] = mode;
	u32 off = 0;
	if (have_path)
		put_bytes(ev, &off, 0, &pb->buf[pos & (PATH_MAX - 1)], PATH_MAX - pos);
	submit(ev, off);
}

/* Signals: only those aimed at a protected process are reported, so the
 * map lookup is the whole cost of every other kill. */
static __always_inline void on_signal(struct call *in, long ret)
{
	/* A caller in a child pid namespace names targets in that namespace,
	 * where no protected (host) pid is visible: its numbers would only
	 * collide by accident. */
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_pid->level != 0)
		return;
	/* kill(pid, sig), tkill(tid, sig), tgkill(tgid, tid, sig). Process
	 * groups and broadcasts (pid <= 0) name no single target. */
	s32 target = (s32)in->args[0];
	u64 sig = in->sc == SC_TGKILL ? in->args[2] : in->args[1];
	if (target <= 0)
		return;
	u32 key = target;
	if (!bpf_map_lookup_elem(&protected_pids, &key))
		return;
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_SIGNAL);
	ev->b.result = ret;
	ev->b.num[0] = in->sc;
	ev->b.num[1] = key;
	ev->b.num[2] = sig;
	submit(ev, 0);
}

/* User-space layouts read by on_send. */
struct user_msghdr {
	void *msg_name;
	int msg_namelen;
	void *msg_iov;
	u64 msg_iovlen;
};

struct user_iovec {
	void *iov_base;
	u64 iov_len;
};

/* DNS queries: UDP datagrams to port 53 sent with sendto, sendmsg or
 * sendmmsg (the first message; glibc's second one is the same name's AAAA).
 * These calls are hot in some workloads, so the checks run cheapest first:
 * failed sends, then the destination port (from the address given, else
 * the connected socket's peer), and only then the protocol and the copy. */
static __always_inline void on_send(struct call *in, long ret)
{
	if (ret <= 0)
		return;
	struct task_struct *task = (void *)bpf_get_current_task();
	const void *uaddr, *buf;
	u64 ualen, len;
	if (in->sc == SC_SENDTO) {
		buf = (const void *)in->args[1];
		len = ret; /* bytes sent */
		uaddr = (const void *)in->args[4];
		ualen = in->args[5];
	} else {
		/* An mmsghdr starts with its msghdr. */
		struct user_msghdr mh = {};
		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)in->args[1]) != 0)
			return;
		uaddr = mh.msg_name;
		ualen = mh.msg_namelen;
		buf = mh.msg_iov;
		len = mh.msg_iovlen; /* resolved to the first iovec below */
	}
	struct sockaddr_in6 sa = {};
	struct sock *sk = NULL;
	if (uaddr && ualen >= 4) {
		if (bpf_probe_read_user(&sa, 4, uaddr) != 0)
			return;
		if (sa.sin6_port != __builtin_bswap16(DNS_PORT))
			return;
		if (sa.sin6_family != AF_INET && sa.sin6_family != AF_INET6)
			return;
		bpf_probe_read_user(&sa, sizeof(sa), uaddr);
		sk = fd_sock(task, (int)in->args[0]);
	} else {
		/* A successful send proves fd is a socket, so private_data is
		 * its struct socket. */
		sk = fd_sock(task, (int)in->args[0]);
		if (!sk || BPF_CORE_READ(sk, __sk_common.skc_dport) != __builtin_bswap16(DNS_PORT))
			return;
		sa.sin6_family = 0;
	}
	if (!sk)
		return;
	u16 proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
		return;
	u32 tcp_length = proto == IPPROTO_TCP ? DNS_TCP_LENGTH : 0;
	if (in->sc != SC_SENDTO) {
		struct user_iovec iov = {};
		u64 segs = len;
		if (segs == 0 || bpf_probe_read_user(&iov, sizeof(iov), buf) != 0)
			return;
		/* DNS over TCP as [length][message] iovecs: take the message. */
		if (proto == IPPROTO_TCP && iov.iov_len == 2 && segs >= 2 &&
		    bpf_probe_read_user(&iov, sizeof(iov), buf + sizeof(struct user_iovec)) == 0)
			tcp_length = 0;
		buf = iov.iov_base;
		len = iov.iov_len;
	}
	struct event *ev = scratch_event();
	if (!ev)
		return;
	fill_header(ev, KIND_DNS_QUERY);
	ev->b.result = ret;
	fill_sock(ev, sk);
	ev->b.flags = in->sc | tcp_length;
	if (sa.sin6_family) {
		/* The destination given overrides a connected peer. */
		ev->b.num[0] = sa.sin6_family;
		ev->b.num[3] = DNS_PORT;
		ev->b.num[6] = 0;
		ev->b.num[7] = 0;
		if (sa.sin6_family == AF_INET) {
			struct sockaddr_in *s4 = (void *)&sa;
			ev->b.num[6] = s4->sin_addr;
		} else {
			__builtin_memcpy(&ev->b.num[6], sa.sin6_addr, 16);
		}
	}
	u32 n = len > DNS_MAX ? DNS_MAX : len;
	/* Mask in asm: clang otherwise reuses the unclamped register. */
	asm volatile("%[n] &= 0x1ff" : [n] "+r"(n));
	if (n > 0 && bpf_probe_read_user(ev->data, n, buf) == 0)
		ev->b.str_len[0] = n;
	submit(ev, ev->b.str_len[0]);
}

/* DNS written to a connected socket: write(2) and writev(2) on a UDP socket
 * (busybox nslookup, Go's resolver) and DNS over TCP (a 2-byte length, then
 * the message). Syscall hooks on write would run for every write on the
 * node; the sock_send_length tracepoint runs only for socket sends, and
 * returns after one load unless the peer port is 53. sendto, sendmsg and
 * sendmmsg are left to on_send. */
static __always_inline int on_sock_send(struct sock *sk, int ret)
{
	if (ret <= 0 || !sk || BPF_CORE_READ(sk, __sk_common.skc_dport) != __builtin_bswap16(DNS_PORT))
		return 0;
	if ((u32)(bpf_get_current_pid_tgid() >> 32) == self_tgid)
		return 0;
	u16 proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = syscall_nr(regs);
	u64 args[6] = {};
	read_args(regs, args);
	const void *buf;
	u64 len;
	u32 sc, tcp_length = proto == IPPROTO_TCP ? DNS_TCP_LENGTH : 0;
	if (nr == nr_write) {
		buf = (const void *)args[1];
		len = ret;
		sc = SC_WRITE;
	} else if (nr == nr_writev) {
		struct user_iovec iov[2] = {};
		if (args[2] == 0 || bpf_probe_read_user(&iov[0], sizeof(iov[0]), (void *)args[1]) != 0)
			return 0;
		/* glibc writes DNS over TCP as [length][message]: take the message. */
		if (proto == IPPROTO_TCP && iov[0].iov_len == 2 && args[2] >= 2 &&
		    bpf_probe_read_user(&iov[1], sizeof(iov[1]), (void *)(args[1] + sizeof(struct user_iovec))) == 0) {
			buf = iov[1].iov_base;
			len = iov[1].iov_len;
			tcp_length = 0;
		} else {
			buf = iov[0].iov_base;
			len = iov[0].iov_len;
		}
		sc = SC_WRITEV;
	} else {
		return 0;
	}
	struct event *ev = scratch_event();
	if (!ev)
		return 0;
	fill_header(ev, KIND_DNS_QUERY);
	ev->b.result = ret;
	fill_sock(ev, sk);
	ev->b.flags = sc | tcp_length;
	u32 n = len > DNS_MAX ? DNS_MAX : len;
	asm volatile("%[n] &= 0x1ff" : [n] "+r"(n));
	if (n > 0 && bpf_probe_read_user(ev->data, n, buf) == 0)
		ev->b.str_len[0] = n;
	submit(ev, ev->b.str_len[0]);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_btf_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_send(sk, ret);
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(raw_tp_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_send(sk, ret);
}

/* dispatch is a real BPF-to-BPF function: one copy shared by the exit
 * programs' call sites, verified once per program. */
static __noinline void dispatch(struct call *in, long ret)
{
	if (ret == 0) {
		switch (in->sc) {
		case SC_RENAMEAT2:
		case SC_RENAMEAT:
		case SC_RENAME:
		case SC_RMDIR:
		case SC_MOUNT:
		case SC_UMOUNT2:
		case SC_MOVE_MOUNT:
		case SC_PIVOT_ROOT:
			bump_generation();
			break;
		case SC_UNLINKAT:
			if (in->args[2] & AT_REMOVEDIR)
				bump_generation();
			break;
		default:
			break;
		}
	}
	switch (in->sc) {
	case SC_OPENAT:
	case SC_OPENAT2:
	case SC_OPEN:
	case SC_CREAT:
		on_open(in, ret);
		break;
	case SC_UNLINKAT:
	case SC_UNLINK:
	case SC_RMDIR:
		on_unlink(in, ret);
		break;
	case SC_RENAMEAT2:
	case SC_RENAMEAT:
	case SC_RENAME:
		on_rename(in, ret);
		break;
	case SC_CONNECT:
		on_connect(in, ret);
		break;
	case SC_LISTEN:
		on_listen(in, ret);
		break;
	case SC_ACCEPT:
	case SC_ACCEPT4:
		on_accept(in, ret);
		break;
	case SC_PTRACE:
		on_ptrace(in, ret);
		break;
	case SC_INIT_MODULE:
	case SC_FINIT_MODULE:
		on_module(in, ret);
		break;
	case SC_UNSHARE:
	case SC_SETNS:
	case SC_CLONE:
	case SC_CLONE3:
		on_ns(in, ret);
		break;
	case SC_MEMFD_CREATE:
		on_memfd(in, ret);
		break;
	case SC_MOUNT:
		on_mount(in, ret);
		break;
	case SC_CHMOD:
	case SC_FCHMOD:
	case SC_FCHMODAT:
	case SC_FCHMODAT2:
		on_chmod(in, ret);
		break;
	case SC_KILL:
	case SC_TKILL:
	case SC_TGKILL:
		on_signal(in, ret);
		break;
	case SC_SENDTO:
	case SC_SENDMSG:
	case SC_SENDMMSG:
		on_send(in, ret);
		break;
	default:
		if (in->sc >= SC_SETUID && in->sc <= SC_CAPSET)
			on_cred(in, ret);
	}
}
