/*
 * Thrift sinks: TCP servers that read a stream of Forwarder.msg calls (what the
 * forwarder sends its backends) and count them. Used by slick_sink and by
 * `slick_load forward`, which runs them in a thread of its own.
 *
 * When a payload starts with a big-endian client id and sequence number (as
 * slick_load's do), the sink also checks that each client's messages arrive in
 * increasing order (order_errors).
 */
#ifndef SLICK_SINK_H
#define SLICK_SINK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct sink_counters {
	_Atomic uint64_t msgs;
	_Atomic uint64_t payload_bytes;
	_Atomic uint64_t order_errors;
	_Atomic uint64_t malformed;
	_Atomic uint64_t conns;
};

struct sink {
	int lfd;
	uint16_t port;
	struct sink_counters c;
	uint32_t *next_seq; /* per client id: expected lower bound + 1 (0: none seen) */
};

struct sink_set {
	int epfd;
	int stopfd;
	int framed;
	size_t max_msg;
	uint32_t max_clients;
	int n;
	struct sink *sinks;
};

/* Listen on ports[i] (0: any free port) for each of n sinks. 0, or -1 with a message on stderr. */
int sinks_open(struct sink_set *ss, int n, const uint16_t *ports, int framed, size_t max_msg, uint32_t max_clients);
/* The event loop; returns when sinks_stop is called (or on a fatal error: non-NULL). */
void *sinks_run(void *ss);
int sinks_stop(struct sink_set *ss);
void sinks_close(struct sink_set *ss);
/* Totals over all sinks. */
void sinks_totals(struct sink_set *ss, uint64_t *msgs, uint64_t *bytes, uint64_t *order_errors, uint64_t *malformed);

#endif
