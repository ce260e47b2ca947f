package sensor

import "golang.org/x/sys/unix"

// syscallNumbers maps this architecture's syscall numbers to the sensor's
// syscall identifiers; the dispatcher ignores every number not listed.
func syscallNumbers() map[int]sensorSyscallId {
	return map[int]sensorSyscallId{
		unix.SYS_OPENAT: scOpenat, unix.SYS_OPENAT2: scOpenat2, unix.SYS_OPEN: scOpen, unix.SYS_CREAT: scCreat,
		unix.SYS_UNLINKAT: scUnlinkat, unix.SYS_UNLINK: scUnlink, unix.SYS_RMDIR: scRmdir,
		unix.SYS_RENAMEAT2: scRenameat2, unix.SYS_RENAMEAT: scRenameat, unix.SYS_RENAME: scRename,
		unix.SYS_CONNECT: scConnect, unix.SYS_LISTEN: scListen, unix.SYS_ACCEPT: scAccept, unix.SYS_ACCEPT4: scAccept4,
		unix.SYS_PTRACE: scPtrace, unix.SYS_INIT_MODULE: scInitModule, unix.SYS_FINIT_MODULE: scFinitModule,
		unix.SYS_UNSHARE: scUnshare, unix.SYS_SETNS: scSetns, unix.SYS_CLONE: scClone, unix.SYS_CLONE3: scClone3,
		unix.SYS_MEMFD_CREATE: scMemfdCreate,
		unix.SYS_SETUID:       scSetuid, unix.SYS_SETGID: scSetgid, unix.SYS_SETREUID: scSetreuid, unix.SYS_SETREGID: scSetregid,
		unix.SYS_SETRESUID: scSetresuid, unix.SYS_SETRESGID: scSetresgid, unix.SYS_SETFSUID: scSetfsuid,
		unix.SYS_SETFSGID: scSetfsgid, unix.SYS_CAPSET: scCapset, unix.SYS_MOUNT: scMount,
		unix.SYS_CHMOD: scChmod, unix.SYS_FCHMOD: scFchmod, unix.SYS_FCHMODAT: scFchmodat, unix.SYS_FCHMODAT2: scFchmodat2,
		unix.SYS_KILL: scKill, unix.SYS_TKILL: scTkill, unix.SYS_TGKILL: scTgkill,
		// send(2) is sendto with no address in libc; there is no send syscall here.
		unix.SYS_SENDTO: scSendto, unix.SYS_SENDMSG: scSendmsg, unix.SYS_SENDMMSG: scSendmmsg,
		// Reported only as invalidations of the kernel's directory cache.
		unix.SYS_UMOUNT2: scUmount2, unix.SYS_MOVE_MOUNT: scMoveMount, unix.SYS_PIVOT_ROOT: scPivotRoot,
	}
}

// writeSyscalls are never hooked: the socket-send program compares the
// current syscall with them to read a DNS query written to a socket.
func writeSyscalls() (write, writev int) { return unix.SYS_WRITE, unix.SYS_WRITEV }
