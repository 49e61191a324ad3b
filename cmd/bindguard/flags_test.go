package main

import (
	"bytes"
	"errors"
	"sort"
	"strings"
	"testing"
)

// TestHelpExitsZero: --help and -h are requests, not mistakes, for every
// command: they exit 0 and print the usage with the flags to stdout only.
func TestHelpExitsZero(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, help := range []string{"--help", "-h"} {
			t.Run(name+help, func(t *testing.T) {
				var out, errb bytes.Buffer
				if err := run([]string{name, help}, &out, &errb); err != nil {
					t.Fatalf("bindguard %s %s: %v (want exit 0)\nstdout: %s\nstderr: %s", name, help, err, out.String(), errb.String())
				}
				if !strings.HasPrefix(out.String(), "usage: bindguard "+name+" [flags]") || !strings.Contains(out.String(), "\nflags:\n") {
					t.Errorf("bindguard %s %s: no usage with flags on stdout:\n%s", name, help, out.String())
				}
				if errb.Len() != 0 {
					t.Errorf("bindguard %s %s wrote to stderr: %s", name, help, errb.String())
				}
			})
		}
	}
}

// TestFlagErrorsUsageOnStderr: a bad flag exits 2 with the usage on stderr
// and nothing on stdout, for every command.
func TestFlagErrorsUsageOnStderr(t *testing.T) {
	for name := range commands {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run([]string{name, "--no-such-flag"}, &out, &errb)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.msg, name+": unknown flag: --no-such-flag") {
				t.Fatalf("bindguard %s --no-such-flag: %v, want exit 2 naming the flag", name, err)
			}
			if out.Len() != 0 || !strings.HasPrefix(errb.String(), "usage: bindguard "+name+" [flags]") {
				t.Errorf("bindguard %s --no-such-flag:\nstdout: %s\nstderr: %s", name, out.String(), errb.String())
			}
		})
	}
}

func TestRunFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"negative event interval", []string{"--registry", "x.yaml", "--event-interval", "-1s"}, "--event-interval -1s: must be 0"},
		{"no registry", nil, "--registry is required"},
		{"unknown flag", []string{"--nope"}, "unknown flag: --nope"},
		{"pod ports without pod identity", []string{"--registry", "x.yaml", "--pod-ports=require", "--cri-socket", "none"}, "--pod-ports=require with --cri-socket none"},
		{"a kubeconfig without a node", []string{"--registry", "x.yaml", "--kubeconfig", "/etc/kubeconfig"}, "--kubeconfig without --node-name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(append([]string{"run"}, tc.args...), &out, &errb)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(ee.msg, tc.want) {
				t.Fatalf("run %v: %v, want exit 2 with %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestOutputFlag: every command with -o takes its people's format or json,
// and refuses anything else with exit 2 before it reads a registry or a pin.
func TestOutputFlag(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		args  []string
		human string
	}{
		{"compile", []string{"missing.yaml"}, "table"},
		{"scan", []string{"--registry", "missing.yaml"}, "table"},
		{"decide", []string{"--registry", "missing.yaml", "--port", "1"}, "text"},
		{"status", []string{"--pin-path", "/nonexistent"}, "text"},
		{"version", nil, "text"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(append([]string{tc.cmd, "-o", "yaml"}, tc.args...), &out, &errb)
			want := tc.cmd + `: --output "yaml": want ` + tc.human + " or json"
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || ee.msg != want {
				t.Errorf("bindguard %s -o yaml: %v, want exit 2 with %q", tc.cmd, err, want)
			}
			if out.Len() != 0 {
				t.Errorf("bindguard %s -o yaml printed to stdout: %s", tc.cmd, out.String())
			}
		})
	}
}
