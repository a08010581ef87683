/*
 * slick_forwarder_user: the Slick Thrift forwarder as a user process (libevent bufferevents).
 *
 * Clients on --port send Forwarder.msg(key, payload) calls (oneway); each message is
 * moved whole, bytes unchanged, to the backend registered under its key. Controller
 * calls on --ctl-port register backends (add_server: connect to ip:port, route key
 * there) and drop them all (release_servers). Binary protocol, strict or non-strict
 * headers, framed (--framed 1) or unframed transport on every connection.
 *
 * Guarantees: a client's messages reach a backend in the order it sent them, each
 * exactly once: when a backend's output passes HIGH_WATER, the clients feeding it
 * stop being read until it drains (backpressure, never a drop). A message with no
 * route is counted (unknown_key) and dropped; the client stays connected. A
 * malformed message (bad header, bad lengths, wrong field type, unknown method,
 * nested too deeply, over --max-msg, or truncated by EOF) is counted and closes
 * that connection only.
 *
 * Stats (`key value` lines, as /proc/net/slick_forwarder) go to --stats FILE on
 * SIGUSR1 and at exit (stdout on SIGUSR1 without --stats).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "common.h"
#include "thrift.h"

#define PROG "slick_forwarder_user"
#define HIGH_WATER (1u << 20) /* backend output bytes that pause its clients */
#define MAX_ROUTES 65536
#define IP_MAX 64

struct client;

struct backend {
	struct bufferevent *bev;
	char ip[IP_MAX];
	int port;
	int nkeys;
	int active; /* connected and routable */
	struct client *pending; /* the controller connection waiting for our connect */
	int32_t pending_key;
	int32_t pending_seqid;
	LIST_HEAD(, client) blocked; /* clients paused on our output */
	TAILQ_ENTRY(backend) link;
};

struct client {
	struct bufferevent *bev;
	int is_ctl;
	int eof;
	size_t need; /* do not parse again before the input has this many bytes */
	struct backend *blocked_on;
	struct backend *pending_be; /* controller: add_server waiting for a connect */
	LIST_ENTRY(client) blk;
	TAILQ_ENTRY(client) link;
};

struct route {
	int32_t key;
	int used;
	struct backend *be; /* NULL: no route (released or backend gone) */
};

struct stats {
	uint64_t clients_active, backends_active, forwarded, unknown_key, malformed, backend_errors;
};

static struct event_base *base;
static struct stats st;
static int framed;
static size_t max_msg = 1048576;
static const char *stats_path;
static TAILQ_HEAD(, backend) backends = TAILQ_HEAD_INITIALIZER(backends);  /* active */
static TAILQ_HEAD(, backend) connecting = TAILQ_HEAD_INITIALIZER(connecting);
static TAILQ_HEAD(, backend) draining = TAILQ_HEAD_INITIALIZER(draining);   /* retired, flushing */
static TAILQ_HEAD(, client) clients = TAILQ_HEAD_INITIALIZER(clients);
static struct route *routes;
static size_t routes_cap, routes_used;

static int client_process(struct client *c);

/* -- stats ------------------------------------------------------------------ */

static void dump_stats(void)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "clients_active %" PRIu64 "\nbackends_active %" PRIu64 "\nforwarded %" PRIu64
			 "\nunknown_key %" PRIu64 "\nmalformed %" PRIu64 "\nbackend_errors %" PRIu64 "\n",
			 st.clients_active, st.backends_active, st.forwarded, st.unknown_key, st.malformed,
			 st.backend_errors);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	if (!stats_path) {
		if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
			perror(PROG ": writing stats to stdout");
	} else if (write_file_atomic(stats_path, buf, (size_t)n) < 0) {
		fprintf(stderr, "%s: writing %s: %s\n", PROG, stats_path, strerror(errno));
	}
}

/* -- routes: open addressing, keys never removed (a route is cleared by be = NULL) -- */

static uint32_t hash_key(int32_t key)
{
	uint32_t h = (uint32_t)key * 2654435761u;

	return h ^ (h >> 16);
}

static struct route *route_find(int32_t key, int insert)
{
	size_t i;

	if (!routes_cap)
		return NULL;
	for (i = hash_key(key) & (routes_cap - 1);; i = (i + 1) & (routes_cap - 1)) {
		if (!routes[i].used)
			break;
		if (routes[i].key == key)
			return &routes[i];
	}
	if (!insert)
		return NULL;
	routes[i].used = 1;
	routes[i].key = key;
	routes[i].be = NULL;
	routes_used++;
	return &routes[i];
}

static int routes_grow(void)
{
	struct route *old = routes;
	size_t i, old_cap = routes_cap;
	size_t cap = routes_cap ? routes_cap * 2 : 64;

	routes = calloc(cap, sizeof(*routes));
	if (!routes) {
		routes = old;
		return -1;
	}
	routes_cap = cap;
	routes_used = 0;
	for (i = 0; i < old_cap; i++) {
		if (old[i].used) {
			struct route *r = route_find(old[i].key, 1);

			r->be = old[i].be;
		}
	}
	free(old);
	return 0;
}

/* -- clients -------------------------------------------------------------- */

static void client_free(struct client *c)
{
	if (c->blocked_on)
		LIST_REMOVE(c, blk);
	if (c->pending_be)
		c->pending_be->pending = NULL;
	TAILQ_REMOVE(&clients, c, link);
	if (!c->is_ctl)
		st.clients_active--;
	bufferevent_free(c->bev);
	free(c);
}

static void closing_write_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_free(arg);
}

static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_free(arg);
}

/* A clean close after the peer's EOF: replies still queued (controller) go out first. */
static void client_close_flushed(struct client *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		client_free(c);
		return;
	}
	if (bufferevent_disable(c->bev, EV_READ) < 0) {
		client_free(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(c->bev, NULL, closing_write_cb, closing_event_cb, c);
}

static void client_malformed(struct client *c, const char *why)
{
	fprintf(stderr, "%s: closing a %s connection: %s\n", PROG, c->is_ctl ? "controller" : "client", why);
	st.malformed++;
	client_free(c);
}

static void client_block(struct client *c, struct backend *be)
{
	c->blocked_on = be;
	LIST_INSERT_HEAD(&be->blocked, c, blk);
	if (bufferevent_disable(c->bev, EV_READ) < 0)
		fprintf(stderr, "%s: cannot pause a client\n", PROG);
}

/* Let every client paused on be run again (be is draining, or gone). */
static void backend_resume(struct backend *be)
{
	LIST_HEAD(, client) list = LIST_HEAD_INITIALIZER(list);
	struct client *c;

	/* move the list first: resumed clients may block on be again */
	while ((c = LIST_FIRST(&be->blocked))) {
		LIST_REMOVE(c, blk);
		LIST_INSERT_HEAD(&list, c, blk);
	}
	while ((c = LIST_FIRST(&list))) {
		LIST_REMOVE(c, blk);
		c->blocked_on = NULL;
		if (bufferevent_enable(c->bev, EV_READ) < 0) {
			client_free(c);
			continue;
		}
		client_process(c);
	}
}

/* -- backends ------------------------------------------------------------- */

static void backend_free(struct backend *be)
{
	if (be->pending)
		be->pending->pending_be = NULL;
	bufferevent_free(be->bev);
	free(be);
}

static void draining_write_cb(struct bufferevent *bev, void *arg)
{
	struct backend *be = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		TAILQ_REMOVE(&draining, be, link);
		backend_free(be);
	}
}

static void draining_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct backend *be = arg;

	(void)bev;
	(void)what;
	TAILQ_REMOVE(&draining, be, link);
	backend_free(be);
}

static void drop_routes_to(struct backend *be)
{
	size_t i;

	for (i = 0; i < routes_cap; i++)
		if (routes[i].used && routes[i].be == be)
			routes[i].be = NULL;
	be->nkeys = 0;
}

/* Take an active backend out of service; flush its output first unless broken. */
static void backend_retire(struct backend *be, int broken)
{
	TAILQ_REMOVE(&backends, be, link);
	be->active = 0;
	st.backends_active--;
	drop_routes_to(be);
	backend_resume(be);
	if (broken || evbuffer_get_length(bufferevent_get_output(be->bev)) == 0) {
		backend_free(be);
		return;
	}
	TAILQ_INSERT_TAIL(&draining, be, link);
	bufferevent_setwatermark(be->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(be->bev, NULL, draining_write_cb, draining_event_cb, be);
}

static int route_set(int32_t key, struct backend *be)
{
	struct route *r = route_find(key, 0);
	struct backend *old;

	if (!r) {
		if ((routes_used + 1) * 2 > routes_cap && routes_grow() < 0)
			return -1;
		r = route_find(key, 1);
	}
	old = r->be;
	if (old == be)
		return 0;
	r->be = be;
	be->nkeys++;
	if (old && --old->nkeys == 0)
		backend_retire(old, 0);
	return 0;
}

static void backend_read_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	/* backends of oneway calls have nothing to say: discard */
	evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void backend_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	backend_resume(arg);
}

static void ctl_reply(struct client *c, const char *name, int32_t seqid, const char *err)
{
	uint8_t buf[512];
	size_t n = err ? tp_encode_app_exception(buf, sizeof(buf), framed, name, seqid, err, TAPP_INTERNAL_ERROR)
		       : tp_encode_reply_void(buf, sizeof(buf), framed, name, seqid);

	if (!n || bufferevent_write(c->bev, buf, n) < 0)
		fprintf(stderr, "%s: cannot queue a controller reply\n", PROG);
}

/* The controller connection waiting on be gets its answer and goes on with its next request. */
static void ctl_finish(struct backend *be, const char *err)
{
	struct client *c = be->pending;

	if (!c)
		return;
	be->pending = NULL;
	c->pending_be = NULL;
	ctl_reply(c, "add_server", be->pending_seqid, err);
	if (bufferevent_enable(c->bev, EV_READ) < 0) {
		client_free(c);
		return;
	}
	client_process(c);
}

static void backend_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct backend *be = arg;
	char err[256];

	if (what & BEV_EVENT_CONNECTED) {
		evutil_socket_t fd = bufferevent_getfd(bev);

		if (fd < 0 || set_nodelay(fd) < 0)
			fprintf(stderr, "%s: cannot set TCP_NODELAY on a backend: %s\n", PROG, strerror(errno));
		TAILQ_REMOVE(&connecting, be, link);
		TAILQ_INSERT_TAIL(&backends, be, link);
		be->active = 1;
		st.backends_active++;
		if (bufferevent_enable(bev, EV_READ | EV_WRITE) < 0)
			fprintf(stderr, "%s: cannot enable a backend\n", PROG);
		ctl_finish(be, route_set(be->pending_key, be) < 0 ? "out of memory for the route" : NULL);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	st.backend_errors++;
	if (be->active) {
		backend_retire(be, 1);
		return;
	}
	/* the connect failed */
	snprintf(err, sizeof(err), "connect to %s:%d failed: %s", be->ip, be->port,
		 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	TAILQ_REMOVE(&connecting, be, link);
	ctl_finish(be, err);
	backend_free(be);
}

/* add_server: 0 when answered now, 1 when the answer waits for a connect. */
static int ctl_add_server(struct client *c, const char *ip, int32_t port, int32_t key, int32_t seqid)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct backend *be;
	char err[256];

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
		sslen = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
		sslen = sizeof(struct sockaddr_in6);
	} else {
		snprintf(err, sizeof(err), "invalid ip '%s'", ip);
		ctl_reply(c, "add_server", seqid, err);
		return 0;
	}
	if (port < 1 || port > 65535) {
		snprintf(err, sizeof(err), "port %d out of range 1..65535", port);
		ctl_reply(c, "add_server", seqid, err);
		return 0;
	}
	if (!route_find(key, 0) && routes_used >= MAX_ROUTES) {
		ctl_reply(c, "add_server", seqid, "too many keys");
		return 0;
	}
	TAILQ_FOREACH(be, &backends, link) {
		if (be->port == port && !strcmp(be->ip, ip)) {
			ctl_reply(c, "add_server", seqid, route_set(key, be) < 0 ? "out of memory for the route" : NULL);
			return 0;
		}
	}
	be = calloc(1, sizeof(*be));
	if (!be || !(be->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE))) {
		free(be);
		ctl_reply(c, "add_server", seqid, "out of memory");
		return 0;
	}
	snprintf(be->ip, sizeof(be->ip), "%s", ip);
	be->port = port;
	LIST_INIT(&be->blocked);
	bufferevent_setcb(be->bev, backend_read_cb, backend_write_cb, backend_event_cb, be);
	bufferevent_setwatermark(be->bev, EV_WRITE, HIGH_WATER / 2, 0);
	if (bufferevent_socket_connect(be->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
		snprintf(err, sizeof(err), "connect to %s:%d failed: %s", ip, port, strerror(errno));
		st.backend_errors++;
		backend_free(be);
		ctl_reply(c, "add_server", seqid, err);
		return 0;
	}
	TAILQ_INSERT_TAIL(&connecting, be, link);
	be->pending = c;
	be->pending_key = key;
	be->pending_seqid = seqid;
	c->pending_be = be;
	if (bufferevent_disable(c->bev, EV_READ) < 0)
		fprintf(stderr, "%s: cannot pause a controller connection\n", PROG);
	return 1;
}

static void ctl_release(void)
{
	struct backend *be;

	while ((be = TAILQ_FIRST(&backends)))
		backend_retire(be, 0);
	free(routes);
	routes = NULL;
	routes_cap = routes_used = 0;
}

static int evbuf_copy(void *ctx, size_t off, void *dst, size_t n)
{
	struct evbuffer *buf = ctx;
	struct evbuffer_ptr p;

	if (evbuffer_ptr_set(buf, &p, off, EVBUFFER_PTR_SET) < 0)
		return -1;
	return evbuffer_copyout_from(buf, &p, dst, n) == (ev_ssize_t)n ? 0 : -1;
}

/* One message from a controller connection. 0: go on, 1: wait (connect), -1: c freed. */
static int ctl_message(struct client *c, struct evbuffer *in, const struct tp_msg *m)
{
	const struct tp_field *f = m->f;
	char ip[IP_MAX];
	int r;

	if (m->mtype != TM_CALL) {
		client_malformed(c, "controller: not a call");
		return -1;
	}
	if (!strcmp(m->name, "release_servers")) {
		evbuffer_drain(in, m->total);
		ctl_release();
		ctl_reply(c, "release_servers", m->seqid, NULL);
		return 0;
	}
	if (strcmp(m->name, "add_server")) {
		client_malformed(c, "controller: unknown method");
		return -1;
	}
	if ((f[1].type && f[1].type != TT_STRING) || (f[2].type && f[2].type != TT_I32) ||
	    (f[3].type && f[3].type != TT_I32)) {
		client_malformed(c, "controller: wrong field type");
		return -1;
	}
	if (!f[1].type || !f[2].type || !f[3].type) {
		evbuffer_drain(in, m->total);
		ctl_reply(c, "add_server", m->seqid, "add_server needs ip, port and key");
		return 0;
	}
	if (f[1].len >= sizeof(ip)) {
		evbuffer_drain(in, m->total);
		ctl_reply(c, "add_server", m->seqid, "invalid ip (too long)");
		return 0;
	}
	if (evbuf_copy(in, f[1].off, ip, f[1].len) < 0) {
		client_malformed(c, "cannot read ip");
		return -1;
	}
	ip[f[1].len] = 0;
	evbuffer_drain(in, m->total);
	r = ctl_add_server(c, ip, f[2].i32, f[3].i32, m->seqid);
	return r;
}

/* One msg from a forwarder client. 0: go on, 1: paused (backpressure), -1: c freed. */
static int fwd_message(struct client *c, struct evbuffer *in, const struct tp_msg *m)
{
	struct route *r;
	struct evbuffer *out;

	if ((m->mtype != TM_ONEWAY && m->mtype != TM_CALL) || strcmp(m->name, "msg")) {
		client_malformed(c, "not a msg call");
		return -1;
	}
	if (m->f[1].type != TT_I32 || (m->f[2].type && m->f[2].type != TT_STRING)) {
		client_malformed(c, "msg: key missing or of the wrong type, or payload not a string");
		return -1;
	}
	r = route_find(m->f[1].i32, 0);
	if (!r || !r->be) {
		st.unknown_key++;
		evbuffer_drain(in, m->total);
		return 0;
	}
	out = bufferevent_get_output(r->be->bev);
	if (evbuffer_remove_buffer(in, out, m->total) != (int)m->total) {
		fprintf(stderr, "%s: cannot move a message to a backend\n", PROG);
		client_free(c);
		return -1;
	}
	st.forwarded++;
	if (evbuffer_get_length(out) > HIGH_WATER) {
		client_block(c, r->be);
		return 1;
	}
	return 0;
}

/* Handle every complete message buffered for c. Returns -1 when c was freed. */
static int client_process(struct client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	while (!c->blocked_on && !c->pending_be) {
		struct tp_src src = { .len = evbuffer_get_length(in), .copy = evbuf_copy, .ctx = in };
		struct tp_msg m;
		const char *why = NULL;
		size_t need = 0;
		int st_parse, r;

		if (src.len == 0 || src.len < c->need)
			break;
		st_parse = tp_parse(&src, framed, max_msg, &m, &need, &why);
		if (st_parse == TP_MORE) {
			c->need = need;
			break;
		}
		if (st_parse == TP_BAD) {
			client_malformed(c, why);
			return -1;
		}
		c->need = 0;
		r = c->is_ctl ? ctl_message(c, in, &m) : fwd_message(c, in, &m);
		if (r < 0)
			return -1;
	}
	if (c->eof && !c->blocked_on && !c->pending_be) {
		if (evbuffer_get_length(in))
			client_malformed(c, "truncated message at EOF");
		else
			client_close_flushed(c);
		return -1;
	}
	return 0;
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_process(arg);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	(void)bev;
	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		client_process(c);
	} else if (what & BEV_EVENT_ERROR) {
		client_free(c);
	}
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	int is_ctl = arg != NULL;
	struct client *c = calloc(1, sizeof(*c));

	(void)l;
	(void)sa;
	(void)salen;
	if (!c || !(c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE))) {
		fprintf(stderr, "%s: out of memory for a connection\n", PROG);
		free(c);
		evutil_closesocket(fd);
		return;
	}
	if (set_nodelay(fd) < 0)
		fprintf(stderr, "%s: cannot set TCP_NODELAY: %s\n", PROG, strerror(errno));
	c->is_ctl = is_ctl;
	TAILQ_INSERT_TAIL(&clients, c, link);
	if (!is_ctl)
		st.clients_active++;
	bufferevent_setcb(c->bev, client_read_cb, NULL, client_event_cb, c);
	/* a whole message (and its frame) fits; beyond that the parser has decided */
	bufferevent_setwatermark(c->bev, EV_READ, 0, max_msg + 4);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0)
		client_free(c);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	(void)arg;
	fprintf(stderr, "%s: accept: %s\n", PROG, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGUSR1)
		dump_stats();
	else
		event_base_loopbreak(base);
}

static struct evconnlistener *listen_on(long port, void *arg)
{
	struct sockaddr_in sa;
	struct evconnlistener *l;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	l = evconnlistener_new_bind(base, accept_cb, arg, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 128,
				    (struct sockaddr *)&sa, sizeof(sa));
	if (!l) {
		fprintf(stderr, "%s: cannot listen on port %ld: %s\n", PROG, port, strerror(errno));
		return NULL;
	}
	evconnlistener_set_error_cb(l, accept_error_cb);
	return l;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: %s [--port PORT] [--ctl-port PORT] [--framed 0|1] [--max-msg BYTES] [--stats FILE]\n"
		   "  --port PORT       Forwarder clients (default 9090)\n"
		   "  --ctl-port PORT   Controller (default 9091)\n"
		   "  --framed 0|1      framed transport on every connection (default 0: unframed)\n"
		   "  --max-msg BYTES   largest message accepted, 64..67108864 (default 1048576)\n"
		   "  --stats FILE      write the stats lines to FILE on SIGUSR1 and at exit\n",
		PROG);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "ctl-port", required_argument, NULL, 'c' },
		{ "framed", required_argument, NULL, 'f' },
		{ "max-msg", required_argument, NULL, 'm' },
		{ "stats", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct evconnlistener *lfwd, *lctl;
	struct event *sigs[3];
	long port = 9090, ctl_port = 9091, v;
	int opt, i, rc = 0;
	struct backend *be;
	struct client *c;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (parse_int_flag(PROG, "--port", optarg, 1, 65535, &port) < 0)
				return 2;
			break;
		case 'c':
			if (parse_int_flag(PROG, "--ctl-port", optarg, 1, 65535, &ctl_port) < 0)
				return 2;
			break;
		case 'f':
			if (parse_int_flag(PROG, "--framed", optarg, 0, 1, &v) < 0)
				return 2;
			framed = (int)v;
			break;
		case 'm':
			if (parse_int_flag(PROG, "--max-msg", optarg, 64, 64L << 20, &v) < 0)
				return 2;
			max_msg = (size_t)v;
			break;
		case 's':
			if (!*optarg) {
				fprintf(stderr, "%s: --stats needs a file name\n", PROG);
				return 2;
			}
			stats_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", PROG, argv[optind]);
		usage(stderr);
		return 2;
	}
	if (port == ctl_port) {
		fprintf(stderr, "%s: --port and --ctl-port must differ (both %ld)\n", PROG, port);
		return 2;
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		perror(PROG ": signal");
		return 1;
	}
	base = event_base_new();
	if (!base) {
		fprintf(stderr, "%s: event_base_new failed\n", PROG);
		return 1;
	}
	lfwd = listen_on(port, NULL);
	lctl = listen_on(ctl_port, (void *)1);
	if (!lfwd || !lctl)
		return 1;
	sigs[0] = evsignal_new(base, SIGUSR1, signal_cb, NULL);
	sigs[1] = evsignal_new(base, SIGTERM, signal_cb, NULL);
	sigs[2] = evsignal_new(base, SIGINT, signal_cb, NULL);
	for (i = 0; i < 3; i++) {
		if (!sigs[i] || evsignal_add(sigs[i], NULL) < 0) {
			fprintf(stderr, "%s: cannot install signal handlers\n", PROG);
			return 1;
		}
	}
	if (stats_path)
		dump_stats();
	if (event_base_dispatch(base) < 0) {
		fprintf(stderr, "%s: event loop failed\n", PROG);
		rc = 1;
	}
	if (stats_path)
		dump_stats();
	while ((c = TAILQ_FIRST(&clients)))
		client_free(c);
	while ((be = TAILQ_FIRST(&backends)))
		backend_retire(be, 1);
	while ((be = TAILQ_FIRST(&connecting))) {
		TAILQ_REMOVE(&connecting, be, link);
		backend_free(be);
	}
	while ((be = TAILQ_FIRST(&draining))) {
		TAILQ_REMOVE(&draining, be, link);
		backend_free(be);
	}
	free(routes);
	for (i = 0; i < 3; i++)
		event_free(sigs[i]);
	evconnlistener_free(lfwd);
	evconnlistener_free(lctl);
	event_base_free(base);
	return rc;
}
