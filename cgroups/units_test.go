package cgroups

import "testing"

func TestSystemUnit(t *testing.T) {
	for _, tc := range []struct {
		root, rel, unit string
		ok              bool
	}{
		{"/", "/system.slice/etcd.service", "etcd.service", true},
		{"/", "/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service", true},
		{"/", "/etcd.service", "etcd.service", true},
		{"/", "/init.scope", "init.scope", true},
		{"/", "/system.slice", "", false},
		{"/", "/", "", false},
		{"/", "/system.slice/etcd.service/sub", "", false},
		{"/", "/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service", "", false},
		{"/", "/user.slice/user-1000.slice/user@1000.service", "user@1000.service", true},
		{"/", "/kubepods/besteffort/etcd.service", "", false},
		{"/", "/x.slicey/etcd.service", "", false},
		{"/test-1", "/test-1/system.slice/web.service", "web.service", true},
		{"/test-1", "/system.slice/web.service", "", false},
		{"/test-1", "/test-1", "", false},
		{"/test-1", "/test-10/system.slice/web.service", "", false},
		{"/", "/system.slice/notaunit", "", false},
	} {
		u, ok := SystemUnit(tc.root, tc.rel)
		if u != tc.unit || ok != tc.ok {
			t.Errorf("SystemUnit(%q, %q) = %q, %v; want %q, %v", tc.root, tc.rel, u, ok, tc.unit, tc.ok)
		}
	}
}

func TestUnitOf(t *testing.T) {
	for _, tc := range []struct {
		root, rel, unit, path string
	}{
		{"/", "/system.slice/etcd.service/a/b", "etcd.service", "/system.slice/etcd.service"},
		{"/", "/system.slice/etcd.service", "etcd.service", "/system.slice/etcd.service"},
		{"/", "/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service", "user@1000.service", "/user.slice/user-1000.slice/user@1000.service"},
		{"/", "/kubepods/besteffort/pod1/abc", "", ""},
	} {
		u, p, _ := UnitOf(tc.root, tc.rel)
		if u != tc.unit || p != tc.path {
			t.Errorf("UnitOf(%q, %q) = %q, %q; want %q, %q", tc.root, tc.rel, u, p, tc.unit, tc.path)
		}
	}
}

func FuzzSystemUnit(f *testing.F) {
	f.Add("/", "/system.slice/etcd.service")
	f.Add("/a", "/a/b.slice/c.service/d")
	f.Fuzz(func(t *testing.T, root, rel string) {
		u, ok := SystemUnit(root, rel)
		if ok != (u != "") {
			t.Fatalf("ok=%v with unit %q", ok, u)
		}
		if ok {
			if _, p, ok2 := UnitOf(root, rel); !ok2 || clean(p) != clean(rel) {
				t.Fatalf("UnitOf disagrees for %q below %q: %q", rel, root, p)
			}
		}
	})
}
