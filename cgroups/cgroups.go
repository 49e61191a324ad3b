package cgroups

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mount2 returns where the cgroup2 (unified) hierarchy is mounted, read from
// /proc/self/mountinfo. It never guesses a path.
func Mount2() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

func parseMountinfo(r io.Reader) (string, error) {
	return parseMountinfoWith(r, func(dir string) bool {
		id, err := IDOf(dir)
		return err == nil && id == rootCgroupID
	})
}

// rootCgroupID is the id of the cgroup2 root in every kernel since 5.5.
const rootCgroupID = 1

// parseMountinfoWith picks the cgroup2 mount of the whole hierarchy: one
// whose mount root is "/", or, inside a cgroup namespace (a container's view
// of a host bind mount shows its root as "/.." or similar), one whose
// directory is the hierarchy's root cgroup according to isRoot.
func parseMountinfoWith(r io.Reader, isRoot func(dir string) bool) (string, error) {
	mounts, err := Mounts(r, "cgroup2")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	var others []string
	for _, m := range mounts {
		if m.Root == "/" {
			return m.Dir, nil
		}
		others = append(others, m.Dir)
	}
	for _, dir := range others {
		if isRoot(dir) {
			return dir, nil
		}
	}
	if len(others) > 0 {
		return "", fmt.Errorf("find cgroup2 mount: cgroup2 is mounted only below its root (%s); mount the host's cgroup2 root", strings.Join(others, ", "))
	}
	return "", errors.New("find cgroup2 mount: no cgroup2 file system is mounted (see /proc/self/mountinfo)")
}

// Mount is one mount of /proc/PID/mountinfo.
type Mount struct {
	Root string // the directory of its file system that is mounted
	Dir  string // where it is mounted
}

// Mounts returns the mounts of file system type fstype listed in r, a
// /proc/PID/mountinfo, in its order.
func Mounts(r io.Reader, fstype string) ([]Mount, error) {
	s := bufio.NewScanner(r)
	var out []Mount
	for s.Scan() {
		// 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		fields := strings.Fields(s.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != fstype {
			continue
		}
		out = append(out, Mount{Root: unescapeMount(fields[3]), Dir: unescapeMount(fields[4])})
	}
	return out, s.Err()
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FS is one cgroup2 hierarchy.
type FS struct {
	// Root is the mount point, e.g. /sys/fs/cgroup.
	Root string

	mu    sync.Mutex
	mount *os.File
	names map[uint64]string
}

// Open returns the cgroup2 hierarchy mounted at root, or the one found in
// mountinfo when root is empty.
func Open(root string) (*FS, error) {
	if root == "" {
		var err error
		if root, err = Mount2(); err != nil {
			return nil, err
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("cgroup2 at %s: %w", root, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("cgroup2 at %s: not a cgroup2 file system", root)
	}
	return &FS{Root: filepath.Clean(root), names: map[uint64]string{}}, nil
}

// Abs turns a registry path ("/system.slice/x.service") into a file system path.
func (c *FS) Abs(rel string) string {
	return filepath.Join(c.Root, filepath.Clean("/"+rel))
}

// Rel turns a file system path below Root into a registry path ("/" for the root).
func (c *FS) Rel(abs string) (string, error) {
	r, err := filepath.Rel(c.Root, abs)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", fmt.Errorf("%s is not below the cgroup2 root %s", abs, c.Root)
	}
	if r == "." {
		return "/", nil
	}
	return "/" + r, nil
}

// ID returns the cgroup id of a registry path: the kernfs node id the kernel
// programs see from bpf_get_current_cgroup_id, and its depth (0 for "/").
func (c *FS) ID(rel string) (id uint64, depth int, err error) {
	id, err = IDOf(c.Abs(rel))
	if err != nil {
		return 0, 0, err
	}
	return id, Depth(rel), nil
}

// IDOf returns the cgroup id of a cgroup directory (its inode number; the
// file handle the kernel gives for kernfs holds the same 64-bit id).
func IDOf(dir string) (uint64, error) {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err == nil && len(h.Bytes()) == 8 {
		return binary.LittleEndian.Uint64(h.Bytes()), nil
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Depth is the number of path elements of a registry path ("/" is 0).
func Depth(rel string) int {
	rel = strings.Trim(filepath.Clean("/"+rel), "/")
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// fileidKernfs is FILEID_KERNFS from include/linux/exportfs.h.
const fileidKernfs = 0xfe

// Path returns the registry path of a cgroup id, or an error when the cgroup
// no longer exists. Results are cached: cgroup ids are 64-bit and never reused.
func (c *FS) Path(id uint64) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.names[id]; ok {
		return p, nil
	}
	if c.mount == nil {
		f, err := os.Open(c.Root)
		if err != nil {
			return "", fmt.Errorf("cgroup path of id %d: %w", id, err)
		}
		c.mount = f
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], id)
	fd, err := unix.OpenByHandleAt(int(c.mount.Fd()), unix.NewFileHandle(fileidKernfs, b[:]), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_PATH)
	if err != nil {
		return "", fmt.Errorf("cgroup path of id %d: %w", id, err)
	}
	defer unix.Close(fd)
	abs, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", fmt.Errorf("cgroup path of id %d: %w", id, err)
	}
	rel, err := c.Rel(abs)
	if err != nil {
		// Below a cgroup namespace the link is relative to its root.
		rel = abs
	}
	if len(c.names) > 65536 {
		clear(c.names)
	}
	c.names[id] = rel
	return rel, nil
}

// Close releases the handle on the mount.
func (c *FS) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mount == nil {
		return nil
	}
	err := c.mount.Close()
	c.mount = nil
	return err
}

var containerRE = regexp.MustCompile(`(?:^|[-_])([0-9a-f]{64})(?:\.scope)?$`)

// Container returns the container id a cgroup path shows, or "":
// ".../cri-containerd-<64 hex>.scope", ".../docker-<id>.scope", "/kubepods/.../<id>".
func Container(rel string) string {
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if m := containerRE.FindStringSubmatch(parts[i]); m != nil {
			return m[1]
		}
	}
	return ""
}

// ArgPath turns a --cgroup argument into a registry path. It takes both
// forms bpftool and systemd take: a path of the cgroup2 file system
// ("/sys/fs/cgroup/unified/x", below the mount found in mountinfo) and a path
// relative to the cgroup2 root ("x" or "/x"). A path that names the mount
// point or lies below it is read as the former. It does not check that the
// cgroup exists.
func ArgPath(arg string) string {
	root, err := Mount2()
	if err != nil {
		root = ""
	}
	return argPath(root, arg)
}

func argPath(root, arg string) string {
	if root != "" && filepath.IsAbs(arg) {
		root = filepath.Clean(root)
		if p := filepath.Clean(arg); p == root {
			return "/"
		} else if rel, ok := strings.CutPrefix(p, root+"/"); ok {
			return "/" + rel
		}
	}
	return filepath.Clean("/" + arg)
}

// AwaitNew is how long to wait for the directory of a cgroup whose mkdir
// event was just read (AwaitDir).
const AwaitNew = 127 * time.Millisecond

// AwaitDir waits for the directory of a cgroup whose creation was just
// reported, and says whether it is there. The kernel's cgroup_mkdir
// tracepoint fires before the directory is made visible (kernfs_activate
// follows it), and a reader woken by the event can look it up first and be
// told it does not exist. AwaitDir polls with a doubling pause from 1 ms,
// for at most within; still absent then means removed meanwhile. An error
// other than "does not exist" counts as there: the caller's own use of the
// directory reports it. Call it only for cgroups there is a reason to write
// (a policy's owner, kubelet's pod tree): a user who creates and removes
// cgroups in a subtree delegated to them must not make the caller wait.
func AwaitDir(abs string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for pause := time.Millisecond; ; pause = min(2*pause, 32*time.Millisecond) {
		if _, err := os.Stat(abs); !errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
}
