package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// The scan differential: the daemon audits while random sockets are made
// (explicit binds, bind(0), listen without bind, connect and sendto
// autobinds, some forced into the registry's ports with IP_LOCAL_PORT_RANGE)
// from several cgroups and uids; then scan must give every socket still open
// the verdict the kernel's events recorded at bind time.
//
// BINDGUARD_SCAN_DIFF_SEED=N replays a run.

const (
	sdLo, sdHi   = 46000, 46399 // registry ports; inside ip_local_port_range
	sdServer     = 46999        // a declared listener the connect autobinds reach
	sdWant       = 2000         // sockets to hold open
	sdMaxOps     = 8000
	sdMismatches = 20
)

// sdOp is one socket made, and what the kernel recorded for it.
type sdOp struct {
	holder   *sockHolder
	cgroup   string // registry path
	uid      uint32
	req      string
	explicit bool
	proto    string
	family   string
	addr     string
	reply    holderReply
}

// sdRegistry writes a random registry over sdLo..sdHi.
func sdRegistry(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString("entries:\n")
	fmt.Fprintf(&b, "  - {port: %d, process: server}\n", sdServer)
	var removed []string
	for p := sdLo; p <= sdHi; p++ {
		proto := []string{"tcp", "udp", "[tcp, udp]"}[rng.IntN(3)]
		switch k := rng.IntN(10); {
		case k < 3: // undeclared
		case k < 4:
			fmt.Fprintf(&b, "  - {port: %d, protocol: %s, process: open%d}\n", p, proto, p)
		case k < 5:
			fmt.Fprintf(&b, "  - {port: %d, protocol: %s, process: cg%d, owners: [{cgroup: %%CG%%/a}]}\n", p, proto, p)
		case k < 6:
			fmt.Fprintf(&b, "  - {port: %d, protocol: %s, process: unit%d, owners: [{unit: sdowner.service}]}\n", p, proto, p)
		case k < 7:
			fmt.Fprintf(&b, "  - {port: %d, protocol: %s, process: uid%d, owners: [{uid: 4243}]}\n", p, proto, p)
		case k < 9:
			fmt.Fprintf(&b, "  - {port: %d, protocol: %s, process: local%d, bind: localhost}\n", p, proto, p)
		default:
			removed = append(removed, fmt.Sprintf("  - {port: %d, protocol: %s, process: old%d, removed: \"1.0\"}\n", p, proto, p))
		}
	}
	if len(removed) > 0 {
		b.WriteString("removed:\n" + strings.Join(removed, ""))
	}
	return b.String()
}

// sdRequest draws one socket request: explicit or kernel-chosen.
func sdRequest(rng *rand.Rand) (req string, explicit bool, proto, family, addr string) {
	proto, family = []string{"tcp", "udp"}[rng.IntN(2)], []string{"4", "6"}[rng.IntN(2)]
	addrs := map[string][]string{"4": {"0.0.0.0", "127.0.0.1"}, "6": {"::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0"}}
	addr = addrs[family][rng.IntN(len(addrs[family]))]
	port := sdLo + rng.IntN(sdHi-sdLo+1)
	inRange := ""
	if family == "4" && rng.IntN(3) == 0 {
		inRange = fmt.Sprintf(" %d %d", sdLo, sdHi) // autobind into the registry's ports
	}
	switch k := rng.IntN(20); {
	case k < 9:
		op := "bind"
		if proto == "tcp" && rng.IntN(5) == 0 {
			op = "bound"
		}
		return fmt.Sprintf("%s %s %s %s %d", op, proto, family, addr, port), true, proto, family, addr
	case k < 12:
		return fmt.Sprintf("bind %s %s %s 0%s", proto, family, addr, inRange), false, proto, family, addr
	case k < 14:
		return fmt.Sprintf("listen0 tcp %s - 0%s", family, inRange), false, "tcp", family, ""
	case k < 17:
		return fmt.Sprintf("connect tcp %s - %d%s", family, sdServer, inRange), false, "tcp", family, ""
	default:
		return fmt.Sprintf("sendto udp %s - 0%s", family, inRange), false, "udp", family, ""
	}
}

func sdSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BINDGUARD_SCAN_DIFF_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BINDGUARD_SCAN_DIFF_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay with BINDGUARD_SCAN_DIFF_SEED=%d)", seed, seed)
	return seed
}

func TestScanDifferential(t *testing.T) {
	e := newEnv(t)
	seed := sdSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5ca4))
	e.writeRegistry(sdRegistry(rng))
	// run takes the attach cgroup as a path of the cgroup2 file system here.
	ready := filepath.Join(t.TempDir(), "ready")
	d := startDaemon(t, "run", "--registry", e.registry, "--mode", "audit", "--cgroup", e.cgAbs,
		"--pin-path", e.pinPath, "--ready-file", ready, "--log-format", "json", "--event-interval", "0")
	d.waitFile(ready, 20*time.Second)

	type place struct {
		cg  string
		uid int
	}
	places := []place{{"a", -1}, {"a/b", 4243}, {"c", -1}, {"c", 4244}, {"sdowner.service", -1},
		{"sdowner.service", 4243}, {"d/e", 4244}, {"d/e", -1}, {"a", 4244}}
	var holders []*sdOp
	for _, p := range places {
		uid := uint32(0)
		if p.uid >= 0 {
			uid = uint32(p.uid)
		}
		holders = append(holders, &sdOp{holder: startSockHolder(t, e.child(p.cg), p.uid), cgroup: e.cgRel + "/" + p.cg, uid: uid})
	}
	server := holders[2].holder.must(fmt.Sprintf("bind tcp 4 127.0.0.1 %d", sdServer))
	ops := map[uint64]*sdOp{server.Inode: {holder: holders[2].holder, cgroup: holders[2].cgroup, req: "server",
		explicit: true, proto: "tcp", family: "4", addr: "127.0.0.1", reply: server}}
	made := 0
	for i := 0; i < sdMaxOps && len(ops) < sdWant; i++ {
		h := holders[rng.IntN(len(holders))]
		req, explicit, proto, family, addr := sdRequest(rng)
		r := h.holder.do(req)
		made++
		if r.Err == "" {
			ops[r.Inode] = &sdOp{holder: h.holder, cgroup: h.cgroup, uid: h.uid, req: req, explicit: explicit,
				proto: proto, family: family, addr: addr, reply: r}
		}
	}
	t.Logf("%d requests, %d sockets open", made, len(ops))
	if len(ops) < sdWant {
		t.Fatalf("only %d sockets open after %d requests, want %d", len(ops), made, sdWant)
	}
	events := sdEvents(t, e, d)
	got, _, _ := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgRel, "--connected", "--mode", "audit")
	mismatches := sdCompare(t, e, ops, events, got)
	if len(mismatches) > 0 {
		t.Fatalf("seed %d (replay with BINDGUARD_SCAN_DIFF_SEED=%d): %d of %d sockets where scan and the kernel disagree:\n%s",
			seed, seed, len(mismatches), len(ops), strings.Join(mismatches, "\n"))
	}
}

// sdKey names a bind as both the events and scan show it.
func sdKey(pid int, proto string, port uint16, addr string) string {
	a, err := netip.ParseAddr(addr)
	if err == nil {
		addr = a.Unmap().String()
	}
	return fmt.Sprintf("%d %s %d %s", pid, proto, port, addr)
}

// sdEvents waits until every violation the kernel counted is logged (none
// dropped) and returns the reason of each, by bind.
func sdEvents(t *testing.T, e *env, d *daemon) map[string]string {
	t.Helper()
	var st struct {
		Audited       map[string]uint64 `json:"audited"`
		EventsDropped uint64            `json:"eventsDropped"`
	}
	var counted uint64
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, code := bindguard(t, "status", "-o", "json", "--pin-path", e.pinPath)
		if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
			t.Fatalf("status: exit %d, %v: %s", code, err, out)
		}
		counted = 0
		for _, n := range st.Audited {
			counted += n
		}
		if uint64(len(d.events()))+st.EventsDropped >= counted || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs := d.events()
	t.Logf("the kernel counted %d violations; %d logged, %d dropped", counted, len(evs), st.EventsDropped)
	if st.EventsDropped != 0 || uint64(len(evs)) != counted {
		t.Fatalf("%d events logged, %d dropped, %d counted: the kernel's record is incomplete", len(evs), st.EventsDropped, counted)
	}
	out := map[string]string{}
	for _, ev := range evs {
		pid, _ := ev["pid"].(float64)
		port, _ := ev["port"].(float64)
		proto, _ := ev["protocol"].(string)
		addr, _ := ev["address"].(string)
		reason, _ := ev["reason"].(string)
		out[sdKey(int(pid), proto, uint16(port), addr)] = reason
	}
	return out
}

// sdCompare checks each socket scan lists against the kernel's record.
func sdCompare(t *testing.T, e *env, ops map[uint64]*sdOp, events map[string]string, got scanOutput) []string {
	t.Helper()
	model := sdModel(t, e)
	var bad []string
	listed := map[uint64]bool{}
	verdicts := map[string]int{}
	for _, s := range got.Sockets {
		op := ops[s.Inode]
		if op == nil {
			bad = append(bad, fmt.Sprintf("scan lists a socket no request made: %+v", s))
			continue
		}
		listed[s.Inode] = true
		want, wantReason, wantBound := "allow", "", "explicit"
		reason, hasEvent := events[sdKey(op.holder.PID, s.Protocol, s.Port, s.Address)]
		if op.explicit && hasEvent {
			want, wantReason = "audit", reason
		}
		if !op.explicit {
			// scan calls a kernel-chosen port ephemeral, or autobind where
			// a bind of that port by this cgroup and uid would have been a
			// violation.
			want, wantBound = "ephemeral", "kernel"
			switch {
			case hasEvent && reason != "autobind":
				continue // an earlier explicit bind of the same port by the same process: no single record
			case strings.HasPrefix(op.req, "bind "):
				// bind(0): post_bind judged the port the kernel chose, and
				// its event (or none) is the kernel's record.
				if hasEvent {
					want, wantReason = "audit", "autobind"
					verdicts["(of which judged by post_bind)"]++
				}
			case model(op, s):
				// listen, connect, sendto: no hook sees the port the kernel
				// chooses, so the Go reference decides.
				want, wantReason = "audit", "autobind"
			}
		}
		verdicts[want+" "+wantReason]++
		if s.Verdict != want || s.Reason != wantReason || s.Bound != wantBound || s.Cgroup != op.cgroup || s.UID != op.uid {
			bad = append(bad, fmt.Sprintf("%q (pid %d, %s, uid %d): scan %s %q bound %s cgroup %s uid %d, kernel record %s %q bound %s",
				op.req, op.holder.PID, op.cgroup, op.uid, s.Verdict, s.Reason, s.Bound, s.Cgroup, s.UID, want, wantReason, wantBound))
		}
		if len(bad) >= sdMismatches {
			break
		}
	}
	for ino, op := range ops {
		if !listed[ino] && len(bad) < sdMismatches {
			bad = append(bad, fmt.Sprintf("%q (pid %d, port %d): not listed by scan", op.req, op.holder.PID, op.reply.Port))
		}
	}
	t.Logf("%d sockets compared: %v", len(got.Sockets), verdicts)
	return bad
}

// sdModel says whether an explicit bind of an autobound socket's port, by
// its cgroup and uid, would have been a violation of a declared rule:
// policy.Decide, the reference the differential test holds the kernel to.
// It decides only for ports no hook saw (listen, connect and sendto
// autobinds); a bind(0)'s port is held to the kernel's post_bind record.
func sdModel(t *testing.T, e *env) func(op *sdOp, s scanSocket) bool {
	reg, err := policy.Load(e.registry)
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	// Units as the daemon finds them: the system manager's, below the attach cgroup.
	opts := policy.DecideOptions{UnitRoot: e.cgRel, FindUnit: func(u string) []string {
		found, _ := fs.FindSystemUnits(e.cgRel, []string{u})
		return found[u]
	}}
	return func(op *sdOp, s scanSocket) bool {
		proto := policy.TCP
		if s.Protocol == "udp" {
			proto = policy.UDP
		}
		a := policy.BindAttempt{Port: s.Port, Protocol: proto, Family: policy.Family(s.Family), Address: netip.MustParseAddr(s.Address),
			Cgroup: op.cgroup, UID: op.uid, HostNetns: true}
		d := policy.Decide(c, policy.ModeAudit, a, opts)
		return d.Violation() && d.Reason != policy.ReasonUndeclared
	}
}
