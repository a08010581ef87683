// SPDX-License-Identifier: GPL-2.0
/*
 * Slick echo service.
 *
 * A client connects, sends a 4-byte big-endian chunk size N (1..65536)
 * and then streams bytes. Every complete chunk of N bytes is sent back as
 * soon as it has arrived; when the client shuts down its sending side the
 * final partial chunk is sent back and the connection is closed. While a
 * chunk cannot be queued for sending, nothing more is read from that
 * client, so memory per connection stays bounded.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/in.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/moduleparam.h>
#include <linux/net.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/tcp.h>
#include <linux/unaligned.h>
#include <net/net_namespace.h>
#include <net/slick.h>

#define ECHO_MAX_CHUNK	65536
#define ECHO_RX_MIN	16384
#define ECHO_TX_MAX	(4 * ECHO_MAX_CHUNK)
/*
 * Work per handler call: up to ECHO_BUDGET_BYTES echoed (at least
 * ECHO_BUDGET and at most ECHO_BUDGET_MAX chunks), then the handler
 * re-queues itself so other connections get their turn. A fixed chunk
 * count would make small chunks pay a scheduling round trip every few
 * kilobytes. The loop yields the CPU every ECHO_RESCHED chunks: with
 * N = 1 every byte is a send, and a kernel without preemption must get
 * to schedule.
 */
#define ECHO_BUDGET		128
#define ECHO_BUDGET_MAX		8192
#define ECHO_BUDGET_BYTES	(256 * 1024)
#define ECHO_RESCHED		64

static int port = 7007;
module_param(port, int, 0444);
MODULE_PARM_DESC(port, "TCP port to listen on (1-65535, default 7007)");

static int backlog = 128;
module_param(backlog, int, 0444);
MODULE_PARM_DESC(backlog, "listen backlog (1-65535, default 128)");

static bool nodelay;
module_param(nodelay, bool, 0444);
MODULE_PARM_DESC(nodelay, "TCP_NODELAY on client connections (default off, as a user-space server's default)");

struct echo_conn {
	struct slick_sock ss;
	struct slick_bsock bs;
	struct list_head node;	/* in echo_conns while the handler owns it */
	u32 chunk;		/* N, 0 until received */
	bool closing;		/* module exit took it */
};

static struct workqueue_struct *echo_wq;
static struct slick_listener echo_listener;
static LIST_HEAD(echo_conns);
static DEFINE_SPINLOCK(echo_lock);
static bool echo_stopping;

static atomic_long_t echo_total;
static atomic_long_t echo_active;
static atomic_long_t echo_bytes;
static atomic_long_t echo_bad_size;

static void echo_conn_free(struct echo_conn *c)
{
	slick_bsock_free(&c->bs);
	slick_sock_close(c->ss.sock);
	kfree(c);
	atomic_long_dec(&echo_active);
}

/* Called by the handler: close unless module exit already owns @c. */
static void echo_close_self(struct echo_conn *c)
{
	spin_lock(&echo_lock);
	if (list_empty(&c->node)) {
		spin_unlock(&echo_lock);
		return;
	}
	list_del_init(&c->node);
	spin_unlock(&echo_lock);

	slick_sock_detach(&c->ss);
	echo_conn_free(c);
}

/* Echo complete chunks while @budget lasts; -EAGAIN: wait for space. */
static int echo_chunks(struct echo_conn *c, int *budget)
{
	const u8 *p;
	int ret;

	while (*budget > 0 && slick_bsock_peek(&c->bs, c->chunk, &p)) {
		if (!(--(*budget) % ECHO_RESCHED))
			cond_resched();
		ret = slick_bsock_write_all(&c->bs, p, c->chunk);
		if (ret)
			return ret;
		slick_bsock_discard(&c->bs, c->chunk);
		atomic_long_add(c->chunk, &echo_bytes);
	}
	return 0;
}

/*
 * Returns 0 to go on reading, 1 to wait for an event, 2 to yield (budget
 * used up), < 0 to close.
 */
static int echo_process(struct echo_conn *c, int *budget)
{
	const u8 *p;
	size_t len;
	u32 n;
	int ret;

	if (!c->chunk) {
		if (!slick_bsock_peek(&c->bs, 4, &p))
			return c->bs.eof ? -ENODATA : 0;
		n = get_unaligned_be32(p);
		slick_bsock_discard(&c->bs, 4);
		if (n < 1 || n > ECHO_MAX_CHUNK) {
			atomic_long_inc(&echo_bad_size);
			return -EINVAL;
		}
		c->chunk = n;
		c->bs.rx.max = max_t(size_t, n, ECHO_RX_MIN);
	}

	ret = echo_chunks(c, budget);
	if (ret == -EAGAIN)
		return 1;
	if (ret)
		return ret;
	if (slick_bsock_peek(&c->bs, c->chunk, &p))
		return 2;
	if (!c->bs.eof)
		return 0;

	/* End of stream: send back the partial chunk, then close. */
	len = slick_bsock_peek(&c->bs, 0, &p);
	if (len) {
		ret = slick_bsock_write_all(&c->bs, p, len);
		if (ret == -EAGAIN)
			return 1;
		if (ret)
			return ret;
		slick_bsock_discard(&c->bs, len);
		atomic_long_add(len, &echo_bytes);
	}
	/* Close once everything queued has gone to the socket. */
	return slick_bsock_tx_pending(&c->bs) ? 1 : -ENODATA;
}

static int echo_budget(const struct echo_conn *c)
{
	if (!c->chunk)
		return ECHO_BUDGET;
	return clamp_t(int, ECHO_BUDGET_BYTES / c->chunk, ECHO_BUDGET,
		       ECHO_BUDGET_MAX);
}

static void echo_event(struct slick_sock *ss, unsigned long events)
{
	struct echo_conn *c = ss->priv;
	int budget = echo_budget(c);
	int ret;

	if (READ_ONCE(c->closing))
		return;

	ret = slick_bsock_flush(&c->bs);
	if (ret && ret != -EAGAIN)
		goto close;

	for (;;) {
		ret = echo_process(c, &budget);
		if (ret == 1)
			return;
		if (ret < 0)
			goto close;
		if (ret == 2 || budget <= 0) {
			slick_sock_kick(ss, SLICK_EV_KICK);
			return;
		}
		budget--;
		ret = slick_bsock_fill(&c->bs);
		if (ret == -EAGAIN)
			return;
		if (ret < 0)
			goto close;
	}

close:
	echo_close_self(c);
}

static void echo_accept(void *priv, struct socket *sock)
{
	struct echo_conn *c;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		sock_release(sock);
		return;
	}
	if (nodelay)
		tcp_sock_set_nodelay(sock->sk);
	slick_bsock_init(&c->bs, sock, NULL, ECHO_RX_MIN, ECHO_TX_MAX);
	c->ss.sock = sock;

	spin_lock(&echo_lock);
	if (echo_stopping) {
		spin_unlock(&echo_lock);
		sock_release(sock);
		kfree(c);
		return;
	}
	list_add(&c->node, &echo_conns);
	atomic_long_inc(&echo_total);
	atomic_long_inc(&echo_active);
	spin_unlock(&echo_lock);

	slick_sock_register(&c->ss, sock, echo_event, c, echo_wq);
}

static int echo_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "connections_total %ld\n", atomic_long_read(&echo_total));
	seq_printf(m, "connections_active %ld\n",
		   atomic_long_read(&echo_active));
	seq_printf(m, "bytes_echoed %ld\n", atomic_long_read(&echo_bytes));
	seq_printf(m, "bad_size %ld\n", atomic_long_read(&echo_bad_size));
	return 0;
}

static void echo_close_all(void)
{
	struct echo_conn *c;

	for (;;) {
		spin_lock(&echo_lock);
		c = list_first_entry_or_null(&echo_conns, struct echo_conn,
					     node);
		if (c) {
			list_del_init(&c->node);
			WRITE_ONCE(c->closing, true);
		}
		spin_unlock(&echo_lock);
		if (!c)
			break;
		/* Waits for a running handler, which now leaves @c alone. */
		slick_sock_unregister(&c->ss);
		echo_conn_free(c);
	}
}

static int __init echo_init(void)
{
	int err;

	if (port < 1 || port > 65535) {
		pr_err("invalid parameter port=%d (must be 1-65535)\n", port);
		return -EINVAL;
	}
	if (backlog < 1 || backlog > 65535) {
		pr_err("invalid parameter backlog=%d (must be 1-65535)\n",
		       backlog);
		return -EINVAL;
	}

	/*
	 * Unbound: the scheduler runs the handlers on whichever CPU is free.
	 * Bound to the softirq's CPU, a local client's echo waited for the
	 * client itself to yield that CPU (4x slower streaming at 32 bytes).
	 */
	echo_wq = alloc_workqueue("slick_echo", WQ_UNBOUND, 0);
	if (!echo_wq)
		return -ENOMEM;

	if (!proc_create_single("slick_echo", 0444, init_net.proc_net,
				echo_proc_show)) {
		err = -ENOMEM;
		goto out_wq;
	}

	err = slick_listen(&echo_listener, htonl(INADDR_ANY), port, backlog,
			   echo_accept, NULL, echo_wq);
	if (err) {
		pr_err("cannot listen on port %d: %d\n", port, err);
		goto out_proc;
	}
	pr_info("listening on port %d\n", port);
	return 0;

out_proc:
	remove_proc_entry("slick_echo", init_net.proc_net);
out_wq:
	destroy_workqueue(echo_wq);
	return err;
}

static void __exit echo_exit(void)
{
	slick_listener_stop(&echo_listener);
	spin_lock(&echo_lock);
	echo_stopping = true;
	spin_unlock(&echo_lock);
	echo_close_all();
	/* Handlers that closed their own connection may still be returning. */
	destroy_workqueue(echo_wq);
	remove_proc_entry("slick_echo", init_net.proc_net);
}

module_init(echo_init);
module_exit(echo_exit);

MODULE_DESCRIPTION("Slick echo service");
MODULE_LICENSE("GPL");
