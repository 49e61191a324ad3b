package daemon

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// TestPodTrackerLookups: with a runtime that never answers (pods stuck
// before their sandbox, say), the tracker finds existing pods below a QoS
// level, starts no lookup before the loader exists (begin), ends a lookup
// when its cgroup is removed, and a rescan forgets the cgroups that went
// away unseen (lost rmdir events).
func TestPodTrackerLookups(t *testing.T) {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	log, _ := logtest.NewNullLogger()
	d := &Daemon{log: log, metrics: newMetrics(), cfg: Config{Mode: policy.ModeAudit, Cgroup: rel,
		CRISocket: filepath.Join(t.TempDir(), "no-runtime.sock")}}
	var err error
	if d.cg, err = cgroups.Open(""); err != nil {
		t.Fatal(err)
	}
	defer d.cg.Close()
	const uid = "0b2a3c4d-1111-4222-8333-444455556666"
	cid := strings.Repeat("ab", 32)
	qos := path.Join(rel, "kubepods", "burstable")
	pod := path.Join(qos, "pod"+uid)
	ctr := path.Join(pod, cid)
	if err := os.MkdirAll(filepath.Join(abs, "kubepods", "burstable", "pod"+uid, cid), 0o755); err != nil {
		t.Fatal(err)
	}
	if d.pods, err = newPodTracker(d); err != nil {
		t.Fatal(err)
	}
	defer d.pods.close()
	tr := d.pods

	tr.scan()
	if got := tr.SpawnPending(); !slices.Contains(got, qos) {
		t.Errorf("pod parents %v, want the QoS level %s among them", got, qos)
	}
	if n := tr.pending(); n != 2 {
		t.Errorf("%d cgroups pending after the first scan, want the pod's and its container's", n)
	}
	if n := running(tr); n != 0 {
		t.Fatalf("%d lookups before begin: their answers would go to a loader that does not exist yet", n)
	}

	if d.ld, err = loader.New(loader.Config{CgroupPath: abs}); err != nil {
		t.Fatal(err)
	}
	defer d.ld.Close()
	tr.begin()
	if n := running(tr); n != 2 {
		t.Fatalf("%d lookups after begin, want 2", n)
	}

	// A removal ends the lookup at once, not at shutdown.
	tr.mu.Lock()
	l := tr.resolving[ctr]
	tr.mu.Unlock()
	tr.removed(ctr)
	ended(t, l, "container")

	// A removal that was never seen: the rescan forgets it, and its lookup ends.
	tr.mu.Lock()
	l = tr.resolving[pod]
	tr.mu.Unlock()
	for _, dir := range []string{ctr, pod} {
		if err := os.Remove(d.cg.Abs(dir)); err != nil {
			t.Fatal(err)
		}
	}
	tr.scan()
	ended(t, l, "pod")
	if n := tr.pending(); n != 0 {
		t.Errorf("%d cgroups still known after the rescan, want 0", n)
	}
}

func running(tr *podTracker) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.resolving)
}

func ended(t *testing.T, l *lookup, what string) {
	t.Helper()
	if l == nil {
		t.Fatalf("no lookup of the %s cgroup was running", what)
	}
	select {
	case <-l.done:
	case <-time.After(30 * time.Second): // a give-up limit, not a measurement
		t.Fatalf("the %s cgroup's lookup still runs after its removal", what)
	}
}
