// Package benchutil holds what the benchmark drivers under tests/bench
// share: medians, the -n flag's name=N lists, free loopback addresses, the
// JSON results file and a sleep that ends with its context.
package benchutil

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Median of xs (0 for none), without reordering xs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Percentile p (0-100, nearest rank) of xs (0 for none), without
// reordering xs.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// FormatCounts writes n as name=N,... in order.
func FormatCounts(n map[string]int, order []string) string {
	parts := make([]string, 0, len(order))
	for _, name := range order {
		parts = append(parts, fmt.Sprintf("%s=%d", name, n[name]))
	}
	return strings.Join(parts, ",")
}

// CountsFlag parses name=N[,name=N] into n, for names only; what names the
// kind of thing ("storm", "workload") in errors.
func CountsFlag(n map[string]int, names []string, what string) func(string) error {
	return func(v string) error {
		for kv := range strings.SplitSeq(v, ",") {
			name, num, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return fmt.Errorf("%q: want %s=N", kv, what)
			}
			if !slices.Contains(names, name) {
				return fmt.Errorf("%q: unknown %s (known: %s)", name, what, strings.Join(names, ", "))
			}
			c, err := strconv.Atoi(num)
			if err != nil || c <= 0 {
				return fmt.Errorf("%q: N must be a positive integer", kv)
			}
			n[name] = c
		}
		return nil
	}
}

// FreeAddr is a free 127.0.0.1 address for network "tcp" or "udp".
func FreeAddr(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("free UDP port: %w", err)
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free TCP port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WriteJSON writes v, indented, to path, making its directory.
func WriteJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// Sleep waits d, or less if ctx ends first (its error then).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
