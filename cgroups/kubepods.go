package cgroups

import (
	"os"
	"path"
	"strings"
)

// KubeLevel says which level of kubelet's cgroup tree a path is.
type KubeLevel int

const (
	// NotKube: the path is not in kubelet's layout.
	NotKube KubeLevel = iota
	// KubeQoS: kubelet's QoS parent (burstable, besteffort) below kubepods.
	KubeQoS
	// KubePodLevel: a pod's own cgroup.
	KubePodLevel
	// KubeContainer: a container's cgroup (or the sandbox's), or crun's
	// extra "container" child below it.
	KubeContainer
)

// Kubelet's QoS classes that have a cgroup level of their own; Guaranteed
// pods sit directly below kubepods.
const (
	QoSBurstable  = "burstable"
	QoSBestEffort = "besteffort"
)

// Runtimes that a container cgroup's name shows.
const (
	RuntimeContainerd = "containerd" // systemd driver: cri-containerd-<id>.scope
	RuntimeCRIO       = "crio"       // crio-<id>.scope, or crio-<id> with cgroupfs
)

// KubeCgroup is what a cgroup path in kubelet's layout says.
//
// The parser anchors at the end of the path and reads upwards: container,
// pod, QoS, kubepods. Whatever lies above the kubepods cgroup is Root. A
// path of the right shape proves nothing by itself: anyone who may create
// cgroups (a delegated subtree, a container with cgroupns and a writable
// cgroupfs) can create "…/kubepods/besteffort/pod<uuid>/<64 hex>" below
// their own cgroup. The caller must therefore compare Kubepods with the
// place where kubelet's tree really is on this node (the configured
// kubepods cgroup, e.g. "/kubepods.slice" or "/kubepods", or "<cgroup-root>/kubepods"),
// and treat a path whose Kubepods differs as no pod at all (InKubepods;
// FS.Kubepods finds the default places). Even then the
// identity is only a claim to be confirmed with the container runtime, which
// the cri package does (the pod UID and container id must be a pod and a
// container of that pod there).
type KubeCgroup struct {
	Level KubeLevel
	// Root is kubelet's --cgroup-root: the cgroup that holds the kubepods
	// cgroup, "/" when kubepods is at the top.
	Root string
	// Kubepods is the path of the kubepods cgroup itself:
	// "/kubepods.slice", "/kubepods", "/bindguard-test-1/kubepods".
	Kubepods string
	// Systemd is true for the systemd cgroup driver's names.
	Systemd bool
	// QoS is "", QoSBurstable or QoSBestEffort ("" for Guaranteed pods).
	QoS string
	// PodUID is the pod's UID with dashes (a UUID), or kubelet's 32-hex
	// config hash for a static pod; "" at the QoS level.
	PodUID string
	// ContainerID is the container's (or the sandbox's) 64-hex id, "" for
	// the pod's own cgroup.
	ContainerID string
	// Runtime is RuntimeContainerd or RuntimeCRIO when the name shows it,
	// "" when it does not (cgroupfs driver with containerd: a bare id).
	Runtime string
	// Subgroup is true for crun's extra "container" child.
	Subgroup bool
}

// ParseKube reads a cgroup path (relative to the cgroup2 root) in one of
// kubelet's layouts: both cgroup drivers, with or without a QoS level,
// with containerd's and CRI-O's container names, crun's "container" child,
// and any --cgroup-root above. It is strict: pod UIDs must be UUIDs (or a
// static pod's 32-hex hash), container ids 64 lowercase hex, and each
// level's name must continue its parent's (systemd slices). ok is false for
// anything else, including the kubepods cgroup itself.
func ParseKube(rel string) (KubeCgroup, bool) {
	parts := splitPath(rel)
	var k KubeCgroup
	if n := len(parts); n >= 2 && parts[n-1] == "container" {
		// crun's payload child: only below a container cgroup.
		if c, ok := ParseKube("/" + strings.Join(parts[:n-1], "/")); ok && c.Level == KubeContainer && !c.Subgroup {
			c.Subgroup = true
			return c, true
		}
		return k, false
	}
	if len(parts) == 0 {
		return k, false
	}
	last := parts[len(parts)-1]
	if strings.HasSuffix(last, ".slice") || strings.HasSuffix(last, ".scope") {
		k.Systemd = true
		return parseSystemd(parts)
	}
	return parseCgroupfs(parts)
}

// KubeLevelOf reports the level of a cgroup in kubelet's layout (NotKube
// for anything else), for use when a cgroup is created: a pod cgroup appears
// before its sandbox and containers. The same caveat as ParseKube holds: the
// caller must check that Kubepods is kubelet's place.
func KubeLevelOf(rel string) (KubeLevel, KubeCgroup) {
	if k, ok := ParseKube(rel); ok {
		return k.Level, k
	}
	if k, ok := parseQoS(splitPath(rel)); ok {
		return KubeQoS, k
	}
	return NotKube, KubeCgroup{}
}

func splitPath(rel string) []string {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		return nil
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil
		}
	}
	return parts
}

// cgroupfs: <root>/kubepods[/<qos>]/pod<UID>[/<id> | /crio-<id>]
func parseCgroupfs(parts []string) (KubeCgroup, bool) {
	k := KubeCgroup{Level: KubePodLevel}
	i := k.containerLeaf(parts, cgroupfsContainer)
	if i < 1 {
		return KubeCgroup{}, false
	}
	uid, ok := strings.CutPrefix(parts[i], "pod")
	if !ok || !validPodUID(uid) {
		return KubeCgroup{}, false
	}
	k.PodUID = uid
	i--
	if parts[i] == QoSBurstable || parts[i] == QoSBestEffort {
		k.QoS = parts[i]
		i--
	}
	if i < 0 || parts[i] != "kubepods" {
		return KubeCgroup{}, false
	}
	k.Root = "/" + strings.Join(parts[:i], "/")
	k.Kubepods = path.Join(k.Root, "kubepods")
	return k, true
}

// containerLeaf fills in the container when container recognises the last
// part, and returns the index of the part that names the pod.
func (k *KubeCgroup) containerLeaf(parts []string, container func(string) (id, runtime string, ok bool)) int {
	i := len(parts) - 1
	if id, rt, ok := container(parts[i]); ok {
		k.Level, k.ContainerID, k.Runtime = KubeContainer, id, rt
		i--
	}
	return i
}

func cgroupfsContainer(name string) (id, runtime string, ok bool) {
	if validContainerID(name) {
		return name, "", true
	}
	if id, ok := strings.CutPrefix(name, "crio-"); ok && validContainerID(id) {
		return id, RuntimeCRIO, true
	}
	return "", "", false
}

// systemd: <root>/<P>kubepods.slice[/<P>kubepods-<qos>.slice]/<…>-pod<UID_>.slice[/cri-containerd-<id>.scope | /crio-<id>.scope]
func parseSystemd(parts []string) (KubeCgroup, bool) {
	k := KubeCgroup{Level: KubePodLevel, Systemd: true}
	i := k.containerLeaf(parts, systemdContainer)
	if i < 1 {
		return KubeCgroup{}, false
	}
	pod, ok := strings.CutSuffix(parts[i], ".slice")
	if !ok {
		return KubeCgroup{}, false
	}
	at := strings.LastIndex(pod, "-pod")
	if at < 0 {
		return KubeCgroup{}, false
	}
	prefix, uid := pod[:at], strings.ReplaceAll(pod[at+len("-pod"):], "_", "-")
	if !validPodUID(uid) || parts[i-1] != prefix+".slice" {
		return KubeCgroup{}, false
	}
	k.PodUID = uid
	i--
	if !isKubepodsSlice(prefix) {
		base, qos, ok := cutQoS(prefix)
		if !ok || i < 1 || parts[i-1] != base+".slice" || !isKubepodsSlice(base) {
			return KubeCgroup{}, false
		}
		k.QoS = qos
		i--
	}
	k.Root = "/" + strings.Join(parts[:i], "/")
	k.Kubepods = path.Join(k.Root, parts[i])
	return k, true
}

func systemdContainer(name string) (id, runtime string, ok bool) {
	scope, ok := strings.CutSuffix(name, ".scope")
	if !ok {
		return "", "", false
	}
	if id, ok := strings.CutPrefix(scope, "cri-containerd-"); ok && validContainerID(id) {
		return id, RuntimeContainerd, true
	}
	if id, ok := strings.CutPrefix(scope, "crio-"); ok && validContainerID(id) {
		return id, RuntimeCRIO, true
	}
	return "", "", false
}

// isKubepodsSlice: "kubepods", or "<root slice>-kubepods" under a systemd
// --cgroup-root.
func isKubepodsSlice(name string) bool {
	return name == "kubepods" || strings.HasSuffix(name, "-kubepods")
}

func cutQoS(name string) (base, qos string, ok bool) {
	for _, q := range []string{QoSBurstable, QoSBestEffort} {
		if b, ok := strings.CutSuffix(name, "-"+q); ok {
			return b, q, true
		}
	}
	return "", "", false
}

// parseQoS recognises the QoS parents: <root>/kubepods/<qos> and
// <root>/<P>kubepods.slice/<P>kubepods-<qos>.slice.
func parseQoS(parts []string) (KubeCgroup, bool) {
	n := len(parts)
	if n < 2 {
		return KubeCgroup{}, false
	}
	k := KubeCgroup{Level: KubeQoS, Root: "/" + strings.Join(parts[:n-2], "/")}
	k.Kubepods = path.Join(k.Root, parts[n-2])
	if parts[n-2] == "kubepods" && (parts[n-1] == QoSBurstable || parts[n-1] == QoSBestEffort) {
		k.QoS = parts[n-1]
		return k, true
	}
	name, ok := strings.CutSuffix(parts[n-1], ".slice")
	if !ok {
		return KubeCgroup{}, false
	}
	base, qos, ok := cutQoS(name)
	if !ok || !isKubepodsSlice(base) || parts[n-2] != base+".slice" {
		return KubeCgroup{}, false
	}
	k.QoS, k.Systemd = qos, true
	return k, true
}

// ValidContainerID reports whether s is a container id as containerd and
// CRI-O make them: 64 lowercase hex digits.
func ValidContainerID(s string) bool { return validContainerID(s) }

// ValidPodUID reports whether s is a pod UID in the forms ParseKube accepts.
func ValidPodUID(s string) bool { return validPodUID(s) }

func validContainerID(s string) bool {
	return len(s) == 64 && isLowerHex(s)
}

// validPodUID: a UUID in canonical lowercase form (what the API server
// assigns), or 32 lowercase hex digits (kubelet's md5 config hash, the UID
// of a static pod whose manifest sets none).
func validPodUID(s string) bool {
	switch len(s) {
	case 32:
		return isLowerHex(s)
	case 36:
		for i := 0; i < len(s); i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isLowerHex(s[i : i+1]) {
				return false
			}
		}
		return true
	}
	return false
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// DefaultKubepods are where kubelet puts its tree with the default
// --cgroup-root "/": the systemd driver's slice and cgroupfs' directory.
var DefaultKubepods = []string{"/kubepods.slice", "/kubepods"}

// Kubepods returns those of candidates (DefaultKubepods when none are
// given) that exist in this hierarchy: kubelet's place on this node, for
// comparison with KubeCgroup.Kubepods.
func (c *FS) Kubepods(candidates ...string) []string {
	if len(candidates) == 0 {
		candidates = DefaultKubepods
	}
	var out []string
	for _, k := range candidates {
		if fi, err := os.Stat(c.Abs(k)); err == nil && fi.IsDir() {
			out = append(out, path.Clean("/"+k))
		}
	}
	return out
}

// InKubepods reports whether k lies in one of the kubepods cgroups given,
// which the caller knows to be kubelet's: the check that tells a pod from a
// look-alike path created elsewhere.
func (k KubeCgroup) InKubepods(kubepods []string) bool {
	for _, p := range kubepods {
		if k.Kubepods == path.Clean("/"+p) {
			return true
		}
	}
	return false
}
