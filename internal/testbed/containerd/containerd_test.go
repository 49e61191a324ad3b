package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
)

// The binder in a kubelet-shaped pod binds its ports first thing and says
// so; and the test bed's cleanup leaves nothing behind, even when
// containerd was killed and left its shims and containers running.
func TestTestbed(t *testing.T) {
	testutils.Privileged(t)
	for _, tc := range []struct {
		name string
		kill bool
	}{{"stopped", false}, {"killed", true}} {
		var dir, rel string
		t.Run(tc.name, func(t *testing.T) {
			abs, r := testutils.Cgroup(t, "/")
			ctd := Start(t, abs, r)
			dir, rel = ctd.Dir, r
			runBinder(t, ctd)
			if tc.kill {
				ctd.Kill()
			}
		})
		checkNothingLeft(t, dir, rel)
	}
}

func runBinder(t *testing.T, ctd *Containerd) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := ctd.RunPod(ctx, PodSpec{Namespace: "ns", Name: "binder", Labels: map[string]string{"app": "b"},
		Containers: []ContainerSpec{{Name: "b", Args: []string{"tcp:127.0.0.1:0", "udp:0", "tcp:1:2:3"},
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ctd.WaitLog(ctx, p, "b", "bind tcp:1:2:3")
	if err != nil {
		t.Fatal(err)
	}
	want := "bind tcp:127.0.0.1:0 ok\nbind udp:0 ok\nbind tcp:1:2:3 error"
	if !strings.HasPrefix(out, want) {
		t.Errorf("binder said %q, want %q…", out, want)
	}
	in := cgroupDirs(t, p.CgroupRel)
	t.Logf("the pod cgroup in %d hierarchies (the cleanup removes them all): %v", len(in), in)
	k, ok := cgroups.ParseKube(p.CgroupRel)
	if !ok || k.Level != cgroups.KubePodLevel || k.PodUID != p.Spec.UID || k.Root != ctd.CgroupRel {
		t.Errorf("pod cgroup %q parses as %+v, %v", p.CgroupRel, k, ok)
	}
}

func checkNothingLeft(t *testing.T, dir, rel string) {
	t.Helper()
	if dir == "" {
		return // the subtest was not run (-run) or failed before Start
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", dir, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir) {
		t.Errorf("mounts left below %s", dir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), dir) {
			t.Errorf("process left: %s: %q", p, b)
		}
	}
	for _, d := range cgroupDirs(t, rel) {
		t.Errorf("cgroup left: %s", d)
	}
}

// cgroupDirs returns the directories of the cgroup rel (relative to a
// hierarchy's root) that exist: in the cgroup2 hierarchy and, on a hybrid
// host, in each v1 hierarchy mounted whole, all found in mountinfo.
func cgroupDirs(t *testing.T, rel string) []string {
	t.Helper()
	root2, err := cgroups.Mount2()
	if err != nil {
		t.Fatal(err)
	}
	roots := []string{root2}
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	v1, err := cgroups.Mounts(mi, "cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range v1 {
		if m.Root == "/" {
			roots = append(roots, m.Dir)
		}
	}
	var dirs []string
	for _, r := range roots {
		d := filepath.Join(r, rel)
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}
