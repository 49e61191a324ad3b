package cgroups

import (
	"os"
	"strings"
	"testing"
)

// Samples in the shapes kubelet makes them: pkg/kubelet/cm
// (cgroup_manager_linux.go: CgroupName.ToSystemd / ToCgroupfs, with "-" in
// a pod UID escaped to "_" for systemd; qos_container_manager_linux.go:
// kubepods/burstable, kubepods/besteffort, Guaranteed pods directly below
// kubepods), with containerd's and CRI-O's container cgroup names.
const (
	uid     = "8dbbc6a3-7b3e-4a8e-9a11-2f5d8f7f6a01"
	uidSd   = "8dbbc6a3_7b3e_4a8e_9a11_2f5d8f7f6a01"
	static  = "a1b2c3d4e5f60718293a4b5c6d7e8f90" // a static pod's md5 config hash
	cid     = "2e3f0c9a4b7d4c0e8a1f5b6c7d8e9f00112233445566778899aabbccddeeff00"
	cidCaps = "2E3F0C9A4B7D4C0E8A1F5B6C7D8E9F00112233445566778899AABBCCDDEEFF00"
)

func TestParseKube(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		want       KubeCgroup
		ok         bool
	}{
		{"systemd burstable containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, QoS: "burstable", PodUID: uid, ContainerID: cid, Runtime: "containerd"}, true},
		{"systemd besteffort crio", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSd + ".slice/crio-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, QoS: "besteffort", PodUID: uid, ContainerID: cid, Runtime: "crio"}, true},
		{"systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, PodUID: uid, ContainerID: cid, Runtime: "containerd"}, true},
		{"systemd pod cgroup", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSd + ".slice",
			KubeCgroup{Level: KubePodLevel, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, QoS: "burstable", PodUID: uid}, true},
		{"systemd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/crio-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, QoS: "burstable", PodUID: static, ContainerID: cid, Runtime: "crio"}, true},
		{"systemd crun container child", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSd + ".slice/crio-" + cid + ".scope/container",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods.slice", Systemd: true, QoS: "burstable", PodUID: uid, ContainerID: cid, Runtime: "crio", Subgroup: true}, true},
		{"systemd cgroup-root", "/node.slice/node-kubepods.slice/node-kubepods-besteffort.slice/node-kubepods-besteffort-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/node.slice", Kubepods: "/node.slice/node-kubepods.slice", Systemd: true, QoS: "besteffort", PodUID: uid, ContainerID: cid, Runtime: "containerd"}, true},
		{"systemd cgroup-root kubelet.slice (kind)", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope",
			KubeCgroup{Level: KubeContainer, Root: "/kubelet.slice", Kubepods: "/kubelet.slice/kubelet-kubepods.slice", Systemd: true, QoS: "besteffort", PodUID: uid, ContainerID: cid, Runtime: "containerd"}, true},
		{"cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + cid,
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods", QoS: "besteffort", PodUID: uid, ContainerID: cid}, true},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid,
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods", PodUID: uid, ContainerID: cid}, true},
		{"cgroupfs crio", "/kubepods/burstable/pod" + uid + "/crio-" + cid,
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods", QoS: "burstable", PodUID: uid, ContainerID: cid, Runtime: "crio"}, true},
		{"cgroupfs pod cgroup", "/kubepods/burstable/pod" + uid,
			KubeCgroup{Level: KubePodLevel, Root: "/", Kubepods: "/kubepods", QoS: "burstable", PodUID: uid}, true},
		{"cgroupfs crun child", "/kubepods/pod" + uid + "/" + cid + "/container",
			KubeCgroup{Level: KubeContainer, Root: "/", Kubepods: "/kubepods", PodUID: uid, ContainerID: cid, Subgroup: true}, true},
		{"cgroupfs cgroup-root (the tests' layout)", "/bindguard-test-123/kubepods/besteffort/pod" + uid + "/" + cid,
			KubeCgroup{Level: KubeContainer, Root: "/bindguard-test-123", Kubepods: "/bindguard-test-123/kubepods", QoS: "besteffort", PodUID: uid, ContainerID: cid}, true},

		{"empty", "", KubeCgroup{}, false},
		{"root", "/", KubeCgroup{}, false},
		{"kubepods itself", "/kubepods", KubeCgroup{}, false},
		{"kubepods slice itself", "/kubepods.slice", KubeCgroup{}, false},
		{"qos level is not a pod", "/kubepods/burstable", KubeCgroup{}, false},
		{"unit", "/system.slice/containerd.service", KubeCgroup{}, false},
		{"no kubepods above pod", "/user.slice/pod" + uid + "/" + cid, KubeCgroup{}, false},
		{"unknown qos", "/kubepods/guaranteed/pod" + uid + "/" + cid, KubeCgroup{}, false},
		{"uppercase id", "/kubepods/pod" + uid + "/" + cidCaps, KubeCgroup{}, false},
		{"short id", "/kubepods/pod" + uid + "/" + cid[:63], KubeCgroup{}, false},
		{"uppercase uid", "/kubepods/pod" + strings.ToUpper(uid) + "/" + cid, KubeCgroup{}, false},
		{"uid without dashes in the wrong places", "/kubepods/pod" + strings.ReplaceAll(uid, "-", "") + "x/" + cid, KubeCgroup{}, false},
		{"uid with underscores in cgroupfs", "/kubepods/pod" + uidSd + "/" + cid, KubeCgroup{}, false},
		{"not a uuid", "/kubepods/podetcd/" + cid, KubeCgroup{}, false},
		{"dot-dot", "/kubepods/pod" + uid + "/../" + cid, KubeCgroup{}, false},
		{"extra level below container", "/kubepods/pod" + uid + "/" + cid + "/x", KubeCgroup{}, false},
		{"two container children", "/kubepods/pod" + uid + "/" + cid + "/container/container", KubeCgroup{}, false},
		{"container child of a pod", "/kubepods/pod" + uid + "/container", KubeCgroup{}, false},
		{"crio conmon is not a container", "/kubepods.slice/kubepods-pod" + uidSd + ".slice/crio-conmon-" + cid + ".scope", KubeCgroup{}, false},
		{"systemd pod under the wrong parent", "/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod" + uidSd + ".slice", KubeCgroup{}, false},
		{"systemd qos under the wrong parent", "/other.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSd + ".slice", KubeCgroup{}, false},
		{"systemd docker scope", "/kubepods.slice/kubepods-pod" + uidSd + ".slice/docker-" + cid + ".scope", KubeCgroup{}, false},
		{"systemd pod with cgroupfs container", "/kubepods.slice/kubepods-pod" + uidSd + ".slice/" + cid, KubeCgroup{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseKube(tc.path)
			if ok != tc.ok || got != tc.want {
				t.Errorf("ParseKube(%q) =\n %+v, %v\nwant\n %+v, %v", tc.path, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// A look-alike nested below a real container parses, but its Kubepods is
// not kubelet's place: that is what the caller compares.
func TestParseKubeLookAlike(t *testing.T) {
	p := "/kubepods/besteffort/pod" + uid + "/" + cid + "/kubepods/besteffort/pod" + uid + "/" + cid
	k, ok := ParseKube(p)
	if !ok || k.Kubepods == "/kubepods" {
		t.Fatalf("ParseKube(%q) = %+v, %v; want a parse whose Kubepods is not /kubepods", p, k, ok)
	}
}

func TestKubeLevelOf(t *testing.T) {
	for _, tc := range []struct {
		path     string
		want     KubeLevel
		kubepods string
	}{
		{"/kubepods/besteffort", KubeQoS, "/kubepods"},
		{"/kubepods.slice/kubepods-burstable.slice", KubeQoS, "/kubepods.slice"},
		{"/t/kubepods/burstable", KubeQoS, "/t/kubepods"},
		{"/node.slice/node-kubepods.slice/node-kubepods-besteffort.slice", KubeQoS, "/node.slice/node-kubepods.slice"},
		{"/kubepods/besteffort/pod" + uid, KubePodLevel, "/kubepods"},
		{"/kubepods.slice/kubepods-pod" + uidSd + ".slice", KubePodLevel, "/kubepods.slice"},
		{"/kubepods/besteffort/pod" + uid + "/" + cid, KubeContainer, "/kubepods"},
		{"/kubepods", NotKube, ""},
		{"/system.slice/kubepods-besteffort.slice", NotKube, ""},
		{"/kubepods/other", NotKube, ""},
		{"/besteffort", NotKube, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, k := KubeLevelOf(tc.path)
			if got != tc.want || k.Kubepods != tc.kubepods {
				t.Errorf("KubeLevelOf(%q) = %v, %q; want %v, %q", tc.path, got, k.Kubepods, tc.want, tc.kubepods)
			}
		})
	}
}

// FuzzParseKube: no panics, and whatever parses is consistent: valid ids,
// the level matches the fields, and Kubepods lies below Root and above the path.
func FuzzParseKube(f *testing.F) {
	for _, s := range []string{
		"/kubepods/besteffort/pod" + uid + "/" + cid,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope/container",
		"/a/kubepods/pod" + static + "/crio-" + cid,
		"/kubepods.slice/kubepods-besteffort.slice",
		"//kubepods//pod/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		level, k := KubeLevelOf(p)
		if level == NotKube {
			return
		}
		if level == KubeContainer && !validContainerID(k.ContainerID) {
			t.Errorf("%q: container level with id %q", p, k.ContainerID)
		}
		if level >= KubePodLevel && !validPodUID(k.PodUID) {
			t.Errorf("%q: pod level with uid %q", p, k.PodUID)
		}
		if !strings.HasPrefix(k.Kubepods, k.Root) || !strings.HasPrefix("/"+strings.Trim(p, "/"), k.Kubepods+"/") {
			t.Errorf("%q: root %q, kubepods %q", p, k.Root, k.Kubepods)
		}
	})
}

func TestInKubepods(t *testing.T) {
	real := []string{"/kubepods.slice", "kubepods/"}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/kubepods/besteffort/pod" + uid + "/" + cid, true},
		{"/kubepods.slice/kubepods-pod" + uidSd + ".slice/cri-containerd-" + cid + ".scope", true},
		{"/user.slice/kubepods/besteffort/pod" + uid + "/" + cid, false},
		{"/kubepods/besteffort/pod" + uid + "/" + cid + "/kubepods/pod" + uid + "/" + cid, false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			k, ok := ParseKube(tc.path)
			if !ok || k.InKubepods(real) != tc.want {
				t.Errorf("ParseKube(%q) = %+v, %v; InKubepods = %v, want %v", tc.path, k, ok, k.InKubepods(real), tc.want)
			}
		})
	}
}

func TestKubepodsFound(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(root+"/kubepods", 0o755); err != nil {
		t.Fatal(err)
	}
	fs := &FS{Root: root}
	if got := fs.Kubepods(); len(got) != 1 || got[0] != "/kubepods" {
		t.Errorf("Kubepods() = %v, want [/kubepods]", got)
	}
	if got := fs.Kubepods("/t/kubepods", "kubepods"); len(got) != 1 || got[0] != "/kubepods" {
		t.Errorf("Kubepods(/t/kubepods, kubepods) = %v", got)
	}
}
