package main

import (
	"fmt"
	"io"
	"strings"
)

func fmtDist(d dist, prec int) string {
	if d.N == 0 {
		return "—"
	}
	if d.N == 1 {
		return fmt.Sprintf("%.*f", prec, d.Median)
	}
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, d.Median, prec, d.Min, prec, d.Max)
}

func fmtRatio(d *dist) string {
	if d == nil || d.N == 0 {
		return "—"
	}
	if d.N == 1 {
		return fmt.Sprintf("%.2f×", d.Median)
	}
	return fmt.Sprintf("%.2f× [%.2f–%.2f]", d.Median, d.Min, d.Max)
}

func fmtNet(d *dist) string {
	if d == nil {
		return "—"
	}
	return fmt.Sprintf("%+.0f", d.Median)
}

func fmtCheck(d *dist) string {
	if d == nil {
		return "—"
	}
	return fmtDist(*d, 1)
}

// writeMarkdown prints the report: one table per measurement, then the targets.
func writeMarkdown(w io.Writer, res *results) {
	writeHeader(w, res)
	writeChecks(w, res.Checks)
	writeApply(w, res.Apply)
	if ev := res.Events; ev != nil {
		writeEvents(w, ev)
	}
	if mem := res.Memory; mem != nil {
		writeMemory(w, mem)
	}
	if m := res.Membership; m != nil {
		writeMembership(w, m)
	}
	writeTargets(w, res.Targets)
	fmt.Fprintf(w, "\nRun took %.0f s.\n", res.Seconds)
}

// writeHeader prints the title, the machine and how the figures were taken.
func writeHeader(w io.Writer, res *results) {
	m := res.Machine
	fmt.Fprintf(w, "# bindguard bench\n\n%d CPUs, %s, kernel %s, %s. `%s`: %d rounds × %d binds per configuration and family, interleaved; median [min–max] over rounds. Ratios are computed round by round (same round, same family), then summarised.\n",
		m.CPUs, m.Model, m.Kernel, m.GoVersion, res.Command, res.Rounds, res.Iters)
	if res.Quick {
		fmt.Fprintf(w, "\n**-quick: a smoke run, the figures are not meaningful.**\n")
	}
	if res.StatsSysctl {
		fmt.Fprintf(w, "\nkernel.bpf_stats_enabled was 1: the \"stats off\" loops ran with stats on too.\n")
	}
}

// writeChecks prints the per-bind table and what its columns measure.
func writeChecks(w io.Writer, checks []checkRow) {
	fmt.Fprintf(w, "\n## Per bind check\n\n")
	fmt.Fprintf(w, "| configuration | IP | per-check ns | − floor | × floor | × paired floor | loop CPU ns/op | × baseline | × floor | wall × baseline |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range checks {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name, r.Family,
			fmtCheck(r.CheckNs), fmtNet(r.CheckOverFloorNs), fmtRatio(r.CheckVsFloor), fmtRatio(r.CheckVsPaired),
			fmtDist(r.LoopNs, 0), fmtRatio(&r.LoopVsBaseline), fmtRatio(&r.LoopVsFloor), fmtRatio(&r.LoopWallVsBaseline))
	}
	fmt.Fprint(w, checksNotes)
	if gaps := familyGaps(checks); len(gaps) > 0 {
		fmt.Fprintf(w, "\nIPv4 and IPv6 differ by more than %.0f× the paired floor in: %s. Both run the same code; a gap\n"+
			"this size has so far come from where the kernel placed a program's JIT image, not from the check\n"+
			"(docs/benchmarks.md, \"Placement\").\n", familyGapLimit, strings.Join(gaps, "; "))
	}
}

// familyGapLimit is the difference between a configuration's two families,
// in × paired floor, above which the report points the gap out: a whole
// floor more for the same code (the families' usual gap is a few tenths)...
const familyGapLimit = 1.0

// ...when the dearer family's program also adds more than half again what
// the cheaper one adds over the floor (the linear scan's families differ by
// 1-2× of about 10×, which is not pointed out).
const familyGapShare = 1.5

// familyGaps lists the configurations whose IPv4 and IPv6 rows differ by
// more than familyGapLimit and familyGapShare.
func familyGaps(checks []checkRow) []string {
	var out []string
	for _, r := range checks {
		if r.Family != families[0] || r.CheckVsPaired == nil {
			continue
		}
		o := find(checks, r.Key, families[1])
		if o == nil || o.CheckVsPaired == nil {
			continue
		}
		a, b := r.CheckVsPaired.Median, o.CheckVsPaired.Median
		if abs(a-b) <= familyGapLimit || max(a, b)-1 <= familyGapShare*(min(a, b)-1) {
			continue
		}
		out = append(out, fmt.Sprintf("%s (%.2f× vs %.2f×)", r.Name, r.CheckVsPaired.Median, o.CheckVsPaired.Median))
	}
	return out
}

// checksNotes explains the per-bind table's columns and rows.
const checksNotes = `
- per-check ns: the program's kernel run time per bind (BPF_STATS_RUN_TIME,
  run_time_ns / run_cnt deltas, median of 10 batches of one helper's loop,
  stats on). It includes the stats' own clock read, which is most of the
  floor's; "− floor" is the median per-round difference: what the program's
  logic costs.
- loop CPU ns/op: socket()+bind()+close() of a TCP socket on 0.0.0.0 or ::,
  in a helper process started inside the cgroup (CLONE_INTO_CGROUP), stats
  off; the helper thread's CPU time (CLOCK_THREAD_CPUTIME_ID), median of 10
  batches. wall × baseline is the same from wall-clock time, which on a
  noisy machine includes other tasks' time.
- × paired floor: a second floor program is attached in each
  configuration's own cgroup, so it runs on the same binds as the
  configuration's program; the ratio of their run times, batch by batch
  (median of 10), then median over rounds. Both are read at the same
  moments, so what the machine does meanwhile moves both: this is the
  ratio the targets hold to. × floor divides by the floor measured as a
  configuration of its own, earlier or later in the round.
- bindguard runs in audit mode with EventInterval 1h: the undeclared rows
  measure a violation whose event is rate-limited. Repeats of one key are
  folded in the per-CPU fold cache (one per-CPU lookup and a plain
  increment), not the LRU hash, and no ring-buffer write.
- part alone: one kernel read a check cannot do without, in a program of
  its own (bpf/bench/parts.c) that allows every bind: the task's cgroup and
  its cgroup storage (what an owner or pod check reads), the cgroup id and
  a hash lookup by it (the same before 6.2), and the netns cookie, the
  cgroup id and one per-CPU count (what every violation reads and writes).
  Each is a lower bound for the rows that need it; the targets show it
  beside them.
- owner at depth d: the port's only owner is the cgroup the loop binds
  from, d levels below the attach cgroup: one lookup of that cgroup's
  membership (cgroup storage, or the hash fallback) and a bit test,
  whatever d is.
- owners at depths 1 and d, owners at every level: other cgroups on the
  path hold owner sets too; the check is the same one lookup.
- linear scan: 128 rules for ports 1..128; the bench port matches none, so
  every bind scans all 128 (the worst case), as systemd's SocketBindAllow= would.
`

// writeApply prints the policy apply table.
func writeApply(w io.Writer, apply []applyRow) {
	fmt.Fprintf(w, "\n## Policy apply\n\n| registry | fill ms | swap µs (reload) | Apply total ms |\n|---|---|---|---|\n")
	for _, a := range apply {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", a.Label, fmtDist(a.FillMs, 2), fmtDist(a.SwapUs, 1), fmtDist(a.TotalMs, 2))
	}
	fmt.Fprintf(w, "\nfill: ApplyResult.Fill (rewrite the idle slot's range of the rules array, every entry, and create and install its pairs hash); swap: ApplyResult.Swap (the one write to bg_active that switches binds to the new slot) on reloads, with the hooks live; total: the Apply call, encoding and the RCU settle included.\n")
}

// writeMembership prints when memberships are in force after a mkdir.
func writeMembership(w io.Writer, m *membershipResult) {
	fmt.Fprintf(w, "\n## Owner membership after mkdir\n\n")
	fmt.Fprintf(w, "| how the cgroup becomes a member | in force | time from mkdir |\n|---|---|---|\n")
	fmt.Fprintf(w, "| created below an owner (inherited by the kernel at mkdir) | first bind allowed %d of %d | 0 by construction: before any task can enter |\n",
		m.InheritedAllowed, m.Tries)
	fmt.Fprintf(w, "| named by the policy, created later (the daemon's mkdir-event path) | written %d of %d, bind allowed after %d of %d | %s µs |\n",
		m.LateWritten, m.Tries, m.LateAllowed, m.Tries, fmtDist(m.LateUs, 0))
	fmt.Fprintf(w, "\nInherited: a helper started into each new cgroup right after its mkdir (CLONE_INTO_CGROUP) binds once, enforce mode. Late: from the mkdir call to loader.CgroupCreated's return, in one goroutine reading loader.ReadCgroupEvent as the daemon does; median [min–max] over the tries.\n")
}

// writeEvents prints the event throughput table and where drops start.
func writeEvents(w io.Writer, ev *eventResult) {
	fmt.Fprintf(w, "\n## Event throughput\n\n%d binder processes, undeclared binds, audit mode, EventInterval 0; one goroutine drains with loader.ReadEvent.\n\n", ev.Binders)
	fmt.Fprintf(w, "| asked /s | violations /s | events read /s | dropped | reader CPU | reader ns/event |\n|---|---|---|---|---|---|\n")
	for _, s := range ev.Steps {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %d | %.0f%% | %.0f |\n", rateLabel(s.Target), s.Offered, s.Read, s.Dropped, s.ReaderCPU, s.ReaderNsPerEvent)
	}
	if ev.BestClean != nil {
		fmt.Fprintf(w, "\nNo drops up to %.0f violations/s (the %s/s step).", ev.BestClean.Offered, rateLabel(ev.BestClean.Target))
	}
	if ev.FirstDrop == nil {
		fmt.Fprintf(w, " No step dropped: the binders' maximum rate is below the rate at which drops start.\n")
	} else {
		fmt.Fprintf(w, " Drops start at the %s/s step: %.0f violations/s offered, %d dropped (%.1f%%).\n",
			rateLabel(ev.FirstDrop.Target), ev.FirstDrop.Offered, ev.FirstDrop.Dropped, 100*float64(ev.FirstDrop.Dropped)/float64(max(ev.FirstDrop.Violations, 1)))
	}
}

// writeMemory prints the memory table.
func writeMemory(w io.Writer, mem *memReport) {
	fmt.Fprintf(w, "\n## Memory (a process holding one loader with %s entries)\n\n", commas(mem.Entries))
	fmt.Fprintf(w, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(w, "| VmRSS before the loader | %s KiB |\n", commas(int(mem.RSSIdleKB)))
	fmt.Fprintf(w, "| VmRSS with the loader, after GC | %s KiB |\n", commas(int(mem.RSSKB)))
	fmt.Fprintf(w, "| VmHWM (peak, during apply) | %s KiB |\n", commas(int(mem.HWMKB)))
	fmt.Fprintf(w, "| Go heap in use | %s KiB |\n", commas(int(mem.HeapInuse/1024)))
	for _, mp := range mem.Maps {
		fmt.Fprintf(w, "| map %s (%s, %s max) memlock | %s KiB |\n", mp.Name, mp.Type, commas(int(mp.MaxEntries)), commas(int(mp.Memlock/1024)))
	}
	fmt.Fprintf(w, "| all maps memlock | %s KiB |\n", commas(int(mem.MapsMemlock/1024)))
}

// writeTargets prints the targets table.
func writeTargets(w io.Writer, targets []targetRow) {
	fmt.Fprintf(w, "\n## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	for _, t := range targets {
		met := "no"
		if t.Met {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.Target, t.Measured, met)
	}
}
