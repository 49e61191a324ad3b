package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/internal/testutils"
)

// TestMain lets the test binary serve as the bench's helper processes.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole bench with -quick and tiny counts. It only checks
// that every figure is produced, not what it is: the figures of a smoke run
// mean nothing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("bench smoke run skipped in -short mode")
	}
	testutils.Privileged(t)
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	var out, log bytes.Buffer
	if err := run([]string{"-quick", "-iters", "50", "-event-step", "50ms", "-json", jsonPath}, &out, &log); err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}

	md := out.String()
	for _, want := range []string{
		"no program (baseline)", "floor: return 1", "linear scan, 128 rules, no match",
		"bindguard 1 rule (2 entries), declared port", "bindguard 1 rule (2 entries), undeclared port",
		"bindguard 1,000 entries, declared port", "bindguard 1,000 entries, undeclared port",
		"bindguard 65,536 entries, declared port", "bindguard 65,536 entries, undeclared port",
		"bindguard 65,536 entries, owner at depth 1", "bindguard 65,536 entries, owner at depth 4",
		"bindguard 65,536 entries, owner at depth 8",
		"bindguard 65,536 entries, owners at depths 1 and 4", "bindguard 65,536 entries, owners at depths 1 and 8",
		"part alone: task's cgroup → its cgroup storage", "part alone: cgroup id → hash lookup",
		"part alone: netns cookie, cgroup id, one count", "its part alone",
		"## Policy apply", "## Event throughput", "## Memory", "## Targets",
		"map bg_rules (Array", "map bg_pairs_inner", "zero drops at 50,000 violations/s", "swap < 1 ms",
		"## Owner membership after mkdir", "new cgroup below an owner: first bind allowed",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report has no %q", want)
		}
	}

	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Checks) != 64 {
		t.Errorf("%d check rows, want 64 (32 configurations × 2 families)", len(res.Checks))
	}
	for _, r := range res.Checks {
		if r.LoopNs.N == 0 || (r.Key != "baseline" && (r.CheckNs == nil || r.CheckNs.Median <= 0)) {
			t.Errorf("row %s IPv%d lacks figures: %+v", r.Key, r.Family, r)
		}
		if r.Key != "baseline" && r.Runs < r.Binds {
			t.Errorf("row %s IPv%d: program ran %d times for %d binds", r.Key, r.Family, r.Runs, r.Binds)
		}
	}
	if len(res.Apply) != 3 || res.Events == nil || len(res.Events.Steps) != len(eventRates) || res.Memory == nil || res.Memory.PolicyMemlock == 0 {
		t.Errorf("incomplete results: %d apply rows, events %+v, memory %+v", len(res.Apply), res.Events, res.Memory)
	}
	if len(res.Targets) == 0 {
		t.Error("no targets evaluated")
	}
	// Inheritance is the kernel's, at mkdir: every first bind is allowed,
	// however slow the machine. The late owners' figures only need to exist.
	if m := res.Membership; m == nil || m.Tries != membershipTriesQuick || m.InheritedAllowed != m.Tries || m.LateUs.N == 0 {
		t.Errorf("membership results %+v: want %d tries, each first bind allowed, late owner times", m, membershipTriesQuick)
	}
}
