#include "thrift.h"

#include <string.h>

#include "common.h"

struct pctx {
	const struct tp_src *src;
	size_t off;
	size_t limit; /* the message may not extend beyond this offset */
	size_t need;
	const char *why;
};

static int bad(struct pctx *p, const char *why)
{
	p->why = why;
	return TP_BAD;
}

static int want(struct pctx *p, size_t n)
{
	if (n > p->limit - p->off)
		return bad(p, "message longer than max_msg (or its frame)");
	if (n > p->src->len - p->off) {
		p->need = p->off + n;
		return TP_MORE;
	}
	return TP_OK;
}

static int rd(struct pctx *p, void *dst, size_t n)
{
	int st = want(p, n);

	if (st != TP_OK)
		return st;
	if (p->src->copy(p->src->ctx, p->off, dst, n))
		return bad(p, "cannot read the buffer");
	p->off += n;
	return TP_OK;
}

static int skip(struct pctx *p, size_t n)
{
	int st = want(p, n);

	if (st == TP_OK)
		p->off += n;
	return st;
}

static int rd_u8(struct pctx *p, uint8_t *v)
{
	return rd(p, v, 1);
}

static int rd_i16(struct pctx *p, int16_t *v)
{
	uint8_t b[2];
	int st = rd(p, b, 2);

	if (st == TP_OK)
		*v = (int16_t)((uint16_t)b[0] << 8 | b[1]);
	return st;
}

static int rd_i32(struct pctx *p, int32_t *v)
{
	uint8_t b[4];
	int st = rd(p, b, 4);

	if (st == TP_OK)
		*v = (int32_t)get_be32(b);
	return st;
}

/* Encoded size of a value of a fixed-size type; 0 for variable-size types, -1 if not a type. */
static int fixed_size(uint8_t t)
{
	switch (t) {
	case TT_BOOL:
	case TT_BYTE:
		return 1;
	case TT_I16:
		return 2;
	case TT_I32:
		return 4;
	case TT_DOUBLE:
	case TT_I64:
		return 8;
	case TT_UUID:
		return 16;
	case TT_STRING:
	case TT_STRUCT:
	case TT_MAP:
	case TT_SET:
	case TT_LIST:
		return 0;
	default:
		return -1;
	}
}

/* The fewest bytes a value of type t takes (a valid type assumed). */
static size_t min_size(uint8_t t)
{
	switch (t) {
	case TT_STRING:
		return 4;
	case TT_STRUCT:
		return 1;
	case TT_MAP:
		return 6;
	case TT_SET:
	case TT_LIST:
		return 5;
	default:
		return (size_t)fixed_size(t);
	}
}

static int skip_value(struct pctx *p, uint8_t t, int depth);

static int skip_struct(struct pctx *p, int depth, struct tp_msg *rec)
{
	for (;;) {
		uint8_t t;
		int16_t id;
		int st = rd_u8(p, &t);

		if (st != TP_OK)
			return st;
		if (t == TT_STOP)
			return TP_OK;
		st = rd_i16(p, &id);
		if (st != TP_OK)
			return st;
		if (rec && id >= 1 && id <= TP_MAX_FIELD_ID && (t == TT_I32 || t == TT_STRING)) {
			struct tp_field *f = &rec->f[id];
			int32_t v;

			st = rd_i32(p, &v);
			if (st != TP_OK)
				return st;
			f->type = t;
			if (t == TT_I32) {
				f->i32 = v;
				continue;
			}
			if (v < 0)
				return bad(p, "negative string length");
			f->off = p->off;
			f->len = (size_t)v;
			st = skip(p, (size_t)v);
		} else {
			if (rec && id >= 1 && id <= TP_MAX_FIELD_ID)
				rec->f[id].type = t;
			st = skip_value(p, t, depth + 1);
		}
		if (st != TP_OK)
			return st;
	}
}

static int skip_elems(struct pctx *p, const uint8_t *types, int ntypes, int32_t n, int depth)
{
	size_t per = 0, fixed = 0;
	int i, all_fixed = 1;

	if (n < 0)
		return bad(p, "negative container size");
	if (n == 0)
		return TP_OK;
	for (i = 0; i < ntypes; i++) {
		int fs = fixed_size(types[i]);

		if (fs < 0)
			return bad(p, "unknown element type");
		if (fs == 0)
			all_fixed = 0;
		fixed += (size_t)fs;
		per += min_size(types[i]);
	}
	if ((size_t)n > (p->limit - p->off) / per)
		return bad(p, "container larger than max_msg");
	if (all_fixed)
		return skip(p, (size_t)n * fixed);
	while (n--) {
		for (i = 0; i < ntypes; i++) {
			int st = skip_value(p, types[i], depth + 1);

			if (st != TP_OK)
				return st;
		}
	}
	return TP_OK;
}

static int skip_value(struct pctx *p, uint8_t t, int depth)
{
	uint8_t types[2];
	int32_t n;
	int st;

	if (depth > TP_MAX_DEPTH)
		return bad(p, "nested too deeply");
	switch (t) {
	case TT_STRING:
		st = rd_i32(p, &n);
		if (st != TP_OK)
			return st;
		if (n < 0)
			return bad(p, "negative string length");
		return skip(p, (size_t)n);
	case TT_STRUCT:
		return skip_struct(p, depth, NULL);
	case TT_MAP:
		st = rd(p, types, 2);
		if (st == TP_OK)
			st = rd_i32(p, &n);
		return st != TP_OK ? st : skip_elems(p, types, 2, n, depth);
	case TT_SET:
	case TT_LIST:
		st = rd_u8(p, types);
		if (st == TP_OK)
			st = rd_i32(p, &n);
		return st != TP_OK ? st : skip_elems(p, types, 1, n, depth);
	default:
		if (fixed_size(t) <= 0)
			return bad(p, "unknown field type");
		return skip(p, (size_t)fixed_size(t));
	}
}

int tp_parse(const struct tp_src *src, int framed, size_t max_msg, struct tp_msg *m, size_t *need,
	     const char **why)
{
	struct pctx p = { .src = src, .off = 0, .limit = max_msg, .need = 0, .why = NULL };
	int32_t v, name_len;
	uint8_t mt;
	int st;

	memset(m, 0, sizeof(*m));
	if (framed) {
		uint8_t b[4];
		uint32_t flen;

		if (src->len < 4) {
			*need = 4;
			return TP_MORE;
		}
		if (src->copy(src->ctx, 0, b, 4)) {
			*why = "cannot read the buffer";
			return TP_BAD;
		}
		flen = get_be32(b);
		if (flen == 0 || flen > max_msg || flen > 0x7fffffffu) {
			*why = "frame length out of range";
			return TP_BAD;
		}
		if (src->len - 4 < flen) {
			*need = 4 + (size_t)flen;
			return TP_MORE;
		}
		p.off = 4;
		p.limit = 4 + (size_t)flen;
	}
	st = rd_i32(&p, &v);
	if (st == TP_OK) {
		if (v < 0) {
			if (((uint32_t)v & 0xffff0000u) != TP_STRICT_VERSION || ((uint32_t)v & 0xff00u)) {
				st = bad(&p, "bad protocol version");
			} else {
				m->strict = 1;
				m->mtype = (uint8_t)((uint32_t)v & 0xff);
				st = rd_i32(&p, &name_len);
			}
		} else {
			name_len = v;
		}
	}
	if (st == TP_OK && (name_len <= 0 || name_len > TP_NAME_MAX))
		st = bad(&p, "method name length out of range");
	if (st == TP_OK)
		st = rd(&p, m->name, (size_t)name_len);
	if (st == TP_OK && memchr(m->name, 0, (size_t)name_len))
		st = bad(&p, "NUL in method name");
	if (st == TP_OK && !m->strict) {
		st = rd_u8(&p, &mt);
		m->mtype = mt;
	}
	if (st == TP_OK)
		st = rd_i32(&p, &m->seqid);
	if (st == TP_OK && (m->mtype < TM_CALL || m->mtype > TM_ONEWAY))
		st = bad(&p, "bad message type");
	if (st == TP_OK)
		st = skip_struct(&p, 0, m);
	if (st == TP_OK && framed && p.off != p.limit)
		st = bad(&p, "bytes after the message in its frame");
	if (st == TP_MORE)
		*need = p.need;
	else if (st == TP_BAD)
		*why = p.why;
	else
		m->total = p.off;
	return st;
}

static int flat_copy(void *ctx, size_t off, void *dst, size_t n)
{
	memcpy(dst, (const uint8_t *)ctx + off, n);
	return 0;
}

void tp_src_flat(struct tp_src *src, const void *buf, size_t len)
{
	src->len = len;
	src->copy = flat_copy;
	src->ctx = (void *)(uintptr_t)buf;
}

size_t tp_put_msg_begin(uint8_t *out, size_t cap, uint8_t mtype, const char *name, int32_t seqid)
{
	size_t n = strlen(name);

	if (cap < 12 + n)
		return 0;
	put_be32(out, TP_STRICT_VERSION | mtype);
	put_be32(out + 4, (uint32_t)n);
	memcpy(out + 8, name, n);
	put_be32(out + 8 + n, (uint32_t)seqid);
	return 12 + n;
}

size_t tp_put_field_i32(uint8_t *out, size_t cap, int16_t id, int32_t v)
{
	if (cap < 7)
		return 0;
	out[0] = TT_I32;
	out[1] = (uint8_t)((uint16_t)id >> 8);
	out[2] = (uint8_t)id;
	put_be32(out + 3, (uint32_t)v);
	return 7;
}

size_t tp_put_field_string_hdr(uint8_t *out, size_t cap, int16_t id, uint32_t len)
{
	if (cap < 7)
		return 0;
	out[0] = TT_STRING;
	out[1] = (uint8_t)((uint16_t)id >> 8);
	out[2] = (uint8_t)id;
	put_be32(out + 3, len);
	return 7;
}

/* Prefix the message in out[4..4+len) with its frame length when framed. */
static size_t finish(uint8_t *out, size_t len, int framed)
{
	if (!len)
		return 0;
	if (framed) {
		put_be32(out, (uint32_t)len);
		return len + 4;
	}
	memmove(out, out + 4, len);
	return len;
}

size_t tp_encode_reply_void(uint8_t *out, size_t cap, int framed, const char *name, int32_t seqid)
{
	size_t n;

	if (cap < 5)
		return 0;
	n = tp_put_msg_begin(out + 4, cap - 4, TM_REPLY, name, seqid);
	if (!n || cap - 4 - n < 1)
		return 0;
	out[4 + n] = TT_STOP;
	return finish(out, n + 1, framed);
}

size_t tp_encode_app_exception(uint8_t *out, size_t cap, int framed, const char *name, int32_t seqid,
			       const char *message, int32_t type)
{
	size_t n, k, mlen = strlen(message);

	if (cap < 4)
		return 0;
	cap -= 4;
	n = tp_put_msg_begin(out + 4, cap, TM_EXCEPTION, name, seqid);
	if (!n)
		return 0;
	k = tp_put_field_string_hdr(out + 4 + n, cap - n, 1, (uint32_t)mlen);
	if (!k || cap - n - k < mlen)
		return 0;
	n += k;
	memcpy(out + 4 + n, message, mlen);
	n += mlen;
	k = tp_put_field_i32(out + 4 + n, cap - n, 2, type);
	if (!k || cap - n - k < 1)
		return 0;
	n += k;
	out[4 + n] = TT_STOP;
	return finish(out, n + 1, framed);
}
