// SPDX-License-Identifier: GPL-2.0
/*
 * Slick klibevent: socket events delivered to process context.
 *
 * The socket callbacks run in softirq context (or under the socket lock in
 * process context), so they only record the event in an atomic mask and
 * queue the registration's work item. One work item per socket gives the
 * non-reentrancy: the workqueue never runs the same work item on two CPUs
 * at once, and queueing it while it runs makes it run once more, so no
 * event is lost.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/in.h>
#include <linux/net.h>
#include <linux/tcp.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/slick.h>
#include <trace/events/sock.h>

#include "slick_internal.h"

static struct slick_sock *slick_sk_ss(struct sock *sk)
{
	return (struct slick_sock *)((uintptr_t)sk->sk_user_data &
				     SK_USER_DATA_PTRMASK);
}

static void slick_queue(struct slick_sock *ss, unsigned long events)
{
	set_mask_bits(&ss->pending, 0, events);
	queue_work(ss->wq, &ss->work);
}

static void slick_data_ready(struct sock *sk)
{
	struct slick_sock *ss;

	trace_sk_data_ready(sk);

	read_lock_bh(&sk->sk_callback_lock);
	ss = slick_sk_ss(sk);
	if (ss) {
		ss->orig_data_ready(sk);
		slick_queue(ss, SLICK_EV_DATA_READY);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void slick_state_change(struct sock *sk)
{
	struct slick_sock *ss;

	read_lock_bh(&sk->sk_callback_lock);
	ss = slick_sk_ss(sk);
	if (ss) {
		ss->orig_state_change(sk);
		slick_queue(ss, SLICK_EV_STATE_CHANGE);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void slick_write_space(struct sock *sk)
{
	struct slick_sock *ss;

	read_lock_bh(&sk->sk_callback_lock);
	ss = slick_sk_ss(sk);
	if (ss) {
		ss->orig_write_space(sk);
		slick_queue(ss, SLICK_EV_WRITE_SPACE);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void slick_work(struct work_struct *work)
{
	struct slick_sock *ss = container_of(work, struct slick_sock, work);
	unsigned long events = xchg(&ss->pending, 0);

	/*
	 * The handler may free @ss (after slick_sock_detach()), so nothing
	 * below this call may touch it.
	 */
	if (events)
		ss->fn(ss, events);
}

void __slick_sock_register(struct slick_sock *ss, struct socket *sock,
			   slick_event_fn fn, void *priv,
			   struct workqueue_struct *wq,
			   struct lock_class_key *key)
{
	struct sock *sk = sock->sk;

	ss->sock = sock;
	ss->fn = fn;
	ss->priv = priv;
	ss->wq = wq ? wq : slick_wq;
	ss->pending = 0;
	__INIT_WORK_KEY(&ss->work, slick_work, 0, key);

	write_lock_bh(&sk->sk_callback_lock);
	ss->orig_data_ready = sk->sk_data_ready;
	ss->orig_state_change = sk->sk_state_change;
	ss->orig_write_space = sk->sk_write_space;
	/*
	 * NOCOPY: a socket cloned from this one (a connection accepted on a
	 * listener) must not inherit the pointer to this registration.
	 */
	sk->sk_user_data = (void *)((uintptr_t)ss | SK_USER_DATA_NOCOPY);
	sk->sk_data_ready = slick_data_ready;
	sk->sk_state_change = slick_state_change;
	sk->sk_write_space = slick_write_space;
	ss->registered = true;
	write_unlock_bh(&sk->sk_callback_lock);

	slick_queue(ss, SLICK_EV_DATA_READY | SLICK_EV_STATE_CHANGE);
}
EXPORT_SYMBOL_GPL(__slick_sock_register);

void slick_sock_detach(struct slick_sock *ss)
{
	struct sock *sk;

	if (ss->registered) {
		sk = ss->sock->sk;
		write_lock_bh(&sk->sk_callback_lock);
		sk->sk_data_ready = ss->orig_data_ready;
		sk->sk_state_change = ss->orig_state_change;
		sk->sk_write_space = ss->orig_write_space;
		sk->sk_user_data = NULL;
		ss->registered = false;
		write_unlock_bh(&sk->sk_callback_lock);
	}
	/*
	 * No callback can queue the work any more: they run under the read
	 * side of sk_callback_lock and now find no registration.
	 */
	cancel_work(&ss->work);
}
EXPORT_SYMBOL_GPL(slick_sock_detach);

void slick_sock_unregister(struct slick_sock *ss)
{
	slick_sock_detach(ss);
	cancel_work_sync(&ss->work);
}
EXPORT_SYMBOL_GPL(slick_sock_unregister);

void slick_sock_kick(struct slick_sock *ss, unsigned long events)
{
	slick_queue(ss, events);
}
EXPORT_SYMBOL_GPL(slick_sock_kick);

void slick_sock_close(struct socket *sock)
{
	if (!sock)
		return;
	kernel_sock_shutdown(sock, SHUT_RDWR);
	sock_release(sock);
}
EXPORT_SYMBOL_GPL(slick_sock_close);

/* Give an accepted socket back the callbacks TCP gave it. */
static void slick_reset_child(struct slick_listener *l, struct socket *sock)
{
	struct sock *sk = sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_data_ready == slick_data_ready)
		sk->sk_data_ready = l->ss.orig_data_ready;
	if (sk->sk_state_change == slick_state_change)
		sk->sk_state_change = l->ss.orig_state_change;
	if (sk->sk_write_space == slick_write_space)
		sk->sk_write_space = l->ss.orig_write_space;
	sk->sk_user_data = NULL;
	write_unlock_bh(&sk->sk_callback_lock);
}

static void slick_listener_event(struct slick_sock *ss, unsigned long events)
{
	struct slick_listener *l = container_of(ss, struct slick_listener, ss);
	struct socket *newsock;
	int budget = 64;
	int err;

	while (budget--) {
		err = kernel_accept(ss->sock, &newsock, O_NONBLOCK);
		if (err == -EAGAIN)
			return;
		if (err) {
			pr_warn_ratelimited("accept failed: %d\n", err);
			return;
		}
		slick_reset_child(l, newsock);
		l->accept(l->priv, newsock);
	}
	/* Let other work run; continue later. */
	slick_sock_kick(ss, SLICK_EV_KICK);
}

int slick_listen(struct slick_listener *l, __be32 addr, u16 port,
		 int backlog, slick_accept_fn accept, void *priv,
		 struct workqueue_struct *wq)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = addr,
		.sin_port = htons(port),
	};
	struct socket *sock;
	int err;

	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP,
			       &sock);
	if (err)
		return err;

	sock_set_reuseaddr(sock->sk);
	err = kernel_bind(sock, (struct sockaddr *)&sin, sizeof(sin));
	if (err)
		goto out_release;

	err = kernel_listen(sock, backlog);
	if (err)
		goto out_release;

	l->accept = accept;
	l->priv = priv;
	/* The first run accepts whatever arrived before the registration. */
	slick_sock_register(&l->ss, sock, slick_listener_event, l, wq);
	return 0;

out_release:
	sock_release(sock);
	return err;
}
EXPORT_SYMBOL_GPL(slick_listen);

void slick_listener_stop(struct slick_listener *l)
{
	slick_sock_unregister(&l->ss);
	/* Resets connections still in the accept queue. */
	sock_release(l->ss.sock);
	l->ss.sock = NULL;
}
EXPORT_SYMBOL_GPL(slick_listener_stop);

int slick_connect(__be32 addr, u16 port, unsigned int timeout_s,
		  struct socket **res)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = addr,
		.sin_port = htons(port),
	};
	struct socket *sock;
	int err;

	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP,
			       &sock);
	if (err)
		return err;

	/* A blocking connect waits at most sk_sndtimeo. */
	sock_set_sndtimeo(sock->sk, timeout_s);
	err = kernel_connect(sock, (struct sockaddr *)&sin, sizeof(sin), 0);
	if (err) {
		if (err == -EINPROGRESS || err == -EALREADY)
			err = -ETIMEDOUT;
		sock_release(sock);
		return err;
	}
	tcp_sock_set_nodelay(sock->sk);
	*res = sock;
	return 0;
}
EXPORT_SYMBOL_GPL(slick_connect);
