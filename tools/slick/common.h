/* Shared helpers of the Slick user-space tools: flag parsing, sockets, stats files. */
#ifndef SLICK_COMMON_H
#define SLICK_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Parse a whole decimal integer in [min, max]; on error print "<prog>: <flag> ..." and return -1. */
int parse_int_flag(const char *prog, const char *flag, const char *arg, long min, long max, long *out);

/* A non-blocking TCP listener on INADDR_ANY:port with SO_REUSEADDR; -1 (errno set) on error. */
int listen_tcp(uint16_t port, int backlog, int nonblock);

int set_nonblock(int fd);
int set_nodelay(int fd);

/* Write buf to path atomically (path.tmp + rename); 0 or -1 with errno. */
int write_file_atomic(const char *path, const char *buf, size_t len);

/* Write all len bytes to a blocking fd; 0 or -1. */
int write_all(int fd, const void *buf, size_t len);

uint64_t now_ns(void);

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

#endif
