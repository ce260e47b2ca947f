// Command detecthelper produces, inside a test container, behaviour that
// busybox cannot: raw syscalls the sensor hooks. The detection tests build
// it statically and put it into the container image. Named xmrig it is a
// harmless stand-in miner; named postgres or app-server it starts a shell;
// named nohup it runs its arguments as nohup does. Under any other name
// but detecthelper it stands in for a tool the container lacks (iptables,
// ssh, docker, ...): the exec with its command line is the behaviour the
// detections judge, so it prints its arguments and does nothing else.
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(filepath.Base(os.Args[0]), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "detecthelper:", err)
		os.Exit(3)
	}
}

func run(name string, args []string) error {
	runtime.LockOSThread()
	switch name {
	case "xmrig":
		fmt.Println("stand-in miner, args:", strings.Join(args, " "))
		return nil
	case "postgres", "app-server":
		return exec.Command("/bin/sh", "-c", "echo query done").Run()
	case "nohup":
		if len(args) == 0 {
			return fmt.Errorf("usage: nohup COMMAND ARGS")
		}
		signal.Ignore(unix.SIGHUP)
		path, err := exec.LookPath(args[0])
		if err != nil {
			return err
		}
		return unix.Exec(path, args, os.Environ())
	case "detecthelper", "irssi": // irssi: an IRC client stand-in whose connects are real
	default:
		fmt.Println("stand-in", name, strings.Join(args, " "))
		// STANDIN_LINGER keeps the stand-in running that long (a real
		// tool runs for a while; its file is read while it does).
		if d, err := time.ParseDuration(os.Getenv("STANDIN_LINGER")); err == nil {
			time.Sleep(d)
		}
		return nil
	}
	if len(args) == 0 {
		return fmt.Errorf("usage: detecthelper ACTION ARGS")
	}
	action, args := args[0], args[1:]
	switch action {
	case "dns":
		return dnsQuery(args[0])
	case "dns-tcp":
		// dns-tcp NAME: the query over TCP to 127.0.0.1:53, written with
		// write(2) after its 2-byte length, to a listener of its own.
		return dnsOverTCP(args[0])
	case "connect":
		// connect ADDR...: one blocking connect each, in this process.
		for _, a := range args {
			if err := connect(a); err != nil {
				fmt.Fprintln(os.Stderr, "connect:", err)
			}
		}
		return nil
	case "fanout":
		// fanout HOST FIRSTPORT N: N connects from one process.
		first, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		for p := first; p < first+n; p++ {
			_ = connect(net.JoinHostPort(args[0], strconv.Itoa(p)))
		}
		return nil
	case "memfd-exec":
		fd, err := unix.MemfdCreate("payload", 0)
		if err != nil {
			return err
		}
		bin, err := os.ReadFile("/bin/busybox")
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, bin); err != nil {
			return err
		}
		argv := []string{"true"}
		if len(args) > 0 { // memfd-exec ARGV...: the program's name and arguments as ps shows them
			argv = args
		}
		return unix.Exec(fmt.Sprintf("/proc/self/fd/%d", fd), argv, os.Environ())
	case "ptrace-attach":
		// Attach to a child of its own, as an injector does.
		child := exec.Command("/bin/sleep", "5")
		if err := child.Start(); err != nil {
			return err
		}
		defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
		if err := unix.PtraceAttach(child.Process.Pid); err != nil {
			return err
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(child.Process.Pid, &ws, unix.WALL, nil); err != nil {
			return err
		}
		return unix.PtraceDetach(child.Process.Pid)
	case "ptrace-traceme":
		// A child that asks to be traced (PTRACE_TRACEME), as a debugger
		// starts its debuggee, released again at once.
		child := exec.Command("/bin/true")
		child.SysProcAttr = &unix.SysProcAttr{Ptrace: true}
		if err := child.Start(); err != nil {
			return err
		}
		// Wait for the stop at exec before releasing it.
		var ws unix.WaitStatus
		if _, err := unix.Wait4(child.Process.Pid, &ws, unix.WALL, nil); err != nil {
			return err
		}
		if !ws.Stopped() {
			return fmt.Errorf("traced child did not stop: %v", ws)
		}
		if err := unix.PtraceDetach(child.Process.Pid); err != nil {
			return err
		}
		return child.Wait()
	}
	return fmt.Errorf("unknown action %q", action)
}

func connect(addr string) error {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ap.IP.To4())})
}

// dnsQuery sends an A query for name with sendto to 127.0.0.1:53, where it
// binds a stand-in server first so no ICMP error comes back. Loopback only.
func dnsQuery(name string) error {
	lo := [4]byte{127, 0, 0, 1}
	srv, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(srv)
	if err := unix.Bind(srv, &unix.SockaddrInet4{Port: 53, Addr: lo}); err != nil {
		return fmt.Errorf("bind the stand-in server: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, dnsMessage(name), 0, &unix.SockaddrInet4{Port: 53, Addr: lo})
}

// dnsMessage is a query for name's A record.
func dnsMessage(name string) []byte {
	q := binary.BigEndian.AppendUint16(nil, 0x4242)   // id
	q = append(q, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD, one question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	return append(q, 0, 0, 1, 0, 1) // root, type A, class IN
}

func dnsOverTCP(name string) error {
	ln, err := net.Listen("tcp4", "127.0.0.1:53")
	if err != nil {
		return fmt.Errorf("listen for the stand-in server: %w", err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp4", "127.0.0.1:53")
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := dnsMessage(name)
	_, err = conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}
