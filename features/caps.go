package features

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is one of the capabilities bindguard runs with, and what it
// needs it for.
type Capability struct {
	// Name is the capability's name, e.g. "CAP_BPF".
	Name string
	// Needed completes "needed to …".
	Needed string
	bit    int
}

// Capabilities are those bindguard runs with. CAP_SYS_ADMIN stands in for
// all of them (and is what kernels before 5.8, which lack CAP_BPF and
// CAP_PERFMON, need).
var Capabilities = []Capability{
	{Name: "CAP_BPF", bit: unix.CAP_BPF,
		Needed: "create the policy maps, load any BPF program and pin them (bpf())"},
	{Name: "CAP_PERFMON", bit: unix.CAP_PERFMON,
		Needed: "load the cgroup-watch tracing programs (raw tracepoints cgroup_mkdir and cgroup_rmdir, reading kernel memory) that put owners in force for new cgroups, and the helpers that name the process of a bind"},
	{Name: "CAP_NET_ADMIN", bit: unix.CAP_NET_ADMIN,
		Needed: "load the bind programs (cgroup sock_addr programs) and attach them to the cgroup"},
}

// MissingCapabilities returns those of Capabilities the process does not
// have in effect, in that order; none when it has CAP_SYS_ADMIN or when the
// kernel does not say (the probes then tell).
func MissingCapabilities() []Capability {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	return missingFrom(uint64(data[1].Effective)<<32 | uint64(data[0].Effective))
}

// missingFrom returns those of Capabilities that an effective set lacks.
func missingFrom(eff uint64) []Capability {
	has := func(bit int) bool { return eff&(1<<bit) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var out []Capability
	for _, c := range Capabilities {
		if !has(c.bit) {
			out = append(out, c)
		}
	}
	return out
}

// missingCaps returns the names of MissingCapabilities.
func missingCaps() []string {
	var names []string
	for _, c := range MissingCapabilities() {
		names = append(names, c.Name)
	}
	return names
}

// CapError is a start refused for want of capabilities: it names exactly
// those missing, what each is for, and the kernel's own error.
type CapError struct {
	Missing []Capability
	// Err is the error of the probes or of the load without them.
	Err error
}

// Error has one line per missing capability, then the kernel's error.
func (e *CapError) Error() string {
	var b strings.Builder
	for i, c := range e.Missing {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "missing capability %s: needed to %s", c.Name, c.Needed)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, "\nthe kernel's answer without it: %v", e.Err)
	}
	return b.String()
}

func (e *CapError) Unwrap() error { return e.Err }

// WithCapabilities names the capabilities missing in front of err, an error
// of a load or attach made without them; err as it is when none is missing.
func WithCapabilities(missing []Capability, err error) error {
	if err == nil || len(missing) == 0 {
		return err
	}
	return &CapError{Missing: missing, Err: err}
}
