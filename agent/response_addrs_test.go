package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
)

// TestBackendAddrs: a blocked workload may still reach every backend
// replica and the enrollment API.
func TestBackendAddrs(t *testing.T) {
	got := backendAddrs(context.Background(), UplinkConfig{Addr: "127.0.0.1:9471", FallbackAddrs: []string{"127.0.0.2:9471", "[::1]:9471"},
		Enroll: EnrollConfig{Server: "https://127.0.0.3:9470"}}, slog.New(slog.DiscardHandler))
	for _, want := range []string{"127.0.0.1:9471", "127.0.0.2:9471", "[::1]:9471", "127.0.0.3:9470"} {
		if !slices.Contains(got, netip.MustParseAddrPort(want)) {
			t.Errorf("backendAddrs = %v, lacks %s", got, want)
		}
	}
}
