package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	tests := []struct {
		name      string
		procSelf  string
		files     map[string]string // path under root → content
		want      int64
		wantWhere string
	}{
		{"v2 with a limit", "0::/kubepods/pod1/ctr\n", map[string]string{
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "310378496\n",
		}, 310378496, "sys/fs/cgroup/kubepods/pod1/ctr/memory.max"},
		{"v2 tighter parent", "0::/a/b\n", map[string]string{
			"sys/fs/cgroup/a/b/memory.max": "max\n", "sys/fs/cgroup/a/memory.max": "1048576\n",
		}, 1048576, "sys/fs/cgroup/a/memory.max"},
		{"hybrid: v1 memory controller", "4:memory:/harrier\n0::/\n", map[string]string{
			"sys/fs/cgroup/memory/harrier/memory.limit_in_bytes": "310378496\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":         "9223372036854771712\n",
		}, 310378496, "sys/fs/cgroup/memory/harrier/memory.limit_in_bytes"},
		{"container namespace: limit at the mount root", "0::/\n", map[string]string{
			"sys/fs/cgroup/memory.max": "200000000\n",
		}, 200000000, "sys/fs/cgroup/memory.max"},
		{"hybrid unified mount", "0::/svc\n", map[string]string{
			"sys/fs/cgroup/unified/svc/memory.max": "5000000\n",
		}, 5000000, "sys/fs/cgroup/unified/svc/memory.max"},
		{"no limit anywhere", "4:memory:/x\n0::/x\n", map[string]string{
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/x/memory.max":                   "max\n",
		}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range tc.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			self := filepath.Join(root, "self-cgroup")
			if err := os.WriteFile(self, []byte(tc.procSelf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, where, err := cgroupMemoryLimit(root, self)
			if err != nil {
				t.Fatal(err)
			}
			wantWhere := ""
			if tc.wantWhere != "" {
				wantWhere = filepath.Join(root, tc.wantWhere)
			}
			if got != tc.want || where != wantWhere {
				t.Fatalf("limit %d from %q, want %d from %q", got, where, tc.want, wantWhere)
			}
		})
	}
}

func TestCgroupMemoryLimitBadFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "sys/fs/cgroup/x")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(root, "self")
	if err := os.WriteFile(self, []byte("0::/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cgroupMemoryLimit(root, self); err == nil {
		t.Fatal("a malformed limit file gave no error")
	}
}
