package simulate

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/harrier-sec/harrier/internal/ocirun"
)

// cgiScript is the victim's vulnerable endpoint: a "ping" diagnostics page
// whose host parameter reaches eval unquoted. busybox httpd runs it as a
// CGI worker under the web server, as the web-shell detection expects.
const cgiScript = `#!/bin/sh
# Network diagnostics of the demo shop: /cgi-bin/ping?host=NAME.
# Deliberately vulnerable (harrier simulate): the parameter reaches eval
# unquoted, so host=x;id runs id. Command injection.
echo "Content-Type: text/plain"
echo
host=$(httpd -d "${QUERY_STRING#host=}")
eval "ping -c 1 -W 1 $host" 2>&1
`

// Obviously fake credentials: AWS's documented example key pair.
const fakeAWSCredentials = `# harrier simulate: fake credentials, not a real key
[default]
aws_access_key_id = AKIAIOSFODNN7EXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
`

// fakeToken looks like a service-account JWT and is none.
const fakeToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImhhcnJpZXItc2ltdWxhdGUifQ.harrier-simulate-fake-token.not-a-signature"

const victimUID = 1000

// victimApplets are busybox applets the victim needs beyond ocirun's set.
func victimApplets() []string { return []string{"httpd", "modprobe", "usleep", "route"} }

// tools are the host programs copied into the victim when present.
type tools struct {
	files map[string]ocirun.File // container path → host file
	curl  bool
	nmap  bool
}

// hostTools finds curl and nmap on the host (or in the operator's rootfs
// directory) with the shared libraries they need. Missing tools are not an
// error: the scenarios fall back to busybox.
func hostTools(rootfs string) (tools, error) {
	t := tools{files: map[string]ocirun.File{}}
	if rootfs != "" {
		return t, addTree(t.files, rootfs)
	}
	for _, name := range []string{"curl", "nmap"} {
		path, ok := findProgram(name)
		if !ok {
			continue
		}
		files := map[string]ocirun.File{}
		if err := addELF(files, path, path); err != nil {
			// A tool we cannot copy is a tool we do without.
			continue
		}
		for k, v := range files {
			t.files[k] = v
		}
		switch name {
		case "curl":
			t.curl = true
		case "nmap":
			t.nmap = true
		}
	}
	return t, nil
}

func findProgram(name string) (string, bool) {
	for _, dir := range []string{"/usr/bin", "/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// libDirs are where the dynamic loader looks by default on Debian-like
// systems for this architecture.
func libDirs() []string {
	triplet := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
}

// addELF adds the ELF file at host path as container path dst, with its
// program interpreter and every DT_NEEDED library, found by reading the
// ELF files themselves (no ldd, which would run them).
func addELF(files map[string]ocirun.File, host, dst string) error {
	seen := map[string]bool{}
	var walk func(host, dst string) error
	walk = func(host, dst string) error {
		if seen[dst] {
			return nil
		}
		seen[dst] = true
		f, err := elf.Open(host)
		if err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
		defer f.Close()
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			return err
		}
		files[dst] = ocirun.File{Host: real, Mode: 0o755}
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: interpreter: %w", host, err)
			}
			interp := string(b[:len(b)-1]) // NUL-terminated
			if err := walk(interp, interp); err != nil {
				return err
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: DT_NEEDED: %w", host, err)
		}
		for _, lib := range needed {
			path, err := findLib(lib, f.Machine)
			if err != nil {
				return fmt.Errorf("%s: %w", host, err)
			}
			if err := walk(path, path); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(host, dst)
}

func findLib(name string, machine elf.Machine) (string, error) {
	for _, dir := range libDirs() {
		p := filepath.Join(dir, name)
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		ok := f.Machine == machine
		f.Close()
		if ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found in %v", name, libDirs())
}

// addTree adds every regular file under dir (symlinks followed) at the
// same path in the container.
func addTree(files map[string]ocirun.File, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("--rootfs: %w", err)
		}
		if d.IsDir() {
			return nil
		}
		st, err := os.Stat(path) // follows symlinks
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // dangling symlink
			}
			return fmt.Errorf("--rootfs: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files["/"+rel] = ocirun.File{Host: path, Mode: st.Mode().Perm()}
		return nil
	})
}

// victimImage is the victim's image: a small web application behind busybox
// httpd, a fake credentials file and whatever tools were found.
func victimImage(t tools, attacker string) map[string]ocirun.File {
	img := map[string]ocirun.File{
		"/etc/passwd": {Content: "root:x:0:0:root:/root:/bin/sh\n" +
			"app:x:1000:1000:web application:/home/app:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		"/etc/group":                 {Content: "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"},
		"/etc/resolv.conf":           {Content: "nameserver " + attacker + "\n"},
		"/www/index.html":            {Content: "<html><body><h1>Demo shop</h1><a href=/cgi-bin/ping?host=127.0.0.1>status</a></body></html>\n"},
		"/www/cgi-bin/ping":          {Content: cgiScript, Mode: 0o755},
		"/home/app/.aws/credentials": {Content: fakeAWSCredentials, Mode: 0o600, UID: victimUID, GID: victimUID},
		"/home/app/app.env":          {Content: "DATABASE_URL=postgres://app@db/shop\n", UID: victimUID, GID: victimUID},
		"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt":    {Content: "-----BEGIN CERTIFICATE-----\nharrier simulate fake\n-----END CERTIFICATE-----\n"},
		"/var/run/secrets/kubernetes.io/serviceaccount/namespace": {Content: "shop"},
	}
	for k, v := range t.files {
		img[k] = v
	}
	return img
}

// isStatic reports whether path is an ELF executable without a program
// interpreter, which runs in a busybox root file system as it is.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}
