// SPDX-License-Identifier: GPL-2.0
/*
 * Slick Thrift forwarder.
 *
 *   service Forwarder {
 *       oneway void msg(1: i32 key, 2: string payload)
 *   }
 *   service Controller {
 *       void add_server(1: string ip, 2: i32 port, 3: i32 key)
 *       void release_servers()
 *   }
 *
 * Clients send msg calls to the Forwarder port; each message is forwarded
 * unchanged to the backend connection registered for its key. When a
 * backend cannot take a message, the client is parked on the backend and
 * not read from until the backend's overflow buffer has drained, so
 * messages are neither dropped nor buffered without bound, and each
 * client's messages stay in order. The Controller port registers and
 * releases backends.
 *
 * Lifetimes: a backend is referenced by the backend list, by each route
 * (key) to it, and by a client parked on it; it is freed after an RCU
 * grace period so route lookups need no lock. Whoever removes a backend
 * or connection from its list tears it down: its own handler on error or
 * end of stream, release_servers(), or module exit.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/in.h>
#include <linux/inet.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/tcp.h>
#include <linux/uio.h>
#include <linux/xarray.h>
#include <net/net_namespace.h>
#include <net/slick.h>

#define FWD_MAX_MSG_MIN		256
#define FWD_MAX_MSG_MAX		SLICK_THRIFT_MAX_FRAME
#define FWD_CONNECT_TIMEOUT	3	/* seconds */
#define FWD_CLIENT_BUDGET	4096	/* messages per handler call */
#define FWD_RESCHED		64	/* messages between cond_resched() */
#define FWD_BACKEND_BUDGET	16	/* receive calls per handler call */
#define FWD_REPLY_MAX		512	/* bytes of a controller reply */
#define FWD_NAME_MAX		128	/* longest method name replied to */
#define FWD_CTL_TX_MAX		65536
#define FWD_BATCH_BYTES		65536	/* queued bytes that make a send */
#define FWD_BATCH_MAX		8	/* backends written per client pass */

static int port = 9090;
module_param(port, int, 0444);
MODULE_PARM_DESC(port, "TCP port of the Forwarder service (1-65535, default 9090)");

static int ctl_port = 9091;
module_param(ctl_port, int, 0444);
MODULE_PARM_DESC(ctl_port, "TCP port of the Controller service (1-65535, default 9091)");

static int framed;
module_param(framed, int, 0444);
MODULE_PARM_DESC(framed, "Thrift transport on all sides: 0 unframed (default), 1 framed");

static int backlog = 128;
module_param(backlog, int, 0444);
MODULE_PARM_DESC(backlog, "listen backlog (1-65535, default 128)");

static int max_msg = 1048576;
module_param(max_msg, int, 0444);
MODULE_PARM_DESC(max_msg, "largest message in bytes (256-16384000, default 1048576)");

struct fwd_backend {
	struct kref ref;
	struct rcu_head rcu;
	struct slick_sock ss;
	struct slick_bsock bs;
	struct mutex lock;		/* bs, dead, waiters */
	struct list_head waiters;	/* fwd_conn.wait_node */
	struct list_head node;		/* in fwd_backends until torn down */
	bool dead;
	__be32 addr;
	u16 port;
};

struct fwd_conn {
	struct slick_sock ss;
	struct slick_tsock ts;
	struct list_head node;		/* in fwd_clients or fwd_ctls */
	struct fwd_backend *parked;	/* waiting for room on it (ref held) */
	struct list_head wait_node;	/* on parked->waiters */
	bool closing;			/* module exit took it */
};

static struct workqueue_struct *fwd_wq;
static struct slick_listener fwd_listener;
static struct slick_listener fwd_ctl_listener;
static struct slick_thrift_cfg fwd_cfg;

static DEFINE_SPINLOCK(fwd_lock);	/* the three lists, fwd_stopping */
static LIST_HEAD(fwd_clients);
static LIST_HEAD(fwd_ctls);
static LIST_HEAD(fwd_backends);
static bool fwd_stopping;
static DEFINE_MUTEX(fwd_ctl_mutex);	/* serializes controller commands */
static DEFINE_XARRAY(fwd_routes);	/* key -> struct fwd_backend */

static atomic_long_t fwd_clients_active;
static atomic_long_t fwd_backends_active;
static atomic_long_t fwd_forwarded;
static atomic_long_t fwd_unknown_key;
static atomic_long_t fwd_malformed;
static atomic_long_t fwd_backend_errors;

/* ------------------------------------------------------------------ */
/* Backends                                                            */
/* ------------------------------------------------------------------ */

static void fwd_backend_release(struct kref *ref)
{
	struct fwd_backend *be = container_of(ref, struct fwd_backend, ref);

	kfree_rcu(be, rcu);
}

static void fwd_backend_put(struct fwd_backend *be)
{
	kref_put(&be->ref, fwd_backend_release);
}

/* Resume the clients parked on @be. Called with be->lock held. */
static void fwd_backend_wake(struct fwd_backend *be)
{
	struct fwd_conn *c, *tmp;

	list_for_each_entry_safe(c, tmp, &be->waiters, wait_node) {
		list_del_init(&c->wait_node);
		slick_sock_kick(&c->ss, SLICK_EV_KICK);
	}
}

static struct fwd_backend *fwd_route_get(u32 key)
{
	struct fwd_backend *be;

	rcu_read_lock();
	be = xa_load(&fwd_routes, key);
	if (be && !kref_get_unless_zero(&be->ref))
		be = NULL;
	rcu_read_unlock();
	return be;
}

/* Remove the routes to @be (or all routes if @be is NULL). */
static void fwd_routes_drop(struct fwd_backend *be)
{
	struct fwd_backend *entry;
	unsigned long key;

	xa_for_each(&fwd_routes, key, entry) {
		if (be && entry != be)
			continue;
		if (xa_cmpxchg(&fwd_routes, key, entry, NULL, 0) == entry)
			fwd_backend_put(entry);
	}
}

/* Hand the overflow to the socket, waiting at most the send timeout. */
static void fwd_backend_flush_blocking(struct fwd_backend *be)
{
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
	struct kvec iov;
	const u8 *p;
	size_t len;
	int n;

	if (be->bs.err)
		return;
	while ((len = slick_buf_peek(&be->bs.tx, 0, &p))) {
		iov.iov_base = (void *)p;
		iov.iov_len = len;
		n = kernel_sendmsg(be->ss.sock, &msg, &iov, 1, len);
		if (n <= 0)
			return;
		slick_buf_discard(&be->bs.tx, n);
	}
}

/*
 * Tear @be down if it is still in the backend list. @self: called by its
 * own handler. @graceful: send what its overflow buffer holds first.
 */
static void fwd_backend_teardown(struct fwd_backend *be, bool self,
				 bool graceful)
{
	spin_lock(&fwd_lock);
	if (list_empty(&be->node)) {
		spin_unlock(&fwd_lock);
		return;
	}
	list_del_init(&be->node);
	spin_unlock(&fwd_lock);

	/* From now on nobody forwards to it or kicks its handler. */
	mutex_lock(&be->lock);
	WRITE_ONCE(be->dead, true);
	fwd_backend_wake(be);
	mutex_unlock(&be->lock);

	if (self)
		slick_sock_detach(&be->ss);
	else
		slick_sock_unregister(&be->ss);

	mutex_lock(&be->lock);
	if (graceful) {
		/* Unread input would make the close a reset: drop it first. */
		while (slick_bsock_fill(&be->bs) > 0)
			slick_bsock_discard(&be->bs, slick_buf_len(&be->bs.rx));
		fwd_backend_flush_blocking(be);
	}
	slick_bsock_free(&be->bs);
	slick_sock_close(be->ss.sock);
	be->ss.sock = NULL;
	mutex_unlock(&be->lock);

	fwd_routes_drop(be);
	atomic_long_dec(&fwd_backends_active);
	fwd_backend_put(be);		/* the list's reference */
}

static void fwd_backend_event(struct slick_sock *ss, unsigned long events)
{
	struct fwd_backend *be = ss->priv;
	int budget = FWD_BACKEND_BUDGET;
	bool lost = false;
	int ret;

	mutex_lock(&be->lock);
	if (be->dead) {
		mutex_unlock(&be->lock);
		return;
	}
	/* Backends of oneway calls send nothing; drop whatever comes. */
	for (;;) {
		ret = slick_bsock_fill(&be->bs);
		if (ret > 0) {
			slick_bsock_discard(&be->bs, ret);
			if (--budget)
				continue;
			slick_sock_kick(ss, SLICK_EV_KICK);
			break;
		}
		if (ret != -EAGAIN)
			lost = true;
		break;
	}
	ret = slick_bsock_flush(&be->bs);
	if (ret && ret != -EAGAIN)
		lost = true;
	else if (slick_bsock_tx_room(&be->bs) >= be->bs.tx.max / 2)
		fwd_backend_wake(be);
	mutex_unlock(&be->lock);

	if (lost) {
		atomic_long_inc(&fwd_backend_errors);
		pr_info("backend %pI4:%u lost\n", &be->addr, be->port);
		fwd_backend_teardown(be, true, false);
	}
}

/* A live backend for @addr:@port with a reference, or NULL. */
static struct fwd_backend *fwd_backend_find(__be32 addr, u16 bport)
{
	struct fwd_backend *be, *found = NULL;

	spin_lock(&fwd_lock);
	list_for_each_entry(be, &fwd_backends, node) {
		if (be->addr == addr && be->port == bport &&
		    !READ_ONCE(be->dead)) {
			kref_get(&be->ref);
			found = be;
			break;
		}
	}
	spin_unlock(&fwd_lock);
	return found;
}

/* Connect a new backend; returns it with a reference for the caller. */
static int fwd_backend_connect(__be32 addr, u16 bport,
			       struct fwd_backend **res)
{
	struct fwd_backend *be;
	struct socket *sock;
	int err;

	be = kzalloc(sizeof(*be), GFP_KERNEL);
	if (!be)
		return -ENOMEM;
	err = slick_connect(addr, bport, FWD_CONNECT_TIMEOUT, &sock);
	if (err) {
		kfree(be);
		return err;
	}
	kref_init(&be->ref);		/* the list's */
	mutex_init(&be->lock);
	INIT_LIST_HEAD(&be->waiters);
	be->addr = addr;
	be->port = bport;
	be->ss.sock = sock;
	slick_bsock_init(&be->bs, sock, NULL, 65536,
			 2 * ((size_t)max_msg + 4));
	/* Clients' passes flush what they queued: see fwd_batch_flush(). */
	slick_bsock_set_batch(&be->bs, FWD_BATCH_BYTES);

	spin_lock(&fwd_lock);
	if (fwd_stopping) {
		spin_unlock(&fwd_lock);
		slick_bsock_free(&be->bs);
		slick_sock_close(sock);
		kfree(be);
		return -ESHUTDOWN;
	}
	list_add_tail(&be->node, &fwd_backends);
	kref_get(&be->ref);		/* the caller's */
	spin_unlock(&fwd_lock);
	atomic_long_inc(&fwd_backends_active);

	slick_sock_register(&be->ss, sock, fwd_backend_event, be, fwd_wq);
	*res = be;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Connections (clients and controllers)                               */
/* ------------------------------------------------------------------ */

static void fwd_unpark(struct fwd_conn *c)
{
	struct fwd_backend *be = c->parked;

	if (!be)
		return;
	mutex_lock(&be->lock);
	list_del_init(&c->wait_node);
	mutex_unlock(&be->lock);
	c->parked = NULL;
	fwd_backend_put(be);
}

static void fwd_conn_free(struct fwd_conn *c, atomic_long_t *active)
{
	slick_tsock_free(&c->ts);
	slick_sock_close(c->ss.sock);
	kfree(c);
	if (active)
		atomic_long_dec(active);
}

/* Called by a connection's handler: close unless module exit owns it. */
static void fwd_conn_close_self(struct fwd_conn *c, atomic_long_t *active)
{
	spin_lock(&fwd_lock);
	if (list_empty(&c->node)) {
		spin_unlock(&fwd_lock);
		return;
	}
	list_del_init(&c->node);
	spin_unlock(&fwd_lock);

	fwd_unpark(c);
	/* Not parked any more, so nothing kicks it after this. */
	slick_sock_detach(&c->ss);
	fwd_conn_free(c, active);
}

static bool fwd_is_malformed(int err)
{
	switch (err) {
	case -EPIPE:		/* end of stream inside a message */
	case -ERANGE:
	case -E2BIG:
	case -EMSGSIZE:
	case -EPROTO:
	case -EPROTONOSUPPORT:
	case -ELOOP:
	case -EBADMSG:
		return true;
	default:
		return false;
	}
}

/*
 * The backends one client pass wrote to, each with a reference. Messages
 * queue in a backend's overflow buffer and leave in one send per backend
 * when the pass ends, instead of one send (and segment) per message.
 */
struct fwd_batch {
	struct fwd_backend *be[FWD_BATCH_MAX];
	int n;
};

/* Send what @be has queued and drop the reference. */
static void fwd_backend_push(struct fwd_backend *be)
{
	int ret;

	mutex_lock(&be->lock);
	ret = be->dead ? 0 : slick_bsock_flush(&be->bs);
	/* -EAGAIN: its WRITE_SPACE event sends the rest. */
	if (ret && ret != -EAGAIN)
		slick_sock_kick(&be->ss, SLICK_EV_KICK);
	mutex_unlock(&be->lock);
	fwd_backend_put(be);
}

/* Take over the reference to @be until the pass ends. */
static void fwd_batch_add(struct fwd_batch *b, struct fwd_backend *be)
{
	int i;

	for (i = 0; i < b->n; i++) {
		if (b->be[i] == be) {
			fwd_backend_put(be);
			return;
		}
	}
	if (b->n == FWD_BATCH_MAX) {
		fwd_backend_push(be);
		return;
	}
	b->be[b->n++] = be;
}

static void fwd_batch_flush(struct fwd_batch *b)
{
	while (b->n)
		fwd_backend_push(b->be[--b->n]);
}

static const u8 *fwd_args(struct fwd_conn *c,
			  const struct slick_thrift_msg *msg)
{
	return slick_tsock_msg_data(&c->ts) + msg->args_off;
}

/* Parse msg(1: i32 key, 2: string payload); returns 0 or -EPROTO. */
static int fwd_parse_msg_args(struct fwd_conn *c,
			      const struct slick_thrift_msg *msg, s32 *key)
{
	struct slick_thrift_field f;
	struct slick_thrift_iter it;
	bool have_key = false;
	const u8 *s;
	u32 len;
	int ret;

	slick_thrift_iter_init(&it, fwd_args(c, msg), msg->args_len,
			       &fwd_cfg);
	while ((ret = slick_thrift_iter_next(&it, &f)) > 0) {
		if (f.id == 1) {
			if (slick_thrift_field_i32(&f, key))
				return -EPROTO;
			have_key = true;
		} else if (f.id == 2) {
			if (slick_thrift_field_str(&f, &s, &len))
				return -EPROTO;
		}
	}
	if (ret < 0)
		return ret;
	return have_key ? 0 : -EPROTO;
}

/* 0: consumed, 1: parked on a full backend, < 0: malformed. */
static int fwd_client_msg(struct fwd_conn *c,
			  const struct slick_thrift_msg *msg,
			  struct fwd_batch *batch)
{
	struct fwd_backend *be;
	s32 key;
	int ret;

	if (!slick_thrift_name_is(msg, "msg") ||
	    (msg->type != SLICK_THRIFT_ONEWAY &&
	     msg->type != SLICK_THRIFT_CALL))
		return -EPROTO;
	ret = fwd_parse_msg_args(c, msg, &key);
	if (ret)
		return ret;

	be = fwd_route_get(key);
	if (!be)
		goto unknown;

	mutex_lock(&be->lock);
	if (be->dead) {
		mutex_unlock(&be->lock);
		fwd_backend_put(be);
		goto unknown;
	}
	ret = slick_tsock_forward(&c->ts, &be->bs);
	if (ret == -EAGAIN) {
		/* Keep the reference; fwd_unpark() drops it. */
		list_add_tail(&c->wait_node, &be->waiters);
		c->parked = be;
		mutex_unlock(&be->lock);
		return 1;
	}
	if (ret) {
		/* Its handler sees the socket error and tears it down. */
		slick_sock_kick(&be->ss, SLICK_EV_KICK);
		mutex_unlock(&be->lock);
		fwd_backend_put(be);
		goto unknown;
	}
	mutex_unlock(&be->lock);
	fwd_batch_add(batch, be);
	atomic_long_inc(&fwd_forwarded);
	return 0;

unknown:
	atomic_long_inc(&fwd_unknown_key);
	slick_tsock_discard(&c->ts);
	return 0;
}

static void fwd_client_event(struct slick_sock *ss, unsigned long events)
{
	struct fwd_conn *c = ss->priv;
	struct slick_thrift_msg msg;
	struct fwd_batch batch = { .n = 0 };
	int budget = FWD_CLIENT_BUDGET;
	int ret;

	if (READ_ONCE(c->closing))
		return;
	/* Woken from, or polled while, parked: retry from the start. */
	fwd_unpark(c);

	for (;;) {
		ret = slick_tsock_next(&c->ts, &msg);
		if (ret == -EAGAIN)
			goto out;
		if (ret)
			break;
		ret = fwd_client_msg(c, &msg, &batch);
		if (ret > 0)
			goto out;
		if (ret)
			break;
		if (!--budget) {
			slick_sock_kick(ss, SLICK_EV_KICK);
			goto out;
		}
		if (!(budget % FWD_RESCHED))
			cond_resched();
	}
	if (fwd_is_malformed(ret))
		atomic_long_inc(&fwd_malformed);
	fwd_conn_close_self(c, &fwd_clients_active);
out:
	/* Also after a close: what it forwarded before goes out. */
	fwd_batch_flush(&batch);
}

/* ------------------------------------------------------------------ */
/* Controller                                                          */
/* ------------------------------------------------------------------ */

static int fwd_reply_exception(struct fwd_conn *c,
			       const struct slick_thrift_msg *msg, s32 type,
			       const char *text)
{
	u8 buf[FWD_REPLY_MAX];
	ssize_t len;

	len = slick_thrift_write_exception(buf, sizeof(buf), fwd_cfg.framed,
					   msg->name, msg->name_len,
					   msg->seqid, type, text,
					   strlen(text));
	if (len < 0)
		return len;
	return slick_tsock_write(&c->ts, buf, len);
}

static int fwd_reply_void(struct fwd_conn *c,
			  const struct slick_thrift_msg *msg)
{
	u8 buf[FWD_REPLY_MAX];
	ssize_t len;

	len = slick_thrift_write_reply(buf, sizeof(buf), fwd_cfg.framed,
				       msg->name, msg->name_len, msg->seqid);
	if (len < 0)
		return len;
	return slick_tsock_write(&c->ts, buf, len);
}

/* Parse add_server(1: string ip, 2: i32 port, 3: i32 key). */
static int fwd_parse_add_server(struct fwd_conn *c,
				const struct slick_thrift_msg *msg,
				char *ip, size_t ip_size, s32 *bport,
				s32 *key)
{
	struct slick_thrift_field f;
	struct slick_thrift_iter it;
	unsigned int have = 0;
	const u8 *s;
	u32 len;
	int ret;

	ip[0] = '\0';
	slick_thrift_iter_init(&it, fwd_args(c, msg), msg->args_len,
			       &fwd_cfg);
	while ((ret = slick_thrift_iter_next(&it, &f)) > 0) {
		switch (f.id) {
		case 1:
			if (slick_thrift_field_str(&f, &s, &len))
				return -EPROTO;
			/* Too long to be an address: leave it unparsable. */
			if (len < ip_size) {
				memcpy(ip, s, len);
				ip[len] = '\0';
			}
			have |= BIT(1);
			break;
		case 2:
			if (slick_thrift_field_i32(&f, bport))
				return -EPROTO;
			have |= BIT(2);
			break;
		case 3:
			if (slick_thrift_field_i32(&f, key))
				return -EPROTO;
			have |= BIT(3);
			break;
		}
	}
	if (ret < 0)
		return ret;
	return have == (BIT(1) | BIT(2) | BIT(3)) ? 0 : -EPROTO;
}

static int fwd_add_server(struct fwd_conn *c,
			  const struct slick_thrift_msg *msg)
{
	struct fwd_backend *be, *old;
	char text[96];
	char ip[20];
	const char *end;
	s32 bport, key;
	__be32 addr;
	int ret;

	ret = fwd_parse_add_server(c, msg, ip, sizeof(ip), &bport, &key);
	if (ret)
		return ret;

	if (!in4_pton(ip, strlen(ip), (u8 *)&addr, -1, &end) ||
	    *end || !ip[0]) {
		snprintf(text, sizeof(text), "invalid IPv4 address");
		goto exception;
	}
	if (bport < 1 || bport > 65535) {
		snprintf(text, sizeof(text), "invalid port %d", bport);
		goto exception;
	}

	mutex_lock(&fwd_ctl_mutex);
	be = fwd_backend_find(addr, bport);
	if (!be) {
		ret = fwd_backend_connect(addr, bport, &be);
		if (ret) {
			mutex_unlock(&fwd_ctl_mutex);
			atomic_long_inc(&fwd_backend_errors);
			snprintf(text, sizeof(text),
				 "connect to %pI4:%d failed: %d", &addr, bport,
				 ret);
			goto exception;
		}
	}
	/* The caller's reference becomes the route's. */
	old = xa_store(&fwd_routes, (u32)key, be, GFP_KERNEL);
	if (xa_is_err(old)) {
		mutex_unlock(&fwd_ctl_mutex);
		fwd_backend_put(be);
		snprintf(text, sizeof(text), "out of memory");
		goto exception;
	}
	if (old)
		fwd_backend_put(old);
	/* Lost it meanwhile: its teardown may have missed this route. */
	if (READ_ONCE(be->dead) &&
	    xa_cmpxchg(&fwd_routes, (u32)key, be, NULL, 0) == be)
		fwd_backend_put(be);
	mutex_unlock(&fwd_ctl_mutex);
	return fwd_reply_void(c, msg);

exception:
	return fwd_reply_exception(c, msg, SLICK_TAPP_INTERNAL_ERROR, text);
}

/* Drop every route and tear every backend down. */
static void fwd_backends_teardown_all(bool graceful)
{
	struct fwd_backend *be;

	fwd_routes_drop(NULL);
	for (;;) {
		spin_lock(&fwd_lock);
		be = list_first_entry_or_null(&fwd_backends,
					      struct fwd_backend, node);
		if (be)
			kref_get(&be->ref);
		spin_unlock(&fwd_lock);
		if (!be)
			break;
		fwd_backend_teardown(be, false, graceful);
		fwd_backend_put(be);
	}
}

static void fwd_release_servers(void)
{
	mutex_lock(&fwd_ctl_mutex);
	fwd_backends_teardown_all(true);
	mutex_unlock(&fwd_ctl_mutex);
}

/* 0: handled, < 0: close the connection. */
static int fwd_ctl_msg(struct fwd_conn *c, const struct slick_thrift_msg *msg)
{
	bool oneway = msg->type == SLICK_THRIFT_ONEWAY;
	char text[FWD_NAME_MAX + 32];

	if (msg->type != SLICK_THRIFT_CALL && !oneway)
		return -EPROTO;
	if (msg->name_len > FWD_NAME_MAX)
		return -EPROTO;

	if (slick_thrift_name_is(msg, "add_server"))
		return fwd_add_server(c, msg);
	if (slick_thrift_name_is(msg, "release_servers")) {
		fwd_release_servers();
		return oneway ? 0 : fwd_reply_void(c, msg);
	}
	if (oneway)
		return 0;
	snprintf(text, sizeof(text), "Invalid method name: '%.*s'",
		 (int)msg->name_len, msg->name);
	return fwd_reply_exception(c, msg, SLICK_TAPP_UNKNOWN_METHOD, text);
}

static void fwd_ctl_event(struct slick_sock *ss, unsigned long events)
{
	struct fwd_conn *c = ss->priv;
	struct slick_thrift_msg msg;
	int ret;

	if (READ_ONCE(c->closing))
		return;

	for (;;) {
		/* Room for any reply first, so a command never runs twice. */
		ret = slick_bsock_flush(&c->ts.bs);
		if (ret && ret != -EAGAIN)
			break;
		if (slick_bsock_tx_room(&c->ts.bs) < FWD_REPLY_MAX)
			return;
		ret = slick_tsock_next(&c->ts, &msg);
		if (ret == -EAGAIN)
			return;
		if (ret)
			break;
		ret = fwd_ctl_msg(c, &msg);
		if (ret)
			break;
		slick_tsock_discard(&c->ts);
	}
	if (fwd_is_malformed(ret))
		atomic_long_inc(&fwd_malformed);
	fwd_conn_close_self(c, NULL);
}

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static void fwd_accept(struct list_head *list, struct socket *sock,
		       slick_event_fn fn, size_t tx_max,
		       atomic_long_t *active)
{
	struct fwd_conn *c;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		sock_release(sock);
		return;
	}
	tcp_sock_set_nodelay(sock->sk);
	INIT_LIST_HEAD(&c->wait_node);
	c->ss.sock = sock;
	slick_tsock_init(&c->ts, sock, NULL, &fwd_cfg, tx_max);

	spin_lock(&fwd_lock);
	if (fwd_stopping) {
		spin_unlock(&fwd_lock);
		sock_release(sock);
		kfree(c);
		return;
	}
	list_add_tail(&c->node, list);
	if (active)
		atomic_long_inc(active);
	spin_unlock(&fwd_lock);

	slick_sock_register(&c->ss, sock, fn, c, fwd_wq);
}

static void fwd_client_accept(void *priv, struct socket *sock)
{
	fwd_accept(&fwd_clients, sock, fwd_client_event, 4096,
		   &fwd_clients_active);
}

static void fwd_ctl_accept(void *priv, struct socket *sock)
{
	fwd_accept(&fwd_ctls, sock, fwd_ctl_event, FWD_CTL_TX_MAX, NULL);
}

static void fwd_close_conns(struct list_head *list, atomic_long_t *active)
{
	struct fwd_conn *c;

	for (;;) {
		spin_lock(&fwd_lock);
		c = list_first_entry_or_null(list, struct fwd_conn, node);
		if (c) {
			list_del_init(&c->node);
			WRITE_ONCE(c->closing, true);
		}
		spin_unlock(&fwd_lock);
		if (!c)
			break;
		slick_sock_unregister(&c->ss);
		/* A backend may kick it until it is unparked: cancel again. */
		fwd_unpark(c);
		slick_sock_unregister(&c->ss);
		fwd_conn_free(c, active);
	}
}

static int fwd_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "clients_active %ld\n",
		   atomic_long_read(&fwd_clients_active));
	seq_printf(m, "backends_active %ld\n",
		   atomic_long_read(&fwd_backends_active));
	seq_printf(m, "forwarded %ld\n", atomic_long_read(&fwd_forwarded));
	seq_printf(m, "unknown_key %ld\n", atomic_long_read(&fwd_unknown_key));
	seq_printf(m, "malformed %ld\n", atomic_long_read(&fwd_malformed));
	seq_printf(m, "backend_errors %ld\n",
		   atomic_long_read(&fwd_backend_errors));
	return 0;
}

static int fwd_check_params(void)
{
	if (port < 1 || port > 65535) {
		pr_err("invalid parameter port=%d (must be 1-65535)\n", port);
		return -EINVAL;
	}
	if (ctl_port < 1 || ctl_port > 65535 || ctl_port == port) {
		pr_err("invalid parameter ctl_port=%d (must be 1-65535 and differ from port)\n",
		       ctl_port);
		return -EINVAL;
	}
	if (framed != 0 && framed != 1) {
		pr_err("invalid parameter framed=%d (must be 0 or 1)\n",
		       framed);
		return -EINVAL;
	}
	if (backlog < 1 || backlog > 65535) {
		pr_err("invalid parameter backlog=%d (must be 1-65535)\n",
		       backlog);
		return -EINVAL;
	}
	if (max_msg < FWD_MAX_MSG_MIN || max_msg > FWD_MAX_MSG_MAX) {
		pr_err("invalid parameter max_msg=%d (must be %d-%d)\n",
		       max_msg, FWD_MAX_MSG_MIN, FWD_MAX_MSG_MAX);
		return -EINVAL;
	}
	return 0;
}

static int __init fwd_init(void)
{
	int err;

	err = fwd_check_params();
	if (err)
		return err;
	slick_thrift_cfg_default(&fwd_cfg, framed, max_msg);

	fwd_wq = alloc_workqueue("slick_forwarder", 0, 0);
	if (!fwd_wq)
		return -ENOMEM;

	if (!proc_create_single("slick_forwarder", 0444, init_net.proc_net,
				fwd_proc_show)) {
		err = -ENOMEM;
		goto out_wq;
	}

	err = slick_listen(&fwd_listener, htonl(INADDR_ANY), port, backlog,
			   fwd_client_accept, NULL, fwd_wq);
	if (err) {
		pr_err("cannot listen on port %d: %d\n", port, err);
		goto out_proc;
	}
	err = slick_listen(&fwd_ctl_listener, htonl(INADDR_ANY), ctl_port,
			   backlog, fwd_ctl_accept, NULL, fwd_wq);
	if (err) {
		pr_err("cannot listen on ctl_port %d: %d\n", ctl_port, err);
		goto out_listener;
	}
	pr_info("forwarding on port %d, controller on port %d, %s\n", port,
		ctl_port, framed ? "framed" : "unframed");
	return 0;

out_listener:
	slick_listener_stop(&fwd_listener);
out_proc:
	remove_proc_entry("slick_forwarder", init_net.proc_net);
out_wq:
	destroy_workqueue(fwd_wq);
	return err;
}

static void __exit fwd_exit(void)
{
	slick_listener_stop(&fwd_ctl_listener);
	slick_listener_stop(&fwd_listener);
	spin_lock(&fwd_lock);
	fwd_stopping = true;
	spin_unlock(&fwd_lock);

	fwd_close_conns(&fwd_ctls, NULL);
	fwd_close_conns(&fwd_clients, &fwd_clients_active);

	fwd_backends_teardown_all(false);
	/* Handlers that closed their own connection may still be returning. */
	destroy_workqueue(fwd_wq);
	xa_destroy(&fwd_routes);
	remove_proc_entry("slick_forwarder", init_net.proc_net);
}

module_init(fwd_init);
module_exit(fwd_exit);

MODULE_DESCRIPTION("Slick Thrift message forwarder");
MODULE_LICENSE("GPL");
