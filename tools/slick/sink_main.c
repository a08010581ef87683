/*
 * slick_sink: a Forwarder backend that counts the msg calls it receives.
 *
 *   slick_sink --port PORT [--framed 0|1] [--max-msg BYTES] [--stats FILE]
 *
 * On SIGUSR1, and at exit (SIGTERM/SIGINT), writes one JSON line
 * {"port":..,"msgs":..,"payload_bytes":..,"order_errors":..,"malformed":..,"conns":..}
 * to --stats FILE (atomically), or to stdout.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "sink.h"

#define PROG "slick_sink"

static int report(struct sink_set *ss, const char *path)
{
	struct sink *s = &ss->sinks[0];
	char buf[512];
	uint64_t msgs, bytes, order, bad;
	int n;

	sinks_totals(ss, &msgs, &bytes, &order, &bad);
	n = snprintf(buf, sizeof(buf),
		     "{\"port\": %u, \"msgs\": %" PRIu64 ", \"payload_bytes\": %" PRIu64 ", \"order_errors\": %" PRIu64
		     ", \"malformed\": %" PRIu64 ", \"conns\": %" PRIu64 "}\n",
		     s->port, msgs, bytes, order, bad, (uint64_t)atomic_load(&s->c.conns));
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	if (path ? write_file_atomic(path, buf, (size_t)n) : write_all(STDOUT_FILENO, buf, (size_t)n)) {
		fprintf(stderr, "%s: writing stats: %s\n", PROG, strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "framed", required_argument, NULL, 'f' },
		{ "max-msg", required_argument, NULL, 'm' },
		{ "stats", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sink_set ss;
	const char *stats = NULL;
	long port = -1, framed = 0, max_msg = 1048576;
	uint16_t p16;
	pthread_t th;
	sigset_t mask;
	int opt, sig, err;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (parse_int_flag(PROG, "--port", optarg, 1, 65535, &port) < 0)
				return 2;
			break;
		case 'f':
			if (parse_int_flag(PROG, "--framed", optarg, 0, 1, &framed) < 0)
				return 2;
			break;
		case 'm':
			if (parse_int_flag(PROG, "--max-msg", optarg, 64, 64L << 20, &max_msg) < 0)
				return 2;
			break;
		case 's':
			stats = optarg;
			break;
		case 'h':
			printf("usage: %s --port PORT [--framed 0|1] [--max-msg BYTES] [--stats FILE]\n", PROG);
			return 0;
		default:
			fprintf(stderr, "usage: %s --port PORT [--framed 0|1] [--max-msg BYTES] [--stats FILE]\n", PROG);
			return 2;
		}
	}
	if (port < 0 || optind < argc) {
		fprintf(stderr, "%s: --port is required (and nothing else)\n", PROG);
		return 2;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	/* blocked in every thread; the main thread takes them with sigwait */
	if (pthread_sigmask(SIG_BLOCK, &mask, NULL)) {
		fprintf(stderr, "%s: pthread_sigmask failed\n", PROG);
		return 1;
	}
	p16 = (uint16_t)port;
	if (sinks_open(&ss, 1, &p16, (int)framed, (size_t)max_msg, 65536) < 0)
		return 1;
	err = pthread_create(&th, NULL, sinks_run, &ss);
	if (err) {
		fprintf(stderr, "%s: pthread_create: %s\n", PROG, strerror(err));
		return 1;
	}
	for (;;) {
		if (sigwait(&mask, &sig)) {
			fprintf(stderr, "%s: sigwait failed\n", PROG);
			return 1;
		}
		if (sig != SIGUSR1)
			break;
		report(&ss, stats);
	}
	if (sinks_stop(&ss) < 0 || pthread_join(th, NULL)) {
		fprintf(stderr, "%s: cannot stop the sink thread\n", PROG);
		return 1;
	}
	return report(&ss, stats) < 0 ? 1 : 0;
}
