// Package loader owns bindguard's kernel side at run time: it loads the
// cgroup/bind4 and cgroup/bind6 programs generated from bpf/, writes a
// compiled policy into their maps and swaps it in atomically, attaches the
// programs to a cgroup with bpf_link, pins links and maps so enforcement
// outlives the daemon, takes over pins left by an earlier daemon without a
// gap, reads violation and cgroup events from the ring buffers and reads the
// counters and the status.
//
// Files: loader.go is the life cycle (New, Close, Detach, pins), lock.go the
// pin path's lock, attach.go Attach and takeover, apply.go the policy slots,
// owners.go the cgroup watch, ring.go the generic ring-buffer reader,
// events.go the violation events, counters.go and status.go what status
// reads.
//
// One Loader owns every kernel object it opened; Close releases them and is
// idempotent. Keep the Loader referenced for the daemon's whole life: the
// garbage collector closes what nothing references, and an unpinned link that
// is closed detaches. A Loader with a pin path holds an exclusive flock on
// it until Close: a second Loader on the same pin path fails in New, naming
// the holder's pid.
//
// # Concurrency
//
//   - ReadEvent is called from one goroutine, ReadCgroupEvent from one
//     goroutine (another or the same); each may run concurrently with every
//     other method but Close and Detach.
//   - StopReaders, FlushEvents, EventsLeft, Counters and CheckAttached may be
//     called from any goroutine at any time; they guard what they read.
//   - Everything else (Apply, Attach, RecordFailure, CgroupCreated,
//     CgroupRemoved, ResolveOwners, WatchCgroups, EventReader, Generation,
//     TookOver) is serialised by the caller, as the daemon does with its
//     lock. EventReader and WatchCgroups come before their readers start.
//   - Close and Detach come last, after StopReaders and once the readers
//     have returned.
//
// Events carry the generation of the policy that judged them and the index
// of the rule's origin in that policy; the loader keeps no origins. The
// caller that applied a policy knows them and decorates the events.
//
// It does not parse or validate registries (package policy does) nor decide
// how events are logged (the daemon does).
package loader
