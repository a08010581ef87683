/*
 * slick_load: load generators for the Slick echo server and forwarder. One JSON line on stdout.
 *
 *   slick_load echo [--host IP] [--port P] --size N [--conns C] [--seconds S] [--warmup W] [--pingpong]
 *     Each connection announces buffer size N, then either streams (default: keeps up to
 *     max(4N, 64 KiB) bytes in flight, counts the bytes echoed back per second) or plays
 *     ping-pong (--pingpong: sends N bytes, waits for them, records the round-trip time).
 *     Every echoed byte is checked against what was sent (verify_errors).
 *
 *   slick_load forward [--host IP] [--port P] [--ctl-port P] --size P [--conns C] [--sinks K]
 *                      [--framed 0|1] [--seconds S] [--warmup W] [--drain-timeout T]
 *     Starts K sinks (Forwarder backends, in a thread of this process), registers sink k
 *     under key k with the Controller, then C clients send oneway msg(key, payload of P
 *     bytes) as fast as the forwarder takes them, keys in turn. Throughput is measured at
 *     the sinks. At the end the clients stop on a message boundary, the sinks must receive
 *     exactly what was sent (lost, order_errors), and release_servers is called.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "sink.h"
#include "thrift.h"

#define PROG "slick_load"
#define PAT_PERIOD 251
#define IO_CHUNK 65536
#define MAX_LAT_SAMPLES (4u << 20)

struct opts {
	struct sockaddr_in addr;
	char sink_ip[64];
	long port, ctl_port, size, conns, sinks, framed;
	double seconds, warmup, drain_timeout;
	int pingpong;
};

static uint8_t pat[IO_CHUNK + 2 * PAT_PERIOD];

static int parse_seconds(const char *flag, const char *arg, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || *end || end == arg || !(v >= min && v <= max)) {
		fprintf(stderr, "%s: %s must be a number of seconds in %g..%g, got '%s'\n", PROG, flag, min, max, arg);
		return -1;
	}
	*out = v;
	return 0;
}

static int connect_to(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || set_nodelay(fd) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int epoll_set(int ep, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = { .events = events, .data.ptr = ptr };

	if (epoll_ctl(ep, op, fd, &ev) < 0) {
		perror(PROG ": epoll_ctl");
		return -1;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* -- echo ------------------------------------------------------------------ */

struct econn {
	int fd;
	int dead;
	uint32_t events;
	uint64_t sent, rcvd;
	uint64_t target; /* send up to this stream offset */
	uint64_t t0;	 /* ping-pong: when the current round started */
};

struct echo_run {
	const struct opts *o;
	int ep;
	uint64_t window;
	int measuring;
	uint64_t rcvd_total, roundtrips, verify_errors, errors;
	uint64_t *lat;
	size_t nlat;
};

static void econn_fail(struct echo_run *r, struct econn *c, const char *what)
{
	if (!c->dead) {
		fprintf(stderr, "%s: echo connection: %s\n", PROG, what);
		r->errors++;
		c->dead = 1;
		if (epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL) < 0)
			perror(PROG ": epoll_ctl DEL");
	}
}

static void econn_send(struct echo_run *r, struct econn *c)
{
	uint32_t want;

	while (!c->dead && c->sent < c->target) {
		uint64_t n = c->target - c->sent;
		ssize_t w;

		if (n > IO_CHUNK)
			n = IO_CHUNK;
		w = send(c->fd, pat + c->sent % PAT_PERIOD, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			econn_fail(r, c, strerror(errno));
			return;
		}
		c->sent += (uint64_t)w;
	}
	want = EPOLLIN | (c->sent < c->target ? EPOLLOUT : 0);
	if (!c->dead && want != c->events) {
		c->events = want;
		if (epoll_set(r->ep, EPOLL_CTL_MOD, c->fd, want, c) < 0)
			econn_fail(r, c, "cannot watch the connection");
	}
}

static void econn_recv(struct echo_run *r, struct econn *c)
{
	static uint8_t buf[IO_CHUNK];
	uint64_t n_size = (uint64_t)r->o->size;
	int rounds;

	for (rounds = 0; rounds < 8 && !c->dead; rounds++) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				econn_fail(r, c, strerror(errno));
			break;
		}
		if (n == 0) {
			econn_fail(r, c, "closed by the server");
			break;
		}
		if (c->rcvd + (uint64_t)n > c->sent) {
			r->verify_errors++;
			econn_fail(r, c, "received more than was sent");
			break;
		}
		if (memcmp(buf, pat + c->rcvd % PAT_PERIOD, (size_t)n)) {
			r->verify_errors++;
			econn_fail(r, c, "echoed bytes differ from the bytes sent");
			break;
		}
		c->rcvd += (uint64_t)n;
		r->rcvd_total += (uint64_t)n;
		if (r->o->pingpong) {
			if (c->rcvd == c->target) {
				uint64_t now = now_ns();

				if (r->measuring) {
					r->roundtrips++;
					if (r->nlat < MAX_LAT_SAMPLES)
						r->lat[r->nlat++] = now - c->t0;
				}
				c->t0 = now;
				c->target += n_size;
			}
		} else {
			c->target = c->rcvd + r->window;
		}
	}
	econn_send(r, c);
}

static double pct(const uint64_t *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

static int run_echo(const struct opts *o)
{
	struct echo_run r = { .o = o };
	struct epoll_event evs[256];
	struct econn *conns;
	uint64_t start, t_meas, t_end, now, rcvd0 = 0, t0 = 0, bytes;
	double secs, sum = 0;
	size_t i;
	long k;

	r.window = (uint64_t)o->size * 4 < IO_CHUNK ? IO_CHUNK : (uint64_t)o->size * 4;
	r.ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)o->conns, sizeof(*conns));
	if (o->pingpong)
		r.lat = malloc(MAX_LAT_SAMPLES * sizeof(*r.lat));
	if (r.ep < 0 || !conns || (o->pingpong && !r.lat)) {
		perror(PROG ": setup");
		return 1;
	}
	for (k = 0; k < o->conns; k++) {
		struct econn *c = &conns[k];
		uint8_t hdr[4];

		c->fd = connect_to(&o->addr);
		if (c->fd < 0) {
			fprintf(stderr, "%s: connect to port %ld: %s\n", PROG, o->port, strerror(errno));
			return 1;
		}
		put_be32(hdr, (uint32_t)o->size);
		if (write_all(c->fd, hdr, 4) < 0 || set_nonblock(c->fd) < 0) {
			perror(PROG ": sending the buffer size");
			return 1;
		}
		c->target = o->pingpong ? (uint64_t)o->size : r.window;
		c->events = EPOLLIN | EPOLLOUT;
		if (epoll_set(r.ep, EPOLL_CTL_ADD, c->fd, c->events, c) < 0)
			return 1;
	}
	start = now_ns();
	for (k = 0; k < o->conns; k++) {
		conns[k].t0 = start;
		econn_send(&r, &conns[k]);
	}
	t_meas = start + (uint64_t)(o->warmup * 1e9);
	t_end = t_meas + (uint64_t)(o->seconds * 1e9);
	for (now = start; now < t_end;) {
		int n = epoll_wait(r.ep, evs, 256, 20);
		int j, alive = 0;

		if (n < 0 && errno != EINTR) {
			perror(PROG ": epoll_wait");
			return 1;
		}
		for (j = 0; j < n; j++) {
			struct econn *c = evs[j].data.ptr;

			if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				econn_recv(&r, c);
			else if (evs[j].events & EPOLLOUT)
				econn_send(&r, c);
		}
		now = now_ns();
		if (!r.measuring && now >= t_meas) {
			r.measuring = 1;
			rcvd0 = r.rcvd_total;
			t0 = now;
		}
		for (k = 0; k < o->conns; k++)
			alive += !conns[k].dead;
		if (!alive)
			break;
	}
	if (!r.measuring) {
		t0 = now;
		rcvd0 = r.rcvd_total;
	}
	bytes = r.rcvd_total - rcvd0;
	secs = (double)(now - t0) / 1e9;
	for (k = 0; k < o->conns; k++)
		close(conns[k].fd);
	if (r.nlat)
		qsort(r.lat, r.nlat, sizeof(*r.lat), cmp_u64);
	for (i = 0; i < r.nlat; i++)
		sum += (double)r.lat[i];
	printf("{\"mode\": \"echo\", \"pattern\": \"%s\", \"size\": %ld, \"conns\": %ld, \"seconds\": %.3f, "
	       "\"bytes\": %" PRIu64 ", \"bytes_per_s\": %.1f, \"roundtrips\": %" PRIu64 ", \"roundtrips_per_s\": %.1f, ",
	       o->pingpong ? "pingpong" : "stream", o->size, o->conns, secs, bytes, secs > 0 ? (double)bytes / secs : 0,
	       r.roundtrips, secs > 0 ? (double)r.roundtrips / secs : 0);
	if (r.nlat)
		printf("\"lat_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"max\": %.1f}, ",
		       sum / (double)r.nlat / 1000.0, pct(r.lat, r.nlat, 50), pct(r.lat, r.nlat, 90),
		       pct(r.lat, r.nlat, 99), (double)r.lat[r.nlat - 1] / 1000.0);
	else
		printf("\"lat_us\": null, ");
	printf("\"verify_errors\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"ok\": %s}\n", r.verify_errors, r.errors,
	       r.verify_errors || r.errors || !bytes ? "false" : "true");
	fflush(stdout);
	free(conns);
	free(r.lat);
	close(r.ep);
	return r.verify_errors || r.errors || !bytes ? 1 : 0;
}

/* -- controller client ----------------------------------------------------- */

/* Send one call and read its reply. 0: a REPLY; -1: an error, described in err. */
static int ctl_call(int fd, int framed, const uint8_t *req, size_t len, char *err, size_t errlen)
{
	uint8_t buf[4096];
	size_t got = 0;

	if (write_all(fd, req, len) < 0) {
		snprintf(err, errlen, "sending to the controller: %s", strerror(errno));
		return -1;
	}
	for (;;) {
		struct tp_src src;
		struct tp_msg m;
		const char *why = NULL;
		size_t need = 0;
		ssize_t n;
		int st;

		tp_src_flat(&src, buf, got);
		st = got ? tp_parse(&src, framed, sizeof(buf) - 4, &m, &need, &why) : TP_MORE;
		if (st == TP_BAD) {
			snprintf(err, errlen, "bad reply from the controller: %s", why);
			return -1;
		}
		if (st == TP_OK) {
			if (m.mtype == TM_REPLY)
				return 0;
			if (m.mtype == TM_EXCEPTION && m.f[1].type == TT_STRING) {
				int l = m.f[1].len > 200 ? 200 : (int)m.f[1].len;

				snprintf(err, errlen, "controller: %s: %.*s", m.name, l, (const char *)buf + m.f[1].off);
			} else {
				snprintf(err, errlen, "controller: unexpected reply type %u", m.mtype);
			}
			return -1;
		}
		if (got == sizeof(buf)) {
			snprintf(err, errlen, "controller reply too long");
			return -1;
		}
		n = recv(fd, buf + got, sizeof(buf) - got, 0);
		if (n <= 0) {
			snprintf(err, errlen, "reading the controller's reply: %s", n ? strerror(errno) : "EOF");
			return -1;
		}
		got += (size_t)n;
	}
}

/* Encode a call: name, then (for add_server) ip, port, key. Returns its length. */
static size_t ctl_encode(uint8_t *out, size_t cap, int framed, const char *name, int32_t seqid, const char *ip,
			 int32_t port, int32_t key)
{
	size_t n = 4, k, iplen = ip ? strlen(ip) : 0;

	k = tp_put_msg_begin(out + n, cap - n, TM_CALL, name, seqid);
	if (!k)
		return 0;
	n += k;
	if (ip) {
		if (cap - n < 7 + iplen + 7 + 7 + 1)
			return 0;
		n += tp_put_field_string_hdr(out + n, cap - n, 1, (uint32_t)iplen);
		memcpy(out + n, ip, iplen);
		n += iplen;
		n += tp_put_field_i32(out + n, cap - n, 2, port);
		n += tp_put_field_i32(out + n, cap - n, 3, key);
	}
	if (cap - n < 1)
		return 0;
	out[n++] = TT_STOP;
	if (framed) {
		put_be32(out, (uint32_t)(n - 4));
		return n;
	}
	memmove(out, out + 4, n - 4);
	return n - 4;
}

/* -- forward ----------------------------------------------------------------- */

struct fconn {
	int fd;
	int dead;
	uint32_t id;
	uint32_t next_seq;
	uint8_t *batch;
	size_t len, off;
	uint32_t batch_msgs;
	uint32_t events;
};

struct fwd_run {
	const struct opts *o;
	int ep;
	size_t msg_len, payload_off, key_off;
	const uint8_t *tmpl;
	uint32_t per_batch;
	uint64_t sent_msgs, errors;
	int stopping;
};

static void fconn_fill(struct fwd_run *r, struct fconn *c)
{
	uint32_t i;

	c->len = 0;
	for (i = 0; i < r->per_batch; i++) {
		uint8_t *m = c->batch + c->len;
		uint32_t seq = c->next_seq++;

		memcpy(m, r->tmpl, r->msg_len);
		put_be32(m + r->key_off, (uint32_t)((c->id + seq) % (uint32_t)r->o->sinks));
		put_be32(m + r->payload_off, c->id);
		put_be32(m + r->payload_off + 4, seq);
		c->len += r->msg_len;
	}
	c->off = 0;
	c->batch_msgs = r->per_batch;
}

static void fconn_fail(struct fwd_run *r, struct fconn *c, const char *what)
{
	fprintf(stderr, "%s: forwarder connection: %s\n", PROG, what);
	r->errors++;
	c->dead = 1;
	if (epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		perror(PROG ": epoll_ctl DEL");
}

static void fconn_send(struct fwd_run *r, struct fconn *c)
{
	uint32_t want;

	while (!c->dead) {
		ssize_t w;

		if (c->off == c->len) {
			if (c->len)
				r->sent_msgs += c->batch_msgs;
			c->len = c->off = 0;
			if (r->stopping)
				break;
			fconn_fill(r, c);
		}
		w = send(c->fd, c->batch + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			fconn_fail(r, c, strerror(errno));
			return;
		}
		c->off += (size_t)w;
	}
	want = c->off < c->len ? EPOLLOUT : 0;
	if (!c->dead && want != c->events) {
		c->events = want;
		if (epoll_set(r->ep, EPOLL_CTL_MOD, c->fd, want, c) < 0)
			fconn_fail(r, c, "cannot watch the connection");
	}
}

static int run_forward(const struct opts *o)
{
	struct fwd_run r = { .o = o };
	struct sink_set ss;
	struct sockaddr_in ctl_sa = o->addr;
	struct epoll_event evs[256];
	struct fconn *conns;
	uint8_t req[512], *tmpl;
	char err[512];
	pthread_t th;
	struct timeval tv = { .tv_sec = 30 };
	uint64_t start, t_meas, t_end, now, m0 = 0, b0 = 0, t0 = 0, m1 = 0, b1 = 0, t1 = 0, msgs, bytes, order, bad;
	size_t n, hdr;
	long k;
	int ctl, rc = 0, e;
	double secs;

	if (sinks_open(&ss, (int)o->sinks, NULL, (int)o->framed, (size_t)o->size + 4096, (uint32_t)o->conns) < 0)
		return 1;
	e = pthread_create(&th, NULL, sinks_run, &ss);
	if (e) {
		fprintf(stderr, "%s: pthread_create: %s\n", PROG, strerror(e));
		return 1;
	}
	ctl_sa.sin_port = htons((uint16_t)o->ctl_port);
	ctl = connect_to(&ctl_sa);
	if (ctl < 0 || setsockopt(ctl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		fprintf(stderr, "%s: connect to the controller on port %ld: %s\n", PROG, o->ctl_port, strerror(errno));
		return 1;
	}
	for (k = 0; k < o->sinks; k++) {
		n = ctl_encode(req, sizeof(req), (int)o->framed, "add_server", (int32_t)k + 1, o->sink_ip,
			       ss.sinks[k].port, (int32_t)k);
		if (!n || ctl_call(ctl, (int)o->framed, req, n, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: add_server(%s, %u, %ld): %s\n", PROG, o->sink_ip, ss.sinks[k].port, k,
				n ? err : "encoding failed");
			return 1;
		}
	}

	/* the message template: [frame] header, field 1 key, field 2 payload, STOP */
	hdr = (o->framed ? 4 : 0);
	r.msg_len = hdr + 12 + 3 + 7 + 7 + (size_t)o->size + 1;
	tmpl = malloc(r.msg_len);
	if (!tmpl) {
		perror(PROG ": malloc");
		return 1;
	}
	n = hdr;
	n += tp_put_msg_begin(tmpl + n, r.msg_len - n, TM_ONEWAY, "msg", 0);
	r.key_off = n + 3;
	n += tp_put_field_i32(tmpl + n, r.msg_len - n, 1, 0);
	n += tp_put_field_string_hdr(tmpl + n, r.msg_len - n, 2, (uint32_t)o->size);
	r.payload_off = n;
	for (k = 0; k < o->size; k++)
		tmpl[n + (size_t)k] = pat[k % PAT_PERIOD];
	n += (size_t)o->size;
	tmpl[n++] = TT_STOP;
	if (n != r.msg_len) {
		fprintf(stderr, "%s: internal error: message template is %zu bytes, not %zu\n", PROG, n, r.msg_len);
		return 1;
	}
	if (o->framed)
		put_be32(tmpl, (uint32_t)(r.msg_len - 4));
	r.tmpl = tmpl;
	r.per_batch = (uint32_t)(IO_CHUNK / r.msg_len);
	if (r.per_batch == 0)
		r.per_batch = 1;

	r.ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)o->conns, sizeof(*conns));
	if (r.ep < 0 || !conns) {
		perror(PROG ": setup");
		return 1;
	}
	for (k = 0; k < o->conns; k++) {
		struct fconn *c = &conns[k];

		c->id = (uint32_t)k;
		c->batch = malloc(r.per_batch * r.msg_len);
		c->fd = connect_to(&o->addr);
		if (!c->batch || c->fd < 0 || set_nonblock(c->fd) < 0) {
			fprintf(stderr, "%s: connect to the forwarder on port %ld: %s\n", PROG, o->port, strerror(errno));
			return 1;
		}
		c->events = EPOLLOUT;
		if (epoll_set(r.ep, EPOLL_CTL_ADD, c->fd, c->events, c) < 0)
			return 1;
	}
	start = now_ns();
	t_meas = start + (uint64_t)(o->warmup * 1e9);
	t_end = t_meas + (uint64_t)(o->seconds * 1e9);
	for (now = start;;) {
		int j, nev = epoll_wait(r.ep, evs, 256, 20), busy = 0;

		if (nev < 0 && errno != EINTR) {
			perror(PROG ": epoll_wait");
			return 1;
		}
		for (j = 0; j < nev; j++)
			fconn_send(&r, evs[j].data.ptr);
		now = now_ns();
		if (!t0 && now >= t_meas) {
			sinks_totals(&ss, &m0, &b0, &order, &bad);
			t0 = now;
		}
		if (!r.stopping && now >= t_end) {
			sinks_totals(&ss, &m1, &b1, &order, &bad);
			t1 = now;
			r.stopping = 1;
			for (k = 0; k < o->conns; k++)
				fconn_send(&r, &conns[k]);
		}
		if (!r.stopping)
			continue;
		for (k = 0; k < o->conns; k++)
			busy += !conns[k].dead && conns[k].off < conns[k].len;
		if (!busy || now > t_end + (uint64_t)(o->drain_timeout * 1e9))
			break;
	}
	/* every message sent must arrive, exactly once */
	do {
		sinks_totals(&ss, &msgs, &bytes, &order, &bad);
		if (msgs >= r.sent_msgs)
			break;
		usleep(10000);
	} while (now_ns() < t_end + (uint64_t)(o->drain_timeout * 1e9));
	usleep(50000); /* a duplicate would arrive right behind */
	sinks_totals(&ss, &msgs, &bytes, &order, &bad);
	for (k = 0; k < o->conns; k++) {
		close(conns[k].fd);
		free(conns[k].batch);
	}
	n = ctl_encode(req, sizeof(req), (int)o->framed, "release_servers", 1000, NULL, 0, 0);
	if (!n || ctl_call(ctl, (int)o->framed, req, n, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: release_servers: %s\n", PROG, n ? err : "encoding failed");
		rc = 1;
	}
	close(ctl);
	if (sinks_stop(&ss) < 0 || pthread_join(th, NULL)) {
		fprintf(stderr, "%s: cannot stop the sinks\n", PROG);
		rc = 1;
	}
	secs = (double)(t1 - t0) / 1e9;
	if (msgs != r.sent_msgs || order || bad || r.errors || m1 == m0)
		rc = 1;
	printf("{\"mode\": \"forward\", \"size\": %ld, \"conns\": %ld, \"sinks\": %ld, \"framed\": %ld, "
	       "\"seconds\": %.3f, \"msgs\": %" PRIu64 ", \"msgs_per_s\": %.1f, \"payload_bytes_per_s\": %.1f, "
	       "\"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"lost\": %" PRId64 ", \"order_errors\": %" PRIu64
	       ", \"sink_malformed\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"ok\": %s}\n",
	       o->size, o->conns, o->sinks, o->framed, secs, m1 - m0, secs > 0 ? (double)(m1 - m0) / secs : 0,
	       secs > 0 ? (double)(b1 - b0) / secs : 0, r.sent_msgs, msgs, (int64_t)(r.sent_msgs - msgs), order, bad,
	       r.errors, rc ? "false" : "true");
	fflush(stdout);
	free(conns);
	free(tmpl);
	close(r.ep);
	sinks_close(&ss);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s echo [--host IP] [--port P] --size N [--conns C] [--seconds S] [--warmup W] [--pingpong]\n"
		"       %s forward [--host IP] [--port P] [--ctl-port P] --size BYTES [--conns C] [--sinks K]\n"
		"              [--framed 0|1] [--sink-ip IP] [--seconds S] [--warmup W] [--drain-timeout T]\n",
		PROG, PROG);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "host", required_argument, NULL, 'H' },     { "port", required_argument, NULL, 'p' },
		{ "ctl-port", required_argument, NULL, 'c' }, { "size", required_argument, NULL, 'n' },
		{ "conns", required_argument, NULL, 'C' },    { "sinks", required_argument, NULL, 'k' },
		{ "framed", required_argument, NULL, 'f' },   { "seconds", required_argument, NULL, 's' },
		{ "warmup", required_argument, NULL, 'w' },   { "drain-timeout", required_argument, NULL, 'd' },
		{ "pingpong", no_argument, NULL, 'P' },	      { "sink-ip", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },	      { NULL, 0, NULL, 0 },
	};
	struct opts o = { .port = -1, .ctl_port = 9091, .size = -1, .conns = 1, .sinks = 1, .seconds = 5,
			  .warmup = 1, .drain_timeout = 30 };
	const char *host = "127.0.0.1";
	int opt, echo;
	long i;

	if (argc < 2 || (strcmp(argv[1], "echo") && strcmp(argv[1], "forward"))) {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
			usage(stdout);
			return 0;
		}
		usage(stderr);
		return 2;
	}
	echo = !strcmp(argv[1], "echo");
	snprintf(o.sink_ip, sizeof(o.sink_ip), "127.0.0.1");
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		int bad = 0;

		switch (opt) {
		case 'H':
			host = optarg;
			break;
		case 'p':
			bad = parse_int_flag(PROG, "--port", optarg, 1, 65535, &o.port);
			break;
		case 'c':
			bad = parse_int_flag(PROG, "--ctl-port", optarg, 1, 65535, &o.ctl_port);
			break;
		case 'n':
			bad = echo ? parse_int_flag(PROG, "--size", optarg, 1, 65536, &o.size)
				   : parse_int_flag(PROG, "--size", optarg, 8, 16L << 20, &o.size);
			break;
		case 'C':
			bad = parse_int_flag(PROG, "--conns", optarg, 1, 4096, &o.conns);
			break;
		case 'k':
			bad = parse_int_flag(PROG, "--sinks", optarg, 1, 64, &o.sinks);
			break;
		case 'f':
			bad = parse_int_flag(PROG, "--framed", optarg, 0, 1, &o.framed);
			break;
		case 's':
			bad = parse_seconds("--seconds", optarg, 0.1, 3600, &o.seconds);
			break;
		case 'w':
			bad = parse_seconds("--warmup", optarg, 0, 3600, &o.warmup);
			break;
		case 'd':
			bad = parse_seconds("--drain-timeout", optarg, 0.1, 3600, &o.drain_timeout);
			break;
		case 'P':
			o.pingpong = 1;
			break;
		case 'i':
			if (strlen(optarg) >= sizeof(o.sink_ip)) {
				fprintf(stderr, "%s: --sink-ip too long\n", PROG);
				return 2;
			}
			snprintf(o.sink_ip, sizeof(o.sink_ip), "%s", optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", PROG, argv[optind]);
		return 2;
	}
	if (o.size < 0) {
		fprintf(stderr, "%s: --size is required\n", PROG);
		return 2;
	}
	if (!echo && o.pingpong) {
		fprintf(stderr, "%s: --pingpong is for echo\n", PROG);
		return 2;
	}
	if (o.port < 0)
		o.port = echo ? 7007 : 9090;
	memset(&o.addr, 0, sizeof(o.addr));
	o.addr.sin_family = AF_INET;
	o.addr.sin_port = htons((uint16_t)o.port);
	if (inet_pton(AF_INET, host, &o.addr.sin_addr) != 1) {
		fprintf(stderr, "%s: --host must be an IPv4 address, got '%s'\n", PROG, host);
		return 2;
	}
	for (i = 0; i < (long)sizeof(pat); i++)
		pat[i] = (uint8_t)((i % PAT_PERIOD) * 97 + 13);
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		perror(PROG ": signal");
		return 1;
	}
	return echo ? run_echo(&o) : run_forward(&o);
}
