/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * Fastsocket control interface: TCP socket options at level SOL_TCP.
 *
 * Per-CPU local listeners. A server enables fastsocket on a listening
 * socket G, then each worker pinned to CPU c creates a fresh TCP socket L
 * and makes it G's local listener for c. From then on, a SYN processed on
 * CPU c for G is queued on L instead of G, and accept() on G called on CPU
 * c returns connections from L first, then from G. Closing L (or the
 * worker exiting) moves the connections still queued on L, established or
 * half-open, back to G: none is reset.
 *
 * Permission model: holding the file descriptors is the permission. An
 * option acts only on sockets the caller has open; nothing here affects
 * other processes' sockets. The administrator turns the feature off with
 * the module parameter fastsocket.listen_spawn=0.
 *
 * Without the fastsocket module loaded, every option fails with
 * ENOPROTOOPT.
 */
#ifndef _UAPI_LINUX_FASTSOCKET_H
#define _UAPI_LINUX_FASTSOCKET_H

#include <linux/types.h>

/*
 * setsockopt(G, SOL_TCP, TCP_FASTSOCKET_LISTEN, &int, sizeof(int))
 *   1: enable per-CPU local listeners on the listening socket G.
 *   0: disable; G's local listeners are shut down and the connections
 *      queued on them move to G.
 *   Errors: EINVAL (G is not a TCP socket in LISTEN state, bad value or
 *   length), EOPNOTSUPP (listen_spawn=0), ENOMEM.
 *
 * setsockopt(L, SOL_TCP, TCP_FASTSOCKET_LOCAL, &struct fastsocket_local,
 *            sizeof(struct fastsocket_local))
 *   Makes the new, unbound TCP socket L the local listener of the
 *   enabled listening socket listen_fd for CPU cpu. L then listens on G's
 *   address and port with G's options and backlog.
 *   cpu == -1 means the CPU the caller is pinned to; with
 *   listen_spawn=2 (automatic) an unpinned caller gets the CPU it runs on.
 *   Errors: EBADF (listen_fd), ENOTSOCK, EINVAL (L not a fresh TCP socket,
 *   G not enabled or not listening, cpu out of range or offline, caller
 *   not pinned with cpu == -1 in manual mode, bad length),
 *   EAFNOSUPPORT (families differ), EXDEV (network namespaces differ),
 *   EBUSY (CPU already has a local listener for G), EOPNOTSUPP.
 *
 * getsockopt(S, SOL_TCP, TCP_FASTSOCKET_INFO, &struct fastsocket_info, &len)
 *   Describes S: an enabled listener, a local listener, or neither.
 *
 * setsockopt(S, SOL_TCP, TCP_FASTSOCKET_RFD, &int, sizeof(int))
 *   Receive Flow Deliver for the TCP socket S's active connection.
 *   1: when S gets its local port from the kernel (connect() of an
 *      unbound socket, bind() to port 0, IP_BIND_ADDRESS_NO_PORT), the
 *      port p satisfies p & (roundup_pow_of_two(nr_cpu_ids) - 1) == c,
 *      c being the CPU the caller runs on, while c has a free port in the
 *      range (ip_local_port_range, narrowed by IP_LOCAL_PORT_RANGE);
 *      otherwise any free port, as without the option. With the module
 *      parameter rfd_steer=2 (the default: steering starts with the first
 *      socket that sets this option, in the network namespaces where one
 *      did) or 1 (everywhere), incoming packets of such
 *      connections are then processed on CPU c. Set it before connect()
 *      or bind(); pin the thread to c.
 *   0: stock port selection (the default, unless rfd_ports=2).
 *   getsockopt() returns the current value.
 *   Errors: EINVAL (bad value or length), EOPNOTSUPP (rfd_ports=0).
 *
 * setsockopt(S, SOL_TCP, TCP_FASTSOCKET_RFD_TASK, &int, sizeof(int))
 *   Receive Flow Deliver for a thread instead of a socket, which saves
 *   setting TCP_FASTSOCKET_RFD before each connect().
 *   1: every TCP socket the calling thread gets a local port for, as
 *      described above, is treated as if it had TCP_FASTSOCKET_RFD set;
 *      so are those of the threads and processes it creates afterwards.
 *      execve() turns it off: the program it starts asks for itself.
 *      S is any TCP socket; the option does not change S.
 *   0: off for the calling thread (the default).
 *   getsockopt() returns the calling thread's value.
 *   Errors: EINVAL (bad value or length), EOPNOTSUPP (rfd_ports=0).
 */
#define TCP_FASTSOCKET_LISTEN	0x4653
#define TCP_FASTSOCKET_LOCAL	0x4654
#define TCP_FASTSOCKET_INFO	0x4655
#define TCP_FASTSOCKET_RFD	0x4656
#define TCP_FASTSOCKET_RFD_TASK	0x4657

struct fastsocket_local {
	__s32	listen_fd;	/* the enabled listening socket */
	__s32	cpu;		/* CPU to serve, or -1 */
};

#define FASTSOCKET_INFO_ENABLED	(1U << 0)	/* an enabled listener */
#define FASTSOCKET_INFO_LOCAL	(1U << 1)	/* a local listener */
#define FASTSOCKET_INFO_RFD	(1U << 2)	/* TCP_FASTSOCKET_RFD is on */

struct fastsocket_info {
	__u32	flags;		/* FASTSOCKET_INFO_* */
	__s32	cpu;		/* a local listener's CPU, else -1 */
	__u32	nr_local;	/* an enabled listener's local listeners */
	__u32	reserved;
};

#endif /* _UAPI_LINUX_FASTSOCKET_H */
