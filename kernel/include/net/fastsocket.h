/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Fastsocket: hooks the TCP stack calls, and the state they share with
 * fastsocket.ko. The hooks are built in (net/fastsocket/hooks.c) and sit
 * behind static keys that only the module turns on, so a kernel without
 * the module loaded runs the stock code paths.
 */
#ifndef _NET_FASTSOCKET_H
#define _NET_FASTSOCKET_H

#include <linux/jump_label.h>
#include <linux/percpu.h>
#include <linux/refcount.h>
#include <linux/sockptr.h>
#include <linux/spinlock.h>
#include <net/inet_connection_sock.h>
#include <uapi/linux/fastsocket.h>

struct net;
struct sk_buff;
struct sock;
struct proto_accept_arg;

/* What inet_csk(sk)->icsk_fastsocket points to: a group or a local. */
struct fastsocket_sk {
	bool	local;
};

/* An enabled listening socket and its per-CPU local listeners. */
struct fastsocket_group {
	struct fastsocket_sk	hdr;
	refcount_t		refcnt;		/* the global's, one per local */
	struct sock		*global;	/* holds a reference */
	struct list_head	node;		/* fastsocket_groups */
	spinlock_t		lock;		/* local[] updates */
	struct rcu_head		rcu;
	struct sock __rcu	*local[];	/* nr_cpu_ids */
};

/* A local listener: what it serves, and its sk_destruct to restore. */
struct fastsocket_local_sk {
	struct fastsocket_sk	hdr;
	struct fastsocket_group	*group;		/* holds a group reference */
	void			(*orig_destruct)(struct sock *sk);
	int			cpu;
};

struct fastsocket_stats {
	u64	listen_local;	/* listener lookups answered by a local */
	u64	listen_global;	/* enabled listener, no local on this CPU */
	u64	accept_local;	/* accept() on a global served by its local */
	u64	accept_empty;	/* non-blocking accept() found both empty */
	u64	spawned;	/* local listeners created */
	u64	migrated;	/* queued connections moved to the global */
	u64	port_scan;	/* port searches narrowed to this CPU's ports */
	u64	port_fallback;	/* ... that found none free and widened */
	u64	rx_active;	/* packets steered to their port's CPU */
	u64	rx_passive;	/* TCP packets left to RPS */
};

/* rfd_ports: which sockets get a CPU-encoded local port. */
enum {
	FASTSOCKET_RFD_OFF,
	FASTSOCKET_RFD_SOCKET,	/* those with TCP_FASTSOCKET_RFD set */
	FASTSOCKET_RFD_ALL,	/* every TCP socket */
};

/*
 * A local port search (__inet_hash_connect(), inet_csk_find_open_port())
 * narrowed to the calling CPU's ports, and the stock search to fall back
 * to once those are all taken.
 */
struct fastsocket_scan {
	bool	narrowed;
	int	step;
	u32	offset;
	u32	remaining;
};

/*
 * Socket options the module implements (registered at load). They are
 * called under SRCU and may sleep; fastsocket_unregister() waits for them.
 */
struct fastsocket_sockopt_ops {
	int (*setsockopt)(struct sock *sk, int optname, sockptr_t optval,
			  unsigned int optlen);
	int (*getsockopt)(struct sock *sk, int optname, sockptr_t optval,
			  sockptr_t optlen);
};

#if IS_ENABLED(CONFIG_FASTSOCKET)
DECLARE_STATIC_KEY_FALSE(fastsocket_listen_key);
DECLARE_STATIC_KEY_FALSE(fastsocket_port_key);
DECLARE_STATIC_KEY_FALSE(fastsocket_steer_key);
DECLARE_STATIC_KEY_FALSE(fastsocket_ehash_key);
DECLARE_STATIC_KEY_FALSE(fastsocket_ehash_mixed_key);
extern int fastsocket_rfd_ports;
extern bool fastsocket_steer_everywhere;
DECLARE_PER_CPU(struct fastsocket_stats, fastsocket_stats);
extern struct list_head fastsocket_groups;
extern spinlock_t fastsocket_groups_lock;

struct sock *__fastsocket_listen_redirect(struct sock *sk);
bool __fastsocket_accept(struct sock *sk, struct proto_accept_arg *arg,
			 struct sock **newsk);
struct sock *__fastsocket_migrate_target(struct sock *sk);
void fastsocket_listen_stop(struct sock *sk);
void __fastsocket_clone(struct sock *newsk, const struct sock *sk);
int fastsocket_setsockopt(struct sock *sk, int optname, sockptr_t optval,
			  unsigned int optlen);
int fastsocket_getsockopt(struct sock *sk, int optname, sockptr_t optval,
			  sockptr_t optlen);
bool __fastsocket_port_scan(const struct sock *sk, int low, int high,
			    u32 *offset, u32 *remaining, int *step);
void fastsocket_port_fallback(void);
int __fastsocket_rx_cpu(const struct sk_buff *skb);
void fastsocket_net_rfd_used(struct net *net);
void fastsocket_net_rfd_reset(void);
u32 __fastsocket_ehash(const struct net *net, u32 hash, u16 lport,
		       __be16 fport);

int fastsocket_register(const struct fastsocket_sockopt_ops *ops);
void fastsocket_unregister(const struct fastsocket_sockopt_ops *ops);
int fastsocket_group_enable(struct sock *g);
void fastsocket_group_disable(struct sock *g);
int fastsocket_spawn(struct sock *g, struct sock *l, int cpu);
void fastsocket_shutdown_local(struct sock *l);

static inline bool fastsocket_optname(int optname)
{
	return optname >= TCP_FASTSOCKET_LISTEN &&
	       optname <= TCP_FASTSOCKET_RFD_TASK;
}

/*
 * Before a local port search over [low, high): narrow it to this CPU's
 * ports when the socket uses RFD, remembering the stock search in @scan.
 */
static inline void fastsocket_port_scan(const struct sock *sk, int low,
					int high, u32 *offset, u32 *remaining,
					int *step, struct fastsocket_scan *scan)
{
	scan->narrowed = false;
	if (static_branch_unlikely(&fastsocket_port_key)) {
		scan->offset = *offset;
		scan->remaining = *remaining;
		scan->step = *step;
		scan->narrowed = __fastsocket_port_scan(sk, low, high, offset,
							remaining, step);
	}
}

/*
 * After a narrowed search found nothing: restore the stock search and
 * return true, so the caller runs it; false after a stock search.
 */
static inline bool fastsocket_port_rescan(struct fastsocket_scan *scan,
					  u32 *offset, u32 *remaining,
					  int *step)
{
	if (likely(!scan->narrowed))
		return false;
	scan->narrowed = false;
	*offset = scan->offset;
	*remaining = scan->remaining;
	*step = scan->step;
	fastsocket_port_fallback();
	return true;
}

/*
 * The established-table hash of a connection being inserted: stock, or,
 * with the per-CPU partition on, moved into the partition of the CPU its
 * local port names (active connections only).
 */
static inline u32 fastsocket_ehash_insert(const struct net *net, u32 hash,
					  u16 lport, __be16 fport)
{
	if (static_branch_unlikely(&fastsocket_ehash_key))
		return __fastsocket_ehash(net, hash, lport, fport);
	return hash;
}

/*
 * The hash an established lookup tries first, and in *alt the one it
 * tries next (equal when there is none): once the partition has been on,
 * sockets hashed either way may be in the table.
 */
static inline u32 fastsocket_ehash(const struct net *net, u32 hash,
				   u16 lport, __be16 fport, u32 *alt)
{
	u32 part;

	*alt = hash;
	if (!static_branch_unlikely(&fastsocket_ehash_mixed_key))
		return hash;
	part = __fastsocket_ehash(net, hash, lport, fport);
	if (static_branch_unlikely(&fastsocket_ehash_key))
		return part;
	*alt = part;
	return hash;
}

/* After a lookup missed: switch to the other hash once. */
static inline bool fastsocket_ehash_retry(u32 *hash, u32 *alt)
{
	if (likely(*alt == *hash))
		return false;
	*hash = *alt;
	return true;
}

/* Receive steering: the CPU for an active connection's packet, or -1. */
static inline int fastsocket_rx_cpu(const struct sk_buff *skb)
{
	if (static_branch_unlikely(&fastsocket_steer_key))
		return __fastsocket_rx_cpu(skb);
	return -1;
}

/* After a listener lookup: this CPU's local listener of the result, if any. */
static inline struct sock *fastsocket_listen_redirect(struct sock *sk)
{
	if (static_branch_unlikely(&fastsocket_listen_key) && sk &&
	    rcu_access_pointer(inet_csk(sk)->icsk_fastsocket))
		return __fastsocket_listen_redirect(sk);
	return sk;
}

/* In accept(): true when fastsocket answered (*newsk, arg->err set). */
static inline bool fastsocket_accept(struct sock *sk,
				     struct proto_accept_arg *arg,
				     struct sock **newsk)
{
	if (static_branch_unlikely(&fastsocket_listen_key) &&
	    rcu_access_pointer(inet_csk(sk)->icsk_fastsocket))
		return __fastsocket_accept(sk, arg, newsk);
	return false;
}

/* A child inherits nothing fastsocket from its listener. */
static inline void fastsocket_clone(struct sock *newsk, const struct sock *sk)
{
	if (unlikely(rcu_access_pointer(inet_csk(sk)->icsk_fastsocket)))
		__fastsocket_clone(newsk, sk);
}

/*
 * A closed local listener's queue goes to its global (returned with a
 * reference). Not behind the key: a local listener left over after the
 * module is unloaded still hands its half-open requests back.
 */
static inline struct sock *fastsocket_migrate_target(struct sock *sk)
{
	if (unlikely(rcu_access_pointer(inet_csk(sk)->icsk_fastsocket)))
		return __fastsocket_migrate_target(sk);
	return NULL;
}
#else
static inline bool fastsocket_optname(int optname) { return false; }
static inline void fastsocket_port_scan(const struct sock *sk, int low,
					int high, u32 *offset, u32 *remaining,
					int *step, struct fastsocket_scan *scan)
{
	scan->narrowed = false;
}

static inline bool fastsocket_port_rescan(struct fastsocket_scan *scan,
					  u32 *offset, u32 *remaining,
					  int *step)
{
	return false;
}

static inline int fastsocket_rx_cpu(const struct sk_buff *skb)
{
	return -1;
}

static inline u32 fastsocket_ehash_insert(const struct net *net, u32 hash,
					  u16 lport, __be16 fport)
{
	return hash;
}

static inline u32 fastsocket_ehash(const struct net *net, u32 hash,
				   u16 lport, __be16 fport, u32 *alt)
{
	*alt = hash;
	return hash;
}

static inline bool fastsocket_ehash_retry(u32 *hash, u32 *alt)
{
	return false;
}

static inline struct sock *fastsocket_listen_redirect(struct sock *sk)
{
	return sk;
}

static inline bool fastsocket_accept(struct sock *sk,
				     struct proto_accept_arg *arg,
				     struct sock **newsk)
{
	return false;
}

static inline struct sock *fastsocket_migrate_target(struct sock *sk)
{
	return NULL;
}

static inline void fastsocket_listen_stop(struct sock *sk) {}
static inline void fastsocket_clone(struct sock *newsk,
				    const struct sock *sk) {}
static inline int fastsocket_setsockopt(struct sock *sk, int optname,
					sockptr_t optval, unsigned int optlen)
{
	return -ENOPROTOOPT;
}

static inline int fastsocket_getsockopt(struct sock *sk, int optname,
					sockptr_t optval, sockptr_t optlen)
{
	return -ENOPROTOOPT;
}
#endif

#endif /* _NET_FASTSOCKET_H */
