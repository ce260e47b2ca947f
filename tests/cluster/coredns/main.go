// Command coredns is the test cluster's DNS server: CoreDNS with only the
// plugins its Corefile (../coredns.yaml) uses. CoreDNS's own main links
// every plugin, cloud SDKs among them, and took most of a cold build.
package main

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The plugins run in CoreDNS's own order; only the linked ones are
	// known to the Corefile parser.
	linked := []string{"cache", "errors", "health", "kubernetes", "loadbalance", "loop", "ready"}
	dnsserver.Directives = slices.DeleteFunc(slices.Clone(dnsserver.Directives), func(d string) bool {
		return !slices.Contains(linked, d)
	})
	coremain.Run()
}
