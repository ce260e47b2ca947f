package testenv

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePorts picks n loopback port numbers free for both TCP and UDP, for
// servers a test starts (and may restart on the same port). They are taken below the kernel's
// ephemeral range: a port from "127.0.0.1:0" is free only until some
// outgoing connection of a parallel test takes it as its source port,
// which left a nats-server cluster without its routes in CI.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := freePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

func freePorts(n int) ([]int, error) {
	low := ephemeralLow()
	const floor = 10000
	if low-floor < 1000 {
		return nil, fmt.Errorf("free ports: the ephemeral range starts at %d, leaving no room below it", low)
	}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("free ports: none free in %d-%d after %d tries", floor, low-1, tries)
		}
		p := floor + rand.IntN(low-floor)
		addr := "127.0.0.1:" + strconv.Itoa(p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		held = append(held, l)
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		held = append(held, c)
		ports = append(ports, p)
	}
	return ports, nil
}

// FreeAddr is FreePorts' one port as a loopback address, "127.0.0.1:port".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePorts(t, 1)[0])
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				return v
			}
		}
	}
	return 32768 // Linux's default
}
