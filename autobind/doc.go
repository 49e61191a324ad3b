// Package autobind keeps the registry's restricted ports out of the kernel's
// automatic port choice while bindguard enforces: the user-space half of
// closing the autobind bypass.
//
// The bind programs judge the port a caller gives to bind(). A port the
// kernel chooses (bind(port 0), listen(), connect() or sendto() without a
// bind) is never judged by them: with IP_LOCAL_PORT_RANGE set to [P, P], or
// by looping bind(0), a process gets any port P inside
// net.ipv4.ip_local_port_range, restricted or not. The kernel's own remedy is
// net.ipv4.ip_local_reserved_ports: a reserved port is never chosen
// automatically, for TCP and UDP, IPv4 and IPv6 alike (the sysctl is read by
// inet_is_local_reserved_port for both families), while an explicit bind()
// of it still works and is judged as usual.
//
// Which ports: Restricted returns the ports of rules that make some bind a
// violation: rules with owners, localhost-only rules, and removed ports. An
// undeclared port is not reserved: the ephemeral range is made of them, and
// an autobind there is no violation. A declared port open to anyone is not
// reserved either: anyone may bind it, so an autobind takes nothing. The
// sysctl is one set for both protocols, so a port restricted for TCP only
// is reserved for UDP too; that only narrows the ephemeral range.
//
// How: Reserver.Reserve reads the sysctl, writes the union of what is there
// (the admin's ports) and the restricted ports, and records in a state file
// (by default under /run/bindguard) which ports it added; Release removes
// only those. A restarted daemon reads the state file, so a port it added
// before the restart is still released, and a port the admin had reserved
// before bindguard started is never removed. Between the two the admin may
// edit the sysctl: ports the admin adds are kept and never removed by
// bindguard; a port bindguard added that the admin removes is added again at
// the next Reserve while it is still restricted (enforcement wins), and if the
// admin reserves a port bindguard had added, bindguard cannot tell them apart
// and releases it on detach.
//
// A reservation that would leave fewer than 1024 ports, or less than a
// quarter, of ip_local_port_range to autobind is refused as a whole:
// outgoing connections on the whole node depend on those ports. The error
// says so, and the restricted ports in the range then stay open to
// autobind (scan and the post_bind programs still see them).
//
// What it cannot close: other network namespaces (each has its own sysctl;
// bindguard only judges the host's by default); a root user, or anyone with
// CAP_NET_ADMIN in the host namespace, who rewrites the sysctl; sockets that
// already hold a restricted port (scan reports them as "autobind"); and
// kernels that ignore the reservation for a given path. The kernel's
// cgroup/post_bind programs (package loader) see the port a bind(0) got and
// close that path independently.
//
// It owns the sysctl merge, the state file and the ephemeral-range conflict
// check (InRange). It does not decide when to reserve (the daemon calls it on
// apply, reload and detach) and does not print warnings (check and compile do).
package autobind
