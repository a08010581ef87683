/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Slick: a framework for in-kernel network services.
 *
 * Three layers, each usable on its own:
 *
 * - klibevent (struct slick_sock): socket event notification. The socket's
 *   sk_data_ready, sk_state_change and sk_write_space callbacks are replaced;
 *   they only record the event and queue a work item, and the service's
 *   handler runs in process context with the set of pending events. A
 *   handler never runs concurrently with itself for one socket, and events
 *   that arrive while it runs make it run again. struct slick_listener
 *   builds a listening TCP socket on top of it.
 *
 * - BufferedSocket (struct slick_buf, struct slick_bsock): a receive buffer
 *   that can be peeked and consumed, and a bounded overflow buffer that
 *   makes writes of whole messages atomic on a non-blocking socket.
 *
 * - ThriftSocket (struct slick_tsock and the slick_thrift_* helpers): a
 *   parser for the Apache Thrift binary protocol, framed or unframed, that
 *   finds complete messages in a byte buffer without consuming them, field
 *   readers, and writers for replies and exceptions.
 *
 * The buffer and parser functions are pure functions on memory, so they
 * can be tested without sockets.
 */
#ifndef _NET_SLICK_H
#define _NET_SLICK_H

#include <linux/atomic.h>
#include <linux/bits.h>
#include <linux/lockdep_types.h>
#include <linux/types.h>
#include <linux/workqueue.h>

struct socket;
struct sock;

/* ------------------------------------------------------------------ */
/* klibevent                                                           */
/* ------------------------------------------------------------------ */

/* Event bits passed to a handler. */
#define SLICK_EV_DATA_READY	BIT(0)	/* sk_data_ready fired */
#define SLICK_EV_STATE_CHANGE	BIT(1)	/* sk_state_change fired */
#define SLICK_EV_WRITE_SPACE	BIT(2)	/* sk_write_space fired */
#define SLICK_EV_KICK		BIT(3)	/* slick_sock_kick() */

struct slick_sock;

/**
 * typedef slick_event_fn - handler of socket events
 * @ss: the registration the events are for
 * @events: bitmask of SLICK_EV_* that fired since the last call
 *
 * Runs in process context from a workqueue, may sleep, and never runs
 * concurrently with itself for the same @ss. It may call
 * slick_sock_detach() on @ss and then free it; it must not call
 * slick_sock_unregister() on @ss.
 */
typedef void (*slick_event_fn)(struct slick_sock *ss, unsigned long events);

/**
 * struct slick_sock - event registration of one socket
 * @sock: the socket
 * @fn: handler
 * @priv: owner's pointer, not used by Slick
 * @wq: workqueue the handler runs on
 * @work: the handler's work item
 * @pending: SLICK_EV_* bits not yet passed to @fn
 * @registered: callbacks are installed
 * @orig_data_ready: saved sk_data_ready
 * @orig_state_change: saved sk_state_change
 * @orig_write_space: saved sk_write_space
 *
 * Embed it in the service's per-connection structure; all fields are
 * private to Slick except @sock and @priv.
 */
struct slick_sock {
	struct socket *sock;
	slick_event_fn fn;
	void *priv;
	struct workqueue_struct *wq;
	struct work_struct work;
	unsigned long pending;
	bool registered;
	void (*orig_data_ready)(struct sock *sk);
	void (*orig_state_change)(struct sock *sk);
	void (*orig_write_space)(struct sock *sk);
};

void __slick_sock_register(struct slick_sock *ss, struct socket *sock,
			   slick_event_fn fn, void *priv,
			   struct workqueue_struct *wq,
			   struct lock_class_key *key);

/**
 * slick_sock_register() - start delivering events of a socket
 * @ss: registration to fill in (memory owned by the caller)
 * @sock: a socket with no other owner of its callbacks
 * @fn: handler
 * @priv: stored in @ss->priv
 * @wq: workqueue to run @fn on, or NULL for Slick's own workqueue
 *
 * Saves the socket's callbacks and installs Slick's under
 * sk_callback_lock, then queues the handler once with
 * SLICK_EV_DATA_READY | SLICK_EV_STATE_CHANGE so that data which arrived
 * before the registration is seen. A service that wants a clean module
 * unload passes its own workqueue and destroys it on exit.
 *
 * Each call site gets its own lockdep class for the handler's work item,
 * so a handler may slick_sock_unregister() a socket registered elsewhere.
 *
 * Context: process context.
 */
#define slick_sock_register(ss, sock, fn, priv, wq)			\
	do {								\
		static struct lock_class_key __slick_key;		\
									\
		__slick_sock_register(ss, sock, fn, priv, wq,		\
				      &__slick_key);			\
	} while (0)

/**
 * slick_sock_detach() - stop events without waiting
 * @ss: registration
 *
 * Restores the saved callbacks, clears sk_user_data and cancels a queued
 * but not yet running handler call. Does not wait for a running handler,
 * so it may be called by the handler itself, which may then free @ss if
 * nothing else can slick_sock_kick() it. Idempotent.
 *
 * Context: process context.
 */
void slick_sock_detach(struct slick_sock *ss);

/**
 * slick_sock_unregister() - stop events and wait for the handler
 * @ss: registration
 *
 * Like slick_sock_detach(), and then waits until a running handler has
 * returned: when it returns the handler is neither running nor queued.
 * Must not be called from @ss's own handler. Idempotent.
 *
 * Context: process context, may sleep.
 */
void slick_sock_unregister(struct slick_sock *ss);

/**
 * slick_sock_kick() - run the handler with extra events
 * @ss: registration
 * @events: SLICK_EV_* bits to add, usually SLICK_EV_KICK
 *
 * Used to resume a connection from another context, e.g. when the peer it
 * was waiting for has space again, or by a handler to yield and continue
 * later. The caller must make sure @ss is still alive.
 *
 * Context: any context.
 */
void slick_sock_kick(struct slick_sock *ss, unsigned long events);

/**
 * typedef slick_accept_fn - called for each accepted connection
 * @priv: the listener's @priv
 * @newsock: the new connection; the callee owns it and must register or
 *	     release it
 */
typedef void (*slick_accept_fn)(void *priv, struct socket *newsock);

/**
 * struct slick_listener - listening TCP socket
 * @ss: event registration of the listening socket
 * @accept: called for each new connection
 * @priv: passed to @accept
 */
struct slick_listener {
	struct slick_sock ss;
	slick_accept_fn accept;
	void *priv;
};

/**
 * slick_listen() - create a listening IPv4 TCP socket in init_net
 * @l: listener to fill in (memory owned by the caller)
 * @addr: local address (network byte order), e.g. htonl(INADDR_ANY)
 * @port: local port (host byte order)
 * @backlog: listen backlog
 * @accept: called from process context for every accepted connection
 * @priv: passed to @accept
 * @wq: workqueue to run the accept loop on, or NULL
 *
 * The socket has SO_REUSEADDR set. Accepted sockets have TCP's own
 * callbacks again (not the listener's) when @accept sees them; the
 * accept loop uses kernel_accept() with O_NONBLOCK.
 *
 * Return: 0 or a negative errno (e.g. -EADDRINUSE).
 * Context: process context.
 */
int slick_listen(struct slick_listener *l, __be32 addr, u16 port,
		 int backlog, slick_accept_fn accept, void *priv,
		 struct workqueue_struct *wq);

/**
 * slick_listener_stop() - stop accepting and release the socket
 * @l: listener started with slick_listen()
 *
 * On return @accept is neither running nor will it be called again.
 * Connections that were queued but not yet accepted are reset.
 *
 * Context: process context, may sleep.
 */
void slick_listener_stop(struct slick_listener *l);

/**
 * slick_connect() - open a TCP connection from process context
 * @addr: IPv4 address (network byte order)
 * @port: port (host byte order)
 * @timeout_s: connect timeout in seconds (> 0); also the send timeout
 *	       of blocking sends on the socket
 * @res: the connected socket, with TCP_NODELAY set
 *
 * Return: 0 or a negative errno (-ECONNREFUSED, -ETIMEDOUT, ...).
 * Context: process context, sleeps up to @timeout_s.
 */
int slick_connect(__be32 addr, u16 port, unsigned int timeout_s,
		  struct socket **res);

/**
 * slick_sock_close() - shut down and release a socket
 * @sock: socket whose callbacks are no longer Slick's (or NULL)
 */
void slick_sock_close(struct socket *sock);

/* ------------------------------------------------------------------ */
/* Byte buffer                                                         */
/* ------------------------------------------------------------------ */

/**
 * struct slick_buf - bounded byte buffer, contiguous readable region
 * @data: storage, allocated lazily, NULL while unallocated
 * @size: allocated bytes
 * @head: offset of the first readable byte
 * @len: readable bytes
 * @init: size allocated first
 * @max: size never exceeded
 *
 * Readable bytes are always contiguous at @data + @head, so a parser can
 * look at a whole message in place. The storage grows on demand up to
 * @max and is freed again when the buffer empties after it grew beyond
 * @init.
 */
struct slick_buf {
	u8 *data;
	size_t size;
	size_t head;
	size_t len;
	size_t init;
	size_t max;
};

/**
 * slick_buf_init() - set up an empty buffer
 * @b: buffer
 * @init: bytes allocated first (clamped to @max)
 * @max: maximum capacity, > 0
 *
 * Nothing is allocated until data is added.
 */
void slick_buf_init(struct slick_buf *b, size_t init, size_t max);

/**
 * slick_buf_free() - free the storage; the buffer is empty afterwards
 * @b: buffer
 */
void slick_buf_free(struct slick_buf *b);

/**
 * slick_buf_len() - readable bytes
 * @b: buffer
 *
 * Return: bytes that can be peeked or read.
 */
static inline size_t slick_buf_len(const struct slick_buf *b)
{
	return b->len;
}

/**
 * slick_buf_space() - bytes that can still be added
 * @b: buffer
 *
 * Return: @max minus the readable bytes.
 */
static inline size_t slick_buf_space(const struct slick_buf *b)
{
	return b->max - b->len;
}

/**
 * slick_buf_peek() - look at readable bytes without consuming them
 * @b: buffer
 * @n: bytes wanted
 * @p: set to the first readable byte (valid until the next change to @b)
 *
 * Return: readable bytes available at *@p, which is >= @n when the call
 * succeeds, or 0 (and *@p = NULL) if fewer than @n bytes are readable.
 * @n == 0 returns everything readable.
 */
size_t slick_buf_peek(const struct slick_buf *b, size_t n, const u8 **p);

/**
 * slick_buf_discard() - consume bytes
 * @b: buffer
 * @n: bytes to drop
 *
 * Return: bytes dropped, min(@n, slick_buf_len()).
 */
size_t slick_buf_discard(struct slick_buf *b, size_t n);

/**
 * slick_buf_read() - copy out and consume bytes
 * @b: buffer
 * @dst: destination
 * @n: maximum bytes
 *
 * Return: bytes copied, min(@n, slick_buf_len()).
 */
size_t slick_buf_read(struct slick_buf *b, void *dst, size_t n);

/**
 * slick_buf_append() - add bytes, all or nothing
 * @b: buffer
 * @src: bytes
 * @n: count
 *
 * Return: 0, -ENOSPC if @n exceeds slick_buf_space() (nothing added),
 * or -ENOMEM.
 */
int slick_buf_append(struct slick_buf *b, const void *src, size_t n);

/**
 * slick_buf_reserve() - get writable room after the readable bytes
 * @b: buffer
 * @want: room wanted; less may be returned
 * @p: set to the first writable byte
 *
 * Compacts or grows the storage (up to @max) when it has less than @want
 * bytes of room. Fill the room and call slick_buf_commit().
 *
 * Return: writable bytes at *@p (> 0), -ENOBUFS if the buffer holds @max
 * bytes, or -ENOMEM.
 */
ssize_t slick_buf_reserve(struct slick_buf *b, size_t want, u8 **p);

/**
 * slick_buf_commit() - make bytes written after slick_buf_reserve() readable
 * @b: buffer
 * @n: bytes written, no more than reserved
 */
void slick_buf_commit(struct slick_buf *b, size_t n);

/* ------------------------------------------------------------------ */
/* BufferedSocket                                                      */
/* ------------------------------------------------------------------ */

struct slick_bsock;

/**
 * struct slick_bsock_ops - transport of a BufferedSocket
 * @send: send up to @len bytes without blocking; return bytes sent (> 0),
 *	  -EAGAIN, or another negative errno
 * @recv: receive up to @len bytes without blocking; return bytes (> 0),
 *	  0 at end of stream, -EAGAIN, or another negative errno
 *
 * NULL ops means the BufferedSocket's socket (kernel_sendmsg and
 * kernel_recvmsg with MSG_DONTWAIT). Tests plug in their own.
 */
struct slick_bsock_ops {
	int (*send)(struct slick_bsock *bs, const void *buf, size_t len);
	int (*recv)(struct slick_bsock *bs, void *buf, size_t len);
};

/**
 * struct slick_bsock - BufferedSocket
 * @sock: connected socket, or NULL with @ops
 * @ops: transport override, or NULL
 * @priv: owner's pointer (used by test transports)
 * @rx: received, not yet consumed bytes
 * @tx: overflow: accepted bytes the socket did not take yet
 * @batch: queued bytes that make write_all send, or 0 to send at once
 * @eof: the peer closed its sending side (rx may still hold bytes)
 * @err: sticky socket error (negative errno) or 0
 */
struct slick_bsock {
	struct socket *sock;
	const struct slick_bsock_ops *ops;
	void *priv;
	struct slick_buf rx;
	struct slick_buf tx;
	size_t batch;
	bool eof;
	int err;
};

/**
 * slick_bsock_init() - set up a BufferedSocket
 * @bs: BufferedSocket
 * @sock: connected socket (not owned: slick_bsock_free() does not close it)
 * @ops: transport, or NULL to use @sock
 * @rx_max: receive buffer bound (largest message that can be peeked whole)
 * @tx_max: overflow buffer bound (largest message write_all can take)
 */
void slick_bsock_init(struct slick_bsock *bs, struct socket *sock,
		      const struct slick_bsock_ops *ops, size_t rx_max,
		      size_t tx_max);

/**
 * slick_bsock_free() - free both buffers
 * @bs: BufferedSocket
 */
void slick_bsock_free(struct slick_bsock *bs);

/**
 * slick_bsock_set_batch() - let written messages leave together
 * @bs: BufferedSocket
 * @bytes: send once this many bytes are queued; 0 turns batching off
 *
 * With batching on, slick_bsock_write_all() queues messages in the
 * overflow buffer instead of sending each one, and sends only when
 * @bytes are queued or a message does not fit, so that many small
 * messages leave in one send (and, with TCP_NODELAY, in few segments).
 * The owner must call slick_bsock_flush() when its batch ends, e.g. at
 * the end of its event handler; until then queued bytes wait.
 */
static inline void slick_bsock_set_batch(struct slick_bsock *bs, size_t bytes)
{
	bs->batch = bytes;
}

/**
 * slick_bsock_fill() - receive once into the receive buffer
 * @bs: BufferedSocket
 *
 * Return: bytes received (> 0); 0 at end of stream (sets @bs->eof; bytes
 * already buffered stay readable); -EAGAIN if nothing is available now;
 * -ENOBUFS if the receive buffer is full; another negative errno for a
 * socket error (also stored in @bs->err).
 */
int slick_bsock_fill(struct slick_bsock *bs);

/**
 * slick_bsock_peek() - see slick_buf_peek() on the receive buffer
 * @bs: BufferedSocket
 * @n: bytes wanted
 * @p: set to the first byte
 *
 * Return: as slick_buf_peek().
 */
static inline size_t slick_bsock_peek(const struct slick_bsock *bs, size_t n,
				      const u8 **p)
{
	return slick_buf_peek(&bs->rx, n, p);
}

/**
 * slick_bsock_discard() - see slick_buf_discard() on the receive buffer
 * @bs: BufferedSocket
 * @n: bytes
 *
 * Return: as slick_buf_discard().
 */
static inline size_t slick_bsock_discard(struct slick_bsock *bs, size_t n)
{
	return slick_buf_discard(&bs->rx, n);
}

/**
 * slick_bsock_read() - see slick_buf_read() on the receive buffer
 * @bs: BufferedSocket
 * @dst: destination
 * @n: maximum bytes
 *
 * Return: as slick_buf_read().
 */
static inline size_t slick_bsock_read(struct slick_bsock *bs, void *dst,
				      size_t n)
{
	return slick_buf_read(&bs->rx, dst, n);
}

/**
 * slick_bsock_flush() - send what the overflow buffer holds
 * @bs: BufferedSocket
 *
 * Return: 0 when the overflow buffer is empty, -EAGAIN if bytes remain
 * (a SLICK_EV_WRITE_SPACE event follows when the socket has room), or a
 * negative errno for a socket error.
 */
int slick_bsock_flush(struct slick_bsock *bs);

/**
 * slick_bsock_write() - write as much as possible
 * @bs: BufferedSocket
 * @buf: bytes
 * @len: count
 *
 * Sends directly when nothing is queued, and queues what the socket does
 * not take in the overflow buffer, as far as it has room.
 *
 * Return: bytes accepted (sent or queued, possibly 0) or a negative errno.
 */
ssize_t slick_bsock_write(struct slick_bsock *bs, const void *buf,
			  size_t len);

/**
 * slick_bsock_write_all() - write a whole message or nothing
 * @bs: BufferedSocket
 * @buf: message
 * @len: its length
 *
 * Sends directly when nothing is queued, unless batching is on
 * (slick_bsock_set_batch()).
 *
 * Return: 0 when the whole message was sent or queued in order;
 * -EAGAIN if the overflow buffer cannot take what might remain, in which
 * case nothing was sent or queued (retry after SLICK_EV_WRITE_SPACE);
 * -EMSGSIZE if @len exceeds the overflow bound; another negative errno
 * for a socket error.
 */
int slick_bsock_write_all(struct slick_bsock *bs, const void *buf,
			  size_t len);

/**
 * slick_bsock_tx_pending() - bytes waiting in the overflow buffer
 * @bs: BufferedSocket
 *
 * Return: accepted bytes the socket has not taken yet.
 */
static inline size_t slick_bsock_tx_pending(const struct slick_bsock *bs)
{
	return slick_buf_len(&bs->tx);
}

/**
 * slick_bsock_tx_room() - largest message write_all accepts right now
 * @bs: BufferedSocket
 *
 * Return: free bytes in the overflow buffer.
 */
static inline size_t slick_bsock_tx_room(const struct slick_bsock *bs)
{
	return slick_buf_space(&bs->tx);
}

/* ------------------------------------------------------------------ */
/* Thrift binary protocol                                              */
/* ------------------------------------------------------------------ */

/* Message types */
#define SLICK_THRIFT_CALL	1
#define SLICK_THRIFT_REPLY	2
#define SLICK_THRIFT_EXCEPTION	3
#define SLICK_THRIFT_ONEWAY	4

/* Field and element types */
#define SLICK_THRIFT_STOP	0
#define SLICK_THRIFT_BOOL	2
#define SLICK_THRIFT_BYTE	3
#define SLICK_THRIFT_DOUBLE	4
#define SLICK_THRIFT_I16	6
#define SLICK_THRIFT_I32	8
#define SLICK_THRIFT_I64	10
#define SLICK_THRIFT_STRING	11
#define SLICK_THRIFT_STRUCT	12
#define SLICK_THRIFT_MAP	13
#define SLICK_THRIFT_SET	14
#define SLICK_THRIFT_LIST	15
#define SLICK_THRIFT_UUID	16

/* TApplicationException types */
#define SLICK_TAPP_UNKNOWN_METHOD	1
#define SLICK_TAPP_INTERNAL_ERROR	6
#define SLICK_TAPP_PROTOCOL_ERROR	7

/* Strict header: version 1 in the top half of the first word */
#define SLICK_THRIFT_VERSION_1		0x80010000U
#define SLICK_THRIFT_VERSION_MASK	0xffff0000U

#define SLICK_THRIFT_MAX_DEPTH		64
#define SLICK_THRIFT_MAX_FRAME		16384000

/**
 * struct slick_thrift_cfg - parser limits and transport
 * @framed: messages are prefixed by a 4-byte big-endian frame length
 * @max_msg: largest message in bytes (the frame length when framed,
 *	     otherwise the whole message)
 * @max_depth: deepest nesting of structs and containers, counting the
 *	       message's argument struct as 1; values above
 *	       SLICK_THRIFT_MAX_DEPTH act as SLICK_THRIFT_MAX_DEPTH
 * @max_string: longest string/binary and method name
 * @max_container: most elements in a list or set, or pairs in a map
 */
struct slick_thrift_cfg {
	bool framed;
	u32 max_msg;
	u32 max_depth;
	u32 max_string;
	u32 max_container;
};

/**
 * slick_thrift_cfg_default() - sane limits for @max_msg
 * @cfg: filled in
 * @framed: transport
 * @max_msg: largest message
 *
 * Depth 32, strings up to @max_msg, containers up to @max_msg elements.
 */
void slick_thrift_cfg_default(struct slick_thrift_cfg *cfg, bool framed,
			      u32 max_msg);

/**
 * struct slick_thrift_msg - a complete message found in a buffer
 * @name: method name (points into the parsed buffer, not terminated)
 * @name_len: its length
 * @type: SLICK_THRIFT_CALL .. SLICK_THRIFT_ONEWAY
 * @seqid: sequence id
 * @strict: the header had a version word
 * @len: bytes of the whole message, frame header included
 * @args_off: offset of the argument (or result) struct from the start
 * @args_len: length of that struct including its stop byte
 */
struct slick_thrift_msg {
	const u8 *name;
	u32 name_len;
	u8 type;
	s32 seqid;
	bool strict;
	size_t len;
	size_t args_off;
	size_t args_len;
};

/**
 * slick_thrift_parse() - find the next complete message in a buffer
 * @buf: bytes received so far
 * @len: their count
 * @cfg: transport and limits
 * @msg: filled in on success
 *
 * Validates the whole message (every field, recursively) without
 * modifying or consuming anything. Both strict (versioned) and non-strict
 * headers are accepted. Element types of empty containers are not
 * checked, as in Apache Thrift.
 *
 * Return: 0 and @msg on success; -EAGAIN if @buf holds a valid prefix of
 * a message (need more data); and for malformed input:
 * -ERANGE negative length (frame, name, string, container);
 * -E2BIG string or container longer than @cfg allows;
 * -EMSGSIZE message or frame larger than @cfg->max_msg;
 * -EPROTO unknown field, element or message type;
 * -EPROTONOSUPPORT strict header with a version other than 1;
 * -ELOOP nesting deeper than @cfg->max_depth;
 * -EBADMSG frame length does not match the message inside it.
 */
int slick_thrift_parse(const u8 *buf, size_t len,
		       const struct slick_thrift_cfg *cfg,
		       struct slick_thrift_msg *msg);

/**
 * slick_thrift_name_is() - compare a message's method name
 * @msg: parsed message
 * @name: NUL-terminated name
 *
 * Return: true if the method name is exactly @name.
 */
bool slick_thrift_name_is(const struct slick_thrift_msg *msg,
			  const char *name);

/**
 * struct slick_thrift_field - one field of a struct
 * @type: SLICK_THRIFT_* type
 * @id: field id
 * @val: first byte of the value
 * @val_len: bytes of the value
 */
struct slick_thrift_field {
	u8 type;
	s16 id;
	const u8 *val;
	size_t val_len;
};

/**
 * struct slick_thrift_iter - iterator over the fields of a struct
 * @buf: the struct's bytes
 * @len: their count
 * @pos: next field header
 * @cfg: limits for skipping values
 */
struct slick_thrift_iter {
	const u8 *buf;
	size_t len;
	size_t pos;
	const struct slick_thrift_cfg *cfg;
};

/**
 * slick_thrift_iter_init() - iterate over a struct
 * @it: iterator
 * @buf: struct bytes, e.g. message start + @msg->args_off
 * @len: e.g. @msg->args_len
 * @cfg: limits
 */
void slick_thrift_iter_init(struct slick_thrift_iter *it, const u8 *buf,
			    size_t len, const struct slick_thrift_cfg *cfg);

/**
 * slick_thrift_iter_next() - next field
 * @it: iterator
 * @f: filled in when a field is returned
 *
 * Return: 1 and @f for a field, 0 at the stop byte, or a negative errno
 * as for slick_thrift_parse() (-EBADMSG if the struct is truncated).
 */
int slick_thrift_iter_next(struct slick_thrift_iter *it,
			   struct slick_thrift_field *f);

/**
 * slick_thrift_field_i32() - value of an i32 field
 * @f: field
 * @v: the value
 *
 * Return: 0, or -EPROTO if @f is not an i32.
 */
int slick_thrift_field_i32(const struct slick_thrift_field *f, s32 *v);

/**
 * slick_thrift_field_str() - value of a string/binary field
 * @f: field
 * @s: first byte (not terminated)
 * @len: length
 *
 * Return: 0, or -EPROTO if @f is not a string.
 */
int slick_thrift_field_str(const struct slick_thrift_field *f, const u8 **s,
			   u32 *len);

/**
 * slick_thrift_write_reply() - encode a reply with an empty result struct
 * @buf: output
 * @size: its size
 * @framed: prefix a frame length
 * @name: method name
 * @name_len: its length
 * @seqid: the call's sequence id
 *
 * Encodes a strict T_REPLY, as sent for a successful void method.
 *
 * Return: bytes written or -ENOSPC.
 */
ssize_t slick_thrift_write_reply(u8 *buf, size_t size, bool framed,
				 const u8 *name, u32 name_len, s32 seqid);

/**
 * slick_thrift_write_exception() - encode a TApplicationException
 * @buf: output
 * @size: its size
 * @framed: prefix a frame length
 * @name: method name
 * @name_len: its length
 * @seqid: the call's sequence id
 * @type: SLICK_TAPP_* exception type
 * @text: message (may be NULL if @text_len is 0)
 * @text_len: its length
 *
 * Encodes a strict T_EXCEPTION whose body is the struct
 * { 1: string message, 2: i32 type }.
 *
 * Return: bytes written or -ENOSPC.
 */
ssize_t slick_thrift_write_exception(u8 *buf, size_t size, bool framed,
				     const u8 *name, u32 name_len, s32 seqid,
				     s32 type, const char *text,
				     size_t text_len);

/* ------------------------------------------------------------------ */
/* ThriftSocket                                                        */
/* ------------------------------------------------------------------ */

/**
 * struct slick_tsock - ThriftSocket
 * @bs: the BufferedSocket below
 * @cfg: transport and limits
 * @cur: the message found by the last successful slick_tsock_next()
 * @have: @cur is valid
 */
struct slick_tsock {
	struct slick_bsock bs;
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg cur;
	bool have;
};

/**
 * slick_tsock_init() - set up a ThriftSocket
 * @ts: ThriftSocket
 * @sock: connected socket (not owned)
 * @ops: transport override or NULL
 * @cfg: transport and limits (copied)
 * @tx_max: overflow buffer bound
 *
 * The receive buffer is bounded by the largest message plus the frame
 * header.
 */
void slick_tsock_init(struct slick_tsock *ts, struct socket *sock,
		      const struct slick_bsock_ops *ops,
		      const struct slick_thrift_cfg *cfg, size_t tx_max);

/**
 * slick_tsock_free() - free the buffers
 * @ts: ThriftSocket
 */
void slick_tsock_free(struct slick_tsock *ts);

/**
 * slick_tsock_next() - the next complete message, not consumed
 * @ts: ThriftSocket
 * @msg: filled in on success (its pointers are valid until the receive
 *	 buffer changes)
 *
 * Parses what is buffered and, while that is a valid prefix, receives
 * more and retries.
 *
 * Context: process context (may call cond_resched()).
 *
 * Return: 0 with @msg; -EAGAIN if more data is needed and none is
 * available now; -ENODATA at end of stream with an empty buffer (clean
 * close); -EPIPE at end of stream in the middle of a message; a parser
 * error (see slick_thrift_parse()); or a socket error.
 */
int slick_tsock_next(struct slick_tsock *ts, struct slick_thrift_msg *msg);

/**
 * slick_tsock_msg_data() - first byte of the current message
 * @ts: ThriftSocket after a successful slick_tsock_next()
 *
 * Return: pointer into the receive buffer, valid until it changes.
 */
const u8 *slick_tsock_msg_data(const struct slick_tsock *ts);

/**
 * slick_tsock_discard() - consume the current message
 * @ts: ThriftSocket
 *
 * Return: 0, or -EINVAL if there is no current message.
 */
int slick_tsock_discard(struct slick_tsock *ts);

/**
 * slick_tsock_write() - write one encoded message, whole or nothing
 * @ts: ThriftSocket
 * @buf: message (with frame header when framed)
 * @len: its length
 *
 * Return: as slick_bsock_write_all().
 */
int slick_tsock_write(struct slick_tsock *ts, const void *buf, size_t len);

/**
 * slick_tsock_forward() - move the current message to another socket
 * @from: ThriftSocket with a current message
 * @to: destination
 *
 * Writes the message's raw bytes unchanged with slick_bsock_write_all()
 * and consumes it from @from only if that succeeded.
 *
 * Return: 0, -EINVAL without a current message, or as
 * slick_bsock_write_all() (on -EAGAIN nothing moved).
 */
int slick_tsock_forward(struct slick_tsock *from, struct slick_bsock *to);

#endif /* _NET_SLICK_H */
