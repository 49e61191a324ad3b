package test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testbed/containerd"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/policy"
)

// diffPod is one pod of the pod round, as the runtime will report it.
type diffPod struct {
	spec     containerd.PodSpec
	declared []int32 // ports its first container declares
}

// TestDifferentialPods holds the kernel to policy.Decide for binds from real
// pods' containers: random registries whose owners are pods (by namespace,
// labels, container), uids and cgroups, with --pod-ports ignore or require,
// and binders placed in the containers' cgroups, where the daemon knows
// them only from the container runtime.
func TestDifferentialPods(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BINDGUARD_DIFF_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (replay with BINDGUARD_DIFF_SEED=%d)", seed, seed)
	for round, podPorts := range []string{"ignore", "require"} {
		t.Run("pod-ports="+podPorts, func(t *testing.T) {
			diffPodRound(t, seed, round, podPorts)
		})
	}
}

var diffPods = []diffPod{
	{containerd.PodSpec{Namespace: "kube-system", Name: "etcd-0", Labels: map[string]string{"component": "etcd", "tier": "control-plane"}}, []int32{47000, 47001}},
	{containerd.PodSpec{Namespace: "default", Name: "etcd-1", Labels: map[string]string{"component": "etcd"}}, []int32{47000}},
	{containerd.PodSpec{Namespace: "kube-system", Name: "other", Labels: map[string]string{"component": "other"}}, []int32{47005}},
}

var diffPodOwners = []string{
	"pod: {namespace: kube-system, labels: {component: etcd}}",
	"pod: {namespace: kube-system, labels: {component: etcd}, container: main}",
	"pod: {namespace: kube-system, container: side}",
	"pod: {namespace: default}",
	"pod: {namespace: kube-system, labels: {tier: control-plane, component: other}}",
	"uid: 4242",
}

func diffPodRound(t *testing.T, seed uint64, round int, podPorts string) {
	rng := rand.New(rand.NewPCG(seed, uint64(100+round)))
	p := newPodEnv(t)
	var reg strings.Builder
	reg.WriteString("entries:\n")
	for port := 47000; port < 47010; port++ {
		fmt.Fprintf(&reg, "  - port: %d\n    protocol: [tcp, udp]\n    process: p%d\n", port, port)
		if rng.IntN(4) > 0 {
			reg.WriteString("    owners:\n")
			for range 1 + rng.IntN(2) {
				reg.WriteString("      - " + pick(rng, diffPodOwners) + "\n")
			}
		}
	}
	p.writeRegistry(reg.String())
	d := p.start("enforce", "--pod-ports", podPorts, "--event-interval", "1h")

	type placed struct {
		b   *testutils.Binder
		pod *policy.Pod
		uid uint32
	}
	var binders []placed
	for _, dp := range diffPods {
		spec := dp.spec
		spec.Containers = []containerd.ContainerSpec{binderSpec("main", nil, dp.declared...), binderSpec("side", nil)}
		pod := p.run(t, spec)
		for _, name := range []string{"main", "side"} {
			waitIdentity(d, pod, name)
			dir := filepath.Join(p.cgroupRoot(), pod.CgroupRel, pod.Containers[name])
			var ports []policy.PodPort
			for _, port := range dp.declared {
				ports = append(ports, policy.PodPort{Port: uint16(port), Protocol: policy.TCP})
			}
			id := &policy.Pod{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels, Container: name, Ports: ports, PortsKnown: true}
			for _, uid := range []uint32{0, 4242} {
				o := testutils.BinderOptions{}
				if uid != 0 {
					o.UID = &uid
				}
				binders = append(binders, placed{testutils.StartBinder(t, dir, o), id, uid})
			}
		}
	}

	reg2, err := policy.Load(p.registry)
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(reg2, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := policy.DecideOptions{UnitRoot: p.cgRel, PodPorts: policy.PodPortsMode(podPorts)}
	any4 := netip.MustParseAddr("0.0.0.0")
	mismatches, tallies := 0, map[string]int{}
	for i := 0; i < 600 && mismatches < 20; i++ {
		b := binders[rng.IntN(len(binders))]
		port := uint16(47000 + rng.IntN(11))
		proto := pick(rng, []policy.Protocol{policy.TCP, policy.UDP})
		a := policy.BindAttempt{Port: port, Protocol: proto, Family: policy.FamilyIPv4, Address: any4,
			Cgroup: "/unused", UID: b.uid, HostNetns: true, Pod: b.pod}
		dec := policy.Decide(c, policy.ModeEnforce, a, opts)
		tallies[string(dec.Verdict)+" "+string(dec.Reason)]++
		err := b.b.Bind(proto.String(), "4", any4, port)
		var errno syscall.Errno
		if err != nil && !errors.As(err, &errno) {
			t.Fatal(err)
		}
		if errors.Is(err, unix.EPERM) != (dec.Verdict == policy.Deny) {
			mismatches++
			t.Errorf("seed %d: %s/%d from %s/%s container %s uid %d: kernel %s, Decide %s %q",
				seed, proto, port, b.pod.Namespace, b.pod.Name, b.pod.Container, b.uid, outcomeName(err), dec.Verdict, dec.Reason)
		}
	}
	t.Logf("pod-ports=%s: 600 binds from %d binders in 6 containers of 3 pods, decisions %v", podPorts, len(binders), tallies)
	if t.Failed() {
		body, _ := os.ReadFile(p.registry)
		t.Logf("registry:\n%s", body)
	}
}
