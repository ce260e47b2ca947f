package sensor

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire layout of a ring-buffer record, mirroring struct event_header and
// struct event_body in bpf/sensor.bpf.c.
const (
	headerSize = 88
	bodySize   = 88
	fixedSize  = headerSize + bodySize
	maxStrings = 6
	numWords   = 8
	// maxRecordSize bounds what the kernel can send: the fixed part plus the
	// data area (DATA_SIZE in the C source).
	maxRecordSize = fixedSize + 16384
)

// Kinds as numbered on the wire (equal to api.EventKind).
const (
	kindExec            = 1
	kindExit            = 2
	kindFork            = 3
	kindFileOpen        = 4
	kindFileUnlink      = 5
	kindFileRename      = 6
	kindConnect         = 7
	kindListen          = 8
	kindAccept          = 9
	kindPtrace          = 10
	kindModuleLoad      = 11
	kindNamespaceChange = 12
	kindMemfdCreate     = 13
	kindCredential      = 14
	kindMount           = 15
	kindChmod           = 16
	kindSignal          = 17
	kindDNSQuery        = 18
	kindMax             = 19
)

// Exe origin flags in body.flags of exec records.
const (
	originOverlayUpper = 1 << 0
	originMemfd        = 1 << 1
	originDeleted      = 1 << 2
)

// Syscall identifiers in num[0] (enum syscall_id in the C source).
const (
	scOpenat = iota + 1
	scOpenat2
	scOpen
	scCreat
	scUnlinkat
	scUnlink
	scRmdir
	scRenameat2
	scRenameat
	scRename
	scConnect
	scListen
	scAccept
	scAccept4
	scPtrace
	scInitModule
	scFinitModule
	scUnshare
	scSetns
	scClone
	scClone3
	scMemfdCreate
	scSetuid
	scSetgid
	scSetreuid
	scSetregid
	scSetresuid
	scSetresgid
	scSetfsuid
	scSetfsgid
	scCapset
	scMount
	scUmount2
	scMoveMount
	scPivotRoot
	scChmod
	scFchmod
	scFchmodat
	scFchmodat2
	scKill
	scTkill
	scTgkill
	scSendto
	scSendmsg
	scSendmmsg
)

// syscallName names a syscall identifier for status output.
func syscallName(sc uint32) string {
	names := [...]string{"", "openat", "openat2", "open", "creat", "unlinkat", "unlink", "rmdir",
		"renameat2", "renameat", "rename", "connect", "listen", "accept", "accept4", "ptrace",
		"init_module", "finit_module", "unshare", "setns", "clone", "clone3", "memfd_create",
		"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
		"capset", "mount", "umount2", "move_mount", "pivot_root", "chmod", "fchmod", "fchmodat", "fchmodat2",
		"kill", "tkill", "tgkill", "sendto", "sendmsg", "sendmmsg"}
	if int(sc) < len(names) {
		return names[sc]
	}
	return fmt.Sprintf("syscall-%d", sc)
}

// record is one decoded ring-buffer record. Strings alias the input buffer;
// copy them before the buffer is reused.
type record struct {
	TsBootNs    uint64
	StartBootNs uint64
	CgroupID    uint64
	Kind        uint32
	Pid, Tgid   uint32
	Ppid        uint32
	Uid, Gid    uint32
	Euid, Egid  uint32
	PidNS       uint32
	MntNS       uint32
	NetNS       uint32
	Comm        []byte
	Result      int64
	Num         [numWords]uint64
	Flags       uint32
	Str         [maxStrings][]byte
}

// ErrMalformed wraps every decoding failure so callers can count them.
var ErrMalformed = errors.New("malformed sensor record")

// decodeRecord parses raw ring-buffer bytes. It trusts nothing: every length
// is checked against the buffer, so corrupt input gives an error, never a
// panic or an out-of-bounds read.
func decodeRecord(b []byte, r *record) error {
	if len(b) < fixedSize {
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrMalformed, len(b), fixedSize)
	}
	le := binary.LittleEndian
	length := le.Uint32(b[28:])
	if int(length) > len(b) || length < fixedSize || length > maxRecordSize {
		return fmt.Errorf("%w: length field %d, buffer %d", ErrMalformed, length, len(b))
	}
	b = b[:length]
	r.TsBootNs = le.Uint64(b[0:])
	r.StartBootNs = le.Uint64(b[8:])
	r.CgroupID = le.Uint64(b[16:])
	r.Kind = le.Uint32(b[24:])
	if r.Kind == 0 || r.Kind >= kindMax {
		return fmt.Errorf("%w: unknown kind %d", ErrMalformed, r.Kind)
	}
	r.Pid = le.Uint32(b[32:])
	r.Tgid = le.Uint32(b[36:])
	r.Ppid = le.Uint32(b[40:])
	r.Uid = le.Uint32(b[44:])
	r.Gid = le.Uint32(b[48:])
	r.Euid = le.Uint32(b[52:])
	r.Egid = le.Uint32(b[56:])
	r.PidNS = le.Uint32(b[60:])
	r.MntNS = le.Uint32(b[64:])
	r.NetNS = le.Uint32(b[68:])
	r.Comm = cString(b[72:88])
	r.Result = int64(le.Uint64(b[88:]))
	for i := range r.Num {
		r.Num[i] = le.Uint64(b[96+8*i:])
	}
	r.Flags = le.Uint32(b[172:])
	data := b[fixedSize:]
	off := 0
	for i := range r.Str {
		n := int(le.Uint16(b[160+2*i:]))
		if n > len(data)-off {
			return fmt.Errorf("%w: string %d of %d bytes overruns %d bytes of data", ErrMalformed, i, n, len(data)-off)
		}
		r.Str[i] = data[off : off+n]
		off += n
	}
	return nil
}

// cString cuts b at its first NUL.
func cString(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
