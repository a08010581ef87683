// SPDX-License-Identifier: GPL-2.0-only
/*
 * libfsocket: LD_PRELOAD library that lets unmodified servers use fastsocket.
 *
 * Environment:
 *   FSOCKET_DISABLE=1      pass every call through untouched
 *   FSOCKET_PORTS=80,8080  accelerate only listeners on these ports
 *   FSOCKET_VERBOSE=1      report decisions on stderr
 *
 * This first version decides its mode once at load time and wraps listen();
 * the per-core listener logic builds on these hooks.
 */

#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fsocket.h"

static struct fsocket_conf conf;
static int (*real_listen)(int, int);

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0) {
		if ((size_t)n >= sizeof(buf))
			n = sizeof(buf) - 1;
		/* write(2), not stdio: safe in forked workers and signal paths */
		if (write(STDERR_FILENO, buf, n) < 0)
			return;
	}
}

static int parse_ports(const char *s)
{
	char *end;

	while (*s) {
		long v = strtol(s, &end, 10);

		if (end == s || v < 1 || v > 65535 || conf.nports >= 64)
			return -1;
		conf.ports[conf.nports++] = (unsigned short)v;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return 0;
}

__attribute__((constructor)) static void fsocket_init(void)
{
	const char *v;

	real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
	v = getenv("FSOCKET_VERBOSE");
	conf.verbose = v && *v && strcmp(v, "0");
	v = getenv("FSOCKET_DISABLE");
	if (v && *v && strcmp(v, "0")) {
		conf.mode = FSOCKET_MODE_OFF;
		return;
	}
	v = getenv("FSOCKET_PORTS");
	if (v && parse_ports(v)) {
		say("libfsocket: FSOCKET_PORTS=%s is not a comma-separated list of ports 1-65535; "
		    "acceleration disabled\n", v);
		conf.mode = FSOCKET_MODE_OFF;
		return;
	}
	if (access(FSOCKET_PROC, R_OK) == 0) {
		conf.mode = FSOCKET_MODE_KERNEL;
		if (conf.verbose)
			say("libfsocket: fastsocket module found\n");
	} else {
		conf.mode = FSOCKET_MODE_STOCK;
		say("libfsocket: fastsocket module not loaded (%s missing); passing sockets through\n",
		    FSOCKET_PROC);
	}
}

static int port_wanted(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int type, port;
	socklen_t tlen = sizeof(type);
	unsigned int i;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) || type != SOCK_STREAM)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	if (ss.ss_family == AF_INET)
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		return 0;
	if (!conf.nports)
		return 1;
	for (i = 0; i < conf.nports; i++)
		if (conf.ports[i] == port)
			return 1;
	return 0;
}

__attribute__((visibility("default"))) int listen(int fd, int backlog)
{
	if (!real_listen) {
		errno = ENOSYS;
		return -1;
	}
	if (conf.mode == FSOCKET_MODE_KERNEL && port_wanted(fd) && conf.verbose)
		say("libfsocket: listen fd %d is a candidate for acceleration\n", fd);
	return real_listen(fd, backlog);
}
