// SPDX-License-Identifier: GPL-2.0
/*
 * Slick BufferedSocket: a peekable receive buffer and a bounded overflow
 * buffer that makes whole-message writes atomic on a non-blocking socket.
 */

#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/net.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/string.h>
#include <linux/uio.h>
#include <net/slick.h>

/*
 * Receive calls want at least this much room; the receive buffer is
 * compacted or grown only when it has less.
 */
#define SLICK_RX_MIN_ROOM	4096

void slick_buf_init(struct slick_buf *b, size_t init, size_t max)
{
	b->data = NULL;
	b->size = 0;
	b->head = 0;
	b->len = 0;
	b->max = max;
	b->init = min(init, max);
}
EXPORT_SYMBOL_GPL(slick_buf_init);

void slick_buf_free(struct slick_buf *b)
{
	kvfree(b->data);
	b->data = NULL;
	b->size = 0;
	b->head = 0;
	b->len = 0;
}
EXPORT_SYMBOL_GPL(slick_buf_free);

size_t slick_buf_peek(const struct slick_buf *b, size_t n, const u8 **p)
{
	if (!b->len || b->len < n) {
		*p = NULL;
		return 0;
	}
	*p = b->data + b->head;
	return b->len;
}
EXPORT_SYMBOL_GPL(slick_buf_peek);

size_t slick_buf_discard(struct slick_buf *b, size_t n)
{
	n = min(n, b->len);
	b->head += n;
	b->len -= n;
	if (!b->len) {
		b->head = 0;
		/* Give back storage that grew for a large message. */
		if (b->size > b->init) {
			kvfree(b->data);
			b->data = NULL;
			b->size = 0;
		}
	}
	return n;
}
EXPORT_SYMBOL_GPL(slick_buf_discard);

size_t slick_buf_read(struct slick_buf *b, void *dst, size_t n)
{
	n = min(n, b->len);
	if (n)
		memcpy(dst, b->data + b->head, n);
	return slick_buf_discard(b, n);
}
EXPORT_SYMBOL_GPL(slick_buf_read);

ssize_t slick_buf_reserve(struct slick_buf *b, size_t want, u8 **p)
{
	size_t tail, nsize;
	u8 *ndata;

	if (b->len >= b->max)
		return -ENOBUFS;
	want = clamp(want, 1, b->max - b->len);

	if (!b->data) {
		nsize = clamp(max(b->init, want), 1, b->max);
		b->data = kvmalloc(nsize, GFP_KERNEL);
		if (!b->data)
			return -ENOMEM;
		b->size = nsize;
		b->head = 0;
	}

	tail = b->size - b->head - b->len;
	if (tail < want && b->head) {
		memmove(b->data, b->data + b->head, b->len);
		b->head = 0;
		tail = b->size - b->len;
	}
	if (tail < want && b->size < b->max) {
		nsize = min(max(b->size * 2, b->len + want), b->max);
		ndata = kvmalloc(nsize, GFP_KERNEL);
		if (!ndata)
			return -ENOMEM;
		memcpy(ndata, b->data, b->len);
		kvfree(b->data);
		b->data = ndata;
		b->size = nsize;
		tail = nsize - b->len;
	}
	if (!tail)
		return -ENOBUFS;
	*p = b->data + b->head + b->len;
	return tail;
}
EXPORT_SYMBOL_GPL(slick_buf_reserve);

void slick_buf_commit(struct slick_buf *b, size_t n)
{
	b->len += min(n, b->size - b->head - b->len);
}
EXPORT_SYMBOL_GPL(slick_buf_commit);

int slick_buf_append(struct slick_buf *b, const void *src, size_t n)
{
	ssize_t room;
	u8 *p;

	if (!n)
		return 0;
	if (n > slick_buf_space(b))
		return -ENOSPC;
	room = slick_buf_reserve(b, n, &p);
	if (room < 0)
		return room;
	if (room < n)
		return -ENOSPC;
	memcpy(p, src, n);
	slick_buf_commit(b, n);
	return 0;
}
EXPORT_SYMBOL_GPL(slick_buf_append);

void slick_bsock_init(struct slick_bsock *bs, struct socket *sock,
		      const struct slick_bsock_ops *ops, size_t rx_max,
		      size_t tx_max)
{
	bs->sock = sock;
	bs->ops = ops;
	bs->batch = 0;
	bs->eof = false;
	bs->err = 0;
	slick_buf_init(&bs->rx, min_t(size_t, rx_max, 16384), rx_max);
	slick_buf_init(&bs->tx, min_t(size_t, tx_max, 16384), tx_max);
}
EXPORT_SYMBOL_GPL(slick_bsock_init);

void slick_bsock_free(struct slick_bsock *bs)
{
	slick_buf_free(&bs->rx);
	slick_buf_free(&bs->tx);
}
EXPORT_SYMBOL_GPL(slick_bsock_free);

static int slick_bsock_send(struct slick_bsock *bs, const void *buf,
			    size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };

	if (bs->ops)
		return bs->ops->send(bs, buf, len);
	return kernel_sendmsg(bs->sock, &msg, &iov, 1, len);
}

static int slick_bsock_recv(struct slick_bsock *bs, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = buf, .iov_len = len };

	if (bs->ops)
		return bs->ops->recv(bs, buf, len);
	return kernel_recvmsg(bs->sock, &msg, &iov, 1, len, msg.msg_flags);
}

static int slick_bsock_set_err(struct slick_bsock *bs, int err)
{
	if (err != -EAGAIN && !bs->err)
		bs->err = err;
	return err;
}

int slick_bsock_fill(struct slick_bsock *bs)
{
	ssize_t room;
	int n;
	u8 *p;

	if (bs->err)
		return bs->err;
	if (bs->eof)
		return 0;
	room = slick_buf_reserve(&bs->rx, SLICK_RX_MIN_ROOM, &p);
	if (room < 0)
		return room;
	n = slick_bsock_recv(bs, p, min_t(size_t, room, INT_MAX));
	if (n > 0) {
		slick_buf_commit(&bs->rx, n);
		return n;
	}
	if (!n) {
		bs->eof = true;
		return 0;
	}
	return slick_bsock_set_err(bs, n);
}
EXPORT_SYMBOL_GPL(slick_bsock_fill);

/* Send directly; return bytes sent (possibly fewer) or an error. */
static ssize_t slick_bsock_send_some(struct slick_bsock *bs, const u8 *buf,
				     size_t len)
{
	size_t done = 0;
	int n;

	while (done < len) {
		n = slick_bsock_send(bs, buf + done, len - done);
		if (n == -EAGAIN)
			break;
		if (n < 0)
			return slick_bsock_set_err(bs, n);
		if (!n)
			break;
		done += n;
	}
	return done;
}

int slick_bsock_flush(struct slick_bsock *bs)
{
	const u8 *p;
	ssize_t n;
	size_t len;

	if (bs->err)
		return bs->err;
	while ((len = slick_buf_peek(&bs->tx, 0, &p))) {
		n = slick_bsock_send_some(bs, p, len);
		if (n < 0)
			return n;
		if (!n)
			return -EAGAIN;
		slick_buf_discard(&bs->tx, n);
	}
	return 0;
}
EXPORT_SYMBOL_GPL(slick_bsock_flush);

ssize_t slick_bsock_write(struct slick_bsock *bs, const void *buf,
			  size_t len)
{
	ssize_t done = 0;
	size_t rest;
	int err;

	err = slick_bsock_flush(bs);
	if (err && err != -EAGAIN)
		return err;
	if (!slick_buf_len(&bs->tx)) {
		done = slick_bsock_send_some(bs, buf, len);
		if (done < 0)
			return done;
	}
	rest = min(len - done, slick_buf_space(&bs->tx));
	err = slick_buf_append(&bs->tx, (const u8 *)buf + done, rest);
	if (err)
		return done ? done : err;
	return done + rest;
}
EXPORT_SYMBOL_GPL(slick_bsock_write);

int slick_bsock_write_all(struct slick_bsock *bs, const void *buf,
			  size_t len)
{
	ssize_t done = 0;
	int err;

	if (len > bs->tx.max)
		return -EMSGSIZE;
	if (bs->err)
		return bs->err;
	/* A batch is sent when it is full or the message does not fit. */
	if (!bs->batch || len > slick_buf_space(&bs->tx)) {
		err = slick_bsock_flush(bs);
		if (err && err != -EAGAIN)
			return err;
	}
	/* Whatever the socket does not take must fit: decide up front. */
	if (len > slick_buf_space(&bs->tx))
		return -EAGAIN;
	if (!bs->batch && !slick_buf_len(&bs->tx)) {
		done = slick_bsock_send_some(bs, buf, len);
		if (done < 0)
			return done;
	}
	err = slick_buf_append(&bs->tx, (const u8 *)buf + done, len - done);
	/* -ENOMEM after part of the message went out breaks the stream. */
	if (err)
		return done ? slick_bsock_set_err(bs, err) : err;
	/* The message is queued; a socket error shows on the next call. */
	if (bs->batch && slick_buf_len(&bs->tx) >= bs->batch)
		slick_bsock_flush(bs);
	return 0;
}
EXPORT_SYMBOL_GPL(slick_bsock_write_all);
