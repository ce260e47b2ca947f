package response

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/harrier-sec/harrier/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// ActionBlockNetwork refuses the new connections and UDP sends of the
// alert's process's cgroup (its container, or the host service), except DNS
// and the agent's backend.
const ActionBlockNetwork = "block-network"

// ActionIsolateNetwork drops every packet in and out of the alert's
// container (its cgroup's sockets, loopback included) except DNS and the
// agent's backend: cgroup skb ingress and egress programs.
const ActionIsolateNetwork = "isolate-network"

// NetBlocker attaches the block-network programs to cgroups (cgroup v2:
// the unified hierarchy, also on hybrid hosts). A block lasts while the
// agent runs: its links close with it.
type NetBlocker struct {
	objs netblockObjects
	v2   string // the unified hierarchy's mount point

	mu     sync.Mutex
	blocks map[string][]link.Link // cgroup path → its four links
	// isolations are the cgroups isolated, each with its two links.
	isolations map[string][]link.Link
}

// UnifiedMount is where the cgroup v2 (unified) hierarchy is mounted, from
// this process's mountinfo.
func UnifiedMount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cgroup v2: %w", err)
	}
	mounts, err := mountinfo.ParseMountinfo(f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("cgroup v2: mountinfo: %w", err)
	}
	// The sensor's cgroup paths start at the hierarchy's root. In the
	// agent's pod the container's own cgroup2 mount shows only its cgroup
	// namespace, and mountinfo prints roots relative to that namespace; the
	// host's hierarchy (a hostPath mount) is the one whose directory is
	// the kernfs root, inode 1.
	for _, m := range mounts {
		if m.FSType != "cgroup2" {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(m.MountPoint, &st) == nil && st.Ino == 1 {
			return m.MountPoint, nil
		}
	}
	v2 := mountinfo.FindHierarchies(mounts).V2
	if v2 == "" {
		return "", errors.New("this host has no cgroup v2 (unified) hierarchy mounted")
	}
	return v2, nil
}

// NewNetBlocker loads the programs with allow (the backend's addresses) in
// their allow maps. DNS (port 53) is always allowed.
func NewNetBlocker(allow []netip.AddrPort) (*NetBlocker, error) {
	v2, err := UnifiedMount()
	if err != nil {
		return nil, fmt.Errorf("block network: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock rlimit: %w", err)
	}
	n := &NetBlocker{v2: v2, blocks: map[string][]link.Link{}, isolations: map[string][]link.Link{}}
	if err := loadNetblockObjects(&n.objs, nil); err != nil {
		return nil, fmt.Errorf("block network: load: %w", err)
	}
	for _, ap := range allow {
		port := uint32(htons(ap.Port()))
		addr := ap.Addr().Unmap()
		if addr.Is4() {
			b := addr.As4()
			err = n.objs.Allow4.Put(netblockAllow4Key{Ip: binary.NativeEndian.Uint32(b[:]), Port: port}, uint8(1))
		} else {
			b := addr.As16()
			var k netblockAllow6Key
			for i := range 4 {
				k.Ip[i] = binary.NativeEndian.Uint32(b[i*4:])
			}
			k.Port = port
			err = n.objs.Allow6.Put(k, uint8(1))
		}
		if err != nil {
			n.objs.Close()
			return nil, fmt.Errorf("block network: allow %s: %w", ap, err)
		}
	}
	return n, nil
}

// htons is the port as the kernel's context holds it: network byte order
// in the low 16 bits, read as a native integer.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// CgroupOf is pid's cgroup in the unified hierarchy, as a path under its
// mount point.
func (n *NetBlocker) CgroupOf(pid int) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", fmt.Errorf("process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join(n.v2, filepath.Clean("/"+rest)), nil
		}
	}
	return "", fmt.Errorf("process %d has no cgroup v2 path", pid)
}

type cgroupProgram struct {
	prog *ebpf.Program
	at   ebpf.AttachType
}

// Block attaches the block programs to cgroup (a directory of the unified
// hierarchy). Blocking a blocked cgroup does nothing.
func (n *NetBlocker) Block(cgroup string) error {
	return n.attach(n.blocks, "block network", cgroup, []cgroupProgram{
		{n.objs.BlockConnect4, ebpf.AttachCGroupInet4Connect},
		{n.objs.BlockConnect6, ebpf.AttachCGroupInet6Connect},
		{n.objs.BlockSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{n.objs.BlockSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
	})
}

// Unblock detaches the block programs from cgroup; a cgroup not blocked
// is no error.
func (n *NetBlocker) Unblock(cgroup string) error { return n.detach(n.blocks, cgroup) }

// Isolate attaches the isolate programs to cgroup's skb ingress and
// egress: from then on only DNS and the allowed destinations pass, in
// either direction, for connections old and new. Isolating an isolated
// cgroup does nothing.
func (n *NetBlocker) Isolate(cgroup string) error {
	return n.attach(n.isolations, "isolate network", cgroup, []cgroupProgram{
		{n.objs.IsolateIngress, ebpf.AttachCGroupInetIngress},
		{n.objs.IsolateEgress, ebpf.AttachCGroupInetEgress},
	})
}

// Unisolate detaches the isolate programs from cgroup; a cgroup not
// isolated is no error.
func (n *NetBlocker) Unisolate(cgroup string) error { return n.detach(n.isolations, cgroup) }

// Blocked and Isolated say whether cgroup is.
func (n *NetBlocker) Blocked(cgroup string) bool  { return n.has(n.blocks, cgroup) }
func (n *NetBlocker) Isolated(cgroup string) bool { return n.has(n.isolations, cgroup) }

func (n *NetBlocker) has(set map[string][]link.Link, cgroup string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := set[filepath.Clean(cgroup)]
	return ok
}

func (n *NetBlocker) attach(set map[string][]link.Link, what, cgroup string, progs []cgroupProgram) error {
	cgroup = filepath.Clean(cgroup)
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := set[cgroup]; ok {
		return nil
	}
	if cgroup == filepath.Clean(n.v2) {
		return fmt.Errorf("%s: refusing the root cgroup (the whole host)", what)
	}
	var links []link.Link
	for _, p := range progs {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: p.at, Program: p.prog})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return fmt.Errorf("%s on %s: %w", what, cgroup, err)
		}
		links = append(links, l)
	}
	set[cgroup] = links
	return nil
}

func (n *NetBlocker) detach(set map[string][]link.Link, cgroup string) error {
	cgroup = filepath.Clean(cgroup)
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, l := range set[cgroup] {
		errs = append(errs, l.Close())
	}
	delete(set, cgroup)
	return errors.Join(errs...)
}

// Refused is how many calls the programs refused.
func (n *NetBlocker) Refused() uint64 {
	var v uint64
	_ = n.objs.Refused.Lookup(uint32(0), &v)
	return v
}

// Dropped is how many packets the isolate programs dropped.
func (n *NetBlocker) Dropped() uint64 {
	var v uint64
	_ = n.objs.Refused.Lookup(uint32(1), &v)
	return v
}

// Close lifts every block and isolation.
func (n *NetBlocker) Close() error {
	n.mu.Lock()
	var errs []error
	for _, set := range []map[string][]link.Link{n.blocks, n.isolations} {
		for c, ls := range set {
			for _, l := range ls {
				errs = append(errs, l.Close())
			}
			delete(set, c)
		}
	}
	n.mu.Unlock()
	return errors.Join(append(errs, n.objs.Close())...)
}
