package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// memEntries is the policy size the memory figures are for.
const memEntries = 65536

// bpfMap is one BPF map a process holds, from /proc/self/fdinfo.
type bpfMap struct {
	ID         uint32 `json:"id"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	MaxEntries uint32 `json:"max_entries"`
	Memlock    uint64 `json:"memlock_bytes"`
}

// memReport is what the memory helper prints.
type memReport struct {
	Entries int `json:"entries"`
	// RSSIdle is VmRSS before the loader exists; RSS after New+Apply and a
	// GC that returned what it could to the OS; HWM the peak (VmHWM).
	RSSIdleKB int64 `json:"rss_idle_kb"`
	RSSKB     int64 `json:"rss_kb"`
	HWMKB     int64 `json:"hwm_kb"`
	// HeapInuse is the Go heap in use after the GC.
	HeapInuse uint64   `json:"go_heap_inuse_bytes"`
	Maps      []bpfMap `json:"maps"`
	// MapsMemlock sums Maps; PolicyMemlock the policies' maps: the rules
	// array (both slots) and the pairs hash of the policy in force.
	MapsMemlock   uint64 `json:"maps_memlock_bytes"`
	PolicyMemlock uint64 `json:"policy_map_memlock_bytes"`
}

// memoryBench runs the memory helper in its own process, so the figures are
// of a process that holds one loader and nothing of the bench.
func memoryBench(ctx context.Context, e *env) (*memReport, error) {
	dir, err := e.mkdir("memory")
	if err != nil {
		return nil, err
	}
	out, err := helper(ctx, dir, helperMem, strconv.Itoa(memEntries))
	if err != nil {
		return nil, err
	}
	var r memReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("memory helper printed %q: %w", out, err)
	}
	return &r, nil
}

// memMain loads bindguard with a policy of ENTRIES entries (32,768 TCP and
// 32,767 UDP rules and the meta entry for 65,536), without attaching it, and
// prints a memReport.
func memMain(args []string, stdout io.Writer) error {
	n, err := atoi(args, 0)
	if err != nil {
		return err
	}
	runtime.GC()
	debug.FreeOSMemory()
	idle, _ := procStatus("VmRSS")

	cg, err := cgroups.Open("")
	if err != nil {
		return err
	}
	defer cg.Close()
	l, err := loader.New(loader.Config{})
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := buildPolicy(n, nil, nil)
	if err != nil {
		return err
	}
	res, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeAudit}, loader.Sources{Cgroups: cg})
	if err != nil {
		return err
	}
	if res.Entries != n {
		return fmt.Errorf("policy encoded to %d entries, want %d", res.Entries, n)
	}
	c = nil
	runtime.GC()
	debug.FreeOSMemory()

	r := memReport{Entries: n, RSSIdleKB: idle}
	r.RSSKB, _ = procStatus("VmRSS")
	r.HWMKB, _ = procStatus("VmHWM")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapInuse = ms.HeapInuse
	if r.Maps, err = bpfMaps(); err != nil {
		return err
	}
	for _, m := range r.Maps {
		r.MapsMemlock += m.Memlock
		if m.Name == "bg_rules" || m.Name == "bg_pairs_inner" {
			r.PolicyMemlock += m.Memlock
		}
	}
	runtime.KeepAlive(l)
	return json.NewEncoder(stdout).Encode(&r)
}

// procStatus reads a kB field of /proc/self/status.
func procStatus(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// bpfMaps lists every BPF map this process holds a descriptor of, with the
// kernel's memlock figure from fdinfo (ebpf.MapInfo has no memlock on every
// kernel, and the loader does not expose the inner policy map).
func bpfMaps() ([]bpfMap, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	byID := map[uint32]bpfMap{}
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", ent.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		m, err := fdinfoMap(ent.Name())
		if err != nil {
			continue // closed since ReadDir
		}
		byID[m.ID] = m
	}
	var out []bpfMap
	for id, m := range byID {
		if mp, err := ebpf.NewMapFromID(ebpf.MapID(id)); err == nil {
			if info, err := mp.Info(); err == nil {
				m.Name = info.Name
			}
			mp.Close()
		}
		out = append(out, m)
	}
	// Largest first; maps of equal size by name, so that the report's order
	// does not follow Go's map iteration.
	slices.SortFunc(out, func(a, b bpfMap) int {
		return cmp.Or(cmp.Compare(b.Memlock, a.Memlock), cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func fdinfoMap(fd string) (bpfMap, error) {
	f, err := os.Open(filepath.Join("/proc/self/fdinfo", fd))
	if err != nil {
		return bpfMap{}, err
	}
	defer f.Close()
	var m bpfMap
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "map_type":
			m.Type = mapTypeName(v)
		case "max_entries":
			n, _ := strconv.ParseUint(v, 10, 32)
			m.MaxEntries = uint32(n)
		case "memlock":
			m.Memlock, _ = strconv.ParseUint(v, 10, 64)
		case "map_id":
			n, _ := strconv.ParseUint(v, 10, 32)
			m.ID = uint32(n)
		}
	}
	if m.ID == 0 {
		return m, fmt.Errorf("fd %s: no map_id in fdinfo", fd)
	}
	return m, s.Err()
}

func mapTypeName(v string) string {
	n, err := strconv.Atoi(v)
	if err != nil {
		return v
	}
	return ebpf.MapType(n).String()
}
