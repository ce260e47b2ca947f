package sensor

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor/proc"
)

// enrich updates the process cache from rec and builds the event with its
// process, ancestry and container.
//
// Events of one process share their Process, Ancestry, Namespaces and
// Container messages (see view), so consumers must treat events as
// read-only. This keeps the per-event cost to the event itself.
func (s *Sensor) enrich(rec *record) *api.Event {
	ev := &api.Event{
		Seq:  s.seq.Add(1),
		Time: timestamppb.New(s.bootTime.Add(time.Duration(rec.TsBootNs))),
		Node: s.cfg.Node,
		Kind: api.EventKind(rec.Kind),
	}
	switch rec.Kind {
	case kindExec:
		cgroupPath := api.Text(rec.Str[4])
		s.cgroups.learn(rec.CgroupID, cgroupPath)
		args, truncated := splitArgs(rec.Str[1])
		s.procs.Exec(proc.Entry{
			StartBootNs: rec.StartBootNs,
			CgroupID:    rec.CgroupID,
			Comm:        api.Text(rec.Comm),
			Exe:         api.Text(rec.Str[0]),
			Cwd:         api.Text(rec.Str[2]),
			Cgroup:      cgroupPath,
			Args:        args,
			Tgid:        rec.Tgid,
			Ppid:        rec.Ppid,
			Uid:         rec.Uid, Gid: rec.Gid, Euid: rec.Euid, Egid: rec.Egid,
			ExeOrigin: proc.ExeOrigin{
				OverlayUpper: rec.Flags&originOverlayUpper != 0,
				Memfd:        rec.Flags&originMemfd != 0,
				Deleted:      rec.Flags&originDeleted != 0,
			},
			ArgsTruncated: truncated || rec.Num[1] != 0,
			CapEffective:  rec.Num[2],
			CapBounding:   rec.Num[3],
		})
		s.views.forget(rec.Pid)
		ev.Detail = &api.Event_Exec{Exec: &api.Exec{Filename: api.Text(rec.Str[3]), StdioSockets: stdioSockets(rec.Str[5]),
			LdPreload: api.Text(rec.Str[6]),
			ExeInode:  rec.Num[4], ExeDevice: rec.Num[5], ExeCtimeNs: int64(rec.Num[6])*1e9 + int64(rec.Num[7])}}
	case kindFork:
		s.procs.Fork(rec.Tgid, uint32(rec.Num[1]), rec.Num[2])
	}

	v := s.view(rec)
	ev.Process, ev.Ancestry, ev.Namespaces, ev.Container = v.process, v.ancestry, v.namespaces, v.container
	if rec.Kind != kindExec {
		if err := setDetail(ev, rec); err != nil {
			// The event is kept: that something was sent to port 53
			// matters even when it is not a DNS query.
			s.dnsErrors.Add(1)
			s.log.Debug("undecodable detail", "kind", api.EventKind(rec.Kind).Name(), "error", err)
		}
	}
	if rec.Kind == kindExit {
		s.procs.Exit(rec.Tgid)
		s.views.forget(rec.Pid)
	}
	return ev
}

// processView is what every event of one process carries, built once and
// reused while the kernel's view of the process (thread, credentials, comm,
// cgroup, namespaces) is unchanged.
type processView struct {
	key        viewKey
	process    *api.Process
	ancestry   []*api.Ancestor
	namespaces *api.Namespaces
	container  *api.Container
}

// viewKey holds the record fields a view depends on.
type viewKey struct {
	start                uint64
	cgroup               uint64
	pid, ppid            uint32
	uid, gid, euid, egid uint32
	pidNS, mntNS, netNS  uint32
	comm                 [16]byte
}

func keyOf(rec *record) viewKey {
	k := viewKey{
		start: rec.StartBootNs, cgroup: rec.CgroupID, pid: rec.Pid, ppid: rec.Ppid,
		uid: rec.Uid, gid: rec.Gid, euid: rec.Euid, egid: rec.Egid,
		pidNS: rec.PidNS, mntNS: rec.MntNS, netNS: rec.NetNS,
	}
	copy(k.comm[:], rec.Comm)
	return k
}

// viewCache maps thread ids to views (a Process names its thread, and busy
// multi-threaded processes would otherwise rebuild it on every switch). It
// is used by the Run goroutine only and forgets everything when full, which
// keeps it bounded under churn; a stale entry of a dead thread cannot be
// mistaken for a new one because the key holds the process start time.
type viewCache struct {
	max   int
	views map[uint32]*processView
}

func newViewCache(max int) *viewCache {
	return &viewCache{max: max, views: make(map[uint32]*processView)}
}

func (c *viewCache) forget(tid uint32) { delete(c.views, tid) }

// view returns the shared process view for rec, building it on a miss.
func (s *Sensor) view(rec *record) *processView {
	key := keyOf(rec)
	if v, ok := s.views.views[rec.Pid]; ok && v.key == key {
		return v
	}
	v := &processView{
		key:        key,
		namespaces: &api.Namespaces{Pid: rec.PidNS, Mnt: rec.MntNS, Net: rec.NetNS},
		ancestry:   s.procs.AncestorChain(rec.Tgid, s.cfg.AncestryDepth, s.bootTime),
	}
	e, known := s.procs.Get(rec.Tgid)
	if known {
		v.process = e.ToProcess(s.bootTime)
	} else {
		v.process = &api.Process{StartTime: timestamppb.New(s.bootTime.Add(time.Duration(rec.StartBootNs)))}
	}
	p := v.process
	p.Pid, p.Tgid, p.Ppid = rec.Pid, rec.Tgid, rec.Ppid
	p.Uid, p.Gid, p.Euid, p.Egid = rec.Uid, rec.Gid, rec.Euid, rec.Egid
	p.Comm = api.Text(rec.Comm)
	if c := s.cgroups.resolve(rec.CgroupID); c.InContainer() || c.PodUID != "" {
		if known && s.privileged.observe(c.ID, &e, p.Comm) {
			// Views built before this container was known to be
			// privileged say otherwise; they are rebuilt on next use.
			clear(s.views.views)
		}
		v.container = &api.Container{Runtime: c.Runtime, Id: c.ID, Cgroup: c.Cgroup, PodUid: c.PodUID,
			Privileged: s.privileged.has(c.ID)}
	} else {
		p.Cgroup = c.Cgroup // names the host service
	}
	if len(s.views.views) >= s.views.max {
		clear(s.views.views)
	}
	s.views.views[rec.Pid] = v
	return v
}

// splitArgs splits the NUL-separated argv the kernel copied.
func splitArgs(b []byte) (args []string, truncated bool) {
	if len(b) == 0 {
		return nil, false
	}
	truncated = b[len(b)-1] != 0
	b = bytes.TrimSuffix(b, []byte{0})
	for part := range bytes.SplitSeq(b, []byte{0}) {
		args = append(args, api.Text(part))
	}
	return args, truncated
}

const (
	// dnsTCPLength in a DNS record's flags: the payload starts with DNS
	// over TCP's 2-byte length (DNS_TCP_LENGTH in the BPF program).
	dnsTCPLength = 0x100

	oAccMode  = 0o3
	oWronly   = 0o1
	oRdwr     = 0o2
	oCreat    = 0o100
	oTrunc    = 0o1000
	atRemDir  = 0x200
	ipprotTCP = 6
	ipprotUDP = 17
)

// setDetail decodes the kind-specific part of a record into ev. An error
// means the detail is incomplete (a DNS payload that is not a query); ev is
// set all the same.
func setDetail(ev *api.Event, rec *record) error {
	sc := sensorSyscallId(rec.Num[0])
	switch rec.Kind {
	case kindExit:
		status := uint32(rec.Num[0])
		ev.Detail = &api.Event_Exit{Exit: &api.Exit{
			Code:       int32((status >> 8) & 0xff),
			Signal:     int32(status & 0x7f),
			CoreDumped: status&0x80 != 0,
		}}
	case kindFork:
		ev.Detail = &api.Event_Fork{Fork: &api.Fork{
			ChildPid: uint32(rec.Num[0]), ChildTgid: uint32(rec.Num[1]), Thread: rec.Num[0] != rec.Num[1],
		}}
	case kindFileOpen:
		flags := uint32(rec.Num[1])
		acc := flags & oAccMode
		ev.Detail = &api.Event_FileOpen{FileOpen: &api.FileOpen{
			Path:     atomicWriterPath(api.Text(rec.Str[0])),
			Flags:    int32(flags),
			Read:     acc == 0 || acc == oRdwr,
			Write:    acc == oWronly || acc == oRdwr,
			Create:   flags&oCreat != 0,
			Truncate: flags&oTrunc != 0,
			Mode:     uint32(rec.Num[2]),
			Result:   rec.Result,
		}}
	case kindFileUnlink:
		ev.Detail = &api.Event_FileUnlink{FileUnlink: &api.FileUnlink{
			Path:      atomicWriterPath(api.Text(rec.Str[0])),
			Directory: sc == scRmdir || (sc == scUnlinkat && rec.Num[1]&atRemDir != 0),
			Result:    rec.Result,
		}}
	case kindFileRename:
		ev.Detail = &api.Event_FileRename{FileRename: &api.FileRename{
			OldPath: api.Text(rec.Str[0]), NewPath: api.Text(rec.Str[1]), Result: rec.Result,
		}}
	case kindConnect:
		ev.Detail = &api.Event_Connect{Connect: &api.Connect{
			Destination: sockAddr(rec.Num[0], rec.Num[6], rec.Num[7], rec.Num[3]),
			Protocol:    protocol(rec.Num[1]),
			Result:      rec.Result,
		}}
	case kindListen:
		ev.Detail = &api.Event_Listen{Listen: &api.Listen{
			Local:    sockAddr(rec.Num[0], rec.Num[4], rec.Num[5], rec.Num[2]),
			Protocol: protocol(rec.Num[1]),
			Backlog:  int32(rec.Num[3]),
			Result:   rec.Result,
		}}
	case kindAccept:
		ev.Detail = &api.Event_Accept{Accept: &api.Accept{
			Local:    sockAddr(rec.Num[0], rec.Num[4], rec.Num[5], rec.Num[2]),
			Remote:   sockAddr(rec.Num[0], rec.Num[6], rec.Num[7], rec.Num[3]),
			Protocol: protocol(rec.Num[1]),
			Result:   rec.Result,
		}}
	case kindPtrace:
		ev.Detail = &api.Event_Ptrace{Ptrace: &api.Ptrace{
			Request: int64(rec.Num[1]), TargetPid: uint32(rec.Num[2]), Result: rec.Result,
		}}
	case kindModuleLoad:
		name := "init_module"
		if sc == scFinitModule {
			name = "finit_module"
		}
		ev.Detail = &api.Event_ModuleLoad{ModuleLoad: &api.ModuleLoad{
			Syscall: name, Path: api.Text(rec.Str[0]), Params: api.Text(rec.Str[1]), Result: rec.Result,
		}}
	case kindNamespaceChange:
		name, flags := "unshare", rec.Num[1]
		switch sc {
		case scSetns:
			name, flags = "setns", rec.Num[2]
		case scClone, scClone3:
			name = "clone"
		}
		ev.Detail = &api.Event_NamespaceChange{NamespaceChange: &api.NamespaceChange{
			Syscall: name, Flags: flags, Namespaces: namespaceNames(flags), Result: rec.Result,
		}}
	case kindMemfdCreate:
		ev.Detail = &api.Event_MemfdCreate{MemfdCreate: &api.MemfdCreate{
			Name: api.Text(rec.Str[0]), Flags: uint32(rec.Num[2]), Result: rec.Result,
		}}
	case kindCredential:
		ev.Detail = &api.Event_CredentialChange{CredentialChange: credential(sc, rec)}
	case kindMount:
		ev.Detail = &api.Event_Mount{Mount: &api.Mount{
			Source: api.Text(rec.Str[0]), Target: api.Text(rec.Str[1]), Fstype: api.Text(rec.Str[2]),
			Flags: rec.Num[1], Result: rec.Result,
		}}
	case kindChmod:
		ev.Detail = &api.Event_Chmod{Chmod: &api.Chmod{
			Path: dropDotSegments(api.Text(rec.Str[0])), Mode: uint32(rec.Num[1]), Result: rec.Result,
		}}
	case kindSignal:
		ev.Detail = &api.Event_Signal{Signal: &api.Signal{
			TargetPid: uint32(rec.Num[1]), Signal: int32(rec.Num[2]), Result: rec.Result,
		}}
	case kindDNSQuery:
		d := &api.DnsQuery{Server: sockAddr(rec.Num[0], rec.Num[6], rec.Num[7], rec.Num[3]),
			Protocol: protocol(rec.Num[1]), Syscall: syscallName(sensorSyscallId(rec.Flags &^ dnsTCPLength))}
		ev.Detail = &api.Event_DnsQuery{DnsQuery: d}
		payload := rec.Str[0]
		if rec.Flags&dnsTCPLength != 0 && len(payload) >= 2 {
			payload = payload[2:] // DNS over TCP: the message follows its length
		}
		q, err := parseDNSQuery(payload)
		d.TransactionId = uint32(q.ID)
		if err != nil {
			return err
		}
		d.Name, d.Qtype = api.TextString(q.Name), uint32(q.QType)
	}
	return nil
}

// dropDotSegments removes "." components and repeated slashes from a path
// the kernel joined from the cwd and the name given ("chmod +x ./x" gives
// "/tmp/./x"), so it compares equal to the exec path of the same file.
// ".." is left alone: without the file system it cannot be undone safely
// (a symlinked directory's parent is not the lexical one).
func dropDotSegments(p string) string {
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	for part := range strings.SplitSeq(p, "/") {
		if part == "" || part == "." {
			continue
		}
		b.WriteByte('/')
		b.WriteString(part)
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// atomicWriterPath gives a file of a Kubernetes Secret, ConfigMap or
// projected volume the path its process opened. The kubelet's atomic writer
// keeps the files in a directory named ..<UTC time>.<random> and links
// <volume>/<name> → ..data/<name> → that directory; the kernel reports the
// resolved path, /home/app/.aws/..2026_12_06_03_01_02.12345/credentials,
// which no rule about /.aws/credentials (or a service-account token) would
// recognise. The timestamped component is dropped.
func atomicWriterPath(p string) string {
	i := strings.Index(p, "/..")
	if i < 0 {
		return p
	}
	rest := p[i+3:]
	end := strings.IndexByte(rest, '/')
	if end < 0 || !isAtomicWriterStamp(rest[:end]) {
		return p
	}
	return p[:i] + rest[end:]
}

// isAtomicWriterStamp reports whether s is 2006_01_02_15_04_05.<digits>.
func isAtomicWriterStamp(s string) bool {
	const layout = "dddd_dd_dd_dd_dd_dd."
	if len(s) <= len(layout) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		want := byte('d')
		if i < len(layout) {
			want = layout[i]
		}
		switch {
		case want == 'd' && c >= '0' && c <= '9':
		case want != 'd' && c == want:
		default:
			return false
		}
	}
	return true
}

// stdioSocketSize is the size of struct stdio_sock in the C source.
const stdioSocketSize = 24

// stdioSockets decodes the exec record's list of standard streams that are
// sockets: fd (u8), pad, family (u16), port (u16), pad, address (16 bytes).
func stdioSockets(b []byte) []*api.StdioSocket {
	var out []*api.StdioSocket
	for ; len(b) >= stdioSocketSize; b = b[stdioSocketSize:] {
		le := binary.LittleEndian
		family := uint64(le.Uint16(b[2:]))
		s := &api.StdioSocket{Fd: uint32(b[0]), Family: familyName(family)}
		s.Remote = sockAddr(family, le.Uint64(b[8:]), le.Uint64(b[16:]), uint64(le.Uint16(b[4:])))
		out = append(out, s)
	}
	return out
}

// familyName names a socket address family as StdioSocket.family does.
func familyName(family uint64) string {
	switch family {
	case afInet:
		return "ipv4"
	case afInet6:
		return "ipv6"
	case afUnix:
		return "unix"
	}
	return "af-" + strconv.FormatUint(family, 10)
}

// id32 turns a uid/gid syscall argument into an int64 keeping -1 ("unchanged").
func id32(v uint64) int64 { return int64(int32(uint32(v))) }

func credential(sc sensorSyscallId, rec *record) *api.CredentialChange {
	a := rec.Num[1:7]
	c := &api.CredentialChange{Uid: -1, Euid: -1, Suid: -1, Gid: -1, Egid: -1, Sgid: -1, Result: rec.Result}
	switch sc {
	case scSetuid:
		c.Syscall, c.Uid = "setuid", id32(a[0])
	case scSetgid:
		c.Syscall, c.Gid = "setgid", id32(a[0])
	case scSetreuid:
		c.Syscall, c.Uid, c.Euid = "setreuid", id32(a[0]), id32(a[1])
	case scSetregid:
		c.Syscall, c.Gid, c.Egid = "setregid", id32(a[0]), id32(a[1])
	case scSetresuid:
		c.Syscall, c.Uid, c.Euid, c.Suid = "setresuid", id32(a[0]), id32(a[1]), id32(a[2])
	case scSetresgid:
		c.Syscall, c.Gid, c.Egid, c.Sgid = "setresgid", id32(a[0]), id32(a[1]), id32(a[2])
	case scSetfsuid:
		c.Syscall, c.Euid = "setfsuid", id32(a[0])
	case scSetfsgid:
		c.Syscall, c.Egid = "setfsgid", id32(a[0])
	case scCapset:
		// The kernel replaced the data pointer with the first words of
		// the sets: effective, permitted, inheritable.
		c.Syscall = "capset"
		c.CapEffective, c.CapPermitted, c.CapInheritable = uint64(uint32(a[2])), uint64(uint32(a[3])), uint64(uint32(a[4]))
	}
	return c
}

// namespaceNames names the CLONE_NEW* flags set in flags.
func namespaceNames(flags uint64) []string {
	namespaceFlags := [...]struct {
		flag uint64
		name string
	}{
		{0x00020000, "mnt"}, {0x02000000, "cgroup"}, {0x04000000, "uts"}, {0x08000000, "ipc"},
		{0x10000000, "user"}, {0x20000000, "pid"}, {0x40000000, "net"}, {0x00000080, "time"},
	}
	var names []string
	for _, f := range namespaceFlags {
		if flags&f.flag != 0 {
			names = append(names, f.name)
		}
	}
	return names
}

const (
	afUnix  = 1
	afInet  = 2
	afInet6 = 10
)

// sockAddr rebuilds an address from two words that hold its raw bytes.
func sockAddr(family, w0, w1, port uint64) *api.SocketAddress {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[0:], w0)
	binary.LittleEndian.PutUint64(raw[8:], w1)
	switch uint16(family) {
	case afInet:
		return &api.SocketAddress{Family: "ipv4", Ip: netip.AddrFrom4([4]byte(raw[:4])).String(), Port: uint32(uint16(port))}
	case afInet6:
		addr := netip.AddrFrom16(raw)
		return &api.SocketAddress{Family: "ipv6", Ip: addr.String(), Port: uint32(uint16(port))}
	}
	return nil
}

func protocol(p uint64) api.Protocol {
	switch p {
	case ipprotTCP:
		return api.Protocol_PROTOCOL_TCP
	case ipprotUDP:
		return api.Protocol_PROTOCOL_UDP
	case 0:
		return api.Protocol_PROTOCOL_UNSPECIFIED
	}
	return api.Protocol_PROTOCOL_OTHER
}
