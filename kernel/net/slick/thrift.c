// SPDX-License-Identifier: GPL-2.0
/*
 * Slick ThriftSocket: Apache Thrift binary protocol on byte buffers.
 *
 * The parser never reads past the bytes it is given and never recurses:
 * nested structs and containers use a small explicit stack bounded by the
 * configured depth. Each value consumes at least one byte, so a parse is
 * linear in the bytes examined.
 */

#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/unaligned.h>
#include <net/slick.h>

/* Parser state over one buffer. */
struct slick_tp {
	const u8 *buf;
	size_t len;	/* bytes available */
	size_t cap;	/* no valid message extends beyond this */
	size_t pos;
	int over;	/* errno for a value crossing @cap */
	const struct slick_thrift_cfg *cfg;
};

/* One open struct or container on the parser's stack. */
struct slick_tp_frame {
	u8 type;	/* SLICK_THRIFT_STRUCT, _LIST (and _SET) or _MAP */
	u8 t1;		/* element (list, set) or key (map) type */
	u8 t2;		/* value type (map) */
	u32 left;	/* elements left; maps count keys and values */
};

static int slick_tp_need(const struct slick_tp *t, size_t n)
{
	if (n > t->cap - t->pos)
		return t->over;
	if (n > t->len - t->pos)
		return -EAGAIN;
	return 0;
}

static int slick_tp_skip(struct slick_tp *t, size_t n)
{
	int ret = slick_tp_need(t, n);

	if (!ret)
		t->pos += n;
	return ret;
}

static int slick_tp_u8(struct slick_tp *t, u8 *v)
{
	int ret = slick_tp_need(t, 1);

	if (!ret)
		*v = t->buf[t->pos++];
	return ret;
}

static int slick_tp_i32(struct slick_tp *t, s32 *v)
{
	int ret = slick_tp_need(t, 4);

	if (!ret) {
		*v = (s32)get_unaligned_be32(t->buf + t->pos);
		t->pos += 4;
	}
	return ret;
}

/* Bytes of a fixed-size type, 0 for variable-size ones, -1 if unknown. */
static int slick_tp_fixed_size(u8 type)
{
	switch (type) {
	case SLICK_THRIFT_BOOL:
	case SLICK_THRIFT_BYTE:
		return 1;
	case SLICK_THRIFT_I16:
		return 2;
	case SLICK_THRIFT_I32:
		return 4;
	case SLICK_THRIFT_DOUBLE:
	case SLICK_THRIFT_I64:
		return 8;
	case SLICK_THRIFT_UUID:
		return 16;
	case SLICK_THRIFT_STRING:
	case SLICK_THRIFT_STRUCT:
	case SLICK_THRIFT_MAP:
	case SLICK_THRIFT_SET:
	case SLICK_THRIFT_LIST:
		return 0;
	default:
		return -1;
	}
}

static int slick_tp_count(const struct slick_tp *t, s32 n)
{
	if (n < 0)
		return -ERANGE;
	if ((u32)n > t->cfg->max_container)
		return -E2BIG;
	return 0;
}

/*
 * Start a value of @type: skip it if it has no inner values, otherwise
 * push a frame for it. @depth is the nesting of the enclosing value.
 */
static int slick_tp_begin(struct slick_tp *t, u8 type,
			  struct slick_tp_frame *st, u32 *sp, u32 depth)
{
	struct slick_tp_frame f = { .type = type };
	int size = slick_tp_fixed_size(type);
	s32 n;
	int ret;

	if (size < 0)
		return -EPROTO;
	if (size)
		return slick_tp_skip(t, size);

	switch (type) {
	case SLICK_THRIFT_STRING:
		ret = slick_tp_i32(t, &n);
		if (ret)
			return ret;
		if (n < 0)
			return -ERANGE;
		if ((u32)n > t->cfg->max_string)
			return -E2BIG;
		return slick_tp_skip(t, n);
	case SLICK_THRIFT_STRUCT:
		break;
	case SLICK_THRIFT_MAP:
		ret = slick_tp_u8(t, &f.t1);
		if (!ret)
			ret = slick_tp_u8(t, &f.t2);
		if (!ret)
			ret = slick_tp_i32(t, &n);
		if (!ret)
			ret = slick_tp_count(t, n);
		if (ret)
			return ret;
		/* Types of empty containers are not checked, as upstream. */
		if (n && (slick_tp_fixed_size(f.t1) < 0 ||
			  slick_tp_fixed_size(f.t2) < 0))
			return -EPROTO;
		f.type = SLICK_THRIFT_MAP;
		f.left = 2 * (u32)n;
		break;
	default:	/* SLICK_THRIFT_SET, SLICK_THRIFT_LIST */
		ret = slick_tp_u8(t, &f.t1);
		if (!ret)
			ret = slick_tp_i32(t, &n);
		if (!ret)
			ret = slick_tp_count(t, n);
		if (ret)
			return ret;
		if (n && slick_tp_fixed_size(f.t1) < 0)
			return -EPROTO;
		f.type = SLICK_THRIFT_LIST;
		f.left = n;
		break;
	}

	if (depth + *sp >= min_t(u32, t->cfg->max_depth,
				 SLICK_THRIFT_MAX_DEPTH))
		return -ELOOP;
	st[(*sp)++] = f;
	return 0;
}

/* Skip one whole value of @type nested at @depth. */
static int slick_tp_skip_value(struct slick_tp *t, u8 type, u32 depth)
{
	struct slick_tp_frame st[SLICK_THRIFT_MAX_DEPTH];
	struct slick_tp_frame *f;
	u32 sp = 0;
	u8 next;
	int ret;

	ret = slick_tp_begin(t, type, st, &sp, depth);
	while (!ret && sp) {
		f = &st[sp - 1];
		if (f->type == SLICK_THRIFT_STRUCT) {
			ret = slick_tp_u8(t, &next);
			if (ret)
				break;
			if (next == SLICK_THRIFT_STOP) {
				sp--;
				continue;
			}
			ret = slick_tp_skip(t, 2);	/* field id */
			if (ret)
				break;
		} else if (!f->left) {
			sp--;
			continue;
		} else {
			/* A map counts down 2n: keys at even counts. */
			if (f->type == SLICK_THRIFT_MAP && (f->left & 1))
				next = f->t2;
			else
				next = f->t1;
			f->left--;
		}
		ret = slick_tp_begin(t, next, st, &sp, depth);
	}
	return ret;
}

static int slick_tp_message(struct slick_tp *t, struct slick_thrift_msg *m)
{
	s32 word, nlen, seqid;
	u8 type;
	int ret;

	ret = slick_tp_i32(t, &word);
	if (ret)
		return ret;

	if (word < 0) {
		if (((u32)word & SLICK_THRIFT_VERSION_MASK) !=
		    SLICK_THRIFT_VERSION_1)
			return -EPROTONOSUPPORT;
		type = word & 0xff;
		if (type < SLICK_THRIFT_CALL || type > SLICK_THRIFT_ONEWAY)
			return -EPROTO;
		ret = slick_tp_i32(t, &nlen);
		if (ret)
			return ret;
		if (nlen < 0)
			return -ERANGE;
		m->strict = true;
	} else {
		nlen = word;
		m->strict = false;
	}
	if ((u32)nlen > t->cfg->max_string)
		return -E2BIG;
	m->name = t->buf + t->pos;
	m->name_len = nlen;
	ret = slick_tp_skip(t, nlen);
	if (ret)
		return ret;
	if (!m->strict) {
		ret = slick_tp_u8(t, &type);
		if (ret)
			return ret;
		if (type < SLICK_THRIFT_CALL || type > SLICK_THRIFT_ONEWAY)
			return -EPROTO;
	}
	ret = slick_tp_i32(t, &seqid);
	if (ret)
		return ret;
	m->type = type;
	m->seqid = seqid;
	m->args_off = t->pos;
	ret = slick_tp_skip_value(t, SLICK_THRIFT_STRUCT, 0);
	if (ret)
		return ret;
	m->args_len = t->pos - m->args_off;
	m->len = t->pos;
	return 0;
}

int slick_thrift_parse(const u8 *buf, size_t len,
		       const struct slick_thrift_cfg *cfg,
		       struct slick_thrift_msg *msg)
{
	struct slick_tp t = { .cfg = cfg };
	s32 frame;
	int ret;

	if (!cfg->framed) {
		t.buf = buf;
		t.len = len;
		t.cap = cfg->max_msg;
		t.over = -EMSGSIZE;
		return slick_tp_message(&t, msg);
	}

	if (len < 4)
		return -EAGAIN;
	frame = (s32)get_unaligned_be32(buf);
	if (frame < 0)
		return -ERANGE;
	if ((u32)frame > cfg->max_msg)
		return -EMSGSIZE;
	if (!frame)
		return -EBADMSG;

	/*
	 * Parse what has arrived of the frame so that garbage is reported
	 * early; nothing valid extends past the frame's end.
	 */
	t.buf = buf + 4;
	t.len = min_t(size_t, len - 4, frame);
	t.cap = frame;
	t.over = -EBADMSG;
	ret = slick_tp_message(&t, msg);
	if (ret)
		return ret;
	if (t.pos != frame)
		return -EBADMSG;
	msg->len += 4;
	msg->args_off += 4;
	return 0;
}
EXPORT_SYMBOL_GPL(slick_thrift_parse);

void slick_thrift_cfg_default(struct slick_thrift_cfg *cfg, bool framed,
			      u32 max_msg)
{
	cfg->framed = framed;
	cfg->max_msg = max_msg;
	cfg->max_depth = 32;
	cfg->max_string = max_msg;
	cfg->max_container = max_msg;
}
EXPORT_SYMBOL_GPL(slick_thrift_cfg_default);

bool slick_thrift_name_is(const struct slick_thrift_msg *msg,
			  const char *name)
{
	size_t n = strlen(name);

	return msg->name_len == n && !memcmp(msg->name, name, n);
}
EXPORT_SYMBOL_GPL(slick_thrift_name_is);

void slick_thrift_iter_init(struct slick_thrift_iter *it, const u8 *buf,
			    size_t len, const struct slick_thrift_cfg *cfg)
{
	it->buf = buf;
	it->len = len;
	it->pos = 0;
	it->cfg = cfg;
}
EXPORT_SYMBOL_GPL(slick_thrift_iter_init);

int slick_thrift_iter_next(struct slick_thrift_iter *it,
			   struct slick_thrift_field *f)
{
	struct slick_tp t = {
		.buf = it->buf,
		.len = it->len,
		.cap = it->len,
		.pos = it->pos,
		.over = -EBADMSG,
		.cfg = it->cfg,
	};
	size_t start;
	u8 type;
	int ret;

	ret = slick_tp_u8(&t, &type);
	if (ret)
		return ret;
	if (type == SLICK_THRIFT_STOP) {
		it->pos = t.pos;
		return 0;
	}
	ret = slick_tp_need(&t, 2);
	if (ret)
		return ret;
	f->type = type;
	f->id = (s16)get_unaligned_be16(t.buf + t.pos);
	t.pos += 2;
	start = t.pos;
	/* The field's value is nested one level below the struct. */
	ret = slick_tp_skip_value(&t, type, 1);
	if (ret)
		return ret;
	f->val = t.buf + start;
	f->val_len = t.pos - start;
	it->pos = t.pos;
	return 1;
}
EXPORT_SYMBOL_GPL(slick_thrift_iter_next);

int slick_thrift_field_i32(const struct slick_thrift_field *f, s32 *v)
{
	if (f->type != SLICK_THRIFT_I32 || f->val_len != 4)
		return -EPROTO;
	*v = (s32)get_unaligned_be32(f->val);
	return 0;
}
EXPORT_SYMBOL_GPL(slick_thrift_field_i32);

int slick_thrift_field_str(const struct slick_thrift_field *f, const u8 **s,
			   u32 *len)
{
	if (f->type != SLICK_THRIFT_STRING || f->val_len < 4)
		return -EPROTO;
	*len = get_unaligned_be32(f->val);
	if (*len != f->val_len - 4)
		return -EPROTO;
	*s = f->val + 4;
	return 0;
}
EXPORT_SYMBOL_GPL(slick_thrift_field_str);

/* Writer state; @pos keeps counting past @size so overflow is detected. */
struct slick_tw {
	u8 *buf;
	size_t size;
	size_t pos;
};

static void slick_tw_bytes(struct slick_tw *w, const void *p, size_t n)
{
	if (n <= w->size && w->pos <= w->size - n)
		memcpy(w->buf + w->pos, p, n);
	w->pos += n;
}

static void slick_tw_u8(struct slick_tw *w, u8 v)
{
	slick_tw_bytes(w, &v, 1);
}

static void slick_tw_i16(struct slick_tw *w, s16 v)
{
	__be16 be = cpu_to_be16(v);

	slick_tw_bytes(w, &be, 2);
}

static void slick_tw_i32(struct slick_tw *w, s32 v)
{
	__be32 be = cpu_to_be32(v);

	slick_tw_bytes(w, &be, 4);
}

static void slick_tw_header(struct slick_tw *w, bool framed, u8 type,
			    const u8 *name, u32 name_len, s32 seqid)
{
	if (framed)
		slick_tw_i32(w, 0);	/* patched by slick_tw_finish() */
	slick_tw_i32(w, (s32)(SLICK_THRIFT_VERSION_1 | type));
	slick_tw_i32(w, name_len);
	slick_tw_bytes(w, name, name_len);
	slick_tw_i32(w, seqid);
}

static ssize_t slick_tw_finish(struct slick_tw *w, bool framed)
{
	if (w->pos > w->size)
		return -ENOSPC;
	if (framed)
		put_unaligned_be32(w->pos - 4, w->buf);
	return w->pos;
}

ssize_t slick_thrift_write_reply(u8 *buf, size_t size, bool framed,
				 const u8 *name, u32 name_len, s32 seqid)
{
	struct slick_tw w = { .buf = buf, .size = size };

	slick_tw_header(&w, framed, SLICK_THRIFT_REPLY, name, name_len, seqid);
	slick_tw_u8(&w, SLICK_THRIFT_STOP);	/* void result: empty struct */
	return slick_tw_finish(&w, framed);
}
EXPORT_SYMBOL_GPL(slick_thrift_write_reply);

ssize_t slick_thrift_write_exception(u8 *buf, size_t size, bool framed,
				     const u8 *name, u32 name_len, s32 seqid,
				     s32 type, const char *text,
				     size_t text_len)
{
	struct slick_tw w = { .buf = buf, .size = size };

	slick_tw_header(&w, framed, SLICK_THRIFT_EXCEPTION, name, name_len,
			seqid);
	slick_tw_u8(&w, SLICK_THRIFT_STRING);
	slick_tw_i16(&w, 1);
	slick_tw_i32(&w, text_len);
	slick_tw_bytes(&w, text, text_len);
	slick_tw_u8(&w, SLICK_THRIFT_I32);
	slick_tw_i16(&w, 2);
	slick_tw_i32(&w, type);
	slick_tw_u8(&w, SLICK_THRIFT_STOP);
	return slick_tw_finish(&w, framed);
}
EXPORT_SYMBOL_GPL(slick_thrift_write_exception);

void slick_tsock_init(struct slick_tsock *ts, struct socket *sock,
		      const struct slick_bsock_ops *ops,
		      const struct slick_thrift_cfg *cfg, size_t tx_max)
{
	ts->cfg = *cfg;
	ts->have = false;
	slick_bsock_init(&ts->bs, sock, ops,
			 (size_t)cfg->max_msg + (cfg->framed ? 4 : 0), tx_max);
}
EXPORT_SYMBOL_GPL(slick_tsock_init);

void slick_tsock_free(struct slick_tsock *ts)
{
	ts->have = false;
	slick_bsock_free(&ts->bs);
}
EXPORT_SYMBOL_GPL(slick_tsock_free);

int slick_tsock_next(struct slick_tsock *ts, struct slick_thrift_msg *msg)
{
	const u8 *p;
	size_t n;
	int ret;

	for (;;) {
		ts->have = false;
		n = slick_bsock_peek(&ts->bs, 0, &p);
		if (n) {
			ret = slick_thrift_parse(p, n, &ts->cfg, &ts->cur);
			if (!ret) {
				ts->have = true;
				*msg = ts->cur;
				return 0;
			}
			if (ret != -EAGAIN)
				return ret;
		}
		if (ts->bs.eof)
			return n ? -EPIPE : -ENODATA;
		ret = slick_bsock_fill(&ts->bs);
		if (ret < 0)
			return ret;
		/* A large message can take many receive calls. */
		cond_resched();
	}
}
EXPORT_SYMBOL_GPL(slick_tsock_next);

const u8 *slick_tsock_msg_data(const struct slick_tsock *ts)
{
	const u8 *p;

	slick_bsock_peek(&ts->bs, 0, &p);
	return p;
}
EXPORT_SYMBOL_GPL(slick_tsock_msg_data);

int slick_tsock_discard(struct slick_tsock *ts)
{
	if (!ts->have)
		return -EINVAL;
	slick_bsock_discard(&ts->bs, ts->cur.len);
	ts->have = false;
	return 0;
}
EXPORT_SYMBOL_GPL(slick_tsock_discard);

int slick_tsock_write(struct slick_tsock *ts, const void *buf, size_t len)
{
	return slick_bsock_write_all(&ts->bs, buf, len);
}
EXPORT_SYMBOL_GPL(slick_tsock_write);

int slick_tsock_forward(struct slick_tsock *from, struct slick_bsock *to)
{
	int ret;

	if (!from->have)
		return -EINVAL;
	ret = slick_bsock_write_all(to, slick_tsock_msg_data(from),
				    from->cur.len);
	if (ret)
		return ret;
	return slick_tsock_discard(from);
}
EXPORT_SYMBOL_GPL(slick_tsock_forward);
