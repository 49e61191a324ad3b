package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// SystemUnit returns the systemd unit whose own cgroup rel is, when rel sits
// where the system manager puts units: below root, every component before
// the last is a slice ("/system.slice/etcd.service",
// "/system.slice/system-getty.slice/getty@tty1.service"). A cgroup named
// after a unit anywhere else, for example inside a user's delegated subtree
// ("/user.slice/user-1000.slice/user@1000.service/app.slice/etcd.service"),
// is not that unit: any user can create one. root is a registry path (the
// attach cgroup; "/" on a real host).
func SystemUnit(root, rel string) (unit string, ok bool) {
	root, rel = clean(root), clean(rel)
	var tail string
	switch {
	case root == "/":
		tail = strings.TrimPrefix(rel, "/")
	case strings.HasPrefix(rel, root+"/"):
		tail = rel[len(root)+1:]
	default:
		return "", false
	}
	if tail == "" {
		return "", false
	}
	parts := strings.Split(tail, "/")
	for _, p := range parts[:len(parts)-1] {
		if !isSlice(p) {
			return "", false
		}
	}
	last := parts[len(parts)-1]
	if !unitRE.MatchString(last) || isSlice(last) {
		return "", false
	}
	return last, true
}

// UnitOf returns the system unit that rel belongs to: the unit SystemUnit
// finds at rel or at one of its ancestors below root, and that unit's path.
func UnitOf(root, rel string) (unit, unitPath string, ok bool) {
	for p := clean(rel); p != "/" && p != clean(root); p = path.Dir(p) {
		if u, ok := SystemUnit(root, p); ok {
			return u, p, true
		}
	}
	return "", "", false
}

func isSlice(name string) bool { return strings.HasSuffix(name, ".slice") && unitRE.MatchString(name) }

func clean(p string) string { return path.Clean("/" + p) }

// FindSystemUnits returns, for each unit, the registry paths of its cgroups
// below root as SystemUnit defines them. It reads only slices, so it never
// enters a service's or a container's subtree.
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
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			child := path.Join(rel, e.Name())
			switch {
			case isSlice(e.Name()):
				if err := walk(child); err != nil {
					return err
				}
			case want[e.Name()]:
				found[e.Name()] = append(found[e.Name()], child)
			}
		}
		return nil
	}
	if err := walk(clean(root)); err != nil {
		return nil, fmt.Errorf("find cgroups of units %s: %w", strings.Join(units, ", "), err)
	}
	return found, nil
}
