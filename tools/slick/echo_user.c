/*
 * slick_echo_user: the Slick paper's echo server as a user process, epoll-based.
 *
 * Protocol: a client connects and sends a 4-byte big-endian buffer size N
 * (1..65536; anything else: the connection is closed and counted as bad_size),
 * then streams bytes. Every N bytes received are sent back as one chunk as soon
 * as they are complete; while a chunk is being sent nothing more is read from
 * that client. When the client shuts its side down, the final partial chunk (if
 * any) is sent back and the connection is closed.
 *
 * Stats (`key value` lines, as /proc/net/slick_echo): written to --stats FILE
 * (atomically) on SIGUSR1 and at exit, or to stdout on SIGUSR1 without --stats.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

#define PROG "slick_echo_user"
#define MAX_CHUNK 65536u
#define MAX_EVENTS 256
#define READ_BUDGET 8 /* chunks per wakeup per connection, for fairness */

enum cstate { C_HDR, C_DATA, C_SEND, C_SEND_LAST };

struct conn {
	int fd;
	enum cstate state;
	uint8_t hdr[4];
	uint32_t hdr_got;
	uint32_t n;    /* buffer size */
	uint32_t fill; /* bytes of the current chunk received */
	uint32_t sent; /* bytes of the current chunk sent back */
	uint8_t *buf;
};

struct stats {
	uint64_t connections_total;
	uint64_t connections_active;
	uint64_t bytes_echoed;
	uint64_t bad_size;
};

static struct stats st;
static int epfd = -1;
static const char *stats_path;
static int nodelay;

static void usage(FILE *f)
{
	fprintf(f, "usage: %s [--port PORT] [--backlog N] [--stats FILE]\n"
		   "  --port PORT    TCP port to listen on, 1..65535 (default 7007)\n"
		   "  --backlog N    listen backlog, 1..65535 (default 128)\n"
		   "  --nodelay      TCP_NODELAY on client connections (default off)\n"
		   "  --stats FILE   write the stats lines to FILE on SIGUSR1 and at exit (default: stdout on SIGUSR1)\n",
		PROG);
}

static int dump_stats(void)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "connections_total %" PRIu64 "\nconnections_active %" PRIu64 "\nbytes_echoed %" PRIu64
			 "\nbad_size %" PRIu64 "\n",
			 st.connections_total, st.connections_active, st.bytes_echoed, st.bad_size);

	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	if (!stats_path) {
		if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0) {
			perror(PROG ": writing stats to stdout");
			return -1;
		}
		return 0;
	}
	if (write_file_atomic(stats_path, buf, (size_t)n) < 0) {
		fprintf(stderr, "%s: writing %s: %s\n", PROG, stats_path, strerror(errno));
		return -1;
	}
	return 0;
}

static void conn_close(struct conn *c)
{
	if (epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		perror(PROG ": epoll_ctl DEL");
	close(c->fd);
	free(c->buf);
	free(c);
	st.connections_active--;
}

static int conn_watch(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		perror(PROG ": epoll_ctl MOD");
		return -1;
	}
	return 0;
}

/* Send what is left of the chunk. 1: all sent, 0: would block, -1: connection gone. */
static int conn_send(struct conn *c)
{
	while (c->sent < c->fill) {
		ssize_t w = send(c->fd, c->buf + c->sent, c->fill - c->sent, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		c->sent += (uint32_t)w;
		st.bytes_echoed += (uint64_t)w;
	}
	return 1;
}

/* Returns -1 when the connection must be closed. */
static int conn_read(struct conn *c)
{
	int budget = READ_BUDGET;

	while (budget > 0) {
		ssize_t r;

		if (c->state == C_HDR) {
			r = recv(c->fd, c->hdr + c->hdr_got, 4 - c->hdr_got, 0);
		} else {
			r = recv(c->fd, c->buf + c->fill, c->n - c->fill, 0);
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (r == 0) { /* the client shut its side down */
			if (c->state != C_DATA || c->fill == 0)
				return -1;
			c->state = C_SEND_LAST;
			c->sent = 0;
			r = conn_send(c);
			if (r != 0)
				return -1; /* all sent (close now) or error */
			return conn_watch(c, EPOLLOUT);
		}
		if (c->state == C_HDR) {
			c->hdr_got += (uint32_t)r;
			if (c->hdr_got < 4)
				continue;
			c->n = get_be32(c->hdr);
			if (c->n < 1 || c->n > MAX_CHUNK) {
				st.bad_size++;
				return -1;
			}
			c->buf = malloc(c->n);
			if (!c->buf) {
				fprintf(stderr, "%s: out of memory for a %u-byte buffer\n", PROG, c->n);
				return -1;
			}
			c->state = C_DATA;
			c->fill = 0;
			continue;
		}
		c->fill += (uint32_t)r;
		if (c->fill < c->n)
			continue;
		budget--;
		c->sent = 0;
		r = conn_send(c);
		if (r < 0)
			return -1;
		if (r == 0) {
			c->state = C_SEND;
			return conn_watch(c, EPOLLOUT);
		}
		c->fill = 0;
	}
	return 0;
}

static int conn_writable(struct conn *c)
{
	int r = conn_send(c);

	if (r < 0)
		return -1;
	if (r == 0)
		return 0;
	if (c->state == C_SEND_LAST)
		return -1; /* done: close */
	c->state = C_DATA;
	c->fill = 0;
	if (conn_watch(c, EPOLLIN) < 0)
		return -1;
	return conn_read(c);
}

static void accept_all(int lfd)
{
	for (;;) {
		struct epoll_event ev;
		struct conn *c;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				perror(PROG ": accept");
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			fprintf(stderr, "%s: out of memory for a connection\n", PROG);
			close(fd);
			continue;
		}
		if (nodelay && set_nodelay(fd) < 0)
			perror(PROG ": TCP_NODELAY");
		c->fd = fd;
		c->state = C_HDR;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			perror(PROG ": epoll_ctl ADD");
			close(fd);
			free(c);
			continue;
		}
		st.connections_total++;
		st.connections_active++;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "backlog", required_argument, NULL, 'b' },
		{ "stats", required_argument, NULL, 's' },
		{ "nodelay", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct epoll_event ev, events[MAX_EVENTS];
	long port = 7007, backlog = 128;
	int lfd, sfd, opt, running = 1, rc = 0;
	/* markers for the two non-connection fds */
	static char lmark, smark;
	sigset_t mask;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (parse_int_flag(PROG, "--port", optarg, 1, 65535, &port) < 0)
				return 2;
			break;
		case 'b':
			if (parse_int_flag(PROG, "--backlog", optarg, 1, 65535, &backlog) < 0)
				return 2;
			break;
		case 's':
			if (!*optarg) {
				fprintf(stderr, "%s: --stats needs a file name\n", PROG);
				return 2;
			}
			stats_path = optarg;
			break;
		case 'n':
			nodelay = 1;
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

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
		perror(PROG ": sigprocmask");
		return 1;
	}
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		perror(PROG ": signalfd");
		return 1;
	}
	lfd = listen_tcp((uint16_t)port, (int)backlog, 1);
	if (lfd < 0) {
		fprintf(stderr, "%s: cannot listen on port %ld: %s\n", PROG, port, strerror(errno));
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0) {
		perror(PROG ": epoll_create1");
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &lmark;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		perror(PROG ": epoll_ctl ADD listener");
		return 1;
	}
	ev.data.ptr = &smark;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev) < 0) {
		perror(PROG ": epoll_ctl ADD signalfd");
		return 1;
	}
	if (stats_path && dump_stats() < 0)
		return 1;

	while (running) {
		int i, n = epoll_wait(epfd, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror(PROG ": epoll_wait");
			rc = 1;
			break;
		}
		for (i = 0; i < n; i++) {
			void *p = events[i].data.ptr;

			if (p == &lmark) {
				accept_all(lfd);
			} else if (p == &smark) {
				struct signalfd_siginfo si;

				while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
					if (si.ssi_signo == SIGUSR1)
						dump_stats();
					else
						running = 0;
				}
			} else {
				struct conn *c = p;
				int r;

				if (c->state == C_SEND || c->state == C_SEND_LAST)
					r = (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ? conn_writable(c) : 0;
				else
					r = conn_read(c);
				if (r < 0)
					conn_close(c);
			}
		}
	}
	if (stats_path && dump_stats() < 0)
		rc = 1;
	return rc;
}
