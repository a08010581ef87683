/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef FSOCKET_H
#define FSOCKET_H

#include <stdbool.h>

/* Where the kernel module reports itself. */
#define FSOCKET_PROC "/proc/net/fastsocket"

enum fsocket_mode {
	FSOCKET_MODE_OFF,	/* FSOCKET_DISABLE=1: pass everything through */
	FSOCKET_MODE_STOCK,	/* no module: pass through (portable mode comes later) */
	FSOCKET_MODE_KERNEL,	/* fastsocket.ko is loaded */
};

struct fsocket_conf {
	enum fsocket_mode mode;
	bool verbose;
	/* Ports to accelerate; all TCP listeners when nports == 0. */
	unsigned short ports[64];
	unsigned int nports;
};

#endif
