// Command bench measures bindguard on the running kernel, in one run so that
// its ratios share the machine's state:
//
//   - the cost of one bind check (kernel BPF run-time stats) and of a
//     socket()+bind()+close() loop, for no program, the hook floor, a
//     linear-scan reference and bindguard with registries of 1 rule, 1,000
//     and 65,536 map entries (declared, undeclared and owner-restricted
//     ports, IPv4 and IPv6);
//   - the time to fill a policy map and to swap it in;
//   - how many violation events per second the daemon-side reader drains
//     without ring buffer drops;
//   - the resident and BPF map memory of a loader holding 65,536 entries.
//
// It needs root, cgroup2 and BPF. Everything happens below a temporary
// cgroup it creates under the cgroup2 root (never the root itself), and
// every link, program, map and cgroup it made is removed at the end, also on
// error or interrupt. Run it with `make bench` (BENCHFLAGS=-quick for a smoke
// run); it prints markdown tables and writes the same figures as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/bindguard/bindguard/loader"
)

// options are the command line. The standard flag package is used, not
// pflag as in cmd/: the Makefile and docs spell the flags -rounds, -iters.
type options struct {
	rounds   int
	iters    int
	quick    bool
	jsonPath string
	step     time.Duration
	portBase int
	only     string
}

func (o *options) register(fs *flag.FlagSet) {
	fs.IntVar(&o.rounds, "rounds", 7, "rounds of every configuration, interleaved; medians and min–max are over rounds")
	fs.IntVar(&o.iters, "iters", 20000, "socket()+bind()+close() iterations per configuration and round")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: 1 round, few iterations, short event steps (figures are not meaningful)")
	fs.StringVar(&o.jsonPath, "json", "bin/bench.json", "write the results as JSON to this file")
	fs.DurationVar(&o.step, "event-step", 2*time.Second, "duration of each event throughput step")
	fs.StringVar(&o.only, "only", "", "A/B runs: measure only the configurations whose key matches this regexp (with the baseline and the floor); no memory, event or target sections")
	fs.IntVar(&o.portBase, "port-base", 61000, "TCP ports port-base+1..port-base+40 are bound; they must be free and outside the ephemeral range")
}

// applyQuick lowers what -quick lowers, unless set explicitly.
func (o *options) applyQuick(fs *flag.FlagSet) {
	if !o.quick {
		return
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rounds"] {
		o.rounds = 1
	}
	if !set["iters"] {
		o.iters = 300
	}
	if !set["event-step"] {
		o.step = 100 * time.Millisecond
	}
}

func (o *options) validate() error {
	if o.rounds < 1 || o.iters < 1 || o.step <= 0 {
		return fmt.Errorf("-rounds, -iters and -event-step must be positive")
	}
	if o.only != "" {
		if _, err := regexp.Compile(o.only); err != nil {
			return fmt.Errorf("-only: %w", err)
		}
	}
	if o.portBase < 1024 || o.portBase+portSpan > 65535 {
		return fmt.Errorf("-port-base %d: ports %d..%d must lie in 1024..65535", o.portBase, o.portBase+1, o.portBase+portSpan)
	}
	return nil
}

func main() {
	loader.MaybeNetnsProbe()
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:], os.Stdout, os.Stderr))
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// run measures, prints the markdown report on stdout and writes the JSON
// file. Progress goes to stderr.
func run(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.applyQuick(fs)
	if err := o.validate(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := measure(ctx, &o, stderr)
	if err != nil {
		return err
	}
	res.Command = strings.TrimSpace("go run ./scripts/bench " + strings.Join(args, " "))
	writeMarkdown(stdout, res)
	if err := writeJSON(o.jsonPath, res); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench: wrote %s\n", o.jsonPath)
	return nil
}

func writeJSON(path string, res *results) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
