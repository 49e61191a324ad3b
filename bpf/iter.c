//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket iterators for `bindguard scan`: for every TCP and UDP socket of the
 * caller's network namespace, write one struct bg_sock (bpf/iter.h) with
 * what the bind programs saw: the socket's own cgroup, whether the port was
 * given by the caller (SOCK_BINDPORT_LOCK) or chosen by the kernel, the
 * owner uid, the bound address and port.
 *
 *   iter/tcp       listeners and connected sockets (Linux 5.9)
 *   iter/udp       bound UDP sockets (Linux 5.9)
 *   iter/task_file TCP sockets bound but neither listening nor connected:
 *                  they sit only in the bind hash, which iter/tcp does not
 *                  walk (Linux 5.8, bpf_sock_from_file 5.11)
 *
 * The kernel types below are the few fields read, relocated by CO-RE
 * against the running kernel's BTF: no vmlinux.h, any architecture. The
 * fields need Linux 5.15 (sk_cgrp_data.cgroup; before, the pointer hid in a
 * tagged u64) and 5.12 (net->net_cookie); on older kernels loading fails and
 * scan falls back to procfs, saying why.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "iter.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Keep the record types in BTF for bpf2go -type. */
const struct bg_sock *unused_bg_sock __attribute__((unused));
const enum bg_userlocks *unused_bg_userlocks __attribute__((unused));

#define BG_AF_INET 2
#define BG_AF_INET6 10
#define BG_IPPROTO_TCP 6
#define BG_IPPROTO_UDP 17
#define BG_TCP_TIME_WAIT 6
#define BG_TCP_CLOSE 7
#define BG_TCP_NEW_SYN_RECV 12

struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__be32 skc_rcv_saddr;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct sock_cgroup_data {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct socket {
	struct file *file;
	struct sock *sk;
} __attribute__((preserve_access_index));

typedef struct {
	__u32 val;
} kuid_t;

struct sock {
	struct sock_common __sk_common;
	kuid_t sk_uid;
	__u8 sk_userlocks;
	__u16 sk_protocol;
	struct sock_cgroup_data sk_cgrp_data;
	struct socket *sk_socket;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
} __attribute__((preserve_access_index));

struct task_struct;

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} __attribute__((preserve_access_index));

/* fill reads a full socket into r; it returns 0 for a socket to skip. */
static __always_inline int fill(struct bg_sock *r, struct sock *sk, __u32 uid, __u8 source)
{
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == BG_AF_INET) {
		r->family = 4;
		BPF_CORE_READ_INTO((__be32 *)r->addr, sk, __sk_common.skc_rcv_saddr);
	} else if (family == BG_AF_INET6) {
		r->family = 6;
		bpf_core_read(r->addr, sizeof(r->addr), &sk->__sk_common.skc_v6_rcv_saddr);
	} else {
		return 0;
	}
	r->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	/* A 4-bit bitfield in older kernels (6.1), a u8 in newer ones
	 * (6.18): the probed bitfield read is relocated for either. */
	r->userlocks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	r->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	r->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	r->inode = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	r->uid = uid;
	r->source = source;
	return 1;
}

SEC("iter/tcp")
int bg_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct bg_sock r = {};
	unsigned char state;

	if (!skc)
		return 0;
	/* Time-wait and request sockets are not full sockets: they have no
	 * cgroup, owner or userlocks, and no bind program ran for them. */
	state = BPF_CORE_READ(skc, skc_state);
	if (state == BG_TCP_TIME_WAIT || state == BG_TCP_NEW_SYN_RECV)
		return 0;
	if (!fill(&r, (struct sock *)skc, ctx->uid, 1))
		return 0;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/udp")
int bg_iter_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct bg_sock r = {};

	if (!sk)
		return 0;
	if (!fill(&r, sk, ctx->uid, 2))
		return 0;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/task_file")
int bg_iter_bound(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct socket *sock;
	struct sock *sk;
	struct bg_sock r = {};

	if (!file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != BG_IPPROTO_TCP ||
	    BPF_CORE_READ(sk, __sk_common.skc_state) != BG_TCP_CLOSE ||
	    BPF_CORE_READ(sk, __sk_common.skc_num) == 0)
		return 0;
	/* The owner uid as sock_i_uid gives it. */
	if (!fill(&r, sk, BPF_CORE_READ(sk, sk_uid.val), 3))
		return 0;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
