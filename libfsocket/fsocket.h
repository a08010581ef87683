/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef FSOCKET_H
#define FSOCKET_H

#include <stdbool.h>

/* The module is loaded (visible from every network namespace, unlike /proc/net). */
#define FSOCKET_PROC "/sys/module/fastsocket/parameters/listen_spawn"

/*
 * File descriptors the library tracks: enabled listeners, the epoll sets
 * watching them and its own local listeners. Higher numbers are simply
 * not accelerated. (Overridable at build time, for tests.)
 */
#ifndef FSOCKET_MAX_FDS
#define FSOCKET_MAX_FDS 65536
#endif

enum fsocket_mode {
	FSOCKET_MODE_OFF,	/* FSOCKET_DISABLE=1: pass everything through */
	FSOCKET_MODE_STOCK,	/* no module, FSOCKET_PORTABLE=0: pass through */
	FSOCKET_MODE_PORTABLE,	/* no module: SO_REUSEPORT + SO_INCOMING_CPU locals */
	FSOCKET_MODE_KERNEL,	/* fastsocket.ko is loaded */
};

/* How connect() and bind(port 0) get CPU-encoded ports. */
enum fsocket_rfd {
	FSOCKET_RFD_OFF,	/* FSOCKET_RFD=0, or no module */
	FSOCKET_RFD_SOCKET,	/* TCP_FASTSOCKET_RFD on each socket (older module) */
	FSOCKET_RFD_TASK,	/* the kernel does it for the process: no extra call */
};

struct fsocket_conf {
	enum fsocket_mode mode;
	bool verbose;
	/* FSOCKET_PIN=1: pin an unpinned worker to the CPU it runs on. */
	bool pin;
	/* With the module: CPU-encoded ports on connect()/bind(port 0). */
	enum fsocket_rfd rfd;
	/* Ports to accelerate; all TCP listeners when nports == 0. */
	unsigned short ports[64];
	unsigned int nports;
};

#endif
