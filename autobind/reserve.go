package autobind

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Paths of the host network namespace's sysctls (read in the caller's
// network namespace: the daemon's, which it treats as the host's).
const (
	ReservedPortsSysctl = "/proc/sys/net/ipv4/ip_local_reserved_ports"
	PortRangeSysctl     = "/proc/sys/net/ipv4/ip_local_port_range"
	// DefaultStateFile records which reserved ports bindguard added. It is
	// on /run so that it goes with a reboot, as the sysctl does.
	DefaultStateFile = "/run/bindguard/autobind-reserved-ports"
)

// maxSysctlBytes bounds what is read of the sysctl and the state file: the
// longest list of 65535 ports is under 400 KB.
const maxSysctlBytes = 1 << 20

// Reserver adds ports to ip_local_reserved_ports and takes back only those
// it added. It is not safe for concurrent use; one daemon owns it.
type Reserver struct {
	// Sysctl is the reserved-ports file, Range the ip_local_port_range
	// file, State the file recording what was added. New fills them in.
	Sysctl string
	Range  string
	State  string
}

// A reservation must leave at least this many ports of the ephemeral range,
// and this fraction of it, to autobind: outgoing connections on the whole
// node depend on them.
const (
	minFreePorts    = 1024
	minFreeFraction = 4 // a quarter
)

// New returns a Reserver of the host sysctl that records its additions in
// state ("" for DefaultStateFile).
func New(state string) *Reserver {
	if state == "" {
		state = DefaultStateFile
	}
	return &Reserver{Sysctl: ReservedPortsSysctl, Range: PortRangeSysctl, State: state}
}

// merge computes the sysctl value that reserves want on top of current, and
// the ports bindguard owns after it: those it had added (added) and still
// wants, and those it adds now. A port in current that bindguard did not add
// is the admin's: kept, never owned. Ports bindguard added and no longer
// wants are dropped.
func merge(current, added, want Set) (value, owned Set) {
	value, owned = Set{}, Set{}
	for p := range current {
		if !added[p] || want[p] {
			value[p] = true
		}
	}
	for p := range want {
		value[p] = true
		if added[p] || !current[p] {
			owned[p] = true
		}
	}
	return value, owned
}

// Reserve makes the reserved ports the admin's plus ports, and records which
// of them bindguard added. Call it on every apply and reload with the
// policy's restricted ports; an empty list takes back what bindguard added.
// On error nothing bindguard knows of is lost: the state file lists every
// port it may have added, and the sysctl holds at least the admin's ports.
func (r *Reserver) Reserve(ports []uint16) error {
	current, err := readList(r.Sysctl)
	if err != nil {
		return fmt.Errorf("autobind: %w; restricted ports inside ip_local_port_range stay open to autobind", err)
	}
	added, err := r.added()
	if err != nil {
		return fmt.Errorf("autobind: %w; the reserved ports are left as they are", err)
	}
	value, owned := merge(current, added, Of(ports))
	if err := r.checkFree(value, owned); err != nil {
		return err
	}
	// Record the union first: a crash between the writes leaves no port
	// bindguard added unrecorded.
	union := Set{}
	for p := range added {
		union[p] = true
	}
	for p := range owned {
		union[p] = true
	}
	if err := writeState(r.State, union); err != nil {
		return fmt.Errorf("autobind: %w; the reserved ports are left as they are", err)
	}
	if value.String() != current.String() {
		if err := writeList(r.Sysctl, value); err != nil {
			return fmt.Errorf("autobind: %w; restricted ports inside ip_local_port_range stay open to autobind", err)
		}
	}
	if err := writeState(r.State, owned); err != nil {
		return fmt.Errorf("autobind: %w; the ports are reserved, but a later release may also take back %s", err, union)
	}
	return nil
}

// checkFree refuses a reservation that would starve autobind: outgoing
// connections, listen() and bind(0) on the whole node need free ports.
func (r *Reserver) checkFree(value, owned Set) error {
	lo, hi, err := PortRange(r.Range)
	if err != nil {
		return fmt.Errorf("%w; the reserved ports are left as they are", err)
	}
	size := int(hi) - int(lo) + 1
	free := size
	for p := range value {
		if p >= lo && p <= hi {
			free--
		}
	}
	if free < minFreePorts || free < size/minFreeFraction {
		n := 0
		for p := range owned {
			if p >= lo && p <= hi {
				n++
			}
		}
		return fmt.Errorf("autobind: reserving %d restricted ports inside ip_local_port_range %d-%d would leave %d of its %d ports for connect, listen and bind(0) (at least %d and a quarter are kept); the reserved ports are left as they are, so restricted ports in the range stay open to autobind: narrow the registry's restricted ranges or move ip_local_port_range",
			n, lo, hi, free, size, minFreePorts)
	}
	return nil
}

// Release takes back the ports bindguard added, leaving the admin's, and
// removes the state file. Call it on detach. Without a state file it does
// nothing.
func (r *Reserver) Release() error {
	added, err := r.added()
	if err != nil {
		return fmt.Errorf("autobind: %w; the reserved ports are left as they are", err)
	}
	if len(added) > 0 {
		current, err := readList(r.Sysctl)
		if err != nil {
			return fmt.Errorf("autobind: %w; bindguard's reserved ports %s stay reserved", err, added)
		}
		value := Set{}
		for p := range current {
			if !added[p] {
				value[p] = true
			}
		}
		if value.String() != current.String() {
			if err := writeList(r.Sysctl, value); err != nil {
				return fmt.Errorf("autobind: %w; bindguard's reserved ports %s stay reserved", err, added)
			}
		}
	}
	if err := os.Remove(r.State); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("autobind: %w", err)
	}
	return nil
}

// Added returns the ports the state file says bindguard added.
func (r *Reserver) Added() ([]uint16, error) {
	s, err := r.added()
	if err != nil {
		return nil, fmt.Errorf("autobind: %w", err)
	}
	return s.Sorted(), nil
}

func (r *Reserver) added() (Set, error) {
	s, err := readList(r.State)
	if errors.Is(err, fs.ErrNotExist) {
		return Set{}, nil
	}
	return s, err
}

func readList(path string) (Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSysctlBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxSysctlBytes {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, maxSysctlBytes)
	}
	s, err := ParseList(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// writeList writes the sysctl. A newline is always written: an empty write
// would leave the kernel's list unchanged.
func writeList(path string, s Set) error {
	if err := os.WriteFile(path, []byte(s.String()+"\n"), 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeState replaces the state file atomically, in a directory only root
// may write to; an empty set removes it.
func writeState(path string, s Set) error {
	if len(s) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	_, werr := f.WriteString(strings.TrimSpace(s.String()) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("state file %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("state file %s: %w", path, err)
	}
	return nil
}
