// Package scan lists the sockets already bound in the host network namespace
// (TCP listeners, TCP sockets bound but not listening, bound UDP sockets, and
// connected sockets; IPv4 and IPv6), finds the process holding each one, and
// judges each as the bind programs judged its bind: what `bindguard scan`
// shows before enforcement is switched on.
//
// Sockets come from BPF socket iterators (bpf/iter.c: iter/tcp, iter/udp
// and iter/task_file; the fields read need Linux 5.15) where the kernel has
// them. They give, per socket, whether the caller chose the port
// (SOCK_BINDPORT_LOCK) or the kernel did, the socket's own cgroup (the one whose programs ran at bind
// time), its network namespace cookie and its owner uid. A port the kernel
// chose is no violation (VerdictEphemeral), except on a port the registry
// restricts: that is the autobind bypass, reported with ReasonAutobind.
// Where the iterators cannot load, scan reads /proc/net/{tcp,tcp6,udp,udp6}
// as before, judges every port as an explicit bind with the holder's
// cgroup, and says so (Listing.Path). Both paths see only the caller's
// network namespace, the one the daemon treats as the host's.
//
// The holders' pid and comm come from procfs (socket:[INODE] links of
// /proc/PID/fd, /proc/PID/{comm,cgroup}). That needs root to see other
// users' processes; sockets no process holds (kernel sockets, or ones it
// could not see) have PID 0.
//
// It owns the iterator programs and their record (bpf/iter.h) and the
// rendering of a scan. It does not judge binds as they happen (the kernel
// programs in package loader do), decide verdicts (policy.Decide does) or
// keep ports out of autobind (package autobind does).
package scan
