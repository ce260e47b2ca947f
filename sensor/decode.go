package sensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// Wire layout of a ring-buffer record: struct event_header, struct
// event_body, then the strings. Sizes and offsets come from the types bpf2go
// generates from the object's BTF (sensor_bpfel.go), so they follow the C
// source; decodeRecord reads fields at these offsets rather than through
// binary.Read, which reflects and allocates on every record.
const (
	headerSize = int(unsafe.Sizeof(sensorEventHeader{}))
	bodySize   = int(unsafe.Sizeof(sensorEventBody{}))
	fixedSize  = headerSize + bodySize
	maxStrings = len(sensorEventBody{}.StrLen)
	numWords   = len(sensorEventBody{}.Num)
	commSize   = len(sensorEventHeader{}.Comm)
	// maxRecordSize bounds what the kernel can send: the fixed part plus the
	// data area (DATA_SIZE in the C source; struct event's data array adds
	// slack that is never sent).
	maxRecordSize = fixedSize + 16384

	offTsBootNs    = int(unsafe.Offsetof(sensorEventHeader{}.TsBootNs))
	offStartBootNs = int(unsafe.Offsetof(sensorEventHeader{}.StartBootNs))
	offCgroupID    = int(unsafe.Offsetof(sensorEventHeader{}.CgroupId))
	offKind        = int(unsafe.Offsetof(sensorEventHeader{}.Kind))
	offLen         = int(unsafe.Offsetof(sensorEventHeader{}.Len))
	offPid         = int(unsafe.Offsetof(sensorEventHeader{}.Pid))
	offTgid        = int(unsafe.Offsetof(sensorEventHeader{}.Tgid))
	offPpid        = int(unsafe.Offsetof(sensorEventHeader{}.Ppid))
	offUID         = int(unsafe.Offsetof(sensorEventHeader{}.Uid))
	offGID         = int(unsafe.Offsetof(sensorEventHeader{}.Gid))
	offEUID        = int(unsafe.Offsetof(sensorEventHeader{}.Euid))
	offEGID        = int(unsafe.Offsetof(sensorEventHeader{}.Egid))
	offPidNS       = int(unsafe.Offsetof(sensorEventHeader{}.Pidns))
	offMntNS       = int(unsafe.Offsetof(sensorEventHeader{}.Mntns))
	offNetNS       = int(unsafe.Offsetof(sensorEventHeader{}.Netns))
	offComm        = int(unsafe.Offsetof(sensorEventHeader{}.Comm))
	offResult      = headerSize + int(unsafe.Offsetof(sensorEventBody{}.Result))
	offNum         = headerSize + int(unsafe.Offsetof(sensorEventBody{}.Num))
	offStrLen      = headerSize + int(unsafe.Offsetof(sensorEventBody{}.StrLen))
	offFlags       = headerSize + int(unsafe.Offsetof(sensorEventBody{}.Flags))
)

// Kinds as numbered on the wire (enum event_kind, equal to api.EventKind).
const (
	kindExec            = uint32(sensorEventKindKIND_EXEC)
	kindExit            = uint32(sensorEventKindKIND_EXIT)
	kindFork            = uint32(sensorEventKindKIND_FORK)
	kindFileOpen        = uint32(sensorEventKindKIND_FILE_OPEN)
	kindFileUnlink      = uint32(sensorEventKindKIND_FILE_UNLINK)
	kindFileRename      = uint32(sensorEventKindKIND_FILE_RENAME)
	kindConnect         = uint32(sensorEventKindKIND_CONNECT)
	kindListen          = uint32(sensorEventKindKIND_LISTEN)
	kindAccept          = uint32(sensorEventKindKIND_ACCEPT)
	kindPtrace          = uint32(sensorEventKindKIND_PTRACE)
	kindModuleLoad      = uint32(sensorEventKindKIND_MODULE_LOAD)
	kindNamespaceChange = uint32(sensorEventKindKIND_NAMESPACE_CHANGE)
	kindMemfdCreate     = uint32(sensorEventKindKIND_MEMFD_CREATE)
	kindCredential      = uint32(sensorEventKindKIND_CREDENTIAL_CHANGE)
	kindMount           = uint32(sensorEventKindKIND_MOUNT)
	kindChmod           = uint32(sensorEventKindKIND_CHMOD)
	kindSignal          = uint32(sensorEventKindKIND_SIGNAL)
	kindDNSQuery        = uint32(sensorEventKindKIND_DNS_QUERY)
	kindMax             = uint32(sensorEventKindKIND_MAX)
)

// Exe origin flags in body.flags of exec records (ORIGIN_* in the C source).
const (
	originOverlayUpper = 1 << 0
	originMemfd        = 1 << 1
	originDeleted      = 1 << 2
)

// Syscall identifiers in num[0] (enum syscall_id in the C source).
const (
	scOpenat      = sensorSyscallIdSC_OPENAT
	scOpenat2     = sensorSyscallIdSC_OPENAT2
	scOpen        = sensorSyscallIdSC_OPEN
	scCreat       = sensorSyscallIdSC_CREAT
	scUnlinkat    = sensorSyscallIdSC_UNLINKAT
	scUnlink      = sensorSyscallIdSC_UNLINK
	scRmdir       = sensorSyscallIdSC_RMDIR
	scRenameat2   = sensorSyscallIdSC_RENAMEAT2
	scRenameat    = sensorSyscallIdSC_RENAMEAT
	scRename      = sensorSyscallIdSC_RENAME
	scConnect     = sensorSyscallIdSC_CONNECT
	scListen      = sensorSyscallIdSC_LISTEN
	scAccept      = sensorSyscallIdSC_ACCEPT
	scAccept4     = sensorSyscallIdSC_ACCEPT4
	scPtrace      = sensorSyscallIdSC_PTRACE
	scInitModule  = sensorSyscallIdSC_INIT_MODULE
	scFinitModule = sensorSyscallIdSC_FINIT_MODULE
	scUnshare     = sensorSyscallIdSC_UNSHARE
	scSetns       = sensorSyscallIdSC_SETNS
	scClone       = sensorSyscallIdSC_CLONE
	scClone3      = sensorSyscallIdSC_CLONE3
	scMemfdCreate = sensorSyscallIdSC_MEMFD_CREATE
	scSetuid      = sensorSyscallIdSC_SETUID
	scSetgid      = sensorSyscallIdSC_SETGID
	scSetreuid    = sensorSyscallIdSC_SETREUID
	scSetregid    = sensorSyscallIdSC_SETREGID
	scSetresuid   = sensorSyscallIdSC_SETRESUID
	scSetresgid   = sensorSyscallIdSC_SETRESGID
	scSetfsuid    = sensorSyscallIdSC_SETFSUID
	scSetfsgid    = sensorSyscallIdSC_SETFSGID
	scCapset      = sensorSyscallIdSC_CAPSET
	scMount       = sensorSyscallIdSC_MOUNT
	scUmount2     = sensorSyscallIdSC_UMOUNT2
	scMoveMount   = sensorSyscallIdSC_MOVE_MOUNT
	scPivotRoot   = sensorSyscallIdSC_PIVOT_ROOT
	scChmod       = sensorSyscallIdSC_CHMOD
	scFchmod      = sensorSyscallIdSC_FCHMOD
	scFchmodat    = sensorSyscallIdSC_FCHMODAT
	scFchmodat2   = sensorSyscallIdSC_FCHMODAT2
	scKill        = sensorSyscallIdSC_KILL
	scTkill       = sensorSyscallIdSC_TKILL
	scTgkill      = sensorSyscallIdSC_TGKILL
	scSendto      = sensorSyscallIdSC_SENDTO
	scSendmsg     = sensorSyscallIdSC_SENDMSG
	scSendmmsg    = sensorSyscallIdSC_SENDMMSG
	scWrite       = sensorSyscallIdSC_WRITE
	scWritev      = sensorSyscallIdSC_WRITEV
)

// syscallName names a syscall identifier for status output.
func syscallName(sc sensorSyscallId) string {
	names := [...]string{
		scOpenat: "openat", scOpenat2: "openat2", scOpen: "open", scCreat: "creat",
		scUnlinkat: "unlinkat", scUnlink: "unlink", scRmdir: "rmdir",
		scRenameat2: "renameat2", scRenameat: "renameat", scRename: "rename",
		scConnect: "connect", scListen: "listen", scAccept: "accept", scAccept4: "accept4",
		scPtrace: "ptrace", scInitModule: "init_module", scFinitModule: "finit_module",
		scUnshare: "unshare", scSetns: "setns", scClone: "clone", scClone3: "clone3", scMemfdCreate: "memfd_create",
		scSetuid: "setuid", scSetgid: "setgid", scSetreuid: "setreuid", scSetregid: "setregid",
		scSetresuid: "setresuid", scSetresgid: "setresgid", scSetfsuid: "setfsuid", scSetfsgid: "setfsgid",
		scCapset: "capset", scMount: "mount", scUmount2: "umount2", scMoveMount: "move_mount", scPivotRoot: "pivot_root",
		scChmod: "chmod", scFchmod: "fchmod", scFchmodat: "fchmodat", scFchmodat2: "fchmodat2",
		scKill: "kill", scTkill: "tkill", scTgkill: "tgkill",
		scSendto: "sendto", scSendmsg: "sendmsg", scSendmmsg: "sendmmsg", scWrite: "write", scWritev: "writev",
	}
	if int(sc) < len(names) && names[sc] != "" {
		return names[sc]
	}
	return fmt.Sprintf("syscall-%d", sc)
}

// record is one decoded ring-buffer record: the fields of the generated
// sensorEventHeader and sensorEventBody (TestRecordLayout holds the decoder to
// them), with comm and the strings as slices. Those alias the input buffer;
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
	length := int(le.Uint32(b[offLen:]))
	if length > len(b) || length < fixedSize || length > maxRecordSize {
		return fmt.Errorf("%w: length field %d, buffer %d", ErrMalformed, length, len(b))
	}
	b = b[:length]
	r.TsBootNs = le.Uint64(b[offTsBootNs:])
	r.StartBootNs = le.Uint64(b[offStartBootNs:])
	r.CgroupID = le.Uint64(b[offCgroupID:])
	r.Kind = le.Uint32(b[offKind:])
	if r.Kind == 0 || r.Kind >= kindMax {
		return fmt.Errorf("%w: unknown kind %d", ErrMalformed, r.Kind)
	}
	r.Pid = le.Uint32(b[offPid:])
	r.Tgid = le.Uint32(b[offTgid:])
	r.Ppid = le.Uint32(b[offPpid:])
	r.Uid = le.Uint32(b[offUID:])
	r.Gid = le.Uint32(b[offGID:])
	r.Euid = le.Uint32(b[offEUID:])
	r.Egid = le.Uint32(b[offEGID:])
	r.PidNS = le.Uint32(b[offPidNS:])
	r.MntNS = le.Uint32(b[offMntNS:])
	r.NetNS = le.Uint32(b[offNetNS:])
	r.Comm = cString(b[offComm : offComm+commSize])
	r.Result = int64(le.Uint64(b[offResult:]))
	for i := range r.Num {
		r.Num[i] = le.Uint64(b[offNum+8*i:])
	}
	r.Flags = le.Uint32(b[offFlags:])
	data := b[fixedSize:]
	off := 0
	for i := range r.Str {
		n := int(le.Uint16(b[offStrLen+2*i:]))
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
