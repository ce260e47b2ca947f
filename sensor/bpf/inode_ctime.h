// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* A file's inode change time, shared by the sensor (which reports the
 * executed file's identity) and the exec guard (which keys checked files by
 * it). Include after kernel_types.h and bpf_core_read.h. */
#ifndef HARRIER_INODE_CTIME_H
#define HARRIER_INODE_CTIME_H

/* A write or a chmod changes it, and no system call sets it. */
struct file_ctime {
	s64 sec;
	u64 nsec;
};

/* The inode's ctime under each kernel's layout: split fields (6.11+), the
 * timespec64 __i_ctime (6.6-6.10), else i_ctime. */
struct timespec64___execdeny {
	s64 tv_sec;
	long tv_nsec;
};
struct inode___ctime_split {
	s64 i_ctime_sec;
	u32 i_ctime_nsec;
} __attribute__((preserve_access_index));
struct inode___ctime_ts {
	struct timespec64___execdeny __i_ctime;
} __attribute__((preserve_access_index));
struct inode___ctime_old {
	struct timespec64___execdeny i_ctime;
} __attribute__((preserve_access_index));

static __always_inline struct file_ctime inode_ctime(struct inode *ino)
{
	struct file_ctime t = {};
	if (bpf_core_field_exists(struct inode___ctime_split, i_ctime_sec)) {
		struct inode___ctime_split *i = (void *)ino;
		t.sec = BPF_CORE_READ(i, i_ctime_sec);
		/* Multigrain timestamps keep a flag in the top bit (nanoseconds
		 * need 30 bits), here and in 6.6's __i_ctime. */
		t.nsec = BPF_CORE_READ(i, i_ctime_nsec) & 0x3fffffff;
	} else if (bpf_core_field_exists(struct inode___ctime_ts, __i_ctime)) {
		struct inode___ctime_ts *i = (void *)ino;
		t.sec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		t.nsec = BPF_CORE_READ(i, __i_ctime.tv_nsec) & 0x3fffffff;
	} else {
		struct inode___ctime_old *i = (void *)ino;
		t.sec = BPF_CORE_READ(i, i_ctime.tv_sec);
		t.nsec = BPF_CORE_READ(i, i_ctime.tv_nsec);
	}
	return t;
}

#endif
