package simulate

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Addresses of the sandbox. They exist only inside the namespaces the
// simulator creates: victim N (1-based) and the attacker share 10.213.N.0/24,
// the attacker at .1, the victim at .2; the metadata address is on the
// attacker's loopback, routed to it only from the victims.
const (
	sandboxPrefix = "10.213"
	metadataIP    = "169.254.169.254"
	victimPort    = 8080
	// MinerName is the name the harmless stand-in miner is served under.
	MinerName = "xmrig"
)

// sandboxNet is the range every sandbox address is in.
func sandboxNet() netip.Prefix { return netip.MustParsePrefix(sandboxPrefix + ".0.0/16") }

// request and reply are the attacker process's line protocol on its stdin
// and stdout: the simulator asks it to make HTTP requests from inside the
// sandbox.
type request struct {
	URL string `json:"url"`
}

type reply struct {
	Ready  bool   `json:"ready,omitempty"`
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ServeAttacker runs the attacker's side inside the sandbox network
// namespace (it refuses to run anywhere else): the fake metadata service,
// the fake API server on 6443, a download server for the miner on 8000, a
// fake mining pool on 3333 and a DNS server answering the threat-intel test
// domain. It then makes the HTTP requests asked for on in, answering on
// out, until in ends.
func ServeAttacker(ctx context.Context, in io.Reader, out io.Writer, miner string, log *slog.Logger) error {
	if err := checkInSandbox(); err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	srv := fakeServices{ctx: ctx, wg: &wg, log: log}
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{metadataIP + ":80", srv.metadata()}, {":6443", srv.apiServer()}, {":8000", srv.downloads(miner)}} {
		if err := srv.http(s.addr, s.h); err != nil {
			return err
		}
	}
	if err := srv.pool(":3333"); err != nil {
		return err
	}
	if err := srv.dns(":53", sandboxAnswer); err != nil {
		return err
	}

	enc := json.NewEncoder(out)
	if err := enc.Encode(reply{Ready: true}); err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("attacker: request: %w", err)
		}
		if err := enc.Encode(fetch(ctx, client, req.URL)); err != nil {
			return err
		}
	}
	return sc.Err()
}

func fetch(ctx context.Context, client *http.Client, url string) reply {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return reply{Error: err.Error()}
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{Error: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return reply{Status: resp.StatusCode, Error: err.Error()}
	}
	return reply{Status: resp.StatusCode, Body: string(body)}
}

// fakeServices starts the attacker's fake services; they stop when ctx
// ends, and wg waits for them.
type fakeServices struct {
	ctx context.Context
	wg  *sync.WaitGroup
	log *slog.Logger
}

func (f fakeServices) http(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return fmt.Errorf("attacker: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	f.wg.Add(2)
	go func() { defer f.wg.Done(); _ = srv.Serve(ln) }()
	go func() { defer f.wg.Done(); <-f.ctx.Done(); _ = srv.Close() }()
	return nil
}

func (f fakeServices) metadata() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.log.Info("metadata request", "path", r.URL.Path)
		fmt.Fprintln(w, "harrier-simulate-fake-role")
	})
}

func (f fakeServices) apiServer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.log.Info("API server request", "method", r.Method, "path", r.URL.Path,
			"token", strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"kind":"SelfSubjectRulesReview","apiVersion":"authorization.k8s.io/v1","status":{"resourceRules":[],"incomplete":true,"evaluationError":"harrier simulate: fake API server"}}`)
	})
}

func (f fakeServices) downloads(miner string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/"+MinerName, func(w http.ResponseWriter, r *http.Request) {
		f.log.Info("miner download")
		http.ServeFile(w, r, miner)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "harrier simulate: threat-intel test host")
	})
	return mux
}

// pool accepts connections and closes them: a mining pool that is none.
func (f fakeServices) pool(addr string) error {
	pool, err := net.Listen("tcp4", addr)
	if err != nil {
		return fmt.Errorf("attacker: pool: %w", err)
	}
	f.wg.Add(2)
	go func() { defer f.wg.Done(); <-f.ctx.Done(); _ = pool.Close() }()
	go func() {
		defer f.wg.Done()
		for {
			c, err := pool.Accept()
			if err != nil {
				return
			}
			f.log.Info("pool connection", "from", c.RemoteAddr().String())
			_ = c.Close()
		}
	}()
	return nil
}

// dns serves the test domain on UDP addr; answer gives the address a
// querier gets (invalid: none).
func (f fakeServices) dns(addr string, answer func(from netip.Addr) netip.Addr) error {
	dns, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return fmt.Errorf("attacker: dns: %w", err)
	}
	f.wg.Add(2)
	go func() { defer f.wg.Done(); <-f.ctx.Done(); _ = dns.Close() }()
	go func() { defer f.wg.Done(); serveDNS(dns, answer, f.log) }()
	return nil
}

// serveDNS answers A queries for the test domain (and names under it) with
// the address answer gives for the querier; everything else is NXDOMAIN.
// Nothing is ever forwarded.
func serveDNS(c net.PacketConn, answer func(from netip.Addr) netip.Addr, log *slog.Logger) {
	buf := make([]byte, 512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		resp, name, err := dnsReply(buf[:n], answer(ua.AddrPort().Addr().Unmap()))
		if err != nil {
			continue
		}
		log.Info("DNS query", "name", name, "from", ua.String())
		_, _ = c.WriteTo(resp, from)
	}
}

// sandboxAnswer is the local sandbox's answer: the attacker's end of the
// asking victim's link, nothing for an asker outside the sandbox.
func sandboxAnswer(from netip.Addr) netip.Addr {
	if !from.Is4() || !sandboxNet().Contains(from) {
		return netip.Addr{}
	}
	b := from.As4()
	b[3] = 1
	return netip.AddrFrom4(b)
}

// dnsAnswer builds the local sandbox's reply to query q from the victim at
// from.
func dnsAnswer(q []byte, from netip.Addr) ([]byte, string, error) {
	return dnsReply(q, sandboxAnswer(from))
}

// dnsReply builds the reply to query q: for the test domain, an A record
// with answer (when valid, IPv4); NXDOMAIN for any other name.
func dnsReply(q []byte, answer netip.Addr) ([]byte, string, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil, "", errors.New("not a one-question query")
	}
	off := 12
	var labels []string
	for {
		if off >= len(q) {
			return nil, "", errors.New("truncated name")
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) {
			return nil, "", errors.New("bad label")
		}
		labels = append(labels, string(q[off:off+l]))
		off += l
	}
	if off+4 > len(q) {
		return nil, "", errors.New("truncated question")
	}
	qtype := binary.BigEndian.Uint16(q[off : off+2])
	off += 4
	name := strings.ToLower(strings.Join(labels, "."))
	resp := append([]byte(nil), q[:off]...)
	known := name == api.IOCTestDomain || strings.HasSuffix(name, "."+api.IOCTestDomain)
	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(resp[2:4], flags)
	binary.BigEndian.PutUint16(resp[8:10], 0)  // no authority
	binary.BigEndian.PutUint16(resp[10:12], 0) // no additional
	if !known || qtype != 1 || !answer.Is4() {
		binary.BigEndian.PutUint16(resp[6:8], 0)
		return resp, name, nil
	}
	b := answer.As4()
	binary.BigEndian.PutUint16(resp[6:8], 1)
	resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4)
	resp = append(resp, b[:]...)
	return resp, name, nil
}

// attacker is the simulator's handle on the attacker process.
type attacker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	logs *strings.Builder
}

// startAttacker runs ServeAttacker in the network namespace at nsPath.
func startAttacker(ctx context.Context, self, nsPath, miner string) (*attacker, error) {
	cmd := exec.Command(self, NetnsCommand, nsPath, self, AttackerCommand, "--miner", miner)
	logs := &strings.Builder{}
	cmd.Stderr = logs
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the attacker: %w", err)
	}
	a := &attacker{cmd: cmd, in: in, out: bufio.NewScanner(out), logs: logs}
	a.out.Buffer(make([]byte, 0, 64<<10), 1<<20)
	ready := make(chan error, 1)
	go func() {
		var r reply
		if !a.out.Scan() {
			ready <- fmt.Errorf("the attacker exited: %w", errors.Join(a.out.Err(), io.ErrUnexpectedEOF))
			return
		}
		if err := json.Unmarshal(a.out.Bytes(), &r); err != nil || !r.Ready {
			ready <- fmt.Errorf("the attacker said %q", a.out.Text())
			return
		}
		ready <- nil
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = context.Cause(ctx)
	case <-time.After(10 * time.Second):
		err = errors.New("the attacker did not come up within 10s")
	}
	if err != nil {
		return nil, errors.Join(err, a.stop(), fmt.Errorf("attacker log: %s", logs.String()))
	}
	return a, nil
}

// get makes the attacker fetch url from inside the sandbox. Calls must not
// overlap.
func (a *attacker) get(url string) (reply, error) {
	b, err := json.Marshal(request{URL: url})
	if err != nil {
		return reply{}, err
	}
	if _, err := a.in.Write(append(b, '\n')); err != nil {
		return reply{}, fmt.Errorf("attacker: %w", err)
	}
	if !a.out.Scan() {
		return reply{}, fmt.Errorf("attacker exited: %w (%s)", errors.Join(a.out.Err(), io.ErrUnexpectedEOF), a.logs.String())
	}
	var r reply
	if err := json.Unmarshal(a.out.Bytes(), &r); err != nil {
		return reply{}, fmt.Errorf("attacker reply: %w", err)
	}
	return r, nil
}

// stop ends the attacker: closing its input ends it; SIGKILL if it lingers.
func (a *attacker) stop() error {
	_ = a.in.Close()
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(3 * time.Second):
		_ = a.cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return nil
	}
}

// PoolEnv names the one pool address (IP:PORT) the stand-in miner may also
// contact: in a cluster the simulator sets it in the victim pod to the
// attacker Service's pool.
const PoolEnv = "HARRIER_SIMULATE_POOL"

// StandInMiner is what the served "xmrig" does when it runs: it says what
// it is and connects once to the pool given with -o, only if that pool is
// inside the sandbox range (or is the private address PoolEnv names), then
// exits. It mines nothing.
func StandInMiner(args []string, out io.Writer) int {
	fmt.Fprintf(out, "xmrig stand-in from harrier simulate: mines nothing (args: %s)\n", strings.Join(args, " "))
	for i, a := range args {
		if a != "-o" || i+1 >= len(args) {
			continue
		}
		pool := strings.TrimPrefix(args[i+1], "stratum+tcp://")
		ap, err := netip.ParseAddrPort(pool)
		if err != nil || !sandboxNet().Contains(ap.Addr()) && !allowedPool(ap) {
			fmt.Fprintf(out, "pool %q is outside the simulation sandbox: not contacted\n", pool)
			return 0
		}
		if c, err := net.DialTimeout("tcp4", ap.String(), 2*time.Second); err == nil {
			_ = c.Close()
			fmt.Fprintln(out, "connected to the fake pool", ap)
		}
	}
	return 0
}

// allowedPool says whether ap is the pool the simulator named in PoolEnv, a
// private address.
func allowedPool(ap netip.AddrPort) bool {
	want, err := netip.ParseAddrPort(os.Getenv(PoolEnv))
	return err == nil && want == ap && ap.Addr().IsPrivate()
}
