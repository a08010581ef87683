#include "sink.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "thrift.h"

#define READ_CHUNK 65536

struct sconn {
	int fd;
	struct sink *s;
	uint8_t *buf;
	size_t cap, start, end;
};

static char stop_mark;

int sinks_open(struct sink_set *ss, int n, const uint16_t *ports, int framed, size_t max_msg, uint32_t max_clients)
{
	struct epoll_event ev;
	int i;

	memset(ss, 0, sizeof(*ss));
	ss->framed = framed;
	ss->max_msg = max_msg;
	ss->max_clients = max_clients;
	ss->n = n;
	ss->sinks = calloc((size_t)n, sizeof(*ss->sinks));
	ss->epfd = epoll_create1(EPOLL_CLOEXEC);
	ss->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!ss->sinks || ss->epfd < 0 || ss->stopfd < 0) {
		perror("sink: setup");
		return -1;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &stop_mark;
	if (epoll_ctl(ss->epfd, EPOLL_CTL_ADD, ss->stopfd, &ev) < 0) {
		perror("sink: epoll_ctl");
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct sink *s = &ss->sinks[i];
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);

		s->lfd = listen_tcp(ports ? ports[i] : 0, 128, 1);
		if (s->lfd < 0) {
			fprintf(stderr, "sink: cannot listen on port %u: %s\n", ports ? ports[i] : 0, strerror(errno));
			return -1;
		}
		if (getsockname(s->lfd, (struct sockaddr *)&sa, &len) < 0) {
			perror("sink: getsockname");
			return -1;
		}
		s->port = ntohs(sa.sin_port);
		s->next_seq = calloc(max_clients ? max_clients : 1, sizeof(*s->next_seq));
		if (!s->next_seq) {
			perror("sink: calloc");
			return -1;
		}
		ev.events = EPOLLIN;
		ev.data.ptr = s;
		if (epoll_ctl(ss->epfd, EPOLL_CTL_ADD, s->lfd, &ev) < 0) {
			perror("sink: epoll_ctl");
			return -1;
		}
	}
	return 0;
}

static int is_listener(struct sink_set *ss, void *p)
{
	return (char *)p >= (char *)ss->sinks && (char *)p < (char *)(ss->sinks + ss->n);
}

static void sconn_close(struct sink_set *ss, struct sconn *c)
{
	if (epoll_ctl(ss->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		perror("sink: epoll_ctl DEL");
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Count every complete message in c's buffer. -1: malformed. */
static int sconn_parse(struct sink_set *ss, struct sconn *c)
{
	struct sink *s = c->s;

	while (c->end > c->start) {
		const uint8_t *p = c->buf + c->start;
		struct tp_src src;
		struct tp_msg m;
		const char *why = NULL;
		size_t need = 0;
		int st;

		tp_src_flat(&src, p, c->end - c->start);
		st = tp_parse(&src, ss->framed, ss->max_msg, &m, &need, &why);
		if (st == TP_MORE)
			return 0;
		if (st == TP_BAD || strcmp(m.name, "msg") || m.f[1].type != TT_I32 || m.f[2].type != TT_STRING) {
			fprintf(stderr, "sink %u: malformed message: %s\n", s->port, why ? why : "not a msg(key, payload)");
			atomic_fetch_add_explicit(&s->c.malformed, 1, memory_order_relaxed);
			return -1;
		}
		if (m.f[2].len >= 8 && ss->max_clients) {
			uint32_t cid = get_be32(p + m.f[2].off), seq = get_be32(p + m.f[2].off + 4);

			if (cid < ss->max_clients) {
				if (s->next_seq[cid] && seq < s->next_seq[cid])
					atomic_fetch_add_explicit(&s->c.order_errors, 1, memory_order_relaxed);
				s->next_seq[cid] = seq + 1;
			}
		}
		atomic_fetch_add_explicit(&s->c.payload_bytes, m.f[2].len, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->c.msgs, 1, memory_order_relaxed);
		c->start += m.total;
	}
	c->start = c->end = 0;
	return 0;
}

/* -1: close the connection */
static int sconn_read(struct sink_set *ss, struct sconn *c)
{
	int rounds;

	for (rounds = 0; rounds < 16; rounds++) {
		ssize_t r;

		if (c->start && c->cap - c->end < READ_CHUNK) {
			memmove(c->buf, c->buf + c->start, c->end - c->start);
			c->end -= c->start;
			c->start = 0;
		}
		if (c->cap - c->end < READ_CHUNK) {
			size_t cap = c->cap ? c->cap * 2 : 4 * READ_CHUNK;
			uint8_t *nb;

			if (c->cap >= ss->max_msg + 4 + READ_CHUNK)
				return -1; /* cannot happen: the parser rejects a message over max_msg */
			nb = realloc(c->buf, cap);
			if (!nb) {
				perror("sink: realloc");
				return -1;
			}
			c->buf = nb;
			c->cap = cap;
		}
		r = recv(c->fd, c->buf + c->end, c->cap - c->end, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (r == 0) {
			if (c->end > c->start) {
				fprintf(stderr, "sink %u: connection closed inside a message\n", c->s->port);
				atomic_fetch_add_explicit(&c->s->c.malformed, 1, memory_order_relaxed);
			}
			return -1;
		}
		c->end += (size_t)r;
		if (sconn_parse(ss, c) < 0)
			return -1;
	}
	return 0;
}

static void sink_accept(struct sink_set *ss, struct sink *s)
{
	for (;;) {
		struct epoll_event ev;
		struct sconn *c;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				perror("sink: accept");
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->s = s;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(ss->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			perror("sink: epoll_ctl ADD");
			close(fd);
			free(c);
			continue;
		}
		atomic_fetch_add_explicit(&s->c.conns, 1, memory_order_relaxed);
	}
}

void *sinks_run(void *arg)
{
	struct sink_set *ss = arg;
	struct epoll_event events[64];

	for (;;) {
		int i, n = epoll_wait(ss->epfd, events, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("sink: epoll_wait");
			return (void *)1;
		}
		for (i = 0; i < n; i++) {
			void *p = events[i].data.ptr;

			if (p == &stop_mark)
				return NULL;
			if (is_listener(ss, p))
				sink_accept(ss, p);
			else if (sconn_read(ss, p) < 0)
				sconn_close(ss, p);
		}
	}
}

int sinks_stop(struct sink_set *ss)
{
	uint64_t one = 1;

	return write(ss->stopfd, &one, sizeof(one)) == (ssize_t)sizeof(one) ? 0 : -1;
}

void sinks_close(struct sink_set *ss)
{
	int i;

	/* connections still open are reclaimed at exit; only the listeners matter to peers */
	for (i = 0; i < ss->n; i++) {
		if (ss->sinks[i].lfd >= 0)
			close(ss->sinks[i].lfd);
		free(ss->sinks[i].next_seq);
	}
	free(ss->sinks);
	close(ss->epfd);
	close(ss->stopfd);
}

void sinks_totals(struct sink_set *ss, uint64_t *msgs, uint64_t *bytes, uint64_t *order_errors, uint64_t *malformed)
{
	int i;

	*msgs = *bytes = *order_errors = *malformed = 0;
	for (i = 0; i < ss->n; i++) {
		struct sink_counters *c = &ss->sinks[i].c;

		*msgs += atomic_load_explicit(&c->msgs, memory_order_relaxed);
		*bytes += atomic_load_explicit(&c->payload_bytes, memory_order_relaxed);
		*order_errors += atomic_load_explicit(&c->order_errors, memory_order_relaxed);
		*malformed += atomic_load_explicit(&c->malformed, memory_order_relaxed);
	}
}
