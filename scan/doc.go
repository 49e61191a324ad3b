// Package scan lists the sockets already bound in the host network namespace
// (TCP listeners and bound UDP sockets, IPv4 and IPv6), finds the process
// holding each one, and judges each with policy.Decide as if it were bound
// now: what `bindguard scan` shows before enforcement is switched on.
//
// It reads procfs only: /proc/net/{tcp,tcp6,udp,udp6} of the caller's
// network namespace (the namespace the daemon treats as the host's), the
// socket:[INODE] links of /proc/PID/fd, and /proc/PID/{comm,cgroup}. It needs
// root to see the file descriptors of other users' processes; sockets no
// process holds (kernel sockets, or ones it could not see) have PID 0.
//
// It does not judge binds as they happen (the kernel programs do) and does
// not touch BPF. A socket is judged with the uid that owns it (its creator's
// fsuid, which survives a later setuid) and the cgroup its process is in now.
package scan
