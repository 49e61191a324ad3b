package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// systemUnitSuffixes are the unit types whose cgroup can hold processes
// below a chain of slices: what the system manager creates there.
var systemUnitSuffixes = []string{".service", ".scope", ".socket", ".mount", ".swap"}

// UnitOf returns the system manager's unit that the cgroup p belongs to, and
// the unit's own cgroup path. root is the cgroup the system manager's tree
// starts at: "/" on a real host (the attach cgroup of the daemon), a test's
// temporary cgroup in tests. Paths are registry paths (relative to the
// cgroup2 root).
//
// The rule is systemd's layout and nothing else: below root, zero or more
// slices (a.slice/a-b.slice/...), then one unit of another type; that unit
// owns its cgroup and everything below it:
//
//	/system.slice/etcd.service             -> etcd.service
//	/system.slice/etcd.service/x/y         -> etcd.service
//	/system.slice/system-getty.slice/getty@tty1.service -> getty@tty1.service
//	/init.scope                            -> init.scope (a unit at the root)
//	/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service
//	                                       -> user@1000.service, never etcd.service
//
// A cgroup named like a unit below any non-slice component (a delegated
// subtree: user@.service, a container's scope, a Delegate=yes service) is
// not the system's unit of that name, whoever created it. ok is false when p
// is not below root, or only slices lead to it, or the first component after
// the slices is not a unit.
func UnitOf(root, p string) (unit, unitPath string, ok bool) {
	root, p = cleanRel(root), cleanRel(p)
	rest, below := relBelow(root, p)
	if !below || rest == "" {
		return "", "", false
	}
	at := root
	for c := range strings.SplitSeq(rest, "/") {
		at = path.Join(at, c)
		if strings.HasSuffix(c, ".slice") && len(c) > len(".slice") {
			continue
		}
		for _, s := range systemUnitSuffixes {
			if strings.HasSuffix(c, s) && len(c) > len(s) {
				return c, at, true
			}
		}
		return "", "", false
	}
	return "", "", false
}

// InUnit reports whether the cgroup p belongs to the system manager's unit
// (see UnitOf): it is the unit's cgroup or below it, or, for a slice unit,
// the slice is one of the slices that lead from root to p.
func InUnit(root, p, unit string) bool {
	_, ok := UnitCgroup(root, p, unit)
	return ok
}

// UnitCgroup returns the cgroup of the system manager's unit that p belongs
// to, when that unit is named unit (see InUnit).
func UnitCgroup(root, p, unit string) (string, bool) {
	root, p = cleanRel(root), cleanRel(p)
	rest, below := relBelow(root, p)
	if !below || rest == "" || unit == "" {
		return "", false
	}
	if strings.HasSuffix(unit, ".slice") {
		at := root
		for c := range strings.SplitSeq(rest, "/") {
			if !strings.HasSuffix(c, ".slice") {
				return "", false
			}
			at = path.Join(at, c)
			if c == unit {
				return at, true
			}
		}
		return "", false
	}
	u, at, ok := UnitOf(root, p)
	return at, ok && u == unit
}

// relBelow returns p relative to root ("" when equal) and whether p is root
// or below it, comparing whole components.
func relBelow(root, p string) (string, bool) {
	if root == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	if p == root {
		return "", true
	}
	if rest, ok := strings.CutPrefix(p, root+"/"); ok {
		return rest, true
	}
	return "", false
}

func cleanRel(p string) string { return path.Clean("/" + p) }

// SystemUnit returns the system manager's unit whose own cgroup rel is: a
// unit that UnitOf finds at rel itself, or the last slice of a chain of
// slices below root. A cgroup below a unit, or a look-alike inside a
// delegated subtree, is none.
func SystemUnit(root, rel string) (unit string, ok bool) {
	rel = cleanRel(rel)
	if u, at, ok := UnitOf(root, rel); ok {
		return u, at == rel
	}
	rest, below := relBelow(cleanRel(root), rel)
	if !below || rest == "" {
		return "", false
	}
	for c := range strings.SplitSeq(rest, "/") {
		if !isSlice(c) {
			return "", false
		}
	}
	return path.Base(rel), true
}

func isSlice(name string) bool { return strings.HasSuffix(name, ".slice") && len(name) > len(".slice") }

// FindSystemUnits returns, for each unit, the registry paths of its cgroups
// below root, as SystemUnit defines them. It reads only slices, so it never
// enters a service's, a scope's or a container's subtree: a look-alike
// there is never found.
func (c *FS) FindSystemUnits(root string, units []string) (map[string][]string, error) {
	found := make(map[string][]string, len(units))
	if len(units) == 0 {
		return found, nil
	}
	want := make(map[string]bool, len(units))
	for _, u := range units {
		want[u] = true
	}
	var walk func(rel string) error
	walk = func(rel string) error {
		ents, err := os.ReadDir(c.Abs(rel))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && rel != cleanRel(root) {
				return nil // removed while walking
			}
			return err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			child := path.Join(rel, e.Name())
			if _, ok := SystemUnit(root, child); !ok {
				continue
			}
			if want[e.Name()] {
				found[e.Name()] = append(found[e.Name()], child)
			}
			if isSlice(e.Name()) {
				if err := walk(child); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(cleanRel(root)); err != nil {
		return nil, fmt.Errorf("find cgroups of units %s: %w", strings.Join(units, ", "), err)
	}
	return found, nil
}

// ProcCgroup returns the cgroup2 path in the text of /proc/PID/cgroup (its
// "0::PATH" line), without a " (deleted)" suffix; ok is false when there is
// none. The one reader of that format: features, the loader's netns probe
// and scan use it.
func ProcCgroup(text string) (path string, ok bool) {
	for line := range strings.Lines(text) {
		if p, found := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "0::"); found && strings.HasPrefix(p, "/") {
			return strings.TrimSuffix(p, " (deleted)"), true
		}
	}
	return "", false
}

// SelfCgroup returns this process's cgroup2 path.
func SelfCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	p, ok := ProcCgroup(string(b))
	if !ok {
		return "", errors.New("no cgroup2 entry in /proc/self/cgroup")
	}
	return p, nil
}
