package analytics

import "github.com/harrier-sec/harrier/api"

// chmodPath is the file a chmod event changed.
func chmodPath(ev *api.Event) string { return ev.GetChmod().GetPath() }

func dnsKinds() []api.EventKind { return []api.EventKind{api.EventKind_EVENT_KIND_DNS_QUERY} }

// dnsName is the name a DNS query asked for ("" when not a query).
func dnsName(ev *api.Event) string { return ev.GetDnsQuery().GetName() }

// stdioRemote is the peer of the first standard stream that is an inet
// socket ("ip:port"), or "".
func stdioRemote(ev *api.Event) string {
	for _, s := range ev.GetExec().GetStdioSockets() {
		if r := s.GetRemote(); r.GetIp() != "" {
			return r.GetIp() + ":" + portString(r.GetPort())
		}
	}
	return ""
}
