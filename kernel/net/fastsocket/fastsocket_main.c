// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fastsocket: per-core TCP connection locality, the loadable half.
 *
 * The module owns the policy and the user interface: the listen_spawn,
 * rfd_ports and rfd_steer parameters, the TCP_FASTSOCKET_* socket options
 * (include/uapi/linux/fastsocket.h) and /proc/net/fastsocket. The mechanism lives in the
 * built-in net/fastsocket/hooks.c behind static keys this module turns
 * on. Unloading shuts every local listener down (their queued
 * connections move to the global listeners) before the keys go off.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/file.h>
#include <linux/init.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <net/fastsocket.h>
#include <net/inet_connection_sock.h>
#include <net/net_namespace.h>
#include <net/rps.h>
#include <net/sock.h>

#define FASTSOCKET_VERSION "0.3"

enum {
	FS_SPAWN_OFF,		/* no local listeners; options fail */
	FS_SPAWN_MANUAL,	/* the caller names the CPU, or is pinned */
	FS_SPAWN_AUTO,		/* unpinned callers get the CPU they run on */
};

/* Serialises control operations, mode changes and unload. */
static DEFINE_MUTEX(fs_mutex);
static bool fs_loaded;
static int listen_spawn = FS_SPAWN_MANUAL;
static int rfd_ports = FASTSOCKET_RFD_SOCKET;
enum {
	FS_STEER_OFF,
	FS_STEER_ON,
	FS_STEER_AUTO,		/* on once a socket uses a CPU-encoded port */
};

static int rfd_steer = IS_ENABLED(CONFIG_RPS) ? FS_STEER_AUTO : FS_STEER_OFF;
static bool fs_steering;	/* fs_apply_steer(true) is in effect */
static bool fs_rfd_used;	/* a socket asked for an RFD port since load */
static int ehash_partition;

/* Shut down every group's local listeners and detach the groups. */
static void fs_disable_all(void)
{
	lockdep_assert_held(&fs_mutex);
	for (;;) {
		struct fastsocket_group *group;
		struct sock *g = NULL;

		spin_lock_bh(&fastsocket_groups_lock);
		group = list_first_entry_or_null(&fastsocket_groups,
						 struct fastsocket_group, node);
		if (group) {
			g = group->global;
			sock_hold(g);
		}
		spin_unlock_bh(&fastsocket_groups_lock);
		if (!g)
			break;
		fastsocket_group_disable(g);
		sock_put(g);
	}
}

/* A mode parameter: a whole number in [min, max], else -EINVAL. */
static int fs_parse_mode(const char *val, int min, int max, int *mode)
{
	int err = kstrtoint(val, 10, mode);

	if (err)
		return err;
	return *mode < min || *mode > max ? -EINVAL : 0;
}

static int listen_spawn_set(const char *val, const struct kernel_param *kp)
{
	int mode, err;

	err = fs_parse_mode(val, FS_SPAWN_OFF, FS_SPAWN_AUTO, &mode);
	if (err)
		return err;
	mutex_lock(&fs_mutex);
	if (fs_loaded && mode == FS_SPAWN_OFF && listen_spawn != FS_SPAWN_OFF) {
		fs_disable_all();
		static_branch_disable(&fastsocket_listen_key);
	} else if (fs_loaded && mode != FS_SPAWN_OFF &&
		   listen_spawn == FS_SPAWN_OFF) {
		static_branch_enable(&fastsocket_listen_key);
	}
	WRITE_ONCE(listen_spawn, mode);
	mutex_unlock(&fs_mutex);
	return 0;
}

static const struct kernel_param_ops listen_spawn_ops = {
	.set = listen_spawn_set,
	.get = param_get_int,
};
module_param_cb(listen_spawn, &listen_spawn_ops, &listen_spawn, 0644);
MODULE_PARM_DESC(listen_spawn,
		 "per-CPU local listeners: 0 off, 1 manual (default), 2 automatic");

/*
 * Receive steering runs inside get_rps_cpu(), which the stack calls only
 * while rps_needed is on: hold a reference on it while steering.
 */
static void fs_apply_steer(bool on)
{
	lockdep_assert_held(&fs_mutex);
#ifdef CONFIG_RPS
	if (on) {
		static_branch_inc(&rps_needed);
		static_branch_enable(&fastsocket_steer_key);
	} else {
		static_branch_disable(&fastsocket_steer_key);
		static_branch_dec(&rps_needed);
	}
#endif
}

/*
 * Steer when told to, or automatically once CPU-encoded ports are in use:
 * steering turns rps_needed on, which costs every received packet of
 * every device a get_rps_cpu() call, so a server that makes no active
 * connections through us (nginx, memcached) does not pay for it.
 * Automatic steering covers only the network namespaces that asked for
 * RFD ports, unless every socket gets one (rfd_ports=2).
 */
static void fs_sync_steer(void)
{
	bool want;

	lockdep_assert_held(&fs_mutex);
	want = fs_loaded &&
	       (rfd_steer == FS_STEER_ON ||
		(rfd_steer == FS_STEER_AUTO &&
		 (fs_rfd_used || rfd_ports == FASTSOCKET_RFD_ALL)));
	WRITE_ONCE(fastsocket_steer_everywhere,
		   rfd_steer == FS_STEER_ON || rfd_ports == FASTSOCKET_RFD_ALL);
	if (want != fs_steering) {
		fs_apply_steer(want);
		WRITE_ONCE(fs_steering, want);
	}
}

/* Turn the port key on or off to match rfd_ports. */
static void fs_apply_ports(int mode)
{
	lockdep_assert_held(&fs_mutex);
	WRITE_ONCE(fastsocket_rfd_ports, mode);
	if (mode != FASTSOCKET_RFD_OFF)
		static_branch_enable(&fastsocket_port_key);
	else
		static_branch_disable(&fastsocket_port_key);
}

static int rfd_ports_set(const char *val, const struct kernel_param *kp)
{
	int mode, err;

	err = fs_parse_mode(val, FASTSOCKET_RFD_OFF, FASTSOCKET_RFD_ALL, &mode);
	if (err)
		return err;
	mutex_lock(&fs_mutex);
	if (fs_loaded)
		fs_apply_ports(mode);
	WRITE_ONCE(rfd_ports, mode);
	fs_sync_steer();
	mutex_unlock(&fs_mutex);
	return 0;
}

static const struct kernel_param_ops rfd_ports_ops = {
	.set = rfd_ports_set,
	.get = param_get_int,
};
module_param_cb(rfd_ports, &rfd_ports_ops, &rfd_ports, 0644);
MODULE_PARM_DESC(rfd_ports,
		 "CPU-encoded local ports: 0 off, 1 sockets with TCP_FASTSOCKET_RFD (default), 2 every TCP socket");

static int rfd_steer_set(const char *val, const struct kernel_param *kp)
{
	int mode, err;

	err = fs_parse_mode(val, FS_STEER_OFF, FS_STEER_AUTO, &mode);
	if (err)
		return err;
	if (mode != FS_STEER_OFF && !IS_ENABLED(CONFIG_RPS))
		return -EOPNOTSUPP;
	mutex_lock(&fs_mutex);
	WRITE_ONCE(rfd_steer, mode);
	fs_sync_steer();
	mutex_unlock(&fs_mutex);
	return 0;
}

static const struct kernel_param_ops rfd_steer_ops = {
	.set = rfd_steer_set,
	.get = param_get_int,
};
module_param_cb(rfd_steer, &rfd_steer_ops, &rfd_steer, 0644);
MODULE_PARM_DESC(rfd_steer,
		 "steer active connections' packets to the CPU their port names: 0 off, 1 on, 2 in the network namespaces where a socket uses a CPU-encoded port (default; needs CONFIG_RPS)");

/*
 * The established-table partition. Lookups learn to try both hashes
 * before inserts start using the partitioned one; they keep doing so
 * after it is turned off (or the module unloaded), for the sockets
 * already hashed into a partition.
 */
static void fs_apply_ehash(int on)
{
	lockdep_assert_held(&fs_mutex);
	if (on) {
		static_branch_enable(&fastsocket_ehash_mixed_key);
		static_branch_enable(&fastsocket_ehash_key);
	} else {
		static_branch_disable(&fastsocket_ehash_key);
	}
}

static int ehash_partition_set(const char *val, const struct kernel_param *kp)
{
	int on, err;

	err = fs_parse_mode(val, 0, 1, &on);
	if (err)
		return err;
	mutex_lock(&fs_mutex);
	if (fs_loaded && on != ehash_partition)
		fs_apply_ehash(on);
	WRITE_ONCE(ehash_partition, on);
	mutex_unlock(&fs_mutex);
	return 0;
}

static const struct kernel_param_ops ehash_partition_ops = {
	.set = ehash_partition_set,
	.get = param_get_int,
};
module_param_cb(ehash_partition, &ehash_partition_ops, &ehash_partition, 0644);
MODULE_PARM_DESC(ehash_partition,
		 "hash active connections into their CPU's part of the established table: 0 off (default), 1 on");

static int fs_resolve_cpu(int cpu)
{
	if (cpu >= 0)
		return cpu;
	if (cpu != -1)
		return -EINVAL;
	if (current->nr_cpus_allowed == 1)
		return cpumask_first(current->cpus_ptr);
	if (READ_ONCE(listen_spawn) == FS_SPAWN_AUTO)
		return raw_smp_processor_id();
	return -EINVAL;
}

static int fs_set_listen(struct sock *sk, sockptr_t optval, unsigned int optlen)
{
	int val, err;

	if (optlen != sizeof(val))
		return -EINVAL;
	if (copy_from_sockptr(&val, optval, sizeof(val)))
		return -EFAULT;
	if (val != 0 && val != 1)
		return -EINVAL;
	mutex_lock(&fs_mutex);
	if (READ_ONCE(listen_spawn) == FS_SPAWN_OFF) {
		err = -EOPNOTSUPP;
	} else if (val) {
		err = fastsocket_group_enable(sk);
	} else {
		fastsocket_group_disable(sk);
		err = 0;
	}
	mutex_unlock(&fs_mutex);
	return err;
}

static int fs_set_local(struct sock *sk, sockptr_t optval, unsigned int optlen)
{
	struct fastsocket_local req;
	struct socket *gsock;
	int cpu, err;

	if (optlen != sizeof(req))
		return -EINVAL;
	if (copy_from_sockptr(&req, optval, sizeof(req)))
		return -EFAULT;
	gsock = sockfd_lookup(req.listen_fd, &err);
	if (!gsock)
		return err;
	err = -EINVAL;
	if (gsock->sk == sk || gsock->sk->sk_type != SOCK_STREAM ||
	    gsock->sk->sk_protocol != IPPROTO_TCP)
		goto out;
	mutex_lock(&fs_mutex);
	if (READ_ONCE(listen_spawn) == FS_SPAWN_OFF) {
		err = -EOPNOTSUPP;
	} else {
		cpu = fs_resolve_cpu(req.cpu);
		err = cpu < 0 ? cpu : fastsocket_spawn(gsock->sk, sk, cpu);
	}
	mutex_unlock(&fs_mutex);
out:
	sockfd_put(gsock);
	return err;
}

/* The 0 or 1 of TCP_FASTSOCKET_RFD and TCP_FASTSOCKET_RFD_TASK. */
static int fs_rfd_value(sockptr_t optval, unsigned int optlen, int *val)
{
	if (optlen != sizeof(*val))
		return -EINVAL;
	if (copy_from_sockptr(val, optval, sizeof(*val)))
		return -EFAULT;
	if (*val != 0 && *val != 1)
		return -EINVAL;
	if (*val && READ_ONCE(rfd_ports) == FASTSOCKET_RFD_OFF)
		return -EOPNOTSUPP;
	return 0;
}

/* RFD ports are in use in @sk's namespace: steer there (rfd_steer=2). */
static void fs_rfd_in_use(struct sock *sk)
{
	fastsocket_net_rfd_used(sock_net(sk));
	if (!READ_ONCE(fs_rfd_used)) {
		mutex_lock(&fs_mutex);
		WRITE_ONCE(fs_rfd_used, true);
		fs_sync_steer();
		mutex_unlock(&fs_mutex);
	}
}

static int fs_set_rfd(struct sock *sk, sockptr_t optval, unsigned int optlen)
{
	int val, err;

	err = fs_rfd_value(optval, optlen, &val);
	if (err)
		return err;
	inet_assign_bit(FASTSOCKET_RFD, sk, val);
	if (val)
		fs_rfd_in_use(sk);
	return 0;
}

/* The flag lives in current->atomic_flags: only current changes its own. */
static int fs_set_rfd_task(struct sock *sk, sockptr_t optval,
			   unsigned int optlen)
{
	int val, err;

	err = fs_rfd_value(optval, optlen, &val);
	if (err)
		return err;
	if (!val) {
		task_clear_fastsocket_rfd(current);
		return 0;
	}
	task_set_fastsocket_rfd(current);
	fs_rfd_in_use(sk);
	return 0;
}

/*
 * A thread's TCP_FASTSOCKET_RFD_TASK outlives the module: when one that set
 * it before this load is still around, automatic steering starts at once.
 */
static bool fs_tasks_use_rfd(void)
{
	struct task_struct *p, *t;
	bool found = false;

	rcu_read_lock();
	for_each_process_thread(p, t) {
		if (task_fastsocket_rfd(t)) {
			found = true;
			goto out;
		}
	}
out:
	rcu_read_unlock();
	return found;
}

static int fs_setsockopt(struct sock *sk, int optname, sockptr_t optval,
			 unsigned int optlen)
{
	switch (optname) {
	case TCP_FASTSOCKET_RFD:
		return fs_set_rfd(sk, optval, optlen);
	case TCP_FASTSOCKET_RFD_TASK:
		return fs_set_rfd_task(sk, optval, optlen);
	case TCP_FASTSOCKET_LISTEN:
		return fs_set_listen(sk, optval, optlen);
	case TCP_FASTSOCKET_LOCAL:
		return fs_set_local(sk, optval, optlen);
	default:
		return -ENOPROTOOPT;	/* TCP_FASTSOCKET_INFO is read-only */
	}
}

static void fs_fill_info(struct sock *sk, struct fastsocket_info *info)
{
	struct fastsocket_sk *fs;
	unsigned int cpu;

	info->cpu = -1;
	if (inet_test_bit(FASTSOCKET_RFD, sk))
		info->flags |= FASTSOCKET_INFO_RFD;
	rcu_read_lock();
	fs = rcu_dereference(inet_csk(sk)->icsk_fastsocket);
	if (fs && fs->local) {
		struct fastsocket_local_sk *fl =
			container_of(fs, struct fastsocket_local_sk, hdr);

		info->flags |= FASTSOCKET_INFO_LOCAL;
		info->cpu = fl->cpu;
	} else if (fs) {
		struct fastsocket_group *group =
			container_of(fs, struct fastsocket_group, hdr);

		info->flags |= FASTSOCKET_INFO_ENABLED;
		for (cpu = 0; cpu < nr_cpu_ids; cpu++)
			if (rcu_access_pointer(group->local[cpu]))
				info->nr_local++;
	}
	rcu_read_unlock();
}

static int fs_getsockopt(struct sock *sk, int optname, sockptr_t optval,
			 sockptr_t optlen)
{
	struct fastsocket_info info = {};
	int len, val;

	if (optname != TCP_FASTSOCKET_INFO && optname != TCP_FASTSOCKET_RFD &&
	    optname != TCP_FASTSOCKET_RFD_TASK)
		return -ENOPROTOOPT;
	if (copy_from_sockptr(&len, optlen, sizeof(len)))
		return -EFAULT;
	if (optname != TCP_FASTSOCKET_INFO) {
		if (len < 0)
			return -EINVAL;
		if (optname == TCP_FASTSOCKET_RFD)
			val = inet_test_bit(FASTSOCKET_RFD, sk);
		else
			val = task_fastsocket_rfd(current);
		len = min_t(unsigned int, len, sizeof(val));
		if (copy_to_sockptr(optlen, &len, sizeof(len)) ||
		    copy_to_sockptr(optval, &val, len))
			return -EFAULT;
		return 0;
	}
	if (len < (int)sizeof(info))
		return -EINVAL;
	fs_fill_info(sk, &info);
	len = sizeof(info);
	if (copy_to_sockptr(optlen, &len, sizeof(len)) ||
	    copy_to_sockptr(optval, &info, len))
		return -EFAULT;
	return 0;
}

static const struct fastsocket_sockopt_ops fs_ops = {
	.setsockopt	= fs_setsockopt,
	.getsockopt	= fs_getsockopt,
};

static int fastsocket_proc_show(struct seq_file *seq, void *v)
{
	struct fastsocket_group *group;
	unsigned int groups = 0;
	int cpu;

	spin_lock_bh(&fastsocket_groups_lock);
	list_for_each_entry(group, &fastsocket_groups, node)
		groups++;
	spin_unlock_bh(&fastsocket_groups_lock);

	seq_printf(seq, "fastsocket %s\n", FASTSOCKET_VERSION);
	seq_printf(seq, "listen_spawn %d\n", READ_ONCE(listen_spawn));
	seq_printf(seq, "groups %u\n", groups);
	seq_printf(seq, "rfd_ports %d\n", READ_ONCE(rfd_ports));
	seq_printf(seq, "rfd_steer %d\n", READ_ONCE(rfd_steer));
	seq_printf(seq, "rfd_steering %d\n", READ_ONCE(fs_steering));
	seq_printf(seq, "ehash_partition %d\n", READ_ONCE(ehash_partition));
	seq_printf(seq, "rfd_cpu_mask %lu\n", roundup_pow_of_two(nr_cpu_ids) - 1);
	seq_puts(seq, "cpu listen_local listen_global accept_local accept_empty spawned migrated port_scan port_fallback rx_active rx_passive\n");
	for_each_possible_cpu(cpu) {
		const struct fastsocket_stats *st = per_cpu_ptr(&fastsocket_stats, cpu);

		seq_printf(seq, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu\n",
			   cpu, READ_ONCE(st->listen_local),
			   READ_ONCE(st->listen_global),
			   READ_ONCE(st->accept_local), READ_ONCE(st->accept_empty),
			   READ_ONCE(st->spawned), READ_ONCE(st->migrated),
			   READ_ONCE(st->port_scan), READ_ONCE(st->port_fallback),
			   READ_ONCE(st->rx_active), READ_ONCE(st->rx_passive));
	}
	return 0;
}

static int __init fastsocket_init(void)
{
	int err;

	if (!proc_create_single("fastsocket", 0444, init_net.proc_net,
				fastsocket_proc_show))
		return -ENOMEM;
	err = fastsocket_register(&fs_ops);
	if (err) {
		remove_proc_entry("fastsocket", init_net.proc_net);
		return err;
	}
	mutex_lock(&fs_mutex);
	fastsocket_net_rfd_reset();
	WRITE_ONCE(fs_rfd_used, fs_tasks_use_rfd());
	fs_loaded = true;
	if (listen_spawn != FS_SPAWN_OFF)
		static_branch_enable(&fastsocket_listen_key);
	fs_apply_ports(rfd_ports);
	fs_sync_steer();
	if (ehash_partition)
		fs_apply_ehash(true);
	mutex_unlock(&fs_mutex);
	pr_info("loaded (version %s, listen_spawn=%d rfd_ports=%d rfd_steer=%d ehash_partition=%d)\n",
		FASTSOCKET_VERSION, listen_spawn, rfd_ports, rfd_steer,
		ehash_partition);
	return 0;
}

static void __exit fastsocket_exit(void)
{
	fastsocket_unregister(&fs_ops);
	mutex_lock(&fs_mutex);
	fs_disable_all();
	if (listen_spawn != FS_SPAWN_OFF)
		static_branch_disable(&fastsocket_listen_key);
	fs_apply_ports(FASTSOCKET_RFD_OFF);
	if (ehash_partition)
		fs_apply_ehash(false);
	fs_loaded = false;
	fs_sync_steer();
	mutex_unlock(&fs_mutex);
	remove_proc_entry("fastsocket", init_net.proc_net);
	pr_info("unloaded\n");
}

module_init(fastsocket_init);
module_exit(fastsocket_exit);

MODULE_DESCRIPTION("Fastsocket: per-core TCP connection locality");
MODULE_LICENSE("GPL");
MODULE_VERSION(FASTSOCKET_VERSION);
