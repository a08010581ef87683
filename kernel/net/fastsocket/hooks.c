// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fastsocket hooks: the built-in half of per-CPU local listeners.
 *
 * A listening socket G that is enabled gets a group: an array of local
 * listeners, one per CPU, reached from inet_csk(G)->icsk_fastsocket. A
 * local listener L is an ordinary TCP socket of the worker's that listens
 * on G's port without being in the listening hash. The listener lookup
 * stays stock; when it returns G, the CPU doing the lookup swaps in its
 * L, so the request socket, the child and the accept queue are all L's
 * and never touch G's cache lines. When L stops listening its queued
 * children and its half-open requests migrate to G through the reuseport
 * migration path.
 *
 * Receive Flow Deliver (the end of this file): a socket that asks for it
 * gets a local port whose low bits name the CPU it connected on, and the
 * receive path sends an active connection's packets to the CPU its port
 * names, ahead of RPS.
 *
 * Everything here is reached only through static keys that fastsocket.ko
 * enables, or from the module itself; unloading it disables every group
 * first, so the stock paths are all that remain.
 */

#define pr_fmt(fmt) "fastsocket: " fmt

#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <net/fastsocket.h>
#include <net/inet_connection_sock.h>
#include <net/inet_hashtables.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/netns/generic.h>
#include <net/request_sock.h>
#include <net/sock.h>
#include <net/tcp.h>

DEFINE_STATIC_KEY_FALSE(fastsocket_listen_key);
EXPORT_SYMBOL_GPL(fastsocket_listen_key);

DEFINE_PER_CPU(struct fastsocket_stats, fastsocket_stats);
EXPORT_PER_CPU_SYMBOL_GPL(fastsocket_stats);

LIST_HEAD(fastsocket_groups);
EXPORT_SYMBOL_GPL(fastsocket_groups);
DEFINE_SPINLOCK(fastsocket_groups_lock);
EXPORT_SYMBOL_GPL(fastsocket_groups_lock);

static const struct fastsocket_sockopt_ops __rcu *fastsocket_ops;
static DEFINE_MUTEX(fastsocket_ops_mutex);
DEFINE_STATIC_SRCU(fastsocket_ops_srcu);

#define fs_stat_inc(field) this_cpu_inc(fastsocket_stats.field)

static struct fastsocket_sk *fs_sk(const struct sock *sk)
{
	return rcu_dereference_check(inet_csk(sk)->icsk_fastsocket,
				     lockdep_sock_is_held(sk));
}

static struct fastsocket_group *fs_group_of(const struct sock *sk)
{
	struct fastsocket_sk *fs = fs_sk(sk);

	return fs && !fs->local ?
		container_of(fs, struct fastsocket_group, hdr) : NULL;
}

static struct fastsocket_local_sk *fs_local_of(const struct sock *sk)
{
	struct fastsocket_sk *fs = fs_sk(sk);

	return fs && fs->local ?
		container_of(fs, struct fastsocket_local_sk, hdr) : NULL;
}

/* -- hot paths --------------------------------------------------------- */

struct sock *__fastsocket_listen_redirect(struct sock *sk)
{
	struct fastsocket_group *group;
	struct sock *local;

	if (sk->sk_protocol != IPPROTO_TCP ||
	    READ_ONCE(sk->sk_state) != TCP_LISTEN)
		return sk;
	group = fs_group_of(sk);
	if (!group)
		return sk;
	local = rcu_dereference(group->local[raw_smp_processor_id()]);
	if (local && READ_ONCE(local->sk_state) == TCP_LISTEN) {
		fs_stat_inc(listen_local);
		return local;
	}
	fs_stat_inc(listen_global);
	return sk;
}
EXPORT_SYMBOL_GPL(__fastsocket_listen_redirect);

bool __fastsocket_accept(struct sock *sk, struct proto_accept_arg *arg,
			 struct sock **newsk)
{
	struct request_sock_queue *queue = &inet_csk(sk)->icsk_accept_queue;
	struct fastsocket_group *group;
	struct sock *local = NULL;

	if (sk->sk_protocol != IPPROTO_TCP)
		return false;
	rcu_read_lock();
	group = fs_group_of(sk);
	if (!group) {
		rcu_read_unlock();
		return false;
	}
	local = rcu_dereference(group->local[raw_smp_processor_id()]);
	if (local &&
	    (reqsk_queue_empty(&inet_csk(local)->icsk_accept_queue) ||
	     !refcount_inc_not_zero(&local->sk_refcnt)))
		local = NULL;
	rcu_read_unlock();

	if (local) {
		struct proto_accept_arg larg = {
			.flags = arg->flags | O_NONBLOCK,
			.kern = arg->kern,
		};
		struct sock *child = inet_csk_accept(local, &larg);

		sock_put(local);
		if (child) {
			fs_stat_inc(accept_local);
			arg->is_empty = reqsk_queue_empty(queue);
			*newsk = child;
			return true;
		}
	}
	/* An empty global queue is seen without taking the listener lock. */
	if ((arg->flags & O_NONBLOCK) && reqsk_queue_empty(queue) &&
	    READ_ONCE(sk->sk_state) == TCP_LISTEN) {
		fs_stat_inc(accept_empty);
		arg->err = -EAGAIN;
		*newsk = NULL;
		return true;
	}
	return false;
}
EXPORT_SYMBOL_GPL(__fastsocket_accept);

struct sock *__fastsocket_migrate_target(struct sock *sk)
{
	struct fastsocket_local_sk *fl;
	struct sock *global = NULL;

	rcu_read_lock();
	fl = fs_local_of(sk);
	if (fl) {
		global = fl->group->global;
		if (READ_ONCE(global->sk_state) != TCP_LISTEN ||
		    !refcount_inc_not_zero(&global->sk_refcnt))
			global = NULL;
	}
	rcu_read_unlock();
	if (global)
		fs_stat_inc(migrated);
	return global;
}
EXPORT_SYMBOL_GPL(__fastsocket_migrate_target);

/* -- lifetimes ---------------------------------------------------------- */

static void fs_group_free_rcu(struct rcu_head *head)
{
	struct fastsocket_group *group =
		container_of(head, struct fastsocket_group, rcu);

	sock_put(group->global);
	kfree(group);
}

static void fs_group_put(struct fastsocket_group *group)
{
	if (refcount_dec_and_test(&group->refcnt))
		call_rcu(&group->rcu, fs_group_free_rcu);
}

/* sk_destruct of a local listener: restore, then drop the group. */
static void fastsocket_local_destruct(struct sock *sk)
{
	struct fastsocket_local_sk *fl =
		container_of(rcu_dereference_protected(inet_csk(sk)->icsk_fastsocket, 1),
			     struct fastsocket_local_sk, hdr);

	RCU_INIT_POINTER(inet_csk(sk)->icsk_fastsocket, NULL);
	sk->sk_destruct = fl->orig_destruct;
	if (sk->sk_destruct)
		sk->sk_destruct(sk);
	fs_group_put(fl->group);
	kfree(fl);
}

/*
 * A child is a copy of its listener: it must not look like a group or a
 * local, and a local's child gets the listener's original destructor.
 */
void __fastsocket_clone(struct sock *newsk, const struct sock *sk)
{
	struct fastsocket_sk *fs = rcu_dereference_protected(inet_csk(sk)->icsk_fastsocket, 1);

	if (fs->local)
		newsk->sk_destruct =
			container_of(fs, struct fastsocket_local_sk, hdr)->orig_destruct;
	RCU_INIT_POINTER(inet_csk(newsk)->icsk_fastsocket, NULL);
}
EXPORT_SYMBOL_GPL(__fastsocket_clone);

/* Detach a group from its global listener; its locals stay as they are. */
static void fs_group_detach(struct fastsocket_group *group)
{
	struct sock *g = group->global;
	bool listed;

	spin_lock_bh(&fastsocket_groups_lock);
	listed = !list_empty(&group->node);
	list_del_init(&group->node);
	spin_unlock_bh(&fastsocket_groups_lock);
	if (!listed)
		return;
	RCU_INIT_POINTER(inet_csk(g)->icsk_fastsocket, NULL);
	fs_group_put(group);
}

/* Called from inet_csk_listen_stop() for every listener. */
void fastsocket_listen_stop(struct sock *sk)
{
	struct fastsocket_sk *fs;

	fs = rcu_dereference_protected(inet_csk(sk)->icsk_fastsocket,
				       lockdep_sock_is_held(sk));
	if (!fs)
		return;
	if (fs->local) {
		struct fastsocket_local_sk *fl =
			container_of(fs, struct fastsocket_local_sk, hdr);
		struct fastsocket_group *group = fl->group;

		/* No new requests for this local; migration still finds G. */
		spin_lock_bh(&group->lock);
		if (rcu_access_pointer(group->local[fl->cpu]) == sk)
			RCU_INIT_POINTER(group->local[fl->cpu], NULL);
		spin_unlock_bh(&group->lock);
	} else {
		fs_group_detach(container_of(fs, struct fastsocket_group, hdr));
	}
}
EXPORT_SYMBOL_GPL(fastsocket_listen_stop);

/* -- control (called by the module, in process context) ------------------ */

int fastsocket_group_enable(struct sock *g)
{
	struct fastsocket_group *group;

	lock_sock(g);
	if (g->sk_protocol != IPPROTO_TCP || g->sk_state != TCP_LISTEN) {
		release_sock(g);
		return -EINVAL;
	}
	if (rcu_access_pointer(inet_csk(g)->icsk_fastsocket)) {
		release_sock(g);
		return fs_group_of(g) ? 0 : -EINVAL;	/* a local cannot be a global */
	}
	group = kzalloc(struct_size(group, local, nr_cpu_ids), GFP_KERNEL);
	if (!group) {
		release_sock(g);
		return -ENOMEM;
	}
	refcount_set(&group->refcnt, 1);
	spin_lock_init(&group->lock);
	sock_hold(g);
	group->global = g;
	spin_lock_bh(&fastsocket_groups_lock);
	list_add(&group->node, &fastsocket_groups);
	spin_unlock_bh(&fastsocket_groups_lock);
	rcu_assign_pointer(inet_csk(g)->icsk_fastsocket, &group->hdr);
	release_sock(g);
	return 0;
}
EXPORT_SYMBOL_GPL(fastsocket_group_enable);

/* Shut a local listener down: its queue migrates to the global. */
void fastsocket_shutdown_local(struct sock *l)
{
	lock_sock(l);
	if (l->sk_state == TCP_LISTEN) {
		WRITE_ONCE(l->sk_shutdown, l->sk_shutdown | RCV_SHUTDOWN);
		l->sk_prot->disconnect(l, O_NONBLOCK);
		l->sk_state_change(l);
	}
	release_sock(l);
}
EXPORT_SYMBOL_GPL(fastsocket_shutdown_local);

/* Disable g: shut its locals down (their queues go to g), then detach. */
void fastsocket_group_disable(struct sock *g)
{
	struct fastsocket_group *group;
	unsigned int cpu;

	rcu_read_lock();
	group = fs_group_of(g);
	if (group)
		refcount_inc(&group->refcnt);
	rcu_read_unlock();
	if (!group)
		return;
	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		struct sock *l;

		rcu_read_lock();
		l = rcu_dereference(group->local[cpu]);
		if (l && !refcount_inc_not_zero(&l->sk_refcnt))
			l = NULL;
		rcu_read_unlock();
		if (l) {
			fastsocket_shutdown_local(l);
			sock_put(l);
		}
	}
	fs_group_detach(group);
	fs_group_put(group);
}
EXPORT_SYMBOL_GPL(fastsocket_group_disable);

/* The options a local listener takes from its global; children inherit them. */
static void fs_copy_options(struct sock *l, const struct sock *g)
{
	const unsigned long flags_mask =
		BIT(SOCK_KEEPOPEN) | BIT(SOCK_LINGER) | BIT(SOCK_URGINLINE) |
		BIT(SOCK_DBG) | BIT(SOCK_RCVTSTAMP) | BIT(SOCK_RCVTSTAMPNS) |
		BIT(SOCK_LOCALROUTE) | BIT(SOCK_RXQ_OVFL) |
		BIT(SOCK_SELECT_ERR_QUEUE) | BIT(SOCK_TSTAMP_NEW) |
		BIT(SOCK_RCVMARK);
	const struct inet_connection_sock *gicsk = inet_csk(g);
	struct inet_connection_sock *licsk = inet_csk(l);
	const struct tcp_sock *gtp = tcp_sk(g);
	struct tcp_sock *ltp = tcp_sk(l);

	l->sk_flags = (l->sk_flags & ~flags_mask) | (g->sk_flags & flags_mask);
	l->sk_reuse = g->sk_reuse;
	l->sk_reuseport = g->sk_reuseport;
	l->sk_uid = g->sk_uid;
	l->sk_userlocks = g->sk_userlocks;
	WRITE_ONCE(l->sk_rcvbuf, READ_ONCE(g->sk_rcvbuf));
	WRITE_ONCE(l->sk_sndbuf, READ_ONCE(g->sk_sndbuf));
	WRITE_ONCE(l->sk_rcvlowat, READ_ONCE(g->sk_rcvlowat));
	WRITE_ONCE(l->sk_rcvtimeo, READ_ONCE(g->sk_rcvtimeo));
	WRITE_ONCE(l->sk_sndtimeo, READ_ONCE(g->sk_sndtimeo));
	WRITE_ONCE(l->sk_lingertime, READ_ONCE(g->sk_lingertime));
	WRITE_ONCE(l->sk_priority, READ_ONCE(g->sk_priority));
	WRITE_ONCE(l->sk_mark, READ_ONCE(g->sk_mark));
	WRITE_ONCE(l->sk_max_pacing_rate, READ_ONCE(g->sk_max_pacing_rate));
	l->sk_bound_dev_if = g->sk_bound_dev_if;
	l->sk_txrehash = g->sk_txrehash;

	inet_sk(l)->inet_flags = inet_sk(g)->inet_flags;
	WRITE_ONCE(inet_sk(l)->tos, READ_ONCE(inet_sk(g)->tos));
	WRITE_ONCE(inet_sk(l)->uc_ttl, READ_ONCE(inet_sk(g)->uc_ttl));
	inet_sk(l)->pmtudisc = inet_sk(g)->pmtudisc;

	ltp->nonagle = gtp->nonagle;
	ltp->thin_lto = gtp->thin_lto;
	ltp->recvmsg_inq = gtp->recvmsg_inq;
	ltp->save_syn = gtp->save_syn;
	WRITE_ONCE(ltp->tcp_tx_delay, READ_ONCE(gtp->tcp_tx_delay));
	ltp->rx_opt.user_mss = gtp->rx_opt.user_mss;
	WRITE_ONCE(ltp->keepalive_time, READ_ONCE(gtp->keepalive_time));
	WRITE_ONCE(ltp->keepalive_intvl, READ_ONCE(gtp->keepalive_intvl));
	WRITE_ONCE(ltp->keepalive_probes, READ_ONCE(gtp->keepalive_probes));
	WRITE_ONCE(ltp->linger2, READ_ONCE(gtp->linger2));
	ltp->window_clamp = gtp->window_clamp;
	WRITE_ONCE(ltp->notsent_lowat, READ_ONCE(gtp->notsent_lowat));
	WRITE_ONCE(licsk->icsk_user_timeout, READ_ONCE(gicsk->icsk_user_timeout));
	WRITE_ONCE(licsk->icsk_syn_retries, READ_ONCE(gicsk->icsk_syn_retries));
	WRITE_ONCE(licsk->icsk_accept_queue.rskq_defer_accept,
		   READ_ONCE(gicsk->icsk_accept_queue.rskq_defer_accept));
	if (gicsk->icsk_ca_setsockopt && gicsk->icsk_ca_ops)
		tcp_set_congestion_control(l, gicsk->icsk_ca_ops->name, false, true);
#if IS_ENABLED(CONFIG_IPV6)
	if (g->sk_family == AF_INET6) {
		l->sk_ipv6only = g->sk_ipv6only;
		l->sk_v6_rcv_saddr = g->sk_v6_rcv_saddr;
	}
#endif
	l->sk_rcv_saddr = g->sk_rcv_saddr;
	inet_sk(l)->inet_saddr = inet_sk(g)->inet_saddr;
}

/* Share g's bind bucket: l becomes one more owner of g's address and port. */
static int fs_bind_like(struct sock *l, struct sock *g)
{
	struct inet_hashinfo *hinfo = tcp_or_dccp_get_hashinfo(g);
	unsigned short port = inet_sk(g)->inet_num;
	struct inet_bind_hashbucket *head, *head2;
	struct net *net = sock_net(g);
	int err = 0;

	head = &hinfo->bhash[inet_bhashfn(net, port, hinfo->bhash_size)];
	head2 = inet_bhashfn_portaddr(hinfo, g, net, port);
	spin_lock_bh(&head->lock);
	spin_lock(&head2->lock);
	if (inet_csk(g)->icsk_bind_hash && inet_csk(g)->icsk_bind2_hash)
		inet_bind_hash(l, inet_csk(g)->icsk_bind_hash,
			       inet_csk(g)->icsk_bind2_hash, port);
	else
		err = -EINVAL;
	spin_unlock(&head2->lock);
	spin_unlock_bh(&head->lock);
	return err;
}

/* Make the fresh socket l the local listener of enabled listener g for cpu. */
int fastsocket_spawn(struct sock *g, struct sock *l, int cpu)
{
	struct fastsocket_local_sk *fl;
	struct fastsocket_group *group;
	int err, tfo_qlen;

	if (cpu < 0 || cpu >= nr_cpu_ids || !cpu_online(cpu))
		return -EINVAL;
	if (l->sk_protocol != IPPROTO_TCP || l->sk_type != SOCK_STREAM)
		return -EINVAL;
	if (l->sk_family != g->sk_family)
		return -EAFNOSUPPORT;
	if (!net_eq(sock_net(l), sock_net(g)))
		return -EXDEV;
	fl = kzalloc(sizeof(*fl), GFP_KERNEL);
	if (!fl)
		return -ENOMEM;

	lock_sock(g);
	lock_sock_nested(l, SINGLE_DEPTH_NESTING);
	err = -EINVAL;
	group = fs_group_of(g);
	if (!group || g->sk_state != TCP_LISTEN)
		goto out;
	if (l->sk_state != TCP_CLOSE || inet_sk(l)->inet_num ||
	    rcu_access_pointer(inet_csk(l)->icsk_fastsocket) ||
	    inet_csk(l)->icsk_ulp_ops)
		goto out;
	err = -EBUSY;
	if (rcu_access_pointer(group->local[cpu]))
		goto out;

	fs_copy_options(l, g);
	err = fs_bind_like(l, g);
	if (err)
		goto out;
	reqsk_queue_alloc(&inet_csk(l)->icsk_accept_queue);
	tfo_qlen = READ_ONCE(inet_csk(g)->icsk_accept_queue.fastopenq.max_qlen);
	fastopen_queue_tune(l, tfo_qlen);	/* TCP_FASTOPEN */
	l->sk_ack_backlog = 0;
	WRITE_ONCE(l->sk_max_ack_backlog, READ_ONCE(g->sk_max_ack_backlog));
	inet_csk_delack_init(l);
	/* TCP_QUICKACK 0 on g (HAProxy's HTTP listeners): children delay their ACKs. */
	inet_csk(l)->icsk_ack.pingpong = inet_csk(g)->icsk_ack.pingpong;
	inet_sk(l)->inet_sport = htons(inet_sk(l)->inet_num);
	sk_dst_reset(l);
	sock_set_flag(l, SOCK_RCU_FREE);

	fl->hdr.local = true;
	fl->cpu = cpu;
	fl->group = group;
	refcount_inc(&group->refcnt);
	fl->orig_destruct = l->sk_destruct;
	l->sk_destruct = fastsocket_local_destruct;
	rcu_assign_pointer(inet_csk(l)->icsk_fastsocket, &fl->hdr);
	inet_sk_state_store(l, TCP_LISTEN);

	/* Slots are filled under g's lock (held), cleared under group->lock. */
	spin_lock_bh(&group->lock);
	rcu_assign_pointer(group->local[cpu], l);
	spin_unlock_bh(&group->lock);
	fs_stat_inc(spawned);
	fl = NULL;
	err = 0;
out:
	release_sock(l);
	release_sock(g);
	kfree(fl);
	return err;
}
EXPORT_SYMBOL_GPL(fastsocket_spawn);

/* -- socket options, forwarded to the module ----------------------------- */

int fastsocket_register(const struct fastsocket_sockopt_ops *ops)
{
	int err = 0;

	mutex_lock(&fastsocket_ops_mutex);
	if (rcu_access_pointer(fastsocket_ops))
		err = -EBUSY;
	else
		rcu_assign_pointer(fastsocket_ops, ops);
	mutex_unlock(&fastsocket_ops_mutex);
	return err;
}
EXPORT_SYMBOL_GPL(fastsocket_register);

void fastsocket_unregister(const struct fastsocket_sockopt_ops *ops)
{
	mutex_lock(&fastsocket_ops_mutex);
	if (rcu_access_pointer(fastsocket_ops) == ops)
		RCU_INIT_POINTER(fastsocket_ops, NULL);
	mutex_unlock(&fastsocket_ops_mutex);
	synchronize_srcu(&fastsocket_ops_srcu);
}
EXPORT_SYMBOL_GPL(fastsocket_unregister);

/*
 * The module's socket options run inside an SRCU read section rather than
 * holding a module reference: the reference count is one atomic shared by
 * every CPU, RFD sets an option on every connect(), and an option call in
 * flight would make rmmod fail with EWOULDBLOCK. The handlers may sleep;
 * the module's exit waits for them in fastsocket_unregister().
 */
int fastsocket_setsockopt(struct sock *sk, int optname, sockptr_t optval,
			  unsigned int optlen)
{
	const struct fastsocket_sockopt_ops *ops;
	int idx, err = -ENOPROTOOPT;

	idx = srcu_read_lock(&fastsocket_ops_srcu);
	ops = srcu_dereference(fastsocket_ops, &fastsocket_ops_srcu);
	if (ops)
		err = ops->setsockopt(sk, optname, optval, optlen);
	srcu_read_unlock(&fastsocket_ops_srcu, idx);
	return err;
}
EXPORT_SYMBOL_GPL(fastsocket_setsockopt);

int fastsocket_getsockopt(struct sock *sk, int optname, sockptr_t optval,
			  sockptr_t optlen)
{
	const struct fastsocket_sockopt_ops *ops;
	int idx, err = -ENOPROTOOPT;

	idx = srcu_read_lock(&fastsocket_ops_srcu);
	ops = srcu_dereference(fastsocket_ops, &fastsocket_ops_srcu);
	if (ops)
		err = ops->getsockopt(sk, optname, optval, optlen);
	srcu_read_unlock(&fastsocket_ops_srcu, idx);
	return err;
}
EXPORT_SYMBOL_GPL(fastsocket_getsockopt);

/* -- Receive Flow Deliver ---------------------------------------------- */

DEFINE_STATIC_KEY_FALSE(fastsocket_port_key);
EXPORT_SYMBOL_GPL(fastsocket_port_key);
DEFINE_STATIC_KEY_FALSE(fastsocket_steer_key);
EXPORT_SYMBOL_GPL(fastsocket_steer_key);
DEFINE_STATIC_KEY_FALSE(fastsocket_ehash_key);
EXPORT_SYMBOL_GPL(fastsocket_ehash_key);
/* Never turned off: sockets hashed into a partition may outlive it. */
DEFINE_STATIC_KEY_FALSE(fastsocket_ehash_mixed_key);
EXPORT_SYMBOL_GPL(fastsocket_ehash_mixed_key);

int fastsocket_rfd_ports __read_mostly = FASTSOCKET_RFD_SOCKET;
EXPORT_SYMBOL_GPL(fastsocket_rfd_ports);

/*
 * A local port's low bits name its CPU: this many of them. nr_cpu_ids is
 * final before the initcalls run; fastsocket_hooks_init() fills this in.
 */
static unsigned int fs_mask __read_mostly;

static unsigned int fs_cpu_mask(void)
{
	return fs_mask;
}

static bool fs_rfd_wanted(const struct sock *sk)
{
	switch (READ_ONCE(fastsocket_rfd_ports)) {
	case FASTSOCKET_RFD_ALL:
		return sk->sk_protocol == IPPROTO_TCP;
	case FASTSOCKET_RFD_SOCKET:
		if (inet_test_bit(FASTSOCKET_RFD, sk))
			return true;
		if (!in_task() || !task_fastsocket_rfd(current) ||
		    sk->sk_protocol != IPPROTO_TCP)
			return false;
		/* The thread may have moved to a namespace that had none yet. */
		fastsocket_net_rfd_used(sock_net(sk));
		return true;
	default:
		return false;
	}
}

/*
 * Narrow a local port search over [low, high) to the ports of the calling
 * CPU c, those with port & mask == c. The callers' loops start at
 * low + *offset, advance by *step and wrap back by *remaining when they
 * reach high; on return these describe a walk over c's ports only that
 * starts at a position taken from the stock *offset, so the stock
 * per-destination perturbation still spreads the choice. Returns false,
 * leaving the search alone, when the socket does not use RFD or c owns
 * no port in the range.
 */
bool __fastsocket_port_scan(const struct sock *sk, int low, int high,
			    u32 *offset, u32 *remaining, int *step)
{
	unsigned int mask = fs_cpu_mask();
	unsigned int cpu, first, n;

	if (!mask || !fs_rfd_wanted(sk))
		return false;
	fs_stat_inc(port_scan);
	cpu = raw_smp_processor_id() & mask;
	first = low + ((cpu - low) & mask);
	if (first >= high) {
		fs_stat_inc(port_fallback);
		return false;
	}
	n = (high - 1 - first) / (mask + 1) + 1;
	/*
	 * Position = stock offset / (mask + 1): after a narrowed search the
	 * caller advances the perturbation by multiples of mask + 1, so this
	 * moves on by as many of c's ports as a stock search moves on. The
	 * stock offset modulo n would, with connect()'s always-even offsets,
	 * reach only every other port of c, and reuse them twice as often.
	 */
	*offset = first - low + (*offset / (mask + 1) % n) * (mask + 1);
	*remaining = n * (mask + 1);
	*step = mask + 1;
	return true;
}
EXPORT_SYMBOL_GPL(__fastsocket_port_scan);

/* Every port of the CPU was taken: the caller searches the whole range. */
void fastsocket_port_fallback(void)
{
	fs_stat_inc(port_fallback);
}
EXPORT_SYMBOL_GPL(fastsocket_port_fallback);

/*
 * Where steering applies. Unless fastsocket_steer_everywhere is set, only
 * packets received in a network namespace where a socket asked for a
 * CPU-encoded port since the module last loaded are steered: the
 * namespaces of processes that do not use RFD (other containers, the
 * clients of a test on the same machine) keep RPS, and pay no
 * classification. A namespace records the load it saw RFD in, so a
 * reload forgets every namespace without walking them.
 */
struct fs_net {
	u32 rfd_epoch;		/* fs_rfd_epoch when a socket here asked for RFD */
};

static unsigned int fs_net_id __read_mostly;
static u32 fs_rfd_epoch __read_mostly = 1;
bool fastsocket_steer_everywhere __read_mostly;
EXPORT_SYMBOL_GPL(fastsocket_steer_everywhere);

static struct pernet_operations fs_net_ops = {
	.id = &fs_net_id,
	.size = sizeof(struct fs_net),
};

static int __init fastsocket_hooks_init(void)
{
	fs_mask = roundup_pow_of_two(nr_cpu_ids) - 1;
	return register_pernet_subsys(&fs_net_ops);
}
subsys_initcall(fastsocket_hooks_init);

/* A socket in @net asked for RFD. */
void fastsocket_net_rfd_used(struct net *net)
{
	struct fs_net *fsn;
	u32 epoch = READ_ONCE(fs_rfd_epoch);

	if (!fs_net_id)
		return;
	fsn = net_generic(net, fs_net_id);
	if (READ_ONCE(fsn->rfd_epoch) != epoch)	/* no store on every connect */
		WRITE_ONCE(fsn->rfd_epoch, epoch);
}
EXPORT_SYMBOL_GPL(fastsocket_net_rfd_used);

/* Forget which namespaces used RFD: the module calls this as it loads. */
void fastsocket_net_rfd_reset(void)
{
	u32 epoch = READ_ONCE(fs_rfd_epoch) + 1;

	WRITE_ONCE(fs_rfd_epoch, epoch ?: 1);	/* 0 is a new namespace's */
}
EXPORT_SYMBOL_GPL(fastsocket_net_rfd_reset);

#ifdef CONFIG_RPS
static bool fs_net_steers(const struct net *net)
{
	const struct fs_net *fsn;

	if (READ_ONCE(fastsocket_steer_everywhere))
		return true;
	if (!fs_net_id)
		return false;
	fsn = net_generic(net, fs_net_id);
	return READ_ONCE(fsn->rfd_epoch) == READ_ONCE(fs_rfd_epoch);
}

/* Is anything listening on TCP @port in the lhash2 buckets @hash names? */
static bool fs_listening_in(const struct net *net, const u32 hash[2],
			    unsigned short port)
{
	struct inet_hashinfo *h = net->ipv4.tcp_death_row.hashinfo;
	const struct hlist_nulls_node *node;
	struct sock *sk;
	int i;

	for (i = 0; i < 2; i++)
		sk_nulls_for_each_rcu(sk, node,
				      &inet_lhash2_bucket(h, hash[i])->nulls_head)
			if (sk->sk_num == port && net_eq(sock_net(sk), net))
				return true;
	return false;
}

/* Is anything listening on TCP @port at @daddr (of @family) or the wildcard? */
static bool fs_listening(const struct net *net, int family, const void *daddr,
			 unsigned short port)
{
	u32 hash[2];

#if IS_ENABLED(CONFIG_IPV6)
	if (family == AF_INET6) {
		hash[0] = ipv6_portaddr_hash(net, daddr, port);
		hash[1] = ipv6_portaddr_hash(net, &in6addr_any, port);
		return fs_listening_in(net, hash, port);
	}
#endif
	hash[0] = ipv4_portaddr_hash(net, *(const __be32 *)daddr, port);
	hash[1] = ipv4_portaddr_hash(net, htonl(INADDR_ANY), port);
	return fs_listening_in(net, hash, port);
}

/*
 * Classify a received TCP packet by its ports, as Fastsocket does: a
 * source port below 1024 is a server answering one of our active
 * connections; a destination port below 1024, outside
 * ip_local_port_range (RFD ports come from it), or one a listener owns,
 * is a passive connection; anything else is active. An active
 * connection's local port names its CPU, so its packets go there
 * (returned); passive ones are left to RSS/RPS (-1).
 */
static __always_inline int fs_rx_cpu_of(const struct net *net, int family,
					const void *daddr,
					const struct tcphdr *th)
{
	unsigned short sport = ntohs(th->source), dport = ntohs(th->dest);
	unsigned int cpu;
	int low, high;

	if (sport >= 1024) {
		inet_get_local_port_range(net, &low, &high);
		if (dport < 1024 || dport < low || dport > high ||
		    fs_listening(net, family, daddr, dport)) {
			fs_stat_inc(rx_passive);
			return -1;
		}
	}
	cpu = dport & fs_cpu_mask();
	if (cpu >= nr_cpu_ids || !cpu_online(cpu))
		return -1;
	fs_stat_inc(rx_active);
	return cpu;
}

/*
 * The headers of a packet whose IP or TCP ports are not in the linear
 * area: copied out. Out of line, so that the common case does not set up
 * (and, with stack auto-initialisation, clear) the buffers.
 */
static noinline int fs_rx_cpu_copied(const struct sk_buff *skb,
				     const struct net *net)
{
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} _ih;
	const struct iphdr *iph;
	const struct ipv6hdr *ip6h;
	const struct tcphdr *th;
	struct tcphdr _th;

	if (skb->protocol == htons(ETH_P_IP)) {
		iph = skb_header_pointer(skb, 0, sizeof(_ih.v4), &_ih.v4);
		if (!iph || iph->version != 4 || iph->ihl < 5 ||
		    iph->protocol != IPPROTO_TCP || ip_is_fragment(iph))
			return -1;
		th = skb_header_pointer(skb, iph->ihl * 4, sizeof(_th), &_th);
		return th ? fs_rx_cpu_of(net, AF_INET, &iph->daddr, th) : -1;
	}
	ip6h = skb_header_pointer(skb, 0, sizeof(_ih.v6), &_ih.v6);
	if (!ip6h || ip6h->version != 6 || ip6h->nexthdr != IPPROTO_TCP)
		return -1;
	th = skb_header_pointer(skb, sizeof(*ip6h), sizeof(_th), &_th);
	return th ? fs_rx_cpu_of(net, AF_INET6, &ip6h->daddr, th) : -1;
}

/*
 * The CPU a received packet goes to, or -1 to leave it to RPS. Loopback
 * packets are left alone: no NIC hash put them on a random CPU, the
 * sender's CPU already has both ends' state, and a local client that did
 * not ask for RFD would see its replies moved; so are the packets of
 * namespaces that do not use RFD (fs_net_steers()). The headers are read
 * in place when the linear area holds them, as it does for most drivers.
 * Called with rcu_read_lock held, before RPS.
 */
int __fastsocket_rx_cpu(const struct sk_buff *skb)
{
	const struct net *net = dev_net(skb->dev);
	unsigned int hlen = skb_headlen(skb);
	const struct ipv6hdr *ip6h;
	const struct iphdr *iph;
	unsigned int thoff;

	if ((skb->dev->flags & IFF_LOOPBACK) || !fs_net_steers(net))
		return -1;
	if (skb->protocol == htons(ETH_P_IP)) {
		iph = (const struct iphdr *)skb->data;
		if (hlen < sizeof(*iph))
			return fs_rx_cpu_copied(skb, net);
		thoff = iph->ihl * 4;
		if (iph->version != 4 || thoff < sizeof(*iph) ||
		    iph->protocol != IPPROTO_TCP || ip_is_fragment(iph))
			return -1;
		/* A whole TCP header, as fs_rx_cpu_copied() asks for */
		if (hlen < thoff + sizeof(struct tcphdr))
			return fs_rx_cpu_copied(skb, net);
		return fs_rx_cpu_of(net, AF_INET, &iph->daddr,
				    (const struct tcphdr *)(skb->data + thoff));
	}
	if (!IS_ENABLED(CONFIG_IPV6) || skb->protocol != htons(ETH_P_IPV6))
		return -1;
	ip6h = (const struct ipv6hdr *)skb->data;
	if (hlen < sizeof(*ip6h) + sizeof(struct tcphdr))
		return fs_rx_cpu_copied(skb, net);
	if (ip6h->version != 6 || ip6h->nexthdr != IPPROTO_TCP)
		return -1;
	return fs_rx_cpu_of(net, AF_INET6, &ip6h->daddr,
			    (const struct tcphdr *)(ip6h + 1));
}
#else
int __fastsocket_rx_cpu(const struct sk_buff *skb)
{
	return -1;
}
#endif
EXPORT_SYMBOL_GPL(__fastsocket_rx_cpu);

/*
 * Per-CPU partition of the established table. An active connection's
 * hash gets the CPU its local port names in bits FS_EHASH_SHIFT and up,
 * so its bucket and its bucket lock are among that CPU's: 16 consecutive
 * buckets (two cache lines of heads) and 16 consecutive locks per CPU per
 * stride, shared with no other CPU's active connections. Passive
 * connections keep the stock hash. A connection is active when its peer
 * port is below 1024, or, unless its own port is below 1024, when its own
 * port lies in ip_local_port_range: the hash must be computable from the
 * 4-tuple alone, on insert and on every lookup.
 */
#define FS_EHASH_SHIFT	4

u32 __fastsocket_ehash(const struct net *net, u32 hash, u16 lport,
		       __be16 fport)
{
	unsigned int mask = fs_cpu_mask();
	int low, high;

	if (ntohs(fport) >= 1024) {
		if (lport < 1024)
			return hash;
		inet_get_local_port_range(net, &low, &high);
		if (lport < low || lport > high)
			return hash;
	}
	return (hash & ~(mask << FS_EHASH_SHIFT)) |
	       ((lport & mask) << FS_EHASH_SHIFT);
}
EXPORT_SYMBOL_GPL(__fastsocket_ehash);
