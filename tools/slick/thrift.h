/*
 * A small, bounded parser and encoder for the Thrift binary protocol, as the
 * Slick forwarder speaks it: one message at a time, strict or non-strict
 * header, framed or unframed transport. The parser never trusts a length: every
 * size is checked against the bytes a message may have (max_msg), nesting is
 * limited, and containers are skipped without reading their elements one by
 * one when the elements have a fixed size.
 *
 * The bytes come from a tp_src: anything that can copy out a range at an
 * offset (a flat buffer, a libevent evbuffer), so the parser works in place.
 */
#ifndef SLICK_THRIFT_H
#define SLICK_THRIFT_H

#include <stddef.h>
#include <stdint.h>

enum tp_type {
	TT_STOP = 0,
	TT_BOOL = 2,
	TT_BYTE = 3,
	TT_DOUBLE = 4,
	TT_I16 = 6,
	TT_I32 = 8,
	TT_I64 = 10,
	TT_STRING = 11,
	TT_STRUCT = 12,
	TT_MAP = 13,
	TT_SET = 14,
	TT_LIST = 15,
	TT_UUID = 16,
};

enum tp_mtype { TM_CALL = 1, TM_REPLY = 2, TM_EXCEPTION = 3, TM_ONEWAY = 4 };

/* TApplicationException types used here */
enum { TAPP_UNKNOWN_METHOD = 1, TAPP_INTERNAL_ERROR = 6 };

#define TP_STRICT_VERSION 0x80010000u
#define TP_NAME_MAX 64
#define TP_MAX_DEPTH 32
#define TP_MAX_FIELD_ID 8 /* args fields 1..8 are recorded, others only skipped */

enum tp_status { TP_OK = 0, TP_MORE = 1, TP_BAD = -1 };

struct tp_src {
	size_t len; /* bytes available */
	/* copy n bytes at off (off + n <= len) into dst; 0 on success */
	int (*copy)(void *ctx, size_t off, void *dst, size_t n);
	void *ctx;
};

struct tp_field {
	uint8_t type; /* TT_STOP when absent */
	int32_t i32;	/* value of an I32 field */
	size_t off;	/* STRING: offset of its bytes in the source */
	size_t len;	/* STRING: its length */
};

struct tp_msg {
	size_t total; /* bytes of the message, including the frame header */
	uint8_t mtype;
	int strict;
	char name[TP_NAME_MAX + 1];
	int32_t seqid;
	struct tp_field f[TP_MAX_FIELD_ID + 1]; /* top-level args fields by id */
};

/*
 * Parse the message at offset 0 of src.
 * TP_OK: *m filled, the message is m->total bytes.
 * TP_MORE: incomplete; *need is the length src must reach before a retry can progress.
 * TP_BAD: malformed (or over max_msg); *why says what.
 */
int tp_parse(const struct tp_src *src, int framed, size_t max_msg, struct tp_msg *m, size_t *need,
	     const char **why);

/* A tp_src over a flat buffer. */
void tp_src_flat(struct tp_src *src, const void *buf, size_t len);

/* Encoding into a caller buffer; each returns bytes written, or 0 if cap is too small. */
size_t tp_put_msg_begin(uint8_t *out, size_t cap, uint8_t mtype, const char *name, int32_t seqid);
size_t tp_put_field_i32(uint8_t *out, size_t cap, int16_t id, int32_t v);
size_t tp_put_field_string_hdr(uint8_t *out, size_t cap, int16_t id, uint32_t len);

/*
 * Whole messages, framed when framed != 0 (the frame length is included).
 * tp_encode_reply_void: the REPLY of a void call. tp_encode_app_exception: an EXCEPTION
 * carrying a TApplicationException(message, type).
 */
size_t tp_encode_reply_void(uint8_t *out, size_t cap, int framed, const char *name, int32_t seqid);
size_t tp_encode_app_exception(uint8_t *out, size_t cap, int framed, const char *name, int32_t seqid,
			       const char *message, int32_t type);

#endif
