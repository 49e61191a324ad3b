package test

import (
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// attachedPrograms asks the kernel which programs are attached to a cgroup's
// bind4 or bind6 hook.
func attachedPrograms(dir, hook string) ([]ebpf.ProgramID, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	typ := ebpf.AttachCGroupInet4Bind
	if hook == "bind6" {
		typ = ebpf.AttachCGroupInet6Bind
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
	if err != nil {
		return nil, err
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids, nil
}
