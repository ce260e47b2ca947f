package sensor

import (
	"encoding/binary"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor/proc"
)

// encodeRecord lays out r the way the BPF program does, through the types
// generated from the object's BTF and encoding/binary: independently of the
// offsets decodeRecord reads at, so every decoding test also checks those.
func encodeRecord(r *record) []byte {
	h := sensorEventHeader{
		TsBootNs: r.TsBootNs, StartBootNs: r.StartBootNs, CgroupId: r.CgroupID, Kind: sensorEventKind(r.Kind),
		Pid: r.Pid, Tgid: r.Tgid, Ppid: r.Ppid, Uid: r.Uid, Gid: r.Gid, Euid: r.Euid, Egid: r.Egid,
		Pidns: r.PidNS, Mntns: r.MntNS, Netns: r.NetNS,
	}
	for i := range min(len(r.Comm), len(h.Comm)) {
		h.Comm[i] = int8(r.Comm[i])
	}
	body := sensorEventBody{Result: r.Result, Num: r.Num, Flags: r.Flags}
	var data []byte
	for i, s := range r.Str {
		body.StrLen[i] = uint16(len(s))
		data = append(data, s...)
	}
	h.Len = uint32(binary.Size(h) + binary.Size(body) + len(data))
	b, err := binary.Append(nil, binary.LittleEndian, &h)
	if err == nil {
		b, err = binary.Append(b, binary.LittleEndian, &body)
	}
	if err != nil {
		panic(err)
	}
	return append(b, data...)
}

func execRecord() *record {
	r := &record{
		TsBootNs: 5e9, StartBootNs: 4e9, CgroupID: 77, Kind: kindExec,
		Pid: 100, Tgid: 100, Ppid: 1, Uid: 1000, Gid: 1000, Euid: 1000, Egid: 1000,
		PidNS: 4026531836, MntNS: 4026531841, NetNS: 4026531840, Comm: []byte("curl"),
		Flags: originOverlayUpper,
	}
	r.Str[0] = []byte("/usr/bin/curl")
	r.Str[1] = []byte("curl\x00-s\x00http://example.invalid/\x00")
	r.Str[2] = []byte("/tmp")
	r.Str[3] = []byte("/bin/curl")
	r.Str[4] = []byte("/harrier/abc")
	// fd 0 a TCP socket to 10.0.0.9:4444, fd 2 a unix socket.
	stdin := []byte{0, 0, afInet, 0, 0x5c, 0x11, 0, 0, 10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	stderr := []byte{2, 0, afUnix, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	r.Str[5] = append(stdin, stderr...)
	return r
}

func TestDecodeRecord(t *testing.T) {
	good := encodeRecord(execRecord())
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"exec record", good, false},
		{"trailing bytes beyond length are ignored", append(slices.Clone(good), 1, 2, 3), false},
		{"empty", nil, true},
		{"shorter than the header", good[:fixedSize-1], true},
		{"length field larger than buffer", func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint32(b[offLen:], uint32(len(b)+1))
			return b
		}(), true},
		{"length field below the fixed part", func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint32(b[offLen:], 10)
			return b
		}(), true},
		{"unknown kind", func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint32(b[offKind:], 99)
			return b
		}(), true},
		{"string overruns data", func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint16(b[offStrLen:], 60000)
			return b
		}(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r record
			err := decodeRecord(tt.in, &r)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if err == nil && (string(r.Str[0]) != "/usr/bin/curl" || string(r.Comm) != "curl" || r.Tgid != 100) {
				t.Errorf("decoded %+v", r)
			}
		})
	}
}

// testSensor is a Sensor with user-space state only, for decoding tests.
func testSensor() *Sensor {
	return &Sensor{
		cfg:        Config{Node: "node-1"}.withDefaults(),
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		procs:      proc.New(proc.Config{MaxEntries: 64, ExitedKeep: 16}),
		cgroups:    newCgroupResolver("", 64),
		privileged: newPrivilegedContainers(64),
		views:      newViewCache(64),
		bootTime:   time.Unix(1_700_000_000, 0),
	}
}

func TestEnrichExecAndDetails(t *testing.T) {
	s := testSensor()
	var r record
	if err := decodeRecord(encodeRecord(execRecord()), &r); err != nil {
		t.Fatal(err)
	}
	ev := s.enrich(&r)
	p := ev.GetProcess()
	if p.GetExe() != "/usr/bin/curl" || !slices.Equal(p.GetArgs(), []string{"curl", "-s", "http://example.invalid/"}) ||
		p.GetCwd() != "/tmp" || !p.GetExeOrigin().GetOverlayUpper() || p.GetUid() != 1000 {
		t.Errorf("process = %v", p)
	}
	if ev.GetContainer().GetRuntime() != "runc" || ev.GetContainer().GetId() != "abc" {
		t.Errorf("container = %v", ev.GetContainer())
	}
	ss := ev.GetExec().GetStdioSockets()
	if len(ss) != 2 || ss[0].GetFd() != 0 || ss[0].GetFamily() != "ipv4" || ss[0].GetRemote().GetIp() != "10.0.0.9" ||
		ss[0].GetRemote().GetPort() != 4444 || ss[1].GetFd() != 2 || ss[1].GetFamily() != "unix" || ss[1].GetRemote() != nil {
		t.Errorf("stdio sockets = %v", ss)
	}
	if want := time.Unix(1_700_000_005, 0); !ev.GetTime().AsTime().Equal(want) {
		t.Errorf("time %v, want %v", ev.GetTime().AsTime(), want)
	}

	// A later connect from the same process in the same cgroup.
	c := record{Kind: kindConnect, Tgid: 100, Pid: 100, CgroupID: 77, Comm: []byte("curl"), Result: -111}
	c.Num[0], c.Num[1], c.Num[3] = afInet6, ipprotTCP, 443
	c.Num[6], c.Num[7] = 0, 0x0100000000000000 // ::1
	ev = s.enrich(&c)
	dst := ev.GetConnect().GetDestination()
	if dst.GetIp() != "::1" || dst.GetPort() != 443 || dst.GetFamily() != "ipv6" || ev.GetConnect().GetResult() != -111 {
		t.Errorf("connect = %v", ev.GetConnect())
	}
	if ev.GetProcess().GetExe() != "/usr/bin/curl" || ev.GetContainer().GetId() != "abc" {
		t.Errorf("connect not enriched from the cache: %v %v", ev.GetProcess(), ev.GetContainer())
	}

	tests := []struct {
		name  string
		rec   record
		check func(*api.Event) bool
	}{
		{"exit by signal", record{Kind: kindExit, Num: [8]uint64{9}}, func(ev *api.Event) bool {
			return ev.GetExit().GetSignal() == 9 && ev.GetExit().GetCode() == 0
		}},
		{"exit code", record{Kind: kindExit, Num: [8]uint64{3 << 8}}, func(ev *api.Event) bool { return ev.GetExit().GetCode() == 3 }},
		{"ipv4 connect", record{Kind: kindConnect, Num: [8]uint64{afInet, ipprotUDP, 0, 53, 0, 0, 0x0100007f}}, func(ev *api.Event) bool {
			d := ev.GetConnect().GetDestination()
			return d.GetIp() == "127.0.0.1" && d.GetPort() == 53 && ev.GetConnect().GetProtocol() == api.Protocol_PROTOCOL_UDP
		}},
		{"setns", record{Kind: kindNamespaceChange, Num: [8]uint64{uint64(scSetns), 5, 0x40000000}}, func(ev *api.Event) bool {
			n := ev.GetNamespaceChange()
			return n.GetSyscall() == "setns" && slices.Equal(n.GetNamespaces(), []string{"net"})
		}},
		{"setreuid keeps -1", record{Kind: kindCredential, Num: [8]uint64{uint64(scSetreuid), 0xffffffff, 0}}, func(ev *api.Event) bool {
			c := ev.GetCredentialChange()
			return c.GetSyscall() == "setreuid" && c.GetUid() == -1 && c.GetEuid() == 0
		}},
		{"capset", record{Kind: kindCredential, Num: [8]uint64{uint64(scCapset), 0, 0, 0x21, 0x23, 0}}, func(ev *api.Event) bool {
			c := ev.GetCredentialChange()
			return c.GetSyscall() == "capset" && c.GetCapEffective() == 0x21 && c.GetCapPermitted() == 0x23
		}},
		{"rmdir", record{Kind: kindFileUnlink, Num: [8]uint64{uint64(scRmdir)}}, func(ev *api.Event) bool { return ev.GetFileUnlink().GetDirectory() }},
		{"unlinkat AT_REMOVEDIR", record{Kind: kindFileUnlink, Num: [8]uint64{uint64(scUnlinkat), 0x200}}, func(ev *api.Event) bool {
			return ev.GetFileUnlink().GetDirectory()
		}},
		{"open O_RDWR|O_CREAT", record{Kind: kindFileOpen, Num: [8]uint64{uint64(scOpenat), oRdwr | oCreat, 0o644}}, func(ev *api.Event) bool {
			f := ev.GetFileOpen()
			return f.GetRead() && f.GetWrite() && f.GetCreate() && !f.GetTruncate() && f.GetMode() == 0o644
		}},
		{"chmod +x", record{Kind: kindChmod, Num: [8]uint64{uint64(scFchmodat), 0o755}, Str: [maxStrings][]byte{[]byte("/tmp/payload")}}, func(ev *api.Event) bool {
			c := ev.GetChmod()
			return c.GetPath() == "/tmp/payload" && c.GetMode() == 0o755 && ev.GetKind() == api.EventKind_EVENT_KIND_CHMOD
		}},
		{"chmod +x ./x", record{Kind: kindChmod, Num: [8]uint64{uint64(scFchmodat), 0o700}, Str: [maxStrings][]byte{[]byte("/tmp/./a//x")}}, func(ev *api.Event) bool {
			return ev.GetChmod().GetPath() == "/tmp/a/x"
		}},
		{"chmod keeps ..", record{Kind: kindChmod, Num: [8]uint64{uint64(scFchmodat), 0o700}, Str: [maxStrings][]byte{[]byte("/tmp/../x")}}, func(ev *api.Event) bool {
			return ev.GetChmod().GetPath() == "/tmp/../x"
		}},
		{"signal probe", record{Kind: kindSignal, Num: [8]uint64{uint64(scKill), 4242, 0}}, func(ev *api.Event) bool {
			s := ev.GetSignal()
			return s.GetTargetPid() == 4242 && s.GetSignal() == 0 && ev.GetKind() == api.EventKind_EVENT_KIND_SIGNAL
		}},
		{"dns query", record{Kind: kindDNSQuery, Num: [8]uint64{afInet, ipprotUDP, 40000, 53, 0, 0, 0x0100007f},
			Str: [maxStrings][]byte{dnsQueryBytes(0x1234, "harrier-test.example", 1)}}, func(ev *api.Event) bool {
			d := ev.GetDnsQuery()
			return d.GetName() == "harrier-test.example" && d.GetQtype() == 1 && d.GetTransactionId() == 0x1234 &&
				d.GetServer().GetIp() == "127.0.0.1" && d.GetServer().GetPort() == 53
		}},
		{"dns payload that is not a query", record{Kind: kindDNSQuery, Num: [8]uint64{afInet, ipprotUDP, 1, 53},
			Str: [maxStrings][]byte{[]byte("GET / HTTP/1.0")}}, func(ev *api.Event) bool {
			d := ev.GetDnsQuery()
			return d != nil && d.GetName() == "" && d.GetServer().GetPort() == 53
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.rec
			rec.Tgid = 500
			if ev := s.enrich(&rec); !tt.check(ev) {
				t.Errorf("event = %v", ev)
			}
		})
	}
}

func TestInvalidUTF8NamesSurvive(t *testing.T) {
	s := testSensor()
	r := record{Kind: kindFileOpen, Tgid: 9, Comm: []byte("x\xff")}
	r.Str[0] = []byte("/etc/\xff\xfeevil")
	ev := s.enrich(&r)
	if _, err := proto.Marshal(ev); err != nil {
		t.Fatalf("event with a hostile file name does not marshal: %v", err)
	}
	if got := ev.GetFileOpen().GetPath(); got != `/etc/\xff\xfeevil` {
		t.Errorf("path = %q", got)
	}
}

// FuzzDecodeRecord feeds arbitrary ring-buffer bytes through the decoder and
// the enrichment: nothing may panic, and every event must marshal.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(execRecord()))
	conn := &record{Kind: kindConnect, Tgid: 3}
	conn.Num[0] = afInet6
	f.Add(encodeRecord(conn))
	ren := &record{Kind: kindFileRename}
	ren.Str[0], ren.Str[1] = []byte("/a"), []byte("/b\xff")
	f.Add(encodeRecord(ren))
	dns := &record{Kind: kindDNSQuery}
	dns.Num[0] = afInet
	dns.Str[0] = []byte{0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1}
	f.Add(encodeRecord(dns))
	f.Add([]byte{})
	s := testSensor()
	f.Fuzz(func(t *testing.T, b []byte) {
		var r record
		if err := decodeRecord(b, &r); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		ev := s.enrich(&r)
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := protojson.Marshal(ev); err != nil {
			t.Fatalf("json: %v", err)
		}
	})
}

// BenchmarkDecodeEnrich is the user-space cost of one event from a process
// with a few ancestors: the budget behind "events/s through the pipeline".
func BenchmarkDecodeEnrich(b *testing.B) {
	s := testSensor()
	s.procs = proc.New(proc.Config{})
	parent := uint32(1)
	for pid := uint32(2); pid < 8; pid++ {
		s.procs.Exec(proc.Entry{Tgid: pid, Ppid: parent, Exe: "/usr/bin/bash", Args: []string{"bash", "-c", "something long enough to matter"}, StartBootNs: uint64(pid)})
		parent = pid
	}
	c := &record{Kind: kindConnect, Tgid: 7, Pid: 7, CgroupID: 77, Comm: []byte("curl")}
	c.Num[0], c.Num[1], c.Num[3], c.Num[6] = afInet, ipprotTCP, 443, 0x0100007f
	raw := encodeRecord(c)
	var r record
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRecord(raw, &r); err != nil {
			b.Fatal(err)
		}
		_ = s.enrich(&r)
	}
}

// TestRecordLayout holds the decoder to the wire layout: the generated types
// must have no padding Go added on its own (their memory image is the C
// one), must be the size the object's BTF gives, and a record with a
// distinct value in every field must come back from encodeRecord, which
// writes through the generated types, field for field.
func TestRecordLayout(t *testing.T) {
	if n := binary.Size(sensorEventHeader{}); n != headerSize {
		t.Errorf("event_header: encoded %d bytes, in memory %d", n, headerSize)
	}
	if n := binary.Size(sensorEventBody{}); n != bodySize {
		t.Errorf("event_body: encoded %d bytes, in memory %d", n, bodySize)
	}
	spec, err := loadSensor()
	if err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"event_header": headerSize, "event_body": bodySize} {
		var st *btf.Struct
		if err := spec.Types.TypeByName(name, &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Size) != size {
			t.Errorf("struct %s is %d bytes in the object, %d in Go", name, st.Size, size)
		}
	}

	want := record{
		TsBootNs: 0x0102030405060708, StartBootNs: 0x1112131415161718, CgroupID: 0x2122232425262728,
		Kind: kindMount, Pid: 0x31, Tgid: 0x32, Ppid: 0x33, Uid: 0x34, Gid: 0x35, Euid: 0x36, Egid: 0x37,
		PidNS: 0x38, MntNS: 0x39, NetNS: 0x3a, Comm: []byte("fifteen-bytes!!"), Result: -0x4142434445,
		Num: [numWords]uint64{0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58}, Flags: 0x61626364,
	}
	for i := range want.Str {
		want.Str[i] = []byte(strings.Repeat(string(rune('a'+i)), i+1))
	}
	var got record
	if err := decodeRecord(encodeRecord(&want), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

// TestEverySyscallIDHasAName reads the generated enum syscall_id, so that a
// syscall added to the C source without a name here is caught.
func TestEverySyscallIDHasAName(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "sensor_bpfel.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			if typ, ok := vs.Type.(*ast.Ident); !ok || typ.Name != "sensorSyscallId" {
				continue
			}
			v, err := strconv.ParseUint(vs.Values[0].(*ast.BasicLit).Value, 0, 32)
			if err != nil {
				t.Fatal(err)
			}
			if name := syscallName(sensorSyscallId(v)); strings.HasPrefix(name, "syscall-") {
				t.Errorf("%s has no name", vs.Names[0].Name)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no sensorSyscallId constants in sensor_bpfel.go")
	}
}

// BenchmarkDecodeRecord is the decoder alone, on an exec record with every
// string slot used.
func BenchmarkDecodeRecord(b *testing.B) {
	raw := encodeRecord(execRecord())
	var r record
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRecord(raw, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecStorm is the sensor's user-space cost per exec of an exec
// storm (tests/bench/loadgen -workload exec) after the ring buffer: decoding
// and enriching the parent's fork, the child's exec and its exit, with the
// process cache and ancestry of a loadgen under shells and a supervisor
// with a long argument. One op is one exec (three records).
func BenchmarkExecStorm(b *testing.B) {
	s := testSensor()
	s.procs = proc.New(proc.Config{})
	s.views = newViewCache(s.cfg.ProcessCacheSize)
	env := strings.Repeat(`"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", `, 20)
	chain := []proc.Entry{
		{Tgid: 1, Exe: "/sbin/init", Args: []string{"/sbin/init", "splash"}},
		{Tgid: 5580, Ppid: 1, Exe: "/usr/local/bin/supervisor", Args: []string{"supervisor", "--uid", "0", "--env", env}},
		{Tgid: 5581, Ppid: 5580, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}},
		{Tgid: 7208, Ppid: 5581, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}},
		{Tgid: 7209, Ppid: 7208, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}},
		{Tgid: 7258, Ppid: 7209, Exe: "/tmp/bench/loadgen", Args: []string{"./loadgen", "-workload", "exec", "-n", "200000"}, Cwd: "/tmp/bench"},
	}
	for i, e := range chain {
		e.StartBootNs = uint64(i+1) * 1e9
		s.procs.Exec(e)
	}
	const parent, thread = 7258, 7261
	head := func(kind, pid, tgid uint32, start uint64) *record {
		return &record{Kind: kind, Pid: pid, Tgid: tgid, Ppid: 7209, StartBootNs: start, CgroupID: 1,
			PidNS: 4026531836, MntNS: 4026531832, NetNS: 4026531833, Comm: []byte("loadgen")}
	}
	var raws [][]byte
	for i := range 8192 {
		child, start := uint32(8000+i), uint64(10e9)+uint64(i)*1e6
		fork := head(kindFork, thread, parent, 6e9)
		fork.Num[0], fork.Num[1], fork.Num[2] = uint64(child), uint64(child), start
		exec := head(kindExec, child, child, start)
		exec.Ppid, exec.Comm = parent, []byte("true")
		exec.Str[0], exec.Str[1], exec.Str[2], exec.Str[3], exec.Str[4] = []byte("/usr/bin/true"), []byte("/bin/true\x00"), []byte("/tmp/bench"), []byte("/bin/true"), []byte("/system.slice/bench.service")
		exit := head(kindExit, child, child, start)
		exit.Ppid, exit.Comm = parent, []byte("true")
		raws = append(raws, encodeRecord(fork), encodeRecord(exec), encodeRecord(exit))
	}
	var r record
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range 3 {
			// Pids repeat every 8192 execs, after the exited set
			// (4096) has let them go, as pid reuse does.
			if err := decodeRecord(raws[(3*i+j)%len(raws)], &r); err != nil {
				b.Fatal(err)
			}
			_ = s.enrich(&r)
		}
	}
}

func TestPrivilegedContainer(t *testing.T) {
	const (
		privID  = "1111111111111111111111111111111111111111111111111111111111111111"
		plainID = "2222222222222222222222222222222222222222222222222222222222222222"
	)
	s := testSensor()
	all := s.privileged.all
	defaultDocker := uint64(0xa80425fb) // docker's 14 default capabilities
	exec := func(pid uint32, cgroupID uint64, id, exe, comm string, bounding uint64) *api.Event {
		r := execRecord()
		r.Pid, r.Tgid, r.CgroupID = pid, pid, cgroupID
		r.Str[0], r.Comm = []byte(exe), []byte(comm)
		r.Str[4] = []byte("/system.slice/docker-" + id + ".scope")
		r.Num[2], r.Num[3] = bounding, bounding
		var got record
		if err := decodeRecord(encodeRecord(r), &got); err != nil {
			t.Fatal(err)
		}
		return s.enrich(&got)
	}
	tests := []struct {
		name           string
		pid            uint32
		cgroupID       uint64
		id, exe, comm  string
		bounding       uint64
		wantPrivileged bool
	}{
		{"runc init in the container with runc's capabilities", 10, 501, plainID, "/usr/bin/runc", "runc:[2:INIT]", all, false},
		{"runc init from its memfd copy", 11, 501, plainID, "/memfd:runc_cloned:/proc/self/exe (deleted)", "runc", all, false},
		{"a default container's program", 12, 501, plainID, "/usr/sbin/nginx", "nginx", defaultDocker, false},
		{"a program missing one capability", 13, 501, plainID, "/bin/sh", "sh", all &^ (1 << 21), false},
		{"a privileged container's program", 20, 502, privID, "/bin/sh", "sh", all, true},
		{"a later program of the privileged container that dropped capabilities", 21, 502, privID, "/bin/ps", "ps", defaultDocker, true},
		{"the default container is still not privileged", 14, 501, plainID, "/bin/ls", "ls", defaultDocker, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := exec(tt.pid, tt.cgroupID, tt.id, tt.exe, tt.comm, tt.bounding)
			if got := ev.GetContainer().GetPrivileged(); got != tt.wantPrivileged {
				t.Errorf("container.privileged = %v, want %v", got, tt.wantPrivileged)
			}
			if got := ev.GetProcess().GetCapBounding(); got != tt.bounding {
				t.Errorf("process.cap_bounding = %#x, want %#x", got, tt.bounding)
			}
		})
	}
}

func TestPrivilegedMarksEarlierViews(t *testing.T) {
	const id = "3333333333333333333333333333333333333333333333333333333333333333"
	s := testSensor()
	mk := func(pid uint32, kind uint32, bounding uint64) *api.Event {
		r := execRecord()
		r.Kind, r.Pid, r.Tgid, r.CgroupID = kind, pid, pid, 600
		r.Str[4] = []byte("/system.slice/docker-" + id + ".scope")
		r.Num[2], r.Num[3] = bounding, bounding
		var got record
		if err := decodeRecord(encodeRecord(r), &got); err != nil {
			t.Fatal(err)
		}
		return s.enrich(&got)
	}
	// A process of the container started before the sensor knew better:
	// its exec is seen with a reduced set, and it has a cached view.
	if mk(30, kindExec, 0xff).GetContainer().GetPrivileged() {
		t.Fatal("privileged before any full-set process")
	}
	mk(31, kindExec, s.privileged.all)
	r := execRecord()
	r.Kind, r.Pid, r.Tgid, r.CgroupID, r.Num[0] = kindExit, 30, 30, 600, 0
	r.Str = [maxStrings][]byte{}
	var got record
	if err := decodeRecord(encodeRecord(r), &got); err != nil {
		t.Fatal(err)
	}
	if !s.enrich(&got).GetContainer().GetPrivileged() {
		t.Error("a view cached before the container was seen privileged was not rebuilt")
	}
}
