package main

import (
	"bytes"
	"errors"
	"sort"
	"strings"
	"testing"
)

// TestHelpExitsZero: --help is a request, not a mistake, for every command.
func TestHelpExitsZero(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := run([]string{name, "--help"}, &out, &errb); err != nil {
				t.Fatalf("bindguard %s --help: %v (want exit 0)\nstdout: %s\nstderr: %s", name, err, out.String(), errb.String())
			}
			if !strings.Contains(out.String()+errb.String(), "usage: bindguard "+name) {
				t.Errorf("bindguard %s --help printed no usage:\nstdout: %s\nstderr: %s", name, out.String(), errb.String())
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
