package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/report-*.md from the current code")

// TestReport renders the results of a recorded run (testdata/results.json,
// a -quick -rounds 3 run on the dev machine) and variants of it, and
// compares evaluate's targets and writeMarkdown's report with golden files,
// so that a change to either shows in the diff. The recorded run's targets
// must equal the ones it computed when it ran.
func TestReport(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(t *testing.T) *results {
		var res results
		if err := json.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
		return &res
	}
	if res := load(t); !reflect.DeepEqual(evaluate(res), res.Targets) {
		t.Errorf("evaluate differs from the recorded run's targets:\n got %+v\nwant %+v", evaluate(res), res.Targets)
	}
	for _, tc := range []struct {
		name   string
		change func(*results)
	}{
		{"recorded", func(*results) {}},
		{"drops", func(r *results) {
			r.Quick, r.StatsSysctl = false, true
			ev := r.Events
			ev.Steps[3].Dropped, ev.Steps[4].Dropped, ev.Steps[2].Offered = 123, 4567, 47000
			ev.FirstDrop, ev.BestClean = &ev.Steps[3], &ev.Steps[2]
		}},
		{"membership", func(r *results) {
			// One late owner of 50 not in force: the section, and a target not met.
			r.Membership = &membershipResult{Tries: 50, InheritedAllowed: 50, LateWritten: 49, LateAllowed: 49,
				LateUs: dist{Median: 71, Min: 53, Max: 412, N: 49}}
		}},
		{"parts", func(r *results) {
			// A run with a paired floor and the parts measured: the targets
			// show each row's part alone, and the declared row plus that part.
			for i := range r.Checks {
				if c := &r.Checks[i]; c.CheckVsFloor != nil {
					vs := *c.CheckVsFloor
					c.CheckVsPaired, c.PairedFloorNs = &vs, &dist{Median: 35, Min: 33, Max: 38, N: 3}
				}
			}
			// One configuration's IPv6 row a whole floor above its IPv4 row:
			// the report points the gap out.
			find(r.Checks, "bg65536.deny", 6).CheckVsPaired.Median = 6.5
			for _, fam := range families {
				floor := find(r.Checks, "floor", fam)
				for i, pr := range partRows {
					row := *floor
					row.Key, row.Name = pr.key, pr.name
					m := 1.25 + 0.25*float64(i) + 0.01*float64(fam)
					row.CheckVsPaired = &dist{Median: m, Min: m - 0.05, Max: m + 0.05, N: 3}
					r.Checks = append(r.Checks, row)
				}
			}
		}},
		{"no-events-memory-owners", func(r *results) {
			r.Events, r.Memory = nil, nil
			kept := r.Checks[:0]
			for _, c := range r.Checks {
				if !strings.Contains(c.Key, "owner") && !strings.HasSuffix(c.Key, ".declared") {
					kept = append(kept, c)
				}
			}
			r.Checks = kept
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := load(t)
			tc.change(res)
			res.Targets = evaluate(res)
			var out bytes.Buffer
			writeMarkdown(&out, res)
			goldenPath := filepath.Join("testdata", "report-"+tc.name+".md")
			golden.Check(t, goldenPath, out.Bytes(), *update)
		})
	}
}

// TestFamilyGaps: the report points out an IPv6 row a whole floor above
// its IPv4 row (the placement effect), not the expensive rows' usual gap
// nor the cheap rows' noise. The figures are from the 2026-12-01 runs.
func TestFamilyGaps(t *testing.T) {
	rows := func(key string, v4, v6 float64) []checkRow {
		return []checkRow{
			{Key: key, Name: key, Family: 4, CheckVsPaired: &dist{Median: v4}},
			{Key: key, Name: key, Family: 6, CheckVsPaired: &dist{Median: v6}},
		}
	}
	var checks []checkRow
	checks = append(checks, rows("linear128", 11.19, 13.03)...)
	checks = append(checks, rows("bg65536.deny", 2.45, 4.12)...)
	checks = append(checks, rows("bg65536.postbind", 1.11, 1.19)...)
	checks = append(checks, rows("bg65536.owner1", 1.65, 1.77)...)
	checks = append(checks, rows("bg65536.undeclared", 3.2, 2.1)...)
	got := familyGaps(checks)
	want := []string{"bg65536.deny (2.45× vs 4.12×)", "bg65536.undeclared (3.20× vs 2.10×)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("familyGaps = %q, want %q", got, want)
	}
}
