// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests for Slick's byte buffers, BufferedSocket and Thrift binary
 * protocol code. Sockets are replaced by an in-memory transport.
 */

#include <kunit/test.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/unaligned.h>
#include <net/slick.h>

/* ------------------------------------------------------------------ */
/* In-memory transport                                                 */
/* ------------------------------------------------------------------ */

struct fake_io {
	const u8 *in;		/* bytes the peer sends us */
	size_t in_len;
	size_t in_pos;
	size_t chunk;		/* most bytes per receive call */
	bool in_eof;		/* end of stream after @in */
	int in_err;

	u8 out[4096];		/* bytes we sent */
	size_t out_len;
	size_t out_room;	/* bytes the "socket" takes before -EAGAIN */
	int out_err;
};

static int fake_send(struct slick_bsock *bs, const void *buf, size_t len)
{
	struct fake_io *io = bs->priv;

	if (io->out_err)
		return io->out_err;
	len = min3(len, io->out_room, sizeof(io->out) - io->out_len);
	if (!len)
		return -EAGAIN;
	memcpy(io->out + io->out_len, buf, len);
	io->out_len += len;
	io->out_room -= len;
	return len;
}

static int fake_recv(struct slick_bsock *bs, void *buf, size_t len)
{
	struct fake_io *io = bs->priv;

	if (io->in_err)
		return io->in_err;
	len = min3(len, io->chunk, io->in_len - io->in_pos);
	if (!len)
		return io->in_eof ? 0 : -EAGAIN;
	memcpy(buf, io->in + io->in_pos, len);
	io->in_pos += len;
	return len;
}

static const struct slick_bsock_ops fake_ops = {
	.send = fake_send,
	.recv = fake_recv,
};

static struct fake_io *fake_new(struct kunit *test)
{
	struct fake_io *io = kunit_kzalloc(test, sizeof(*io), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, io);
	io->chunk = SIZE_MAX;
	return io;
}

/* ------------------------------------------------------------------ */
/* slick_buffer                                                        */
/* ------------------------------------------------------------------ */

static void buf_peek_discard_read(struct kunit *test)
{
	struct slick_buf b;
	const u8 *p;
	char out[16];

	slick_buf_init(&b, 8, 64);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 0, &p), 0);
	KUNIT_EXPECT_NULL(test, p);
	KUNIT_EXPECT_EQ(test, slick_buf_discard(&b, 5), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_read(&b, out, sizeof(out)), 0);

	KUNIT_ASSERT_EQ(test, slick_buf_append(&b, "hello world", 11), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_len(&b), 11);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 0, &p), 11);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 11, &p), 11);
	KUNIT_EXPECT_MEMEQ(test, p, "hello world", 11);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 12, &p), 0);
	KUNIT_EXPECT_NULL(test, p);

	KUNIT_EXPECT_EQ(test, slick_buf_discard(&b, 6), 6);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 5, &p), 5);
	KUNIT_EXPECT_MEMEQ(test, p, "world", 5);
	KUNIT_EXPECT_EQ(test, slick_buf_read(&b, out, 3), 3);
	KUNIT_EXPECT_MEMEQ(test, out, "wor", 3);
	KUNIT_EXPECT_EQ(test, slick_buf_read(&b, out, sizeof(out)), 2);
	KUNIT_EXPECT_MEMEQ(test, out, "ld", 2);
	KUNIT_EXPECT_EQ(test, slick_buf_len(&b), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_discard(&b, 1), 0);
	slick_buf_free(&b);
}

static void buf_bounds(struct kunit *test)
{
	struct slick_buf b;
	const u8 *p;
	u8 *w;

	slick_buf_init(&b, 4, 16);
	KUNIT_EXPECT_EQ(test, slick_buf_append(&b, "0123456789", 10), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_append(&b, "abcdefg", 7), -ENOSPC);
	KUNIT_EXPECT_EQ(test, slick_buf_len(&b), 10);
	KUNIT_EXPECT_EQ(test, slick_buf_append(&b, "abcdef", 6), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_space(&b), 0);
	KUNIT_EXPECT_EQ(test, slick_buf_reserve(&b, 1, &w), -ENOBUFS);
	KUNIT_EXPECT_EQ(test, slick_buf_append(&b, "x", 1), -ENOSPC);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 16, &p), 16);
	KUNIT_EXPECT_MEMEQ(test, p, "0123456789abcdef", 16);
	KUNIT_EXPECT_EQ(test, slick_buf_append(&b, "", 0), 0);
	slick_buf_free(&b);
}

static void buf_compact_grow(struct kunit *test)
{
	struct slick_buf b;
	u8 in[200], out[200];
	size_t i, wr = 0, rd = 0;
	const u8 *p;
	ssize_t room;
	u8 *w;

	for (i = 0; i < sizeof(in); i++)
		in[i] = i * 7 + 3;
	slick_buf_init(&b, 8, 64);
	/* Stream through a small buffer in odd steps. */
	while (rd < sizeof(in)) {
		room = slick_buf_reserve(&b, 5, &w);
		if (room > 0 && wr < sizeof(in)) {
			room = min_t(size_t, min_t(size_t, room, 13),
				     sizeof(in) - wr);
			memcpy(w, in + wr, room);
			slick_buf_commit(&b, room);
			wr += room;
		}
		KUNIT_ASSERT_LE(test, slick_buf_len(&b), 64);
		rd += slick_buf_read(&b, out + rd, 3);
	}
	KUNIT_EXPECT_MEMEQ(test, in, out, sizeof(in));

	/* Growing for a large message, then shrinking when empty. */
	KUNIT_ASSERT_EQ(test, slick_buf_append(&b, in, 60), 0);
	KUNIT_EXPECT_GE(test, b.size, 60);
	KUNIT_EXPECT_EQ(test, slick_buf_peek(&b, 60, &p), 60);
	KUNIT_EXPECT_MEMEQ(test, p, in, 60);
	KUNIT_EXPECT_EQ(test, slick_buf_discard(&b, 100), 60);
	KUNIT_EXPECT_EQ(test, b.size, 0);
	KUNIT_EXPECT_NULL(test, b.data);
	slick_buf_free(&b);
}

static void bsock_write_all_atomic(struct kunit *test)
{
	struct fake_io *io = fake_new(test);
	struct slick_bsock bs;

	slick_bsock_init(&bs, NULL, &fake_ops, 64, 10);
	bs.priv = io;

	io->out_room = 4;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "AAAAAAAA", 8), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 4);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 4);

	/* 7 bytes would not fit the 6 left: nothing sent, nothing queued. */
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "BBBBBBB", 7),
			-EAGAIN);
	KUNIT_EXPECT_EQ(test, io->out_len, 4);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 4);

	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "CCCCCC", 6), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 10);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_room(&bs), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "D", 1), -EAGAIN);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "EEEEEEEEEEE", 11),
			-EMSGSIZE);
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), -EAGAIN);

	/* The socket drains: everything arrives once, in order. */
	io->out_room = 3;
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), -EAGAIN);
	io->out_room = 100;
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 14);
	KUNIT_EXPECT_MEMEQ(test, io->out, "AAAAAAAACCCCCC", 14);

	/* Direct send when nothing is queued. */
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "FF", 2), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 16);

	/* Socket errors are reported and sticky. */
	io->out_err = -EPIPE;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "G", 1), -EPIPE);
	io->out_err = 0;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "G", 1), -EPIPE);
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), -EPIPE);
	slick_bsock_free(&bs);
}

static void bsock_write_all_batch(struct kunit *test)
{
	struct fake_io *io = fake_new(test);
	struct slick_bsock bs;

	slick_bsock_init(&bs, NULL, &fake_ops, 64, 16);
	bs.priv = io;
	slick_bsock_set_batch(&bs, 8);
	io->out_room = 100;

	/* Queued, not sent, until the batch is full. */
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "AAA", 3), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "BBB", 3), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 6);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "CCC", 3), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 9);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 0);

	/* The owner's flush ends a batch. */
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "DD", 2), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 9);
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 11);

	/* A message that does not fit sends the batch first, whole or not at all. */
	io->out_room = 0;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "EEEEEEE", 7), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "FFFFFFFFFF", 10),
			-EAGAIN);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 7);
	io->out_room = 5;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "FFFFFFFFFF", 10), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 12);
	io->out_room = 100;
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), 0);
	KUNIT_EXPECT_EQ(test, io->out_len, 28);
	KUNIT_EXPECT_MEMEQ(test, io->out, "AAABBBCCCDDEEEEEEEFFFFFFFFFF", 28);

	/* Errors stay sticky with batching on. */
	io->out_err = -EPIPE;
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "GGGGGGGG", 8), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_write_all(&bs, "H", 1), -EPIPE);
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&bs), -EPIPE);
	slick_bsock_free(&bs);
}

static void bsock_write_partial(struct kunit *test)
{
	struct fake_io *io = fake_new(test);
	struct slick_bsock bs;

	slick_bsock_init(&bs, NULL, &fake_ops, 64, 8);
	bs.priv = io;
	io->out_room = 5;
	KUNIT_EXPECT_EQ(test, slick_bsock_write(&bs, "0123456789ABCDEFGH", 18),
			13);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&bs), 8);
	KUNIT_EXPECT_EQ(test, slick_bsock_write(&bs, "xyz", 3), 0);
	io->out_room = 100;
	KUNIT_EXPECT_EQ(test, slick_bsock_write(&bs, "xyz", 3), 3);
	KUNIT_EXPECT_EQ(test, io->out_len, 16);
	KUNIT_EXPECT_MEMEQ(test, io->out, "0123456789ABCxyz", 16);
	slick_bsock_free(&bs);
}

static void bsock_fill(struct kunit *test)
{
	struct fake_io *io = fake_new(test);
	struct slick_bsock bs;
	const u8 *p;

	slick_bsock_init(&bs, NULL, &fake_ops, 8, 8);
	bs.priv = io;
	io->in = (const u8 *)"abcdefghij";
	io->in_len = 10;
	io->chunk = 3;

	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), 3);
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), 3);
	/* The buffer holds at most 8 bytes. */
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), 2);
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), -ENOBUFS);
	KUNIT_EXPECT_EQ(test, slick_bsock_peek(&bs, 8, &p), 8);
	KUNIT_EXPECT_MEMEQ(test, p, "abcdefgh", 8);
	KUNIT_EXPECT_EQ(test, slick_bsock_discard(&bs, 8), 8);
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), 2);
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), -EAGAIN);
	KUNIT_EXPECT_FALSE(test, bs.eof);

	/* End of stream: distinct from errors, buffered bytes stay. */
	io->in_eof = true;
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), 0);
	KUNIT_EXPECT_TRUE(test, bs.eof);
	KUNIT_EXPECT_EQ(test, slick_bsock_peek(&bs, 2, &p), 2);
	KUNIT_EXPECT_MEMEQ(test, p, "ij", 2);
	KUNIT_EXPECT_EQ(test, bs.err, 0);
	slick_bsock_free(&bs);

	/* Errors are sticky. */
	slick_bsock_init(&bs, NULL, &fake_ops, 8, 8);
	bs.priv = io;
	io->in_err = -ECONNRESET;
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), -ECONNRESET);
	io->in_err = 0;
	KUNIT_EXPECT_EQ(test, slick_bsock_fill(&bs), -ECONNRESET);
	KUNIT_EXPECT_FALSE(test, bs.eof);
	slick_bsock_free(&bs);
}

static struct kunit_case slick_buffer_cases[] = {
	KUNIT_CASE(buf_peek_discard_read),
	KUNIT_CASE(buf_bounds),
	KUNIT_CASE(buf_compact_grow),
	KUNIT_CASE(bsock_write_all_atomic),
	KUNIT_CASE(bsock_write_all_batch),
	KUNIT_CASE(bsock_write_partial),
	KUNIT_CASE(bsock_fill),
	{}
};

static struct kunit_suite slick_buffer_suite = {
	.name = "slick_buffer",
	.test_cases = slick_buffer_cases,
};

/* ------------------------------------------------------------------ */
/* slick_thrift                                                        */
/* ------------------------------------------------------------------ */

#define TB_SIZE	4096

/* Message builder; @len keeps counting past the end to catch overflow. */
struct tb {
	u8 buf[TB_SIZE];
	size_t len;
};

static void tb_bytes(struct tb *b, const void *p, size_t n)
{
	if (b->len + n <= TB_SIZE)
		memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static void tb_u8(struct tb *b, u8 v)
{
	tb_bytes(b, &v, 1);
}

static void tb_i16(struct tb *b, s16 v)
{
	__be16 be = cpu_to_be16(v);

	tb_bytes(b, &be, 2);
}

static void tb_i32(struct tb *b, s32 v)
{
	__be32 be = cpu_to_be32(v);

	tb_bytes(b, &be, 4);
}

static void tb_i64(struct tb *b, s64 v)
{
	__be64 be = cpu_to_be64(v);

	tb_bytes(b, &be, 8);
}

static void tb_str(struct tb *b, const char *s)
{
	tb_i32(b, strlen(s));
	tb_bytes(b, s, strlen(s));
}

static void tb_field(struct tb *b, u8 type, s16 id)
{
	tb_u8(b, type);
	tb_i16(b, id);
}

/* Start a message; returns the offset of the frame length if framed. */
static size_t tb_header(struct tb *b, bool framed, bool strict, u8 type,
			const char *name, s32 seqid)
{
	size_t frame = b->len;

	if (framed)
		tb_i32(b, 0);
	if (strict) {
		tb_i32(b, (s32)(SLICK_THRIFT_VERSION_1 | type));
		tb_str(b, name);
	} else {
		tb_str(b, name);
		tb_u8(b, type);
	}
	tb_i32(b, seqid);
	return frame;
}

static void tb_end(struct tb *b, bool framed, size_t frame)
{
	if (framed)
		put_unaligned_be32(b->len - frame - 4, b->buf + frame);
}

/* An argument struct using every type, nested several levels. */
static void tb_rich_args(struct tb *b)
{
	static const u8 uuid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
				     13, 14, 15, 16 };

	tb_field(b, SLICK_THRIFT_BOOL, 1);
	tb_u8(b, 1);
	tb_field(b, SLICK_THRIFT_BYTE, 2);
	tb_u8(b, 0x7f);
	tb_field(b, SLICK_THRIFT_I16, 3);
	tb_i16(b, -2);
	tb_field(b, SLICK_THRIFT_I32, 4);
	tb_i32(b, 123456);
	tb_field(b, SLICK_THRIFT_I64, 5);
	tb_i64(b, -1);
	tb_field(b, SLICK_THRIFT_DOUBLE, 6);
	tb_i64(b, 0x400921fb54442d18LL);
	tb_field(b, SLICK_THRIFT_STRING, 7);
	tb_str(b, "payload");
	/* struct { 1: i32, 2: struct { 1: list<i32> } } */
	tb_field(b, SLICK_THRIFT_STRUCT, 8);
	tb_field(b, SLICK_THRIFT_I32, 1);
	tb_i32(b, 5);
	tb_field(b, SLICK_THRIFT_STRUCT, 2);
	tb_field(b, SLICK_THRIFT_LIST, 1);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_i32(b, 3);
	tb_i32(b, 1);
	tb_i32(b, 2);
	tb_i32(b, 3);
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_u8(b, SLICK_THRIFT_STOP);
	/* map<string, list<i16>> */
	tb_field(b, SLICK_THRIFT_MAP, 9);
	tb_u8(b, SLICK_THRIFT_STRING);
	tb_u8(b, SLICK_THRIFT_LIST);
	tb_i32(b, 2);
	tb_str(b, "a");
	tb_u8(b, SLICK_THRIFT_I16);
	tb_i32(b, 2);
	tb_i16(b, 10);
	tb_i16(b, 11);
	tb_str(b, "");
	tb_u8(b, SLICK_THRIFT_I16);
	tb_i32(b, 0);
	/* set<i64> */
	tb_field(b, SLICK_THRIFT_SET, 10);
	tb_u8(b, SLICK_THRIFT_I64);
	tb_i32(b, 2);
	tb_i64(b, 1);
	tb_i64(b, 2);
	/* list<struct { 1: string }> */
	tb_field(b, SLICK_THRIFT_LIST, 11);
	tb_u8(b, SLICK_THRIFT_STRUCT);
	tb_i32(b, 2);
	tb_field(b, SLICK_THRIFT_STRING, 1);
	tb_str(b, "x");
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_field(b, SLICK_THRIFT_UUID, 12);
	tb_bytes(b, uuid, sizeof(uuid));
	/* map<i32, map<byte, bool>> */
	tb_field(b, SLICK_THRIFT_MAP, 13);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_u8(b, SLICK_THRIFT_MAP);
	tb_i32(b, 1);
	tb_i32(b, 9);
	tb_u8(b, SLICK_THRIFT_BYTE);
	tb_u8(b, SLICK_THRIFT_BOOL);
	tb_i32(b, 2);
	tb_u8(b, 1);
	tb_u8(b, 0);
	tb_u8(b, 2);
	tb_u8(b, 1);
	/* Empty containers: element types are not checked. */
	tb_field(b, SLICK_THRIFT_LIST, 14);
	tb_u8(b, 99);
	tb_i32(b, 0);
	tb_field(b, SLICK_THRIFT_MAP, 15);
	tb_u8(b, 0);
	tb_u8(b, 0);
	tb_i32(b, 0);
	/* list<set<double>> */
	tb_field(b, SLICK_THRIFT_LIST, 16);
	tb_u8(b, SLICK_THRIFT_SET);
	tb_i32(b, 1);
	tb_u8(b, SLICK_THRIFT_DOUBLE);
	tb_i32(b, 1);
	tb_i64(b, 0);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void tb_rich(struct tb *b, bool framed, bool strict)
{
	size_t frame = tb_header(b, framed, strict, SLICK_THRIFT_CALL,
				 "rich", 42);

	tb_rich_args(b);
	tb_end(b, framed, frame);
}

/* msg(key, payload) */
static void tb_msg(struct tb *b, bool framed, bool strict, s32 key,
		   const char *payload)
{
	size_t frame = tb_header(b, framed, strict, SLICK_THRIFT_ONEWAY,
				 "msg", 0);

	tb_field(b, SLICK_THRIFT_I32, 1);
	tb_i32(b, key);
	tb_field(b, SLICK_THRIFT_STRING, 2);
	tb_str(b, payload);
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_end(b, framed, frame);
}

static struct tb *tb_new(struct kunit *test)
{
	struct tb *b = kunit_kzalloc(test, sizeof(*b), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, b);
	return b;
}

static void cfg_init(struct slick_thrift_cfg *cfg, bool framed)
{
	slick_thrift_cfg_default(cfg, framed, 1 << 20);
}

/* Parse a copy of exactly @len bytes, so reading past them is caught. */
static int parse_copy(struct kunit *test, const u8 *buf, size_t len,
		      const struct slick_thrift_cfg *cfg,
		      struct slick_thrift_msg *msg)
{
	u8 *copy = kmemdup(buf, len ? len : 1, GFP_KERNEL);
	int ret;

	KUNIT_ASSERT_NOT_NULL(test, copy);
	ret = slick_thrift_parse(copy, len, cfg, msg);
	kfree(copy);
	return ret;
}

static void thrift_paper_example(struct kunit *test)
{
	static const u8 ex[] = {
		0x80, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03, 'm', 's', 'g',
		0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00,
		0x07, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 'h', 'i', 0x00,
	};
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);

	cfg_init(&cfg, false);
	KUNIT_ASSERT_EQ(test, slick_thrift_parse(ex, sizeof(ex), &cfg, &msg),
			0);
	KUNIT_EXPECT_EQ(test, msg.len, sizeof(ex));
	KUNIT_EXPECT_EQ(test, msg.type, SLICK_THRIFT_ONEWAY);
	KUNIT_EXPECT_EQ(test, msg.seqid, 0);
	KUNIT_EXPECT_TRUE(test, msg.strict);
	KUNIT_EXPECT_TRUE(test, slick_thrift_name_is(&msg, "msg"));
	KUNIT_EXPECT_FALSE(test, slick_thrift_name_is(&msg, "ms"));
	KUNIT_EXPECT_EQ(test, msg.args_off, 15);
	KUNIT_EXPECT_EQ(test, msg.args_len, sizeof(ex) - 15);

	/* The builder produces the same bytes. */
	tb_msg(b, false, true, 7, "hi");
	KUNIT_EXPECT_EQ(test, b->len, sizeof(ex));
	KUNIT_EXPECT_MEMEQ(test, b->buf, ex, sizeof(ex));
}

static void thrift_every_type(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	int variant;

	for (variant = 0; variant < 4; variant++) {
		bool framed = variant & 1, strict = variant & 2;
		struct tb *b = tb_new(test);
		size_t one;

		cfg_init(&cfg, framed);
		tb_rich(b, framed, strict);
		one = b->len;
		/* A second message follows in the same buffer. */
		tb_msg(b, framed, strict, 3, "next");
		KUNIT_ASSERT_LE(test, b->len, TB_SIZE);

		KUNIT_ASSERT_EQ(test, parse_copy(test, b->buf, b->len, &cfg,
						 &msg), 0);
		KUNIT_EXPECT_EQ(test, msg.len, one);
		KUNIT_EXPECT_EQ(test, msg.type, SLICK_THRIFT_CALL);
		KUNIT_EXPECT_EQ(test, msg.seqid, 42);
		KUNIT_EXPECT_EQ(test, msg.strict, strict);
		KUNIT_EXPECT_EQ(test, msg.args_off + msg.args_len, one);

		KUNIT_ASSERT_EQ(test, parse_copy(test, b->buf + one,
						 b->len - one, &cfg, &msg), 0);
		KUNIT_EXPECT_EQ(test, msg.len, b->len - one);
		KUNIT_EXPECT_EQ(test, msg.type, SLICK_THRIFT_ONEWAY);
	}
}

static void thrift_truncated(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	int variant, ret;
	size_t cut;

	for (variant = 0; variant < 4; variant++) {
		bool framed = variant & 1, strict = variant & 2;
		struct tb *b = tb_new(test);

		cfg_init(&cfg, framed);
		tb_rich(b, framed, strict);
		for (cut = 0; cut < b->len; cut++) {
			ret = parse_copy(test, b->buf, cut, &cfg, &msg);
			KUNIT_EXPECT_EQ_MSG(test, ret, -EAGAIN,
					    "variant %d cut at %zu of %zu",
					    variant, cut, b->len);
			if (ret != -EAGAIN)
				break;
		}
		KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg,
						 &msg), 0);
	}
}

/* Build a strict message whose args are @fn's output, and parse it. */
static int parse_argsf(struct kunit *test,
		       const struct slick_thrift_cfg *cfg,
		       void (*fn)(struct tb *b))
{
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);
	size_t frame;

	frame = tb_header(b, cfg->framed, true, SLICK_THRIFT_CALL, "m", 1);
	fn(b);
	tb_end(b, cfg->framed, frame);
	return parse_copy(test, b->buf, b->len, cfg, &msg);
}

static void args_neg_string(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_STRING, 1);
	tb_i32(b, -1);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_neg_list(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_LIST, 1);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_i32(b, -5);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_neg_map(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_MAP, 1);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_i32(b, S32_MIN);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_big_string(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_STRING, 1);
	tb_i32(b, 0x7fffffff);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_big_set(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_SET, 1);
	tb_u8(b, SLICK_THRIFT_BOOL);
	tb_i32(b, 0x10000000);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_string_100(struct tb *b)
{
	int i;

	tb_field(b, SLICK_THRIFT_STRING, 1);
	tb_i32(b, 100);
	for (i = 0; i < 100; i++)
		tb_u8(b, 'z');
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void thrift_bad_lengths(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct tb *b;

	cfg_init(&cfg, false);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_neg_string),
			-ERANGE);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_neg_list), -ERANGE);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_neg_map), -ERANGE);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_big_string), -E2BIG);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_big_set), -E2BIG);

	/* Within the string limit but over the message limit. */
	cfg.max_msg = 64;
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_string_100),
			-EMSGSIZE);
	cfg.max_msg = 1 << 20;
	cfg.max_string = 99;
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_string_100), -E2BIG);
	cfg.max_string = 100;
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_string_100), 0);
	cfg.max_container = 3;
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_big_set), -E2BIG);

	/* Method name: negative (strict) and too long. */
	cfg_init(&cfg, false);
	b = tb_new(test);
	tb_i32(b, (s32)(SLICK_THRIFT_VERSION_1 | SLICK_THRIFT_CALL));
	tb_i32(b, -1);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-ERANGE);
	b->len = 0;
	tb_i32(b, 0x7ffffff0);	/* non-strict name length */
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-E2BIG);
	/* A message longer than max_msg is refused before it is complete. */
	cfg.max_msg = 16;
	b->len = 0;
	tb_header(b, false, true, SLICK_THRIFT_CALL, "abcdefghij", 1);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-EMSGSIZE);
}

static void args_field_type(struct tb *b, u8 type)
{
	tb_field(b, type, 1);
	tb_i32(b, 0);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_type_1(struct tb *b)
{
	args_field_type(b, 1);
}

static void args_type_5(struct tb *b)
{
	args_field_type(b, 5);
}

static void args_type_9(struct tb *b)
{
	args_field_type(b, 9);
}

static void args_type_17(struct tb *b)
{
	args_field_type(b, 17);
}

static void args_type_255(struct tb *b)
{
	args_field_type(b, 255);
}

static void args_bad_elem(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_LIST, 1);
	tb_u8(b, 7);
	tb_i32(b, 1);
	tb_i32(b, 0);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_bad_map_value(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_MAP, 1);
	tb_u8(b, SLICK_THRIFT_I32);
	tb_u8(b, 20);
	tb_i32(b, 1);
	tb_i32(b, 0);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void args_bad_nested(struct tb *b)
{
	tb_field(b, SLICK_THRIFT_STRUCT, 1);
	tb_field(b, SLICK_THRIFT_STRUCT, 1);
	tb_field(b, 14 + 100, 1);
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_u8(b, SLICK_THRIFT_STOP);
	tb_u8(b, SLICK_THRIFT_STOP);
}

static void thrift_unknown_types(struct kunit *test)
{
	static const char http[] = "GET / HTTP/1.0\r\n\r\n";
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);

	cfg_init(&cfg, false);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_type_1), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_type_5), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_type_9), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_type_17), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_type_255), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_bad_elem), -EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_bad_map_value),
			-EPROTO);
	KUNIT_EXPECT_EQ(test, parse_argsf(test, &cfg, args_bad_nested),
			-EPROTO);

	/* Message types 0 and 5, strict and not; unknown version. */
	tb_header(b, false, true, 0, "m", 1);
	tb_u8(b, SLICK_THRIFT_STOP);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-EPROTO);
	b->len = 0;
	tb_header(b, false, false, 5, "m", 1);
	tb_u8(b, SLICK_THRIFT_STOP);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-EPROTO);
	b->len = 0;
	tb_i32(b, (s32)0x80020001);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg),
			-EPROTONOSUPPORT);
	/* Random bytes, e.g. an HTTP request. */
	KUNIT_EXPECT_NE(test, parse_copy(test, (const u8 *)http, strlen(http),
					 &cfg, &msg), 0);
}

/*
 * Args nested @depth levels deep (the args struct is level 1): structs in
 * structs, or lists of lists of i32.
 */
static int parse_nested(struct kunit *test, struct slick_thrift_cfg *cfg,
			int depth, bool lists)
{
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);
	int i;

	tb_header(b, false, true, SLICK_THRIFT_CALL, "deep", 1);
	if (!lists) {
		for (i = 1; i < depth; i++)
			tb_field(b, SLICK_THRIFT_STRUCT, 1);
		for (i = 0; i < depth; i++)
			tb_u8(b, SLICK_THRIFT_STOP);
	} else {
		if (depth > 1) {
			tb_field(b, SLICK_THRIFT_LIST, 1);
			for (i = 2; i < depth; i++) {
				tb_u8(b, SLICK_THRIFT_LIST);
				tb_i32(b, 1);
			}
			tb_u8(b, SLICK_THRIFT_I32);
			tb_i32(b, 1);
			tb_i32(b, 7);
		}
		tb_u8(b, SLICK_THRIFT_STOP);
	}
	KUNIT_ASSERT_LE(test, b->len, TB_SIZE);
	return parse_copy(test, b->buf, b->len, cfg, &msg);
}

static void thrift_nesting(struct kunit *test)
{
	struct slick_thrift_cfg cfg;

	cfg_init(&cfg, false);
	cfg.max_depth = 8;
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 7, false), 0);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 8, false), 0);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 9, false), -ELOOP);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 200, false), -ELOOP);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 8, true), 0);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 9, true), -ELOOP);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 300, true), -ELOOP);
	cfg.max_depth = 1;
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 1, false), 0);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, 2, false), -ELOOP);
	/* Limits above the stack size are clamped, not overrun. */
	cfg.max_depth = 1000;
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg, SLICK_THRIFT_MAX_DEPTH,
					   false), 0);
	KUNIT_EXPECT_EQ(test, parse_nested(test, &cfg,
					   SLICK_THRIFT_MAX_DEPTH + 1, false),
			-ELOOP);
}

static void thrift_frames(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);
	size_t len;

	cfg_init(&cfg, true);
	tb_msg(b, true, true, 1, "abc");
	len = b->len;
	KUNIT_ASSERT_EQ(test, parse_copy(test, b->buf, len, &cfg, &msg), 0);
	KUNIT_EXPECT_EQ(test, msg.len, len);

	/* Frame shorter than the message inside. */
	put_unaligned_be32(len - 4 - 1, b->buf);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, len, &cfg, &msg),
			-EBADMSG);
	/* Frame longer than the message: trailing bytes in the frame. */
	put_unaligned_be32(len - 4 + 2, b->buf);
	tb_u8(b, 0);
	tb_u8(b, 0);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, len + 2, &cfg, &msg),
			-EBADMSG);
	/* ...known as soon as the message ends before the frame does. */
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, len, &cfg, &msg),
			-EBADMSG);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, len - 1, &cfg, &msg),
			-EAGAIN);
	/* Empty, negative, oversized frames. */
	put_unaligned_be32(0, b->buf);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, 4, &cfg, &msg),
			-EBADMSG);
	put_unaligned_be32(0xfffffff0, b->buf);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, 4, &cfg, &msg),
			-ERANGE);
	put_unaligned_be32((1 << 20) + 1, b->buf);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, 4, &cfg, &msg),
			-EMSGSIZE);
	/* Garbage inside a partial frame is reported early. */
	put_unaligned_be32(1000, b->buf);
	put_unaligned_be32(0x80070001, b->buf + 4);
	KUNIT_EXPECT_EQ(test, parse_copy(test, b->buf, 8, &cfg, &msg),
			-EPROTONOSUPPORT);
	/* An unframed message read as framed is a bad frame. */
	b->len = 0;
	tb_msg(b, false, true, 1, "abc");
	KUNIT_EXPECT_NE(test, parse_copy(test, b->buf, b->len, &cfg, &msg), 0);
}

static void thrift_fields(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct slick_thrift_field f;
	struct slick_thrift_iter it;
	struct tb *b = tb_new(test);
	const u8 *s;
	u32 len;
	s32 v;

	cfg_init(&cfg, true);
	tb_msg(b, true, false, -77, "payload!");
	KUNIT_ASSERT_EQ(test, parse_copy(test, b->buf, b->len, &cfg, &msg), 0);
	KUNIT_EXPECT_FALSE(test, msg.strict);

	slick_thrift_iter_init(&it, b->buf + msg.args_off, msg.args_len, &cfg);
	KUNIT_ASSERT_EQ(test, slick_thrift_iter_next(&it, &f), 1);
	KUNIT_EXPECT_EQ(test, f.id, 1);
	KUNIT_EXPECT_EQ(test, slick_thrift_field_i32(&f, &v), 0);
	KUNIT_EXPECT_EQ(test, v, -77);
	KUNIT_EXPECT_EQ(test, slick_thrift_field_str(&f, &s, &len), -EPROTO);
	KUNIT_ASSERT_EQ(test, slick_thrift_iter_next(&it, &f), 1);
	KUNIT_EXPECT_EQ(test, f.id, 2);
	KUNIT_EXPECT_EQ(test, slick_thrift_field_str(&f, &s, &len), 0);
	KUNIT_EXPECT_EQ(test, len, 8);
	KUNIT_EXPECT_MEMEQ(test, s, "payload!", 8);
	KUNIT_EXPECT_EQ(test, slick_thrift_field_i32(&f, &v), -EPROTO);
	KUNIT_EXPECT_EQ(test, slick_thrift_iter_next(&it, &f), 0);

	/* A struct cut short is an error here, not "need more". */
	slick_thrift_iter_init(&it, b->buf + msg.args_off, 5, &cfg);
	KUNIT_EXPECT_EQ(test, slick_thrift_iter_next(&it, &f), -EBADMSG);
}

static void thrift_writers(struct kunit *test)
{
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct slick_thrift_field f;
	struct slick_thrift_iter it;
	const u8 *s;
	u8 buf[128];
	ssize_t len;
	u32 slen;
	s32 v;
	int framed;

	for (framed = 0; framed < 2; framed++) {
		cfg_init(&cfg, framed);
		len = slick_thrift_write_reply(buf, sizeof(buf), framed,
					       (const u8 *)"add_server", 10, 9);
		KUNIT_ASSERT_GT(test, len, 0);
		KUNIT_ASSERT_EQ(test, parse_copy(test, buf, len, &cfg, &msg),
				0);
		/* msg.name points into the buffer parsed last: parse @buf. */
		KUNIT_ASSERT_EQ(test, slick_thrift_parse(buf, len, &cfg, &msg),
				0);
		KUNIT_EXPECT_EQ(test, msg.len, len);
		KUNIT_EXPECT_EQ(test, msg.type, SLICK_THRIFT_REPLY);
		KUNIT_EXPECT_EQ(test, msg.seqid, 9);
		KUNIT_EXPECT_TRUE(test, msg.strict);
		KUNIT_EXPECT_TRUE(test,
				  slick_thrift_name_is(&msg, "add_server"));
		KUNIT_EXPECT_EQ(test, msg.args_len, 1);

		len = slick_thrift_write_exception(buf, sizeof(buf), framed,
						   (const u8 *)"x", 1, -3,
						   SLICK_TAPP_INTERNAL_ERROR,
						   "boom", 4);
		KUNIT_ASSERT_GT(test, len, 0);
		KUNIT_ASSERT_EQ(test, parse_copy(test, buf, len, &cfg, &msg),
				0);
		KUNIT_EXPECT_EQ(test, msg.type, SLICK_THRIFT_EXCEPTION);
		KUNIT_EXPECT_EQ(test, msg.seqid, -3);
		slick_thrift_iter_init(&it, buf + msg.args_off, msg.args_len,
				       &cfg);
		KUNIT_ASSERT_EQ(test, slick_thrift_iter_next(&it, &f), 1);
		KUNIT_EXPECT_EQ(test, f.id, 1);
		KUNIT_EXPECT_EQ(test, slick_thrift_field_str(&f, &s, &slen), 0);
		KUNIT_EXPECT_EQ(test, slen, 4);
		KUNIT_EXPECT_MEMEQ(test, s, "boom", 4);
		KUNIT_ASSERT_EQ(test, slick_thrift_iter_next(&it, &f), 1);
		KUNIT_EXPECT_EQ(test, f.id, 2);
		KUNIT_EXPECT_EQ(test, slick_thrift_field_i32(&f, &v), 0);
		KUNIT_EXPECT_EQ(test, v, SLICK_TAPP_INTERNAL_ERROR);
		KUNIT_EXPECT_EQ(test, slick_thrift_iter_next(&it, &f), 0);
	}
	KUNIT_EXPECT_EQ(test, slick_thrift_write_reply(buf, 10, false,
						       (const u8 *)"abc", 3, 1),
			-ENOSPC);
	KUNIT_EXPECT_EQ(test, slick_thrift_write_exception(buf, 20, true,
							   (const u8 *)"a", 1,
							   1, 6, "long text",
							   9),
			-ENOSPC);
}

static void tsock_stream(struct kunit *test)
{
	struct fake_io *in = fake_new(test), *out = fake_new(test);
	struct slick_thrift_cfg cfg;
	struct slick_thrift_msg msg;
	struct tb *b = tb_new(test);
	struct slick_tsock ts;
	struct slick_bsock to;
	size_t one, two;

	cfg_init(&cfg, false);
	tb_msg(b, false, true, 1, "first");
	one = b->len;
	tb_msg(b, false, true, 2, "second");
	two = b->len - one;

	slick_tsock_init(&ts, NULL, &fake_ops, &cfg, 64);
	ts.bs.priv = in;
	slick_bsock_init(&to, NULL, &fake_ops, 64, one + two - 1);
	to.priv = out;
	in->in = b->buf;
	in->in_len = b->len;
	in->chunk = 1;

	/* Arriving byte by byte: "need more" until the message is whole. */
	for (in->in_len = 0; in->in_len < one; in->in_len++)
		KUNIT_ASSERT_EQ(test, slick_tsock_next(&ts, &msg), -EAGAIN);
	KUNIT_ASSERT_EQ(test, slick_tsock_next(&ts, &msg), 0);
	KUNIT_EXPECT_EQ(test, msg.len, one);
	KUNIT_EXPECT_EQ(test, slick_tsock_forward(&ts, &to), 0);
	KUNIT_EXPECT_EQ(test, slick_tsock_forward(&ts, &to), -EINVAL);
	KUNIT_EXPECT_EQ(test, slick_tsock_next(&ts, &msg), -EAGAIN);

	in->in_len = b->len;
	KUNIT_ASSERT_EQ(test, slick_tsock_next(&ts, &msg), 0);
	KUNIT_EXPECT_EQ(test, msg.len, two);
	/* The destination cannot take it whole: nothing moves. */
	KUNIT_EXPECT_EQ(test, slick_tsock_forward(&ts, &to), -EAGAIN);
	KUNIT_EXPECT_EQ(test, slick_bsock_tx_pending(&to), one);
	KUNIT_EXPECT_EQ(test, slick_buf_len(&ts.bs.rx), two);
	out->out_room = SIZE_MAX;
	KUNIT_EXPECT_EQ(test, slick_tsock_forward(&ts, &to), 0);
	KUNIT_EXPECT_EQ(test, slick_bsock_flush(&to), 0);
	KUNIT_EXPECT_EQ(test, out->out_len, b->len);
	KUNIT_EXPECT_MEMEQ(test, out->out, b->buf, b->len);

	/* Clean end of stream, then end of stream inside a message. */
	in->in_eof = true;
	KUNIT_EXPECT_EQ(test, slick_tsock_next(&ts, &msg), -ENODATA);
	slick_tsock_free(&ts);

	slick_tsock_init(&ts, NULL, &fake_ops, &cfg, 64);
	ts.bs.priv = in;
	in->in_pos = 0;
	in->in_len = one - 1;
	KUNIT_EXPECT_EQ(test, slick_tsock_next(&ts, &msg), -EPIPE);
	slick_tsock_free(&ts);
	slick_bsock_free(&to);
}

static struct kunit_case slick_thrift_cases[] = {
	KUNIT_CASE(thrift_paper_example),
	KUNIT_CASE(thrift_every_type),
	KUNIT_CASE(thrift_truncated),
	KUNIT_CASE(thrift_bad_lengths),
	KUNIT_CASE(thrift_unknown_types),
	KUNIT_CASE(thrift_nesting),
	KUNIT_CASE(thrift_frames),
	KUNIT_CASE(thrift_fields),
	KUNIT_CASE(thrift_writers),
	KUNIT_CASE(tsock_stream),
	{}
};

static struct kunit_suite slick_thrift_suite = {
	.name = "slick_thrift",
	.test_cases = slick_thrift_cases,
};

kunit_test_suites(&slick_buffer_suite, &slick_thrift_suite);

MODULE_DESCRIPTION("KUnit tests for Slick");
MODULE_LICENSE("GPL");
