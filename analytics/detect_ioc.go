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
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("IOC list: %w", err)
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
		if p, err := netip.ParsePrefix(s); err == nil {
			m.prefixes = append(m.prefixes, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			m.prefixes = append(m.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(s, "."))
		if strings.ContainsAny(d, " /:") || !strings.Contains(d, ".") {
			return fmt.Errorf("IOC list %s:%d: %q is not a domain, IP or CIDR", name, line, s)
		}
		m.domains[d] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("IOC list %s: %w", name, err)
	}
	return nil
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
