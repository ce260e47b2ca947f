package analytics

import (
	"path"
	"strings"
	"unsafe"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"

	"github.com/harrier-sec/harrier/api"
)

// Rule conditions read an event through flat, dotted field names
// (proc.name, file.path, net.port, ...) rather than the protobuf tree: the
// names stay stable if the wire model grows, read like the Falco fields rule
// authors already know, and let the engine answer most of a condition natively
// (see guard.go) without building CEL values.

// fieldType is the CEL type of a field, kept small so native getters stay simple.
type fieldType int

const (
	stringField fieldType = iota
	intField
	boolField
	listField
	// dynField is a parsed JSON value (the audit request object).
	dynField
)

// field is one name a condition can read.
type field struct {
	name string
	typ  fieldType
	doc  string
	str  func(*evalContext) string
	// volatile: str returns a view of a buffer reused by the next event, so
	// values that escape the event (CEL, output) are copied.
	volatile bool
	num      func(*evalContext) int64
	flag     func(*evalContext) bool
	list     func(*evalContext) []string
	dyn      func(*evalContext) any
	// grams, when set, gives the byte pairs of str's value, so contains
	// tests skip literals the value cannot hold.
	grams func(*evalContext) *bigramSet
}

func (f *field) celType() *cel.Type {
	switch f.typ {
	case intField:
		return cel.IntType
	case boolField:
		return cel.BoolType
	case listField:
		return cel.ListType(cel.StringType)
	case dynField:
		return cel.DynType
	default:
		return cel.StringType
	}
}

// value boxes the field's value for CEL; only called once a native guard
// passed, so its allocation is off the no-match path.
func (f *field) value(c *evalContext) any {
	switch f.typ {
	case intField:
		return f.num(c)
	case boolField:
		return f.flag(c)
	case listField:
		return f.list(c)
	case dynField:
		return f.dyn(c)
	default:
		if f.volatile {
			return strings.Clone(f.str(c))
		}
		return f.str(c)
	}
}

// evalContext is the view of one event that rules read. The engine reuses one
// across events (it runs on one goroutine); derived values such as command
// lines and ancestor names are computed on first use and cached, so an event
// that meets no rule pays only for what its guards read.
type evalContext struct {
	ev     *api.Event
	fields map[string]*field
	kind   string
	// supervisors are the processes allowed to signal Harrier (its parent).
	supervisors map[uint32]bool
	// builds are the engine's build outputs (proc.exe_built); nil when the
	// rule set has no build_tools list.
	builds *buildOutputs

	cmdline, parentCmdline string
	// procName is proc.name, which most exec rules test first.
	procName                  string
	haveProcName              bool
	cmdBuf                    []byte
	haveCmdline, haveParentCL bool
	cmdGrams                  bigramSet
	haveCmdGrams              bool
	argNames                  []string
	haveArgNames              bool
	ancestorNames             []string
	ancestorExes              []string
	ancestorCmdlines          []string
	haveAncNames, haveAncExes bool
	haveAncCmdlines           bool
	auditV                    auditView
	// actor is the audit event's actor as judged by the learned actor
	// anomalies, which share it: one baseline look-up per event, not one
	// per detector.
	actor actorMemo
	// pgConcern memoizes exposedPostgres.mayConcern for its two detectors.
	pgConcern memoBool
}

// memoBool is a per-event result computed once.
type memoBool uint8

const (
	memoUnknown memoBool = iota
	memoFalse
	memoTrue
)

func memoOf(b bool) memoBool {
	if b {
		return memoTrue
	}
	return memoFalse
}

var _ interpreter.Activation = (*evalContext)(nil)

func (c *evalContext) reset(ev *api.Event, kind string) {
	c.ev, c.kind = ev, kind
	c.haveCmdline, c.haveParentCL, c.haveArgNames, c.haveProcName = false, false, false, false
	c.haveCmdGrams = false
	c.argNames = c.argNames[:0]
	c.haveAncNames, c.haveAncExes, c.haveAncCmdlines = false, false, false
	c.ancestorNames = c.ancestorNames[:0]
	c.ancestorExes = c.ancestorExes[:0]
	c.ancestorCmdlines = c.ancestorCmdlines[:0]
	c.auditV.parsed = false
	c.actor.state = memoUnknown
	c.pgConcern = memoUnknown
}

// ResolveName implements interpreter.Activation.
func (c *evalContext) ResolveName(name string) (any, bool) {
	f, ok := c.fields[name]
	if !ok {
		return nil, false
	}
	return f.value(c), true
}

// Parent implements interpreter.Activation.
func (c *evalContext) Parent() interpreter.Activation { return nil }

// baseName is the last path element without allocating; "" stays "".
func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// procName is what people call a process: the executable's file name, or
// the kernel's comm when the exe is unknown. Multi-call binaries (busybox,
// toybox) are named by the applet they run, as their users see them.
func procName(p *api.Process) string {
	n := baseName(p.GetExe())
	if n == "" {
		return p.GetComm()
	}
	if multiCall(n) {
		return appletName(p.GetArgs(), p.GetComm())
	}
	return n
}

func multiCall(name string) bool { return name == "busybox" || name == "toybox" }

// appletName picks the applet from argv ("wget ..." via a symlink, or
// "busybox wget ..."), falling back to comm.
func appletName(args []string, comm string) string {
	if len(args) > 0 {
		// A login shell's argv[0] is "-sh".
		if n := strings.TrimPrefix(baseName(args[0]), "-"); !multiCall(n) && n != "" {
			return n
		}
		if len(args) > 1 {
			return baseName(args[1])
		}
	}
	return comm
}

// procCmdline joins argv into a buffer the context reuses, so that the rules
// reading the command line of every exec (reverse shells, miners, the test
// marker) cost no allocation. The string is only valid for this event; the
// field is volatile, so anything that keeps it gets a copy.
func (c *evalContext) procCmdline() string {
	if !c.haveCmdline {
		c.cmdBuf = c.cmdBuf[:0]
		for i, a := range c.ev.GetProcess().GetArgs() {
			if i > 0 {
				c.cmdBuf = append(c.cmdBuf, ' ')
			}
			c.cmdBuf = append(c.cmdBuf, a...)
		}
		c.cmdline = ""
		if len(c.cmdBuf) > 0 {
			c.cmdline = unsafe.String(&c.cmdBuf[0], len(c.cmdBuf))
		}
		c.haveCmdline = true
	}
	return c.cmdline
}

// cmdlineGrams are the byte pairs of proc.cmdline, filled on first use.
func (c *evalContext) cmdlineGrams() *bigramSet {
	if !c.haveCmdGrams {
		c.cmdGrams.fill(c.procCmdline())
		c.haveCmdGrams = true
	}
	return &c.cmdGrams
}

// maxArgNames bounds proc.arg_names: the names that matter come first.
const maxArgNames = 8

func (c *evalContext) procNameValue() string {
	if !c.haveProcName {
		c.procName, c.haveProcName = procName(c.ev.GetProcess()), true
	}
	return c.procName
}

func (c *evalContext) argNameList() []string {
	if !c.haveArgNames {
		args := c.ev.GetProcess().GetArgs()
		for i := 1; i < len(args) && i <= maxArgNames; i++ {
			c.argNames = append(c.argNames, baseName(args[i]))
		}
		c.haveArgNames = true
	}
	return c.argNames
}

func (c *evalContext) parent() *api.Ancestor {
	if a := c.ev.GetAncestry(); len(a) > 0 {
		return a[0]
	}
	return nil
}

func (c *evalContext) parentCmdlineValue() string {
	if !c.haveParentCL {
		c.parentCmdline = strings.Join(c.parent().GetArgs(), " ")
		c.haveParentCL = true
	}
	return c.parentCmdline
}

func ancestorName(a *api.Ancestor) string {
	n := baseName(a.GetExe())
	if n == "" || multiCall(n) {
		return appletName(a.GetArgs(), n)
	}
	return n
}

func (c *evalContext) ancestorNameList() []string {
	if !c.haveAncNames {
		for _, a := range c.ev.GetAncestry() {
			c.ancestorNames = append(c.ancestorNames, ancestorName(a))
		}
		c.haveAncNames = true
	}
	return c.ancestorNames
}

func (c *evalContext) ancestorExeList() []string {
	if !c.haveAncExes {
		for _, a := range c.ev.GetAncestry() {
			c.ancestorExes = append(c.ancestorExes, a.GetExe())
		}
		c.haveAncExes = true
	}
	return c.ancestorExes
}

func (c *evalContext) ancestorCmdlineList() []string {
	if !c.haveAncCmdlines {
		for _, a := range c.ev.GetAncestry() {
			c.ancestorCmdlines = append(c.ancestorCmdlines, strings.Join(a.GetArgs(), " "))
		}
		c.haveAncCmdlines = true
	}
	return c.ancestorCmdlines
}

// hostService names the systemd service a host process runs in, from its
// cgroup path: the innermost "*.service" element. Interactive sessions and
// containers have none.
func hostService(ev *api.Event) string {
	p := ev.GetProcess().GetCgroup()
	for p != "" && p != "/" {
		name := baseName(p)
		if strings.HasSuffix(name, ".service") {
			return name
		}
		p = p[:len(p)-len(name)-1]
	}
	return ""
}

// filePath is the path of any file-shaped event.
func filePath(ev *api.Event) string {
	switch d := ev.GetDetail().(type) {
	case *api.Event_FileOpen:
		return d.FileOpen.GetPath()
	case *api.Event_FileUnlink:
		return d.FileUnlink.GetPath()
	case *api.Event_FileRename:
		return d.FileRename.GetOldPath()
	case *api.Event_ModuleLoad:
		return d.ModuleLoad.GetPath()
	case *api.Event_Chmod:
		return d.Chmod.GetPath()
	case *api.Event_Exec:
		return ev.GetProcess().GetExe()
	}
	return ""
}

// result is the syscall's return value for the kinds that have one.
func result(ev *api.Event) int64 {
	switch d := ev.GetDetail().(type) {
	case *api.Event_FileOpen:
		return d.FileOpen.GetResult()
	case *api.Event_FileUnlink:
		return d.FileUnlink.GetResult()
	case *api.Event_FileRename:
		return d.FileRename.GetResult()
	case *api.Event_Connect:
		return d.Connect.GetResult()
	case *api.Event_Listen:
		return d.Listen.GetResult()
	case *api.Event_Accept:
		return d.Accept.GetResult()
	case *api.Event_Ptrace:
		return d.Ptrace.GetResult()
	case *api.Event_ModuleLoad:
		return d.ModuleLoad.GetResult()
	case *api.Event_NamespaceChange:
		return d.NamespaceChange.GetResult()
	case *api.Event_MemfdCreate:
		return d.MemfdCreate.GetResult()
	case *api.Event_CredentialChange:
		return d.CredentialChange.GetResult()
	case *api.Event_Mount:
		return d.Mount.GetResult()
	case *api.Event_Chmod:
		return d.Chmod.GetResult()
	case *api.Event_Signal:
		return d.Signal.GetResult()
	}
	return 0
}

// remote is the network peer of a connect or accept.
func remote(ev *api.Event) *api.SocketAddress {
	switch d := ev.GetDetail().(type) {
	case *api.Event_Connect:
		return d.Connect.GetDestination()
	case *api.Event_Accept:
		return d.Accept.GetRemote()
	}
	return nil
}

func local(ev *api.Event) *api.SocketAddress {
	switch d := ev.GetDetail().(type) {
	case *api.Event_Listen:
		return d.Listen.GetLocal()
	case *api.Event_Accept:
		return d.Accept.GetLocal()
	}
	return nil
}

func protocolName(ev *api.Event) string {
	var p api.Protocol
	switch d := ev.GetDetail().(type) {
	case *api.Event_Connect:
		p = d.Connect.GetProtocol()
	case *api.Event_Listen:
		p = d.Listen.GetProtocol()
	case *api.Event_Accept:
		p = d.Accept.GetProtocol()
	default:
		return ""
	}
	switch p {
	case api.Protocol_PROTOCOL_TCP:
		return "tcp"
	case api.Protocol_PROTOCOL_UDP:
		return "udp"
	default:
		return "other"
	}
}

// newFields lists every field a condition can read. It is a function, not a
// package variable, so nothing global is mutable.
func newFields() map[string]*field {
	fs := []*field{
		{name: "kind", doc: "event kind, by its short name: exec, open, connect, dns, ...", str: func(c *evalContext) string { return c.kind }},
		{name: "node", doc: "node name", str: func(c *evalContext) string { return c.ev.GetNode() }},
		{name: "result", typ: intField, doc: "syscall result: >= 0 success, -errno failure", num: func(c *evalContext) int64 { return result(c.ev) }},
		{name: "failed", typ: boolField, doc: "the syscall failed (result < 0)", flag: func(c *evalContext) bool { return result(c.ev) < 0 }},

		{name: "proc.name", doc: "executable file name (comm when unknown)", str: (*evalContext).procNameValue},
		{name: "proc.comm", doc: "kernel comm", str: func(c *evalContext) string { return c.ev.GetProcess().GetComm() }},
		{name: "proc.exe", doc: "executable path", str: func(c *evalContext) string { return c.ev.GetProcess().GetExe() }},
		{name: "proc.argv", typ: listField, doc: "argument vector including argv[0]", list: func(c *evalContext) []string { return c.ev.GetProcess().GetArgs() }},
		{name: "proc.arg_names", typ: listField, doc: "file names of argv[1:] (the script an interpreter runs, the files a tool reads)", list: (*evalContext).argNameList},
		{name: "proc.cmdline", doc: "argv joined by spaces", str: (*evalContext).procCmdline, volatile: true, grams: (*evalContext).cmdlineGrams},
		{name: "proc.cwd", doc: "working directory", str: func(c *evalContext) string { return c.ev.GetProcess().GetCwd() }},
		{name: "proc.pid", typ: intField, doc: "process id (tgid)", num: func(c *evalContext) int64 { return int64(c.ev.GetProcess().GetTgid()) }},
		{name: "proc.ppid", typ: intField, doc: "parent process id", num: func(c *evalContext) int64 { return int64(c.ev.GetProcess().GetPpid()) }},
		{name: "proc.uid", typ: intField, doc: "real uid", num: func(c *evalContext) int64 { return int64(c.ev.GetProcess().GetUid()) }},
		{name: "proc.euid", typ: intField, doc: "effective uid", num: func(c *evalContext) int64 { return int64(c.ev.GetProcess().GetEuid()) }},
		{name: "proc.gid", typ: intField, doc: "real gid", num: func(c *evalContext) int64 { return int64(c.ev.GetProcess().GetGid()) }},
		{name: "proc.service", doc: "host processes: the systemd service (unit) they belong to, e.g. nginx.service", str: func(c *evalContext) string { return hostService(c.ev) }},
		{name: "proc.exe_upper", typ: boolField, doc: "executable lives in the container's writable layer", flag: func(c *evalContext) bool { return c.ev.GetProcess().GetExeOrigin().GetOverlayUpper() }},
		{name: "proc.exe_built", typ: boolField, doc: "executable is what a compiler or linker run earlier in the same container was told to write (its -o argument)", flag: func(c *evalContext) bool { return c.builds.built(c.ev) }},
		{name: "proc.exe_memfd", typ: boolField, doc: "executable is a memfd", flag: func(c *evalContext) bool { return c.ev.GetProcess().GetExeOrigin().GetMemfd() }},
		{name: "proc.exe_deleted", typ: boolField, doc: "executable was deleted", flag: func(c *evalContext) bool { return c.ev.GetProcess().GetExeOrigin().GetDeleted() }},

		{name: "parent.name", doc: "parent's executable name", str: func(c *evalContext) string { return ancestorName(c.parent()) }},
		{name: "parent.exe", doc: "parent's executable path", str: func(c *evalContext) string { return c.parent().GetExe() }},
		{name: "parent.cmdline", doc: "parent's argv joined", str: (*evalContext).parentCmdlineValue},
		{name: "ancestors.names", typ: listField, doc: "executable names of all known ancestors, nearest first", list: (*evalContext).ancestorNameList},
		{name: "ancestors.exes", typ: listField, doc: "executable paths of all known ancestors", list: (*evalContext).ancestorExeList},
		{name: "ancestors.cmdlines", typ: listField, doc: "command lines of all known ancestors", list: (*evalContext).ancestorCmdlineList},

		{name: "container.id", doc: "container id; empty on the host", str: func(c *evalContext) string { return c.ev.GetContainer().GetId() }},
		{name: "container.runtime", doc: "container runtime", str: func(c *evalContext) string { return c.ev.GetContainer().GetRuntime() }},
		{name: "container.name", doc: "container name", str: func(c *evalContext) string { return c.ev.GetContainer().GetName() }},
		{name: "container.image", doc: "image reference", str: func(c *evalContext) string { return c.ev.GetContainer().GetImage() }},
		{name: "container.privileged", typ: boolField, doc: "the container runs privileged: its pod spec says so, or a process in it kept every capability", flag: func(c *evalContext) bool { return c.ev.GetContainer().GetPrivileged() }},
		{name: "in_container", typ: boolField, doc: "the process runs in a container", flag: func(c *evalContext) bool { return c.ev.GetContainer().GetId() != "" }},
		{name: "pod.name", doc: "pod name", str: func(c *evalContext) string { return c.ev.GetContainer().GetPodName() }},
		{name: "pod.namespace", doc: "pod namespace", str: func(c *evalContext) string { return c.ev.GetContainer().GetPodNamespace() }},
		{name: "pod.workload", doc: "owning workload name", str: func(c *evalContext) string { return c.ev.GetContainer().GetWorkloadName() }},
		{name: "pod.service_account", doc: "pod service account", str: func(c *evalContext) string { return c.ev.GetContainer().GetServiceAccount() }},

		{name: "file.path", doc: "path of an open, unlink, rename (old path), module or exec", str: func(c *evalContext) string { return filePath(c.ev) }},
		{name: "file.name", doc: "file name of file.path", str: func(c *evalContext) string { return baseName(filePath(c.ev)) }},
		{name: "file.dir", doc: "directory of file.path", str: func(c *evalContext) string { return path.Dir(filePath(c.ev)) }},
		{name: "file.new_path", doc: "rename target", str: func(c *evalContext) string { return c.ev.GetFileRename().GetNewPath() }},
		{name: "file.flags", typ: intField, doc: "open(2) flags as passed", num: func(c *evalContext) int64 { return int64(c.ev.GetFileOpen().GetFlags()) }},
		{name: "file.cloexec", typ: boolField, doc: "opened with O_CLOEXEC (as the dynamic loader and libraries do)", flag: func(c *evalContext) bool { return c.ev.GetFileOpen().GetFlags()&0o2000000 != 0 }},
		{name: "file.read", typ: boolField, doc: "opened for reading", flag: func(c *evalContext) bool { return c.ev.GetFileOpen().GetRead() }},
		{name: "file.write", typ: boolField, doc: "opened for writing", flag: func(c *evalContext) bool { return c.ev.GetFileOpen().GetWrite() }},
		{name: "file.create", typ: boolField, doc: "opened with O_CREAT", flag: func(c *evalContext) bool { return c.ev.GetFileOpen().GetCreate() }},
		{name: "file.truncate", typ: boolField, doc: "opened with O_TRUNC", flag: func(c *evalContext) bool { return c.ev.GetFileOpen().GetTruncate() }},

		{name: "net.ip", doc: "remote address of a connect/accept", str: func(c *evalContext) string { return remote(c.ev).GetIp() }},
		{name: "net.port", typ: intField, doc: "remote port of a connect/accept", num: func(c *evalContext) int64 { return int64(remote(c.ev).GetPort()) }},
		{name: "net.family", doc: "ipv4 or ipv6", str: func(c *evalContext) string {
			if r := remote(c.ev); r != nil {
				return r.GetFamily()
			}
			return local(c.ev).GetFamily()
		}},
		{name: "net.protocol", doc: "tcp, udp or other", str: func(c *evalContext) string { return protocolName(c.ev) }},
		{name: "net.local_ip", doc: "local address of a listen/accept", str: func(c *evalContext) string { return local(c.ev).GetIp() }},
		{name: "net.local_port", typ: intField, doc: "local port of a listen/accept", num: func(c *evalContext) int64 { return int64(local(c.ev).GetPort()) }},

		{name: "ptrace.request", typ: intField, doc: "ptrace request number", num: func(c *evalContext) int64 { return c.ev.GetPtrace().GetRequest() }},
		{name: "ptrace.target_pid", typ: intField, doc: "ptrace target", num: func(c *evalContext) int64 { return int64(c.ev.GetPtrace().GetTargetPid()) }},
		{name: "module.syscall", doc: "init_module or finit_module", str: func(c *evalContext) string { return c.ev.GetModuleLoad().GetSyscall() }},
		{name: "module.params", doc: "module parameters", str: func(c *evalContext) string { return c.ev.GetModuleLoad().GetParams() }},
		{name: "ns.syscall", doc: "unshare, setns or clone", str: func(c *evalContext) string { return c.ev.GetNamespaceChange().GetSyscall() }},
		{name: "ns.types", typ: listField, doc: "namespaces asked for: mnt, net, user, ...", list: func(c *evalContext) []string { return c.ev.GetNamespaceChange().GetNamespaces() }},
		{name: "memfd.name", doc: "memfd name", str: func(c *evalContext) string { return c.ev.GetMemfdCreate().GetName() }},
		{name: "cred.syscall", doc: "setuid, setresuid, capset, ...", str: func(c *evalContext) string { return c.ev.GetCredentialChange().GetSyscall() }},
		{name: "cred.uid", typ: intField, doc: "uid asked for (-1 unchanged)", num: func(c *evalContext) int64 { return c.ev.GetCredentialChange().GetUid() }},
		{name: "cred.euid", typ: intField, doc: "euid asked for (-1 unchanged)", num: func(c *evalContext) int64 { return c.ev.GetCredentialChange().GetEuid() }},
		{name: "chmod.mode", typ: intField, doc: "mode asked for by chmod", num: func(c *evalContext) int64 { return int64(c.ev.GetChmod().GetMode()) }},
		{name: "signal.number", typ: intField, doc: "signal sent to a protected (Harrier) process; 0 is a probe", num: func(c *evalContext) int64 { return int64(c.ev.GetSignal().GetSignal()) }},
		{name: "signal.target_pid", typ: intField, doc: "pid the signal was sent to", num: func(c *evalContext) int64 { return int64(c.ev.GetSignal().GetTargetPid()) }},
		{name: "signal.by_supervisor", typ: boolField, doc: "the sender is Harrier's own parent (its service manager or shell)", flag: func(c *evalContext) bool { return c.supervisors[c.ev.GetProcess().GetTgid()] }},
		{name: "dns.name", doc: "name asked for in a DNS query", str: func(c *evalContext) string { return c.ev.GetDnsQuery().GetName() }},
		{name: "dns.qtype", typ: intField, doc: "DNS query type (1 A, 28 AAAA, ...)", num: func(c *evalContext) int64 { return int64(c.ev.GetDnsQuery().GetQtype()) }},
		{name: "dns.server", doc: "DNS server address", str: func(c *evalContext) string { return c.ev.GetDnsQuery().GetServer().GetIp() }},
		{name: "exec.stdio_remote", doc: "ip:port of the network peer wired to the new program's stdin/stdout/stderr, if any", str: func(c *evalContext) string { return stdioRemote(c.ev) }},
		{name: "exec.ld_preload", doc: "LD_PRELOAD in the new program's environment (\"\" when unset)", str: func(c *evalContext) string { return c.ev.GetExec().GetLdPreload() }},
		{name: "dns.protocol", doc: "udp, or tcp for DNS over TCP", str: func(c *evalContext) string { return dnsProtocol(c.ev) }},
		{name: "exe.sha256", doc: "exe_content: hex SHA-256 of the executed file (\"\" when it was too large)", str: func(c *evalContext) string { return c.ev.GetExeContent().GetSha256() }},
		{name: "exe.tools", typ: listField, doc: "exe_content: known tools whose content signatures the executed file holds (xmrig, nmap, ...)", list: func(c *evalContext) []string { return c.ev.GetExeContent().GetTools() }},
		{name: "exe.elf", typ: boolField, doc: "exe_content: the executed file is an ELF binary", flag: func(c *evalContext) bool { return c.ev.GetExeContent().GetElf() }},
		{name: "mount.source", doc: "mount source", str: func(c *evalContext) string { return c.ev.GetMount().GetSource() }},
		{name: "mount.target", doc: "mount target", str: func(c *evalContext) string { return c.ev.GetMount().GetTarget() }},
		{name: "mount.fstype", doc: "file system type", str: func(c *evalContext) string { return c.ev.GetMount().GetFstype() }},
	}
	fs = append(fs, auditFields()...)
	fs = append(fs, admissionFields()...)
	m := make(map[string]*field, len(fs))
	for _, f := range fs {
		m[f.name] = f
	}
	return m
}

// FieldDoc describes a field for `harrier rules fields`.
type FieldDoc struct{ Name, Type, Doc string }

// Fields lists every field a condition can read.
func Fields() []FieldDoc {
	var out []FieldDoc
	for _, f := range newFields() {
		t := map[fieldType]string{stringField: "string", intField: "int", boolField: "bool", listField: "list(string)", dynField: "dyn"}[f.typ]
		out = append(out, FieldDoc{Name: f.name, Type: t, Doc: f.doc})
	}
	return out
}

// Functions lists Harrier's CEL helpers (besides CEL's standard ones:
// startsWith, endsWith, contains, matches, in, size, exists, ...).
func Functions() []FieldDoc {
	return []FieldDoc{
		{Name: "s.startsWithAny(list)", Doc: "s starts with any item"},
		{Name: "s.endsWithAny(list)", Doc: "s ends with any item"},
		{Name: "s.containsAny(list)", Doc: "s contains any item"},
		{Name: "ip.inCIDR(list)", Doc: "the address is in any of the CIDR ranges"},
		{Name: "l.hasAny(list)", Doc: "any element of list field l is in list"},
		{Name: "basename(s)", Doc: "last path element of s"},
	}
}

// bigramSet records which byte pairs occur in a string (4096 bits, a pair's
// bit by a hash of its bytes): a literal with a pair whose bit is clear is
// not in the string, known without searching it.
type bigramSet [64]uint64

func bigramHash(a, b byte) uint16 { return (uint16(a)<<5 ^ uint16(b)) & 4095 }

func (s *bigramSet) fill(str string) {
	clear(s[:])
	for i := 1; i < len(str); i++ {
		h := bigramHash(str[i-1], str[i])
		s[h>>6] |= 1 << (h & 63)
	}
}

// bigramsOf are the pair hashes of a literal (none for one byte or less).
func bigramsOf(lit string) []uint16 {
	var out []uint16
	for i := 1; i < len(lit); i++ {
		out = append(out, bigramHash(lit[i-1], lit[i]))
	}
	return out
}

// hasAll says whether every pair hash is set: false means absent for sure.
func (s *bigramSet) hasAll(hs []uint16) bool {
	for _, h := range hs {
		if s[h>>6]&(1<<(h&63)) == 0 {
			return false
		}
	}
	return true
}

// dnsProtocol is "tcp" for DNS over TCP, else "udp" (what every query was
// before the sensor told them apart).
func dnsProtocol(ev *api.Event) string {
	if ev.GetDnsQuery().GetProtocol() == api.Protocol_PROTOCOL_TCP {
		return "tcp"
	}
	return "udp"
}
