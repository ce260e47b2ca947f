package analytics

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// iocMatcher checks DNS names and connect destinations against the offline
// threat list.
type iocMatcher struct {
	domains  map[string]bool
	prefixes []netip.Prefix
}

func loadIOCs(files []string) (*iocMatcher, error) {
	m := &iocMatcher{domains: map[string]bool{api.IOCTestDomain: true}}
	for _, f := range files {
		if err := m.loadFile(f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *iocMatcher) loadFile(name string) error {
	return readListFile("IOC list", name, func(s string) error {
		if p, ok := parsePrefix(s); ok {
			m.prefixes = append(m.prefixes, p)
			return nil
		}
		d := strings.ToLower(strings.TrimSuffix(s, "."))
		if strings.ContainsAny(d, " /:") || !strings.Contains(d, ".") {
			return fmt.Errorf("%q is not a domain, IP or CIDR", s)
		}
		m.domains[d] = true
		return nil
	})
}

// readListFile calls add for each entry of a list file: one per line, #
// comments and blank lines skipped. Errors name the file and line.
func readListFile(what, name string, add func(entry string) error) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = strings.TrimSpace(s[:i])
		}
		if s == "" {
			continue
		}
		if err := add(s); err != nil {
			return fmt.Errorf("%s %s:%d: %w", what, name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", what, name, err)
	}
	return nil
}

// parsePrefix reads an IP (as a one-address prefix) or a CIDR.
func parsePrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), true
	}
	return netip.Prefix{}, false
}

func (*iocMatcher) kinds() []api.EventKind {
	return append([]api.EventKind{api.EventKind_EVENT_KIND_CONNECT}, dnsKinds()...)
}

func (m *iocMatcher) observe(c *evalContext, _ time.Time) []*api.Event {
	ev := c.ev
	if name := dnsName(ev); name != "" {
		if m.domainListed(name) {
			return []*api.Event{ev}
		}
		return nil
	}
	if ip := ev.GetConnect().GetDestination().GetIp(); ip != "" && len(m.prefixes) > 0 && addrIn(ip, m.prefixes) {
		return []*api.Event{ev}
	}
	return nil
}

// domainListed matches the name or any parent domain of it.
func (m *iocMatcher) domainListed(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for name != "" {
		if m.domains[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return false
}

// portString formats a port for messages.

// proxySource: an audited API request whose client address is on the local
// list of proxies, VPN and Tor exits (proxyAddressFiles). Such addresses
// hide who is calling; a cluster's users and workloads do not need them.
type proxySource struct {
	prefixes []netip.Prefix
	// controlPlane are the API server's own users, whose requests come
	// from where the API server runs.
	controlPlane map[string]bool
}

func loadProxyAddresses(files []string, controlPlane map[string]bool) (*proxySource, error) {
	d := &proxySource{controlPlane: controlPlane}
	for _, f := range files {
		err := readListFile("proxy address list", f, func(s string) error {
			p, ok := parsePrefix(s)
			if !ok {
				return fmt.Errorf("%q is not an IP or CIDR", s)
			}
			d.prefixes = append(d.prefixes, p)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (*proxySource) kinds() []api.EventKind { return []api.EventKind{api.EventKind_EVENT_KIND_AUDIT} }

func (d *proxySource) observe(c *evalContext, _ time.Time) []*api.Event {
	a := c.ev.GetAudit()
	if len(d.prefixes) == 0 || d.controlPlane[a.GetUser()] {
		return nil
	}
	for _, ip := range a.GetSourceIps() {
		if addrIn(ip, d.prefixes) {
			return []*api.Event{c.ev}
		}
	}
	return nil
}
