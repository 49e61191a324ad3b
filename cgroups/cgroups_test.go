package cgroups

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            bool
	}{
		{"hybrid", `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup/unified", false},
		{"unified with optional fields", "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", false},
		{"escaped space", `41 31 0:38 / /mnt/cg\040two rw - cgroup2 cgroup2 rw` + "\n", "/mnt/cg two", false},
		{"bind mount of a subtree is not the root", "41 31 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n", "", true},
		{"none", "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "", true},
		{"garbage", "x y\n\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountinfoWith(strings.NewReader(tc.in), func(string) bool { return false })
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("parseMountinfo = %q, %v; want %q, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestMountinfoInCgroupNamespace(t *testing.T) {
	in := "41 31 0:38 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n42 31 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n"
	got, err := parseMountinfoWith(strings.NewReader(in), func(dir string) bool { return dir == "/sys/fs/cgroup" })
	if err != nil || got != "/sys/fs/cgroup" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := parseMountinfoWith(strings.NewReader(in), func(string) bool { return false }); err == nil || !strings.Contains(err.Error(), "only below its root") {
		t.Errorf("want an error naming the subtree mounts, got %v", err)
	}
}

func TestMountsOfType(t *testing.T) {
	in := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 /sub /mnt/cpu\040x rw shared:4 - cgroup cgroup rw,cpu
`
	got, err := Mounts(strings.NewReader(in), "cgroup")
	want := []Mount{{"/", "/sys/fs/cgroup/systemd"}, {"/sub", "/mnt/cpu x"}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Mounts = %v, %v; want %v", got, err, want)
	}
}

// The units of these paths are UnitOf's (units_test.go): the old innermost-
// name rule took a look-alike in a delegated subtree for the unit.
func TestContainer(t *testing.T) {
	id := strings.Repeat("ab12", 16)
	for _, tc := range []struct{ path, _, container string }{
		{"/system.slice/etcd.service", "etcd.service", ""},
		{"/system.slice/etcd.service/sub", "etcd.service", ""},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope", "foo.scope", ""},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-" + id + ".scope", "cri-containerd-" + id + ".scope", id},
		{"/system.slice/docker-" + id + ".scope", "docker-" + id + ".scope", id},
		{"/kubepods/burstable/pod1/" + id, "", id},
		{"/", "", ""},
		{"/machine.slice", "", ""},
	} {
		if c := Container(tc.path); c != tc.container {
			t.Errorf("Container(%s) = %q, want %q", tc.path, c, tc.container)
		}
	}
}

func TestDepth(t *testing.T) {
	for path, want := range map[string]int{"/": 0, "": 0, "/a": 1, "/a/b/": 2, "a/b/c": 3, "/a/../b": 1} {
		if got := Depth(path); got != want {
			t.Errorf("Depth(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestRelAbs(t *testing.T) {
	c := &FS{Root: "/sys/fs/cgroup/unified"}
	if got := c.Abs("/a/b"); got != "/sys/fs/cgroup/unified/a/b" {
		t.Errorf("Abs = %s", got)
	}
	if got := c.Abs("../../etc"); got != "/sys/fs/cgroup/unified/etc" {
		t.Errorf("Abs escapes the root: %s", got)
	}
	for abs, want := range map[string]string{"/sys/fs/cgroup/unified": "/", "/sys/fs/cgroup/unified/a": "/a"} {
		if got, err := c.Rel(abs); err != nil || got != want {
			t.Errorf("Rel(%s) = %q, %v", abs, got, err)
		}
	}
	if _, err := c.Rel("/sys/fs/cgroup/memory"); err == nil {
		t.Error("Rel accepted a path outside the root")
	}
}

func TestArgPath(t *testing.T) {
	const root = "/sys/fs/cgroup/unified"
	tests := []struct{ root, arg, want string }{
		{root, "/sys/fs/cgroup/unified/x", "/x"},
		{root, "/sys/fs/cgroup/unified/system.slice/a.service/", "/system.slice/a.service"},
		{root, "/sys/fs/cgroup/unified", "/"},
		{root, "/sys/fs/cgroup/unified/", "/"},
		{root, "x", "/x"},
		{root, "x/y", "/x/y"},
		{root, "/x", "/x"},
		{root, "/", "/"},
		{root, "", "/"},
		{root, "/sys/fs/cgroup/unifiedx", "/sys/fs/cgroup/unifiedx"}, // whole components only
		{root, "../../etc", "/etc"},                                  // never escapes the root
		{root, "/sys/fs/cgroup/unified/../x", "/sys/fs/cgroup/x"},    // cleaned first: not below the mount
		{"", "/sys/fs/cgroup/unified/x", "/sys/fs/cgroup/unified/x"}, // no cgroup2 mount known
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			if got := argPath(tt.root, tt.arg); got != tt.want {
				t.Errorf("argPath(%q, %q) = %q, want %q", tt.root, tt.arg, got, tt.want)
			}
		})
	}
	// The mount of this machine, from mountinfo: both forms name one cgroup.
	if m, err := Mount2(); err == nil {
		if got := ArgPath(m + "/a/b"); got != "/a/b" {
			t.Errorf("ArgPath(%q) = %q, want /a/b", m+"/a/b", got)
		}
		if got := ArgPath("a/b"); got != "/a/b" {
			t.Errorf("ArgPath(a/b) = %q, want /a/b", got)
		}
	}
}

// TestAwaitDir: a directory that is there, one that appears while AwaitDir
// waits (created by another goroutine; the outcome does not depend on
// which comes first), and one that never does.
func TestAwaitDir(t *testing.T) {
	dir := t.TempDir()
	if !AwaitDir(dir, 0) {
		t.Errorf("AwaitDir(%s) = false for a directory that exists", dir)
	}
	later := filepath.Join(dir, "later")
	go func() {
		time.Sleep(5 * time.Millisecond)
		os.Mkdir(later, 0o755)
	}()
	if !AwaitDir(later, time.Minute) {
		t.Errorf("AwaitDir(%s) = false for a directory created while it waited", later)
	}
	if AwaitDir(filepath.Join(dir, "never"), 5*time.Millisecond) {
		t.Error("AwaitDir = true for a directory that never appeared")
	}
}
