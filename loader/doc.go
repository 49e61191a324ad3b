// Package loader owns bindguard's kernel side at run time: it loads the
// cgroup/bind4 and cgroup/bind6 programs generated from bpf/, writes a
// compiled policy into their maps and swaps it in atomically, attaches the
// programs to a cgroup with bpf_link, pins links and maps so enforcement
// outlives the daemon, takes over pins left by an earlier daemon without a
// gap, reads violation events from the ring buffer and reads the counters.
//
// One Loader owns every kernel object it opened; Close releases them and is
// idempotent. Keep the Loader referenced for the daemon's whole life: the
// garbage collector closes what nothing references, and an unpinned link that
// is closed detaches.
//
// It does not parse or validate registries (package policy does) nor decide
// how events are logged (the daemon does).
package loader
