package cgroups

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestUnitOf(t *testing.T) {
	tests := []struct {
		name, root, path string
		unit, unitPath   string // "" when not ok
	}{
		{"system service", "/", "/system.slice/etcd.service", "etcd.service", "/system.slice/etcd.service"},
		{"below a service", "/", "/system.slice/containerd.service/x/y", "containerd.service", "/system.slice/containerd.service"},
		{"nested slices", "/", "/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", "/system.slice/system-getty.slice/getty@tty1.service"},
		{"root-level unit", "/", "/init.scope", "init.scope", "/init.scope"},
		{"session scope", "/", "/user.slice/user-1000.slice/session-3.scope", "session-3.scope", "/user.slice/user-1000.slice/session-3.scope"},
		{"user manager, not the service inside it", "/", "/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service", "user@1000.service", "/user.slice/user-1000.slice/user@1000.service"},
		{"container scope", "/", "/system.slice/docker-0123.scope/etcd.service", "docker-0123.scope", "/system.slice/docker-0123.scope"},
		{"kubepods cgroupfs", "/", "/kubepods/besteffort/pod1/abc", "", ""},
		{"kubepods systemd", "/", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope", "cri-containerd-abc.scope", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope"},
		{"plain directory first", "/", "/mygroup/etcd.service", "", ""},
		{"only slices", "/", "/system.slice", "", ""},
		{"root itself", "/", "/", "", ""},
		{"bare suffix is no unit", "/", "/.service", "", ""},
		{"unclean path", "/", "system.slice//etcd.service/", "etcd.service", "/system.slice/etcd.service"},
		{"test attach root", "/bg-test-1", "/bg-test-1/system.slice/x.service/child", "x.service", "/bg-test-1/system.slice/x.service"},
		{"outside the attach root", "/bg-test-1", "/system.slice/x.service", "", ""},
		{"attach root as prefix of a sibling", "/bg-test-1", "/bg-test-10/system.slice/x.service", "", ""},
		{"unit at the attach root", "/bg-test-1", "/bg-test-1/x.service", "x.service", "/bg-test-1/x.service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit, at, ok := UnitOf(tt.root, tt.path)
			if ok != (tt.unit != "") || unit != tt.unit || at != tt.unitPath {
				t.Errorf("UnitOf(%q, %q) = %q, %q, %v; want %q, %q", tt.root, tt.path, unit, at, ok, tt.unit, tt.unitPath)
			}
		})
	}
}

func TestInUnit(t *testing.T) {
	userEtcd := "/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service"
	tests := []struct {
		name, root, path, unit string
		want                   bool
	}{
		{"the unit", "/", "/system.slice/etcd.service", "etcd.service", true},
		{"below the unit", "/", "/system.slice/etcd.service/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", "etcd.service", true},
		{"delegated look-alike", "/", userEtcd, "etcd.service", false},
		{"look-alike in a delegated service", "/", "/system.slice/containerd.service/etcd.service", "etcd.service", false},
		{"look-alike below a plain directory", "/", "/custom/etcd.service", "etcd.service", false},
		{"other unit", "/", "/system.slice/etcd.service", "kubelet.service", false},
		{"name as prefix", "/", "/system.slice/etcd.service2", "etcd.service", false},
		{"slice unit", "/", "/system.slice/system-getty.slice/getty@tty1.service", "system-getty.slice", true},
		{"outer slice", "/", "/system.slice/etcd.service/x", "system.slice", true},
		{"slice below a service is not the system's", "/", "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", "app.slice", false},
		{"user manager itself", "/", userEtcd, "user@1000.service", true},
		{"root-level unit", "/", "/init.scope", "init.scope", true},
		{"test root", "/t", "/t/system.slice/x.service", "x.service", true},
		{"test root, host unit", "/t", "/system.slice/x.service", "x.service", false},
		{"empty unit", "/", "/system.slice/etcd.service", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InUnit(tt.root, tt.path, tt.unit); got != tt.want {
				t.Errorf("InUnit(%q, %q, %q) = %v, want %v", tt.root, tt.path, tt.unit, got, tt.want)
			}
		})
	}
}

func FuzzUnitOf(f *testing.F) {
	f.Add("/", "/system.slice/etcd.service/x")
	f.Add("/t", "/t/a.slice/b.slice/user@1.service/c.slice/d.service")
	f.Fuzz(func(t *testing.T, root, p string) {
		unit, at, ok := UnitOf(root, p)
		if !ok {
			return
		}
		if !InUnit(root, p, unit) || !InUnit(root, at, unit) {
			t.Fatalf("UnitOf(%q, %q) = %q at %q, but InUnit disagrees", root, p, unit, at)
		}
		if u2, at2, ok2 := UnitOf(root, at); !ok2 || u2 != unit || at2 != at {
			t.Fatalf("the unit's own cgroup %q resolves to %q at %q", at, u2, at2)
		}
	})
}

func TestSystemUnit(t *testing.T) {
	for _, tc := range []struct {
		root, rel, unit string
		ok              bool
	}{
		{"/", "/system.slice/etcd.service", "etcd.service", true},
		{"/", "/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", true},
		{"/", "/system.slice", "system.slice", true},
		{"/", "/", "", false},
		{"/", "/system.slice/etcd.service/sub", "etcd.service", false},
		{"/", "/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service", "user@1000.service", false},
		{"/", "/kubepods/besteffort/etcd.service", "", false},
		{"/test-1", "/test-1/system.slice/web.service", "web.service", true},
		{"/test-1", "/system.slice/web.service", "", false},
		{"/test-1", "/test-10/system.slice/web.service", "", false},
	} {
		u, ok := SystemUnit(tc.root, tc.rel)
		if ok != tc.ok || (ok && u != tc.unit) {
			t.Errorf("SystemUnit(%q, %q) = %q, %v; want %q, %v", tc.root, tc.rel, u, ok, tc.unit, tc.ok)
		}
	}
}

func FuzzSystemUnit(f *testing.F) {
	f.Add("/", "/system.slice/etcd.service")
	f.Add("/a", "/a/b.slice/c.service/d")
	f.Fuzz(func(t *testing.T, root, rel string) {
		u, ok := SystemUnit(root, rel)
		if !ok {
			return
		}
		// Whatever SystemUnit calls a unit's cgroup, InUnit agrees for it.
		if !InUnit(root, rel, u) {
			t.Fatalf("SystemUnit(%q, %q) = %q, but InUnit disagrees", root, rel, u)
		}
	})
}

// TestFindSystemUnits walks a directory tree laid out like a cgroup2
// hierarchy (the walk reads directories only, so no cgroup2 mount is needed).
func TestFindSystemUnits(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{
		"init.scope",
		"system.slice/etcd.service/sub",
		"system.slice/system-getty.slice/getty@tty1.service",
		"system.slice/containerd.service/etcd.service",
		"user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service",
		"mygroup/etcd.service",
		"t/system.slice/etcd.service",
	} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := &FS{Root: dir}
	tests := []struct {
		root  string
		units []string
		want  map[string][]string
	}{
		{"/", []string{"etcd.service", "init.scope", "getty@tty1.service", "system-getty.slice", "user@1000.service", "app.slice"}, map[string][]string{
			"etcd.service":       {"/system.slice/etcd.service"},
			"init.scope":         {"/init.scope"},
			"getty@tty1.service": {"/system.slice/system-getty.slice/getty@tty1.service"},
			"system-getty.slice": {"/system.slice/system-getty.slice"},
			"user@1000.service":  {"/user.slice/user-1000.slice/user@1000.service"},
		}},
		{"/t", []string{"etcd.service"}, map[string][]string{"etcd.service": {"/t/system.slice/etcd.service"}}},
		{"/", nil, map[string][]string{}},
	}
	for _, tt := range tests {
		got, err := c.FindSystemUnits(tt.root, tt.units)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("FindSystemUnits(%q, %v) = %v, want %v", tt.root, tt.units, got, tt.want)
		}
		for u, paths := range got {
			for _, p := range paths {
				if !InUnit(tt.root, p, u) {
					t.Errorf("%s found at %s, but InUnit disagrees", u, p)
				}
			}
		}
	}
	if _, err := c.FindSystemUnits("/missing", []string{"x.service"}); err == nil {
		t.Error("a missing root: no error")
	}
}

func TestProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		text, want string
		ok         bool
	}{
		{"12:memory:/x\n0::/system.slice/a.service\n", "/system.slice/a.service", true},
		{"0::/user.slice/gone (deleted)\n", "/user.slice/gone", true},
		{"0::/\n", "/", true},
		{"1:name=systemd:/x\n", "", false},
		{"0::relative\n", "", false},
		{"", "", false},
	} {
		got, ok := ProcCgroup(tc.text)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ProcCgroup(%q) = %q, %v; want %q, %v", tc.text, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzProcCgroup(f *testing.F) {
	f.Add("0::/a/b\n")
	f.Add("3:cpu:/x\n0::/y (deleted)")
	f.Fuzz(func(t *testing.T, s string) {
		if p, ok := ProcCgroup(s); ok && !strings.HasPrefix(p, "/") {
			t.Fatalf("ProcCgroup(%q) = %q: not absolute", s, p)
		}
	})
}
