package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/policy"
)

// The differential test checks the kernel programs against policy.Decide,
// the reference: random registries, a random cgroup tree, binders in several
// cgroups under several uids (and one in its own network namespace), and
// thousands of random binds. A bind fails with EPERM exactly when Decide
// says deny, and the daemon's counters match Decide's verdicts and reasons.
//
// BINDGUARD_DIFF_SEED=N replays a run; every failure names its seed.

const (
	diffEnforceRounds   = 6
	diffEnforceAttempts = 4000 // per round
	diffAuditAttempts   = 2000
	diffMaxMismatches   = 20
)

var diffUIDs = []uint32{0, 1001, 1002}

func TestDifferential(t *testing.T) {
	testutils.Privileged(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BINDGUARD_DIFF_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BINDGUARD_DIFF_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay with BINDGUARD_DIFF_SEED=%d)", seed, seed)
	// Race-enabled binders otherwise sleep a second each when they exit.
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	rounds, attempts, auditAttempts := diffEnforceRounds, diffEnforceAttempts, diffAuditAttempts
	if testing.Short() {
		rounds, attempts, auditAttempts = 1, 1000, 300
	}
	start := time.Now()
	total := 0
	for r := 0; r < rounds+1; r++ {
		mode, n := "enforce", attempts
		if r == rounds {
			mode, n = "audit", auditAttempts
		}
		t.Run(fmt.Sprintf("%s-%d", mode, r), func(t *testing.T) {
			total += diffRound(t, seed, r, mode, n)
		})
	}
	t.Logf("%d bind attempts in %d rounds, %v", total, rounds+1, time.Since(start).Round(time.Millisecond))
}

// diffBinder is a binder and where it runs.
type diffBinder struct {
	b         *testutils.Binder
	cgroup    string // registry path
	uid       uint32
	hostNetns bool
}

func (b *diffBinder) String() string {
	s := fmt.Sprintf("%s uid %d", b.cgroup, b.uid)
	if !b.hostNetns {
		s += " (own netns)"
	}
	return s
}

// diffWorld is one round: an attach cgroup with a tree below it, a registry,
// binders.
type diffWorld struct {
	t       *testing.T
	e       *env
	rng     *rand.Rand
	seed    uint64
	round   int
	tree    []string // paths below the attach cgroup; "" is the attach cgroup
	picks   []string // the paths of tree picked for owners and binders
	deep    []string // the deepest cgroup the program looks at, and the unit below it
	unit    string   // a unit name that exists in the tree
	owners  []string // candidate owner cgroups (registry paths), existing ones
	ports   []uint16 // ports worth trying: rule edges and insides
	lo, hi  int      // the span the registry's ordinary entries use
	addrs4  []netip.Addr
	addrs6  []netip.Addr
	binders []*diffBinder
	labels  map[string]string // the node's labels, which selectors are judged against
}

func diffRound(t *testing.T, seed uint64, round int, mode string, attempts int) int {
	w := &diffWorld{t: t, e: newEnv(t), rng: rand.New(rand.NewPCG(seed, uint64(round))), seed: seed, round: round}
	w.labels = map[string]string{
		"node-role.kubernetes.io/" + pick(w.rng, []string{"worker", "control-plane"}): "",
		"topology.kubernetes.io/zone": pick(w.rng, []string{"a", "b", "c"}),
	}
	w.makeTree()
	w.e.writeRegistry(w.makeRegistry())
	reg, err := policy.Load(w.e.registry)
	if err != nil {
		t.Fatalf("seed %d round %d: generated registry does not load: %v", seed, round, err)
	}
	c, err := policy.Compile(reg, w.labels)
	if err != nil {
		body, _ := os.ReadFile(w.e.registry)
		t.Fatalf("seed %d round %d: generated registry does not compile: %v\n%s", seed, round, err, body)
	}
	// Owners resolve while the daemon starts, so the tree is complete first.
	args := []string{"--event-interval", "1h"}
	for k, v := range w.labels {
		args = append(args, "--node-label", k+"="+v)
	}
	w.e.start(mode, args...)
	w.startBinders()
	w.addresses()

	fsys, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	exists, units := map[string]bool{}, map[string][]string{}
	opts := policy.DecideOptions{
		UnitRoot: w.e.cgRel,
		Exists: func(p string) bool {
			e, ok := exists[p]
			if !ok {
				st, err := os.Stat(fsys.Abs(p))
				e = err == nil && st.IsDir()
				exists[p] = e
			}
			return e
		},
		FindUnit: func(u string) []string {
			p, ok := units[u]
			if !ok {
				var err error
				found, err := fsys.FindSystemUnits(w.e.cgRel, []string{u})
				if err != nil {
					t.Fatal(err)
				}
				p = found[u]
				units[u] = p
			}
			return p
		},
	}

	type tally struct {
		verdict policy.Verdict
		reason  policy.Reason
	}
	tallies := map[tally]int{}
	outcomes := map[string]int{}
	var mismatches []string
	pmode := policy.Mode(mode)
	for i := 0; i < attempts && len(mismatches) < diffMaxMismatches; i++ {
		b := w.binders[w.rng.IntN(len(w.binders))]
		port, proto, family, addr := w.attempt()
		a := policy.BindAttempt{Port: port, Protocol: proto, Family: policy.Family(family), Address: addr,
			Cgroup: b.cgroup, UID: b.uid, HostNetns: b.hostNetns}
		d := policy.Decide(c, pmode, a, opts)
		tallies[tally{d.Verdict, d.Reason}]++
		err := b.b.Bind(proto.String(), strconv.Itoa(family), addr, port)
		var errno syscall.Errno
		if err != nil && !errors.As(err, &errno) {
			t.Fatalf("seed %d round %d: binder %s: %v", seed, round, b, err)
		}
		outcomes[outcomeName(err)]++
		denied := errors.Is(err, unix.EPERM)
		if denied != (d.Verdict == policy.Deny) {
			rule := "no rule"
			if d.Rule != nil {
				rule = fmt.Sprintf("rule %s process %s", d.Rule.Pos.FileLine(), d.Rule.Process)
			}
			mismatches = append(mismatches, fmt.Sprintf("attempt %d: %s/%d [%s]:%d from %s: kernel %s, Decide %s %q (%s)",
				i, proto, family, addr, port, b, outcomeName(err), d.Verdict, d.Reason, rule))
		}
	}
	t.Logf("%s mode, %d binders, outcomes %v, decisions %v", mode, len(w.binders), outcomes, tallies)
	if len(mismatches) > 0 {
		body, _ := os.ReadFile(w.e.registry)
		t.Fatalf("seed %d round %d (replay with BINDGUARD_DIFF_SEED=%d): %d binds where the kernel and policy.Decide disagree:\n%s\nregistry:\n%s",
			seed, round, seed, len(mismatches), strings.Join(mismatches, "\n"), body)
	}

	// The counters say why: they must match Decide's reasons too.
	out, code := bindguard(t, "status", "-o", "json", "--pin-path", w.e.pinPath)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, out)
	}
	var st struct {
		Checks  uint64            `json:"checks"`
		Allowed uint64            `json:"allowed"`
		Audited map[string]uint64 `json:"audited"`
		Denied  map[string]uint64 `json:"denied"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	want := fmt.Sprintf("checks %d allowed %d", attempts, tallies[tally{policy.Allow, ""}])
	got := fmt.Sprintf("checks %d allowed %d", st.Checks, st.Allowed)
	for _, r := range []policy.Reason{policy.ReasonUndeclared, policy.ReasonOwner, policy.ReasonAddress, policy.ReasonRemoved} {
		want += fmt.Sprintf(" %s audited %d denied %d", r, tallies[tally{policy.Audit, r}], tallies[tally{policy.Deny, r}])
		got += fmt.Sprintf(" %s audited %d denied %d", r, st.Audited[string(r)], st.Denied[string(r)])
	}
	if got != want {
		t.Errorf("seed %d round %d (replay with BINDGUARD_DIFF_SEED=%d): kernel counters disagree with policy.Decide:\nkernel: %s\nDecide: %s",
			seed, round, seed, got, want)
	}
	return attempts
}

func outcomeName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
	}
	return err.Error()
}

// pick returns a random element.
func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

// makeTree creates a cgroup tree below the attach cgroup: a chain 8 levels
// deep, directories whose names are prefixes of their siblings' (a, ab),
// directories named after a unit, and one chain that reaches one level
// deeper than the kernel program looks, with the unit at its bottom.
func (w *diffWorld) makeTree() {
	names := []string{"a", "ab", "b", "a.b", "svc"}
	w.unit = fmt.Sprintf("bgdiff-%d-%d.service", os.Getpid(), w.round)
	seen := map[string]bool{"": true}
	w.tree = []string{""}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			w.tree = append(w.tree, p)
		}
	}
	depth := func(p string) int {
		if p == "" {
			return 0
		}
		return strings.Count(p, "/") + 1
	}
	child := func(parent, name string) string {
		if parent == "" {
			return name
		}
		return parent + "/" + name
	}
	chain := ""
	for range 8 {
		chain = child(chain, pick(w.rng, names))
		add(chain)
	}
	// The unit where the system manager puts it (slices below the attach
	// cgroup), and look-alikes elsewhere that must not count as the unit.
	add("system.slice")
	add("system.slice/sub.slice")
	add(child(pick(w.rng, []string{"system.slice", "system.slice/sub.slice"}), w.unit))
	for range 2 {
		for {
			p := pick(w.rng, w.tree)
			if depth(p) < 8 {
				add(child(p, w.unit))
				break
			}
		}
	}
	for len(w.tree) < 24 {
		p := pick(w.rng, w.tree)
		if depth(p) < 8 {
			add(child(p, pick(w.rng, names)))
		}
	}
	// deep/d/…/d/UNIT: deeper than the 16 levels the kernel once looked at.
	// Only the ends of this chain are picked as owners and binder places.
	w.picks = slices.Clone(w.tree)
	attachDepth := cgroups.Depth(w.e.cgRel)
	deep := "deep"
	add(deep)
	w.picks = append(w.picks, deep)
	for attachDepth+depth(deep)+1 < diffDeepLevels+1 {
		deep += "/d"
		add(deep)
	}
	w.deep = []string{deep, deep + "/" + w.unit}
	add(w.deep[1])
	w.picks = append(w.picks, w.deep...)
	for _, p := range w.tree[1:] {
		w.e.child(p)
	}
	for _, p := range w.picks {
		if attachDepth+depth(p) <= diffDeepLevels {
			w.owners = append(w.owners, w.rel(p))
		}
	}
}

// rel is the registry path of a tree path.
func (w *diffWorld) rel(p string) string {
	if p == "" {
		return w.e.cgRel
	}
	return w.e.cgRel + "/" + p
}

// makeRegistry returns a random registry body: entries on disjoint port
// ranges (so none conflict), some overlapped by a second entry of the same
// process, some removed, and entries at the ends of the port space.
func (w *diffWorld) makeRegistry() string {
	var entries, removed strings.Builder
	protocols := func() string {
		return pick(w.rng, []string{"tcp", "tcp", "udp", "[tcp, udp]", "[tcp, udp]"})
	}
	entry := func(ports, process string) {
		fmt.Fprintf(&entries, "  - port: %q\n    protocol: %s\n    process: %s\n", ports, protocols(), process)
		if w.rng.IntN(10) < 3 {
			entries.WriteString("    bind: localhost\n")
		}
		if w.rng.IntN(100) < 15 {
			entries.WriteString("    mode: audit\n")
		}
		if w.rng.IntN(100) < 30 {
			entries.WriteString("    nodeSelector:\n" + pick(w.rng, diffSelectors))
		}
		if w.rng.IntN(2) == 0 {
			entries.WriteString("    owners:\n")
			for range 1 + w.rng.IntN(4) {
				entries.WriteString("      - " + w.owner() + "\n")
			}
		}
	}
	interesting := func(lo, hi int) {
		for _, p := range []int{lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, lo + w.rng.IntN(hi-lo+1)} {
			if p >= 1 && p <= 65535 {
				w.ports = append(w.ports, uint16(p))
			}
		}
	}
	w.lo = 20000 + w.rng.IntN(8000)
	cursor := w.lo
	for i := range 30 + w.rng.IntN(15) {
		cursor += w.rng.IntN(4)
		n := 1
		switch r := w.rng.IntN(10); {
		case r >= 4 && r < 9:
			n = 2 + w.rng.IntN(11)
		case r == 9:
			n = 13 + w.rng.IntN(28)
		}
		lo, hi := cursor, cursor+n-1
		cursor = hi + 1
		interesting(lo, hi)
		ports := strconv.Itoa(lo)
		if hi > lo {
			ports += "-" + strconv.Itoa(hi)
		}
		if w.rng.IntN(10) == 0 {
			fmt.Fprintf(&removed, "  - {port: %q, protocol: %s, process: old-%d, removed: \"1.0\"}\n", ports, protocols(), i)
			continue
		}
		process := fmt.Sprintf("svc-%d", i)
		entry(ports, process)
		if hi > lo && w.rng.IntN(100) < 20 { // the same process again on part of the range
			a := lo + w.rng.IntN(hi-lo+1)
			b := a + w.rng.IntN(hi-a+1)
			entry(fmt.Sprintf("%d-%d", a, b), process)
		}
	}
	w.hi = cursor
	// The ends of the port space.
	if w.rng.IntN(2) == 0 {
		entry("1", "edge-low")
		interesting(1, 1)
	}
	switch w.rng.IntN(3) {
	case 0:
		entry("65535", "edge-high")
		interesting(65535, 65535)
	case 1:
		entry("65530-65535", "edge-high")
		interesting(65530, 65535)
	}
	w.ports = append(w.ports, 1, 2, 1023, 1024, 65534, 65535)
	body := "entries:\n" + entries.String()
	if removed.Len() > 0 {
		body += "removed:\n" + removed.String()
	}
	return body
}

// diffSelectors are node selectors, in both forms and with every operator,
// that some of the nodes a round draws match and others do not.
var diffSelectors = []string{
	"      topology.kubernetes.io/zone: a\n",
	"      node-role.kubernetes.io/worker: \"\"\n",
	"      matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]\n",
	"      matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]\n",
	"      matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [a, b]}]\n",
	"      matchExpressions: [{key: topology.kubernetes.io/zone, operator: NotIn, values: [a]}]\n",
	"      matchLabels: {topology.kubernetes.io/zone: c}\n      matchExpressions: [{key: node-role.kubernetes.io/worker, operator: Exists}]\n",
}

// diffDeepLevels is how deep the deep chain goes: past the 16 levels of
// the old ancestor walk, since memberships have no depth limit.
const diffDeepLevels = 20

// owner returns one random owner item.
func (w *diffWorld) owner() string {
	switch r := w.rng.IntN(100); {
	case r < 45:
		return "cgroup: " + pick(w.rng, w.owners)
	case r < 60: // does not exist
		p := pick(w.rng, w.owners)
		if cgroups.Depth(p) >= diffDeepLevels {
			p = path.Dir(p)
		}
		return "cgroup: " + p + "/" + pick(w.rng, []string{"ghost", "a", "ab.service"})
	case r < 85:
		return fmt.Sprintf("uid: %d", pick(w.rng, []uint32{0, 1001, 1002, 4000}))
	default:
		return "unit: " + pick(w.rng, []string{w.unit, w.unit, "bgdiff-missing.service"})
	}
}

// startBinders starts binders in the attach cgroup, the deepest cgroups, the
// unit cgroups and some others, as root and as other uids, and one in its
// own network namespace.
func (w *diffWorld) startBinders() {
	spots := []string{"", w.tree[8]} // the attach cgroup, the end of the 8-level chain
	spots = append(spots, w.deep...)
	for _, p := range w.picks {
		if path.Base(p) == w.unit {
			spots = append(spots, p)
		}
	}
	for len(spots) < 12 {
		spots = append(spots, pick(w.rng, w.picks))
	}
	slices.Sort(spots)
	spots = slices.Compact(spots)
	for i, p := range spots {
		for j, uid := range diffUIDs {
			if j > 0 && w.rng.IntN(3) != 0 && i > 0 {
				continue // root everywhere, other uids in some places
			}
			w.binders = append(w.binders, w.startBinder(p, uid, false))
		}
	}
	w.binders = append(w.binders, w.startBinder(pick(w.rng, spots), 0, true))
	// Stop them all at once, before their own cleanups stop them one by one.
	w.t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, b := range w.binders {
			wg.Go(b.b.Stop)
		}
		wg.Wait()
	})
}

func (w *diffWorld) startBinder(p string, uid uint32, newNet bool) *diffBinder {
	o := testutils.BinderOptions{NewNet: newNet}
	if uid != 0 {
		o.UID = &uid
	}
	abs := w.e.cgAbs
	if p != "" {
		abs += "/" + p
	}
	return &diffBinder{b: testutils.StartBinder(w.t, abs, o), cgroup: w.rel(p), uid: uid, hostNetns: !newNet}
}

// addresses fills the address pools: wildcards, loopback, IPv4-mapped
// forms, this host's own non-loopback addresses and addresses it does not
// have (the programs run before the kernel checks the address).
func (w *diffWorld) addresses() {
	w.addrs4 = []netip.Addr{
		netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("127.255.255.254"), netip.MustParseAddr("198.51.100.7"),
	}
	w.addrs6 = []netip.Addr{
		netip.MustParseAddr("::"), netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:127.0.0.1"),
		netip.MustParseAddr("::ffff:0.0.0.0"), netip.MustParseAddr("2001:db8::7"),
		netip.MustParseAddr("::ffff:198.51.100.7"), netip.MustParseAddr("::127.0.0.1"),
	}
	ifaddrs, _ := net.InterfaceAddrs()
	for _, ia := range ifaddrs {
		pfx, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := pfx.Addr()
		switch {
		case a.IsLoopback() || a.IsLinkLocalUnicast():
		case a.Is4():
			w.addrs4 = append(w.addrs4, a)
			w.addrs6 = append(w.addrs6, netip.AddrFrom16(a.As16()))
		default:
			w.addrs6 = append(w.addrs6, a)
		}
	}
}

// attempt returns a random bind: mostly ports at and around rule edges.
func (w *diffWorld) attempt() (uint16, policy.Protocol, int, netip.Addr) {
	var port uint16
	switch r := w.rng.IntN(100); {
	case r < 4:
		port = 0
	case r < 75:
		port = pick(w.rng, w.ports)
	default:
		port = uint16(w.lo - 3 + w.rng.IntN(w.hi-w.lo+7))
	}
	proto := policy.TCP
	if w.rng.IntN(2) == 0 {
		proto = policy.UDP
	}
	if w.rng.IntN(100) < 45 {
		a := pick(w.rng, w.addrs4)
		if w.rng.IntN(4) == 0 { // anywhere in 127.0.0.0/8
			a = netip.AddrFrom4([4]byte{127, byte(w.rng.IntN(256)), byte(w.rng.IntN(256)), byte(1 + w.rng.IntN(254))})
		}
		return port, proto, 4, a
	}
	a := pick(w.rng, w.addrs6)
	if w.rng.IntN(8) == 0 {
		a = netip.AddrFrom16(netip.AddrFrom4([4]byte{127, byte(w.rng.IntN(256)), byte(w.rng.IntN(256)), byte(1 + w.rng.IntN(254))}).As16())
	}
	return port, proto, 6, a
}
