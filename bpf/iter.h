/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The record bindguard's socket iterators (bpf/iter.c) write for each socket,
 * read by package scan. Exported to Go with bpf2go -type; never copied.
 *
 * Every field is in host byte order except addr, which is the bound address
 * exactly as the socket holds it (network byte order):
 *   family 4: addr[0..3] is the IPv4 address, addr[4..15] are zero;
 *   family 6: addr[0..15] is the IPv6 address (an IPv4-mapped
 *             ::ffff:a.b.c.d stays mapped).
 * Worked example: a TCP socket of cgroup id 4242 that called
 *   bind(127.0.0.1:8080) and listen()
 * is { .cgroup_id = 4242, .addr = {127,0,0,1,0...}, .port = 8080,
 *      .family = 4, .protocol = 6, .state = 10 (TCP_LISTEN),
 *      .userlocks = BG_BINDADDR_LOCK | BG_BINDPORT_LOCK, ... }.
 * A socket that called listen() without bind() has the port the kernel
 * chose and userlocks without BG_BINDPORT_LOCK.
 */
#ifndef BINDGUARD_ITER_H
#define BINDGUARD_ITER_H

/* sk_userlocks bits (include/net/sock.h). */
enum bg_userlocks {
	BG_SNDBUF_LOCK = 1,
	BG_RCVBUF_LOCK = 2,
	BG_BINDADDR_LOCK = 4,
	/* The port was given to bind() by the caller; unset when the kernel
	 * chose it (bind(port 0), listen/connect/sendto without bind). */
	BG_BINDPORT_LOCK = 8,
};

struct bg_sock {
	/* The cgroup the socket was created in (sk_cgrp_data): the cgroup
	 * whose bind programs ran; 0 when the kernel could not say. */
	__u64 cgroup_id;
	/* The socket's network namespace cookie (net->net_cookie). */
	__u64 netns_cookie;
	/* The socket's inode, as /proc/PID/fd shows socket:[INODE]; 0 for a
	 * socket no file refers to (a kernel socket). */
	__u64 inode;
	/* The socket's owner uid (sock_i_uid: the creator's fsuid). */
	__u32 uid;
	/* Bound address; see above. */
	__u8 addr[16];
	/* Bound port (inet_num). */
	__u16 port;
	/* 4 or 6. */
	__u8 family;
	/* IPPROTO_TCP (6) or IPPROTO_UDP (17). */
	__u8 protocol;
	/* skc_state: the TCP state (include/net/tcp_states.h); for UDP
	 * 1 (ESTABLISHED) when connected, 7 (CLOSE) otherwise. */
	__u8 state;
	/* sk_userlocks, see enum bg_userlocks. */
	__u8 userlocks;
	/* Which iterator found it: 1 tcp, 2 udp, 3 task_file (a TCP socket
	 * bound but neither listening nor connected, in no hash the tcp
	 * iterator walks). */
	__u8 source;
	__u8 _pad[5]; /* to 56 bytes, a multiple of 8 */
};

#endif
