package features

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCapError checks that a start refused for want of capabilities names
// exactly those missing, what each is for, and keeps the kernel's error.
func TestCapError(t *testing.T) {
	all := uint64(1)<<unix.CAP_BPF | 1<<unix.CAP_PERFMON | 1<<unix.CAP_NET_ADMIN
	kernel := &Error{Release: "6.18.0", Features: []Feature{{Name: "the BPF ring buffer", Err: unix.EPERM}}}
	for _, tc := range []struct {
		name    string
		eff     uint64
		missing []string
	}{
		{"all three", all, nil},
		{"CAP_SYS_ADMIN alone", 1 << unix.CAP_SYS_ADMIN, nil},
		{"without CAP_BPF", all &^ (1 << unix.CAP_BPF), []string{"CAP_BPF"}},
		{"without CAP_PERFMON", all &^ (1 << unix.CAP_PERFMON), []string{"CAP_PERFMON"}},
		{"without CAP_NET_ADMIN", all &^ (1 << unix.CAP_NET_ADMIN), []string{"CAP_NET_ADMIN"}},
		{"none", 1 << unix.CAP_DAC_READ_SEARCH, []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			missing := missingFrom(tc.eff)
			var names []string
			for _, c := range missing {
				names = append(names, c.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.missing, ",") {
				t.Fatalf("missing %v, want %v", names, tc.missing)
			}
			kernel.MissingCaps = names
			err := WithCapabilities(missing, kernel)
			if len(tc.missing) == 0 {
				if err != kernel {
					t.Fatalf("got %v, want the kernel's error as it is", err)
				}
				return
			}
			msg := err.Error()
			lines := strings.Split(msg, "\n")
			for i, n := range tc.missing {
				if !strings.HasPrefix(lines[i], "missing capability "+n+": needed to ") {
					t.Errorf("line %d: %q, want it to name %s and what it is for", i+1, lines[i], n)
				}
			}
			for _, c := range Capabilities {
				named := strings.Contains(msg, c.Name)
				if want := strings.Contains(strings.Join(tc.missing, ","), c.Name); named != want {
					t.Errorf("names %s: %v, want %v:\n%s", c.Name, named, want, msg)
				}
			}
			if !strings.Contains(msg, "the kernel's answer without it: cannot tell whether kernel 6.18.0 has the BPF ring buffer") {
				t.Errorf("the kernel's error is lost:\n%s", msg)
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Errorf("%T does not unwrap to *Error", err)
			}
		})
	}
	if err := WithCapabilities(Capabilities, nil); err != nil {
		t.Errorf("no error to explain: got %v", err)
	}
}

// TestCapabilityList checks that every capability says what it is for and
// maps to its bit.
func TestCapabilityList(t *testing.T) {
	for _, c := range Capabilities {
		if c.Name == "" || c.Needed == "" || c.bit == 0 {
			t.Errorf("%+v: want a name, a need and a bit", c)
		}
	}
}
