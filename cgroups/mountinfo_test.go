package cgroups

import (
	"strings"
	"testing"
)

// FuzzParseMountinfo feeds arbitrary mountinfo text to the parser that finds
// the cgroup2 mount. It must never panic; it returns a path or an error with
// the "find cgroup2 mount: " prefix, never both and never neither; the path
// is the unescaped mount point of a cgroup2 line; and the cgroup namespace
// fallback (isRoot) is only consulted when no line mounts the root itself,
// so a result without it is the same result with it.
func FuzzParseMountinfo(f *testing.F) {
	for _, s := range []string{
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
		"29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
		`41 31 0:38 / /mnt/cg\040two rw - cgroup2 cgroup2 rw` + "\n",
		"41 31 0:38 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n42 31 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n",
		"31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n",
		`1 2 3 / /a\\ - cgroup2` + "\n",
		`1 2 3 / \0 - cgroup2 x` + "\n- - - - - -\n",
		"x y\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var asked []string
		got, err := parseMountinfoWith(strings.NewReader(in), func(dir string) bool {
			asked = append(asked, dir)
			return false
		})
		if (got == "") == (err == nil) {
			t.Fatalf("parseMountinfoWith(%q) = %q, %v: want a path or an error", in, got, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "find cgroup2 mount: ") {
			t.Fatalf("error without its context prefix: %v", err)
		}
		if got != "" && !isCgroup2MountPoint(in, got) {
			t.Fatalf("parseMountinfoWith(%q) = %q: not the mount point of a cgroup2 line", in, got)
		}
		for _, dir := range asked {
			if !isCgroup2MountPoint(in, dir) {
				t.Fatalf("isRoot asked about %q, not the mount point of a cgroup2 line", dir)
			}
		}
		withNS, nsErr := parseMountinfoWith(strings.NewReader(in), func(string) bool { return true })
		if got != "" && (withNS != got || nsErr != nil) {
			t.Fatalf("isRoot changed a root mount's result: %q, then %q, %v", got, withNS, nsErr)
		}
		if got == "" && len(asked) > 0 && (withNS != asked[0] || nsErr != nil) {
			t.Fatalf("isRoot accepting %q gave %q, %v", asked[0], withNS, nsErr)
		}
	})
}

// isCgroup2MountPoint reports whether some line of in has a cgroup2 file
// system type after its "-" separator and mount point dir, once unescaped.
func isCgroup2MountPoint(in, dir string) bool {
	for line := range strings.Lines(in) {
		fields := strings.Fields(line)
		for i, f := range fields {
			if f != "-" {
				continue
			}
			if i >= 5 && i+1 < len(fields) && fields[i+1] == "cgroup2" && unescapeMount(fields[4]) == dir {
				return true
			}
			break
		}
	}
	return false
}
