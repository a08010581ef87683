// SPDX-License-Identifier: GPL-2.0-only
/*
 * libfsocket: LD_PRELOAD library that lets unmodified servers use fastsocket.
 *
 * Environment:
 *   FSOCKET_DISABLE=1      pass every call through untouched
 *   FSOCKET_PORTS=80,8080  accelerate only listeners on these ports
 *   FSOCKET_VERBOSE=1      report decisions on stderr
 *   FSOCKET_PIN=1          pin an unpinned worker to the CPU it runs on
 *   FSOCKET_RFD=0          no CPU-encoded source ports for connect()
 *
 * The mode is decided once: off (FSOCKET_DISABLE or a bad FSOCKET_PORTS),
 * stock (no fastsocket module: everything passes through) or kernel.
 *
 * Kernel mode, per-CPU local listeners (see uapi/linux/fastsocket.h):
 *
 *  - listen() enables a TCP listening socket G (TCP_FASTSOCKET_LISTEN) and
 *    tracks it as an enabled listener.
 *  - The first epoll_ctl(EPOLL_CTL_ADD) of G by a thread on CPU c (or its
 *    first accept() on G, if G is already in one of its epoll sets) spawns
 *    the process's local listener L for c (TCP_FASTSOCKET_LOCAL), if G is
 *    non-blocking and the thread is pinned to c (or FSOCKET_PIN=1). A
 *    process whose threads are pinned to different CPUs and watch G from
 *    epoll sets of their own (HAProxy) gets an L for each of their CPUs.
 *  - L is registered in the epoll sets where the process registered G
 *    (the invariant below), with G's epoll_event, so the application
 *    takes L's readiness for G's. accept() on G takes a connection from
 *    the calling CPU's L first, then from G.
 *  - close() of G closes L first (the kernel moves L's queue to G); a
 *    forked child closes the local listeners it inherited and spawns its
 *    own.
 *
 * Invariant: while a process has L for G, L is in every epoll set in which
 * a thread pinned to L's CPU (or one not pinned to a single CPU)
 * registered G, or, when there is no such set, in every set in which the
 * process has G (as far as this library saw). A thread pinned elsewhere,
 * with an epoll set of its own (HAProxy's threads), is then not woken for
 * the connections an L holds for another CPU. A connection queued on L wakes
 * only L's waiters, so an L that nobody watches would strand its
 * connections: whenever the invariant cannot hold, L is closed and its
 * queue goes back to G.
 *
 * With the module, active connections (Receive Flow Deliver): a thread's
 * first connect() or bind() to port 0 sets TCP_FASTSOCKET_RFD_TASK, so the
 * kernel picks a local port naming the CPU the caller runs on, for every
 * connect() and bind() to port 0 of that thread and of the threads and
 * children it creates afterwards, and delivers the replies there. A
 * server that never connects never asks, and its packets are never
 * classified for steering. With a module that lacks the option,
 * connect() and bind(port 0) set TCP_FASTSOCKET_RFD on their socket
 * first. Pin the threads that connect (FSOCKET_PIN=1 pins at the first
 * listener, or use the server's own CPU affinity setting).
 *
 * Intercepted: listen, accept, accept4, epoll_ctl, close, dup2, dup3,
 * close_range, closefrom, connect, bind. Diagnostics go out with write(2),
 * not stdio.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fsocket.h"
#include "../kernel/include/uapi/linux/fastsocket.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE	(1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC	(1U << 2)
#endif

#define EXPORT __attribute__((visibility("default")))

/* fd_flags[] bits: what the library knows about a descriptor number. */
#define FD_LISTENER	0x1	/* an enabled listener (has a struct lsn) */
#define FD_EPOLL	0x2	/* an epoll set holding an enabled listener */
#define FD_LOCAL	0x4	/* one of our local listeners */
#define FD_KLOCAL	0x8	/* kernel mode: an enabled listener that has local listeners */

/* The CPUs a thread can be pinned to: as many as its affinity mask holds. */
#define AFFINITY_SIZE	(8 * sizeof(cpu_set_t))	/* 8192 CPUs */
#define MAX_CPUS	(AFFINITY_SIZE * 8)

/* A set of CPU numbers below MAX_CPUS. */
struct cpus {
	uint64_t w[MAX_CPUS / 64];
};

/* Things reported at most once per process with FSOCKET_VERBOSE=1. */
enum {
	R_ALWAYS	= 0,
	R_LISTEN	= 1 << 0,
	R_BLOCKING	= 1 << 1,
	R_NOEPOLL	= 1 << 2,
	R_UNPINNED	= 1 << 3,
	R_LOCAL		= 1 << 4,
	R_MIRROR	= 1 << 5,
	R_SHUTDOWN	= 1 << 6,
	R_TABLE		= 1 << 7,
	R_RFD		= 1 << 8,
	R_OPTION	= 1 << 9,
};

/*
 * A local listener L of this process. A process has one per enabled
 * listener G and CPU its pinned threads watch G from: a worker process
 * one, a server with a thread per CPU (HAProxy) one per thread.
 */
struct local {
	struct local *next;	/* G's next local, or on dead_locals */
	int fd;
	int cpu;		/* G has at most one local per CPU: its bit in reg.mirrored */
	unsigned int busy;	/* threads inside accept4(fd) */
	bool dead;		/* detached: closed when busy drops to 0 */
	bool gone;		/* fd was closed or replaced behind our back */
};

/* An epoll set in which this process registered an enabled listener. */
struct reg {
	int epfd;
	int cpu;		/* the registering thread's only CPU, or -1 */
	struct cpus mirrored;	/* CPUs whose local listeners are registered there too */
	struct epoll_event ev;
};

enum lsn_state {
	LS_NONE,	/* no local listener, none tried since the last change */
	LS_LOCAL,	/* locs holds this process's local listeners */
	LS_SKIP,	/* not eligible yet (blocking, unpinned, no epoll) */
	LS_FAILED,	/* refused or broken: not retried in this process */
};

/* An enabled listener G. */
struct lsn {
	struct lsn *next;
	int fd;
	int family;
	int backlog;		/* portable mode: the locals listen with G's */
	enum lsn_state state;
	bool accept_tried;	/* accept() already evaluated G since the last ADD */
	struct cpus announced;	/* CPUs whose local listener was reported */
	struct cpus refused;	/* CPUs a further local listener failed for */
	struct local *locs;
	struct reg *regs;
	unsigned int nregs;
	unsigned int cap;
};

enum put_how {
	PUT_KEEP,	/* L is fine */
	PUT_SHUTDOWN,	/* L no longer listens (module shut it down) */
	PUT_GONE,	/* L's number no longer refers to L */
};

static struct fsocket_conf conf;
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static int setup_done;		/* fsocket_setup() has returned, in some thread */

/* Protects everything below; never held across a blocking call. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t owner;		/* the process these tables describe */
/*
 * A MADV_WIPEONFORK page holding owner: any forked child, with or without
 * our atfork handlers (a raw clone() or fork syscall), sees it zeroed. The
 * accept path checks it instead of calling getpid() on every connection.
 */
static volatile pid_t *fork_guard;
static struct lsn *lsns;
static struct local *dead_locals;
static unsigned int reported;
/* Written under lock, read without it as a fast filter. */
static unsigned char fd_flags[FSOCKET_MAX_FDS];
/*
 * Kernel mode, by G's number: the CPUs of its local listeners while
 * FD_KLOCAL is set. Allocated the first time a listener with that number
 * gets one and never freed, so that accept() reads it without the lock.
 */
static struct cpus *klocal_cpus[FSOCKET_MAX_FDS];
/* Kernel mode, by G's number: the last accept() on G came back empty. */
static unsigned char klocal_empty[FSOCKET_MAX_FDS];

static int (*real_listen)(int, int);
static int (*real_accept)(int, __SOCKADDR_ARG, socklen_t *restrict);
static int (*real_accept4)(int, __SOCKADDR_ARG, socklen_t *restrict, int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_close)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_close_range)(unsigned int, unsigned int, int);
static void (*real_closefrom)(int);
static int (*real_connect)(int, __CONST_SOCKADDR_ARG, socklen_t);
static int (*real_bind)(int, __CONST_SOCKADDR_ARG, socklen_t);

/* -- diagnostics ----------------------------------------------------------- */

static void vsay(const char *fmt, va_list ap)
{
	char buf[256];
	int saved = errno;
	int n;

	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n > 0) {
		if ((size_t)n >= sizeof(buf)) {
			n = sizeof(buf) - 1;
			buf[n - 1] = '\n';
		}
		/* write(2), not stdio: safe in forked workers and signal paths */
		if (write(STDERR_FILENO, buf, n) < 0)
			n = 0;
	}
	errno = saved;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

/* With FSOCKET_VERBOSE=1: report, once per process unless what is R_ALWAYS. */
static void report(unsigned int what, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void report(unsigned int what, const char *fmt, ...)
{
	va_list ap;

	if (!conf.verbose || (reported & what))
		return;
	reported |= what;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
}

/* -- descriptor flags and the table lock ----------------------------------- */

static unsigned int fdf_get(int fd)
{
	if (fd < 0 || fd >= FSOCKET_MAX_FDS)
		return 0;
	return __atomic_load_n(&fd_flags[fd], __ATOMIC_RELAXED);
}

static void fdf_set(int fd, unsigned int bits)
{
	if (fd >= 0 && fd < FSOCKET_MAX_FDS)
		__atomic_or_fetch(&fd_flags[fd], (unsigned char)bits, __ATOMIC_RELAXED);
}

static void fdf_clear(int fd, unsigned int bits)
{
	if (fd >= 0 && fd < FSOCKET_MAX_FDS)
		__atomic_and_fetch(&fd_flags[fd], (unsigned char)~bits, __ATOMIC_RELAXED);
}

/*
 * Cancellation is disabled while the lock is held: close(), write() and
 * friends are cancellation points, and a thread cancelled with the lock
 * held would deadlock every other one.
 */
static void tables_lock(int *cancel)
{
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, cancel);
	pthread_mutex_lock(&lock);
}

static void tables_unlock(int cancel)
{
	int unused;

	pthread_mutex_unlock(&lock);
	pthread_setcancelstate(cancel, &unused);
}

/*
 * The tables describe the process that owns them. A child made without
 * the fork handlers (vfork, clone, _Fork) may even share our memory: it
 * passes everything through and touches nothing.
 */
static bool ours(void)
{
	return owner == getpid();
}

/* ours() without a system call while this is the process that set it up. */
static bool ours_fast(void)
{
	if (fork_guard && owner && *fork_guard == owner)
		return true;
	return ours();
}

static void fork_guard_set(void)
{
	if (fork_guard)
		*fork_guard = owner;
}

static void fork_guard_init(void)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	if (madvise(p, page, MADV_WIPEONFORK)) {	/* before Linux 4.14: getpid() always */
		munmap(p, page);
		return;
	}
	fork_guard = p;
	fork_guard_set();
}

/* -- local listeners --------------------------------------------------------- */

static struct lsn *lsn_find(int fd)
{
	struct lsn *rec;

	for (rec = lsns; rec; rec = rec->next)
		if (rec->fd == fd)
			return rec;
	return NULL;
}

/* Readers may run without the lock (klocal_cpus): each word is read and written whole. */
static bool cpus_has(const struct cpus *set, int cpu)
{
	if (!set || cpu < 0 || cpu >= (int)MAX_CPUS)
		return false;
	return (__atomic_load_n(&set->w[cpu / 64], __ATOMIC_RELAXED) >> (cpu % 64)) & 1;
}

static void cpus_add(struct cpus *set, int cpu)
{
	if (cpu >= 0 && cpu < (int)MAX_CPUS)
		set->w[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}

static void cpus_del(struct cpus *set, int cpu)
{
	if (cpu >= 0 && cpu < (int)MAX_CPUS)
		set->w[cpu / 64] &= ~((uint64_t)1 << (cpu % 64));
}

/* rec's local listener for cpu, or NULL. */
static struct local *lsn_local_on(const struct lsn *rec, int cpu)
{
	struct local *loc;

	for (loc = rec->locs; loc; loc = loc->next)
		if (loc->cpu == cpu)
			return loc;
	return NULL;
}

static struct lsn *lsn_of_local(const struct local *loc)
{
	struct local *l;
	struct lsn *rec;

	for (rec = lsns; rec; rec = rec->next)
		for (l = rec->locs; l; l = l->next)
			if (l == loc)
				return rec;
	return NULL;
}

static bool owns_number(const struct local *list, int fd, const struct local *skip)
{
	const struct local *loc;

	for (loc = list; loc; loc = loc->next)
		if (loc != skip && !loc->gone && loc->fd == fd)
			return true;
	return false;
}

/* Does one of our local listeners, other than skip, still own number fd? */
static bool local_number_owned(int fd, const struct local *skip)
{
	struct lsn *rec;

	for (rec = lsns; rec; rec = rec->next)
		if (owns_number(rec->locs, fd, skip))
			return true;
	return owns_number(dead_locals, fd, skip);
}

static void local_free(struct local *loc)
{
	if (!loc->gone) {
		fdf_clear(loc->fd, FD_LOCAL);
		real_close(loc->fd);
	}
	free(loc);
}

/* Close loc now, or when the last thread inside accept4() on it is done. */
static void local_release(struct local *loc)
{
	if (loc->busy) {
		loc->dead = true;
		loc->next = dead_locals;
		dead_locals = loc;
		return;
	}
	local_free(loc);
}

static void dead_unlink(struct local *loc)
{
	struct local **p;

	for (p = &dead_locals; *p; p = &(*p)->next) {
		if (*p == loc) {
			*p = loc->next;
			return;
		}
	}
}

/* Our number for loc now belongs to someone else (or to nobody). */
static void local_mark_gone(struct local *loc)
{
	loc->gone = true;
	if (!local_number_owned(loc->fd, loc))
		fdf_clear(loc->fd, FD_LOCAL);
}

/* Take loc out of every epoll set of rec's we put it in. */
static void lsn_unmirror(struct lsn *rec, struct local *loc)
{
	unsigned int i;

	for (i = 0; i < rec->nregs; i++) {
		if (cpus_has(&rec->regs[i].mirrored, loc->cpu) && !loc->gone)
			real_epoll_ctl(rec->regs[i].epfd, EPOLL_CTL_DEL, loc->fd, NULL);
		cpus_del(&rec->regs[i].mirrored, loc->cpu);
	}
}

/* Kernel mode: publish which CPUs have rec's local listeners, for accept_kernel(). */
static void lsn_publish(struct lsn *rec)
{
	struct cpus *pub = klocal_cpus[rec->fd];
	struct cpus now = { { 0 } };
	struct local *loc;
	size_t i;

	if (conf.mode != FSOCKET_MODE_KERNEL)
		return;
	if (!pub && rec->locs) {
		pub = calloc(1, sizeof(*pub));
		/* Without it accept() takes the slow way, which is correct too. */
		if (pub)
			__atomic_store_n(&klocal_cpus[rec->fd], pub, __ATOMIC_RELEASE);
	}
	for (loc = rec->locs; loc; loc = loc->next)
		cpus_add(&now, loc->cpu);
	/* A racing accept() may see a mix for a moment: it then takes the slow way once. */
	for (i = 0; pub && i < MAX_CPUS / 64; i++)
		if (pub->w[i] != now.w[i])
			__atomic_store_n(&pub->w[i], now.w[i], __ATOMIC_RELAXED);
	__atomic_store_n(&klocal_empty[rec->fd], 0, __ATOMIC_RELAXED);
	if (rec->locs && pub)
		fdf_set(rec->fd, FD_KLOCAL);
	else
		fdf_clear(rec->fd, FD_KLOCAL);
}

/*
 * Stop using one of rec's local listeners: out of the epoll sets first, so
 * no event for it reaches the application once G is gone, then closed
 * (the kernel moves its queue to G).
 */
static void lsn_drop_one(struct lsn *rec, struct local *loc)
{
	struct local **p;

	for (p = &rec->locs; *p; p = &(*p)->next) {
		if (*p == loc) {
			*p = loc->next;
			break;
		}
	}
	lsn_unmirror(rec, loc);
	lsn_publish(rec);
	local_release(loc);
	if (!rec->locs && rec->state == LS_LOCAL)
		rec->state = LS_NONE;
}

/* ... all of them. */
static void lsn_drop_local(struct lsn *rec, enum lsn_state state)
{
	while (rec->locs)
		lsn_drop_one(rec, rec->locs);
	rec->state = state;
}

static void lsn_fail(struct lsn *rec, unsigned int what, const char *op, int err)
{
	lsn_drop_local(rec, LS_FAILED);
	report(what, "libfsocket: pid %d: no local listener for listen fd %d: %s: %s; "
	       "passing through\n", (int)getpid(), rec->fd, op, strerror(err));
}

static void lsn_skip(struct lsn *rec, unsigned int what, const char *why)
{
	if (!rec->locs)
		rec->state = LS_SKIP;
	report(what, "libfsocket: pid %d: listen fd %d %s; not accelerated\n",
	       (int)getpid(), rec->fd, why);
}

/* -- epoll registrations ----------------------------------------------------- */

static int lsn_sync_mirrors(struct lsn *rec, int force_epfd);

/*
 * The calling thread's affinity mask in @set (AFFINITY_SIZE bytes, of
 * which the kernel fills *@size: one bit per possible CPU), which taskset,
 * cpusets and offline CPUs all narrow: how many CPUs it may run on, or -1
 * when unknown. The system call itself, as glibc's wrapper would clear
 * and count all 8192 bits: nginx re-registers its listener every 16
 * connections, and each time this runs.
 */
static int allowed_cpus(cpu_set_t *set, size_t *size)
{
	long n = syscall(SYS_sched_getaffinity, 0, AFFINITY_SIZE, set);

	if (n <= 0 || n > (long)AFFINITY_SIZE)
		return -1;
	*size = (size_t)n;
	return CPU_COUNT_S(*size, set);
}

/* The calling thread's only allowed CPU, or -1. */
static int thread_cpu(void)
{
	cpu_set_t set[AFFINITY_SIZE / sizeof(cpu_set_t)];
	const unsigned long *w = (const unsigned long *)set;
	size_t size, i;

	if (allowed_cpus(set, &size) != 1)
		return -1;
	for (i = 0; i < size / sizeof(*w); i++)
		if (w[i])
			return (int)(i * 8 * sizeof(*w)) + __builtin_ctzl(w[i]);
	return -1;
}

static int lsn_reg_index(const struct lsn *rec, int epfd)
{
	unsigned int i;

	for (i = 0; i < rec->nregs; i++)
		if (rec->regs[i].epfd == epfd)
			return (int)i;
	return -1;
}

static int lsn_reg_add(struct lsn *rec, int epfd, const struct epoll_event *ev)
{
	struct reg *regs;
	unsigned int cap;

	if (epfd < 0 || epfd >= FSOCKET_MAX_FDS)
		return -1;
	if (rec->nregs == rec->cap) {
		if (rec->cap >= FSOCKET_MAX_FDS)
			return -1;
		cap = rec->cap ? rec->cap * 2 : 4;
		regs = realloc(rec->regs, cap * sizeof(*regs));
		if (!regs)
			return -1;
		rec->regs = regs;
		rec->cap = cap;
	}
	rec->regs[rec->nregs].epfd = epfd;
	rec->regs[rec->nregs].cpu = thread_cpu();
	memset(&rec->regs[rec->nregs].mirrored, 0, sizeof(rec->regs[rec->nregs].mirrored));
	rec->regs[rec->nregs].ev = *ev;
	fdf_set(epfd, FD_EPOLL);
	return (int)rec->nregs++;
}

/* Clear FD_EPOLL on epfd once no enabled listener is registered there. */
static void epfd_refresh(int epfd)
{
	struct lsn *rec;

	for (rec = lsns; rec; rec = rec->next)
		if (lsn_reg_index(rec, epfd) >= 0)
			return;
	fdf_clear(epfd, FD_EPOLL);
}

/*
 * G left the epoll set regs[i]: so does L. L stays open when G is in no
 * epoll set any more: servers take their listener out of epoll for a
 * moment and put it back (nginx re-adds it every 16 accepts to rotate
 * EPOLLEXCLUSIVE wakeups; with accept_mutex a worker leaves it out while
 * another holds the mutex). Closing L each time would move its queue to G
 * and rebuild it on the next EPOLL_CTL_ADD, which re-mirrors the kept L
 * instead. Connections queued on L meanwhile are served on that ADD, by
 * accept() on G (the library drains L first), or moved to G when G is
 * closed.
 */
static void lsn_reg_remove(struct lsn *rec, unsigned int i)
{
	struct reg *reg = &rec->regs[i];
	struct local *loc;
	int err;

	for (loc = rec->locs; loc; loc = loc->next)
		if (cpus_has(&reg->mirrored, loc->cpu) && !loc->gone)
			real_epoll_ctl(reg->epfd, EPOLL_CTL_DEL, loc->fd, NULL);
	rec->regs[i] = rec->regs[--rec->nregs];
	/* It may have been the only set of a thread on L's CPU: the others get L. */
	err = lsn_sync_mirrors(rec, -1);
	if (err)
		lsn_fail(rec, R_MIRROR, "epoll_ctl", err);
}

/* Register local listener loc in reg's epoll set, with G's event. */
static int lsn_mirror(struct reg *reg, const struct local *loc)
{
	struct epoll_event ev = reg->ev;
	int l = loc->fd;

	if (cpus_has(&reg->mirrored, loc->cpu)) {
		if (!real_epoll_ctl(reg->epfd, EPOLL_CTL_MOD, l, &ev))
			return 0;
		if (errno != ENOENT)
			return errno;
	}
	if (real_epoll_ctl(reg->epfd, EPOLL_CTL_ADD, l, &ev)) {
		if (errno != EEXIST)
			return errno;
		if (real_epoll_ctl(reg->epfd, EPOLL_CTL_MOD, l, &ev))
			return errno;
	}
	cpus_add(&reg->mirrored, loc->cpu);
	return 0;
}

/* Registered by a thread that may serve L's CPU: pinned to it, or not pinned. */
static bool reg_serves(const struct reg *reg, const struct local *loc)
{
	return reg->cpu < 0 || reg->cpu == loc->cpu;
}

/* Does reg's epoll set get L (the invariant above)? */
static bool lsn_wants_mirror(const struct lsn *rec, const struct reg *reg, const struct local *loc)
{
	unsigned int i;

	if (reg_serves(reg, loc))
		return true;
	for (i = 0; i < rec->nregs; i++)
		if (reg_serves(&rec->regs[i], loc))
			return false;
	return true;
}

/*
 * Mirror each L where the invariant wants it and nowhere else; force:
 * also refresh the event of sets that already have it. Returns 0 or an
 * errno.
 */
static int lsn_sync_mirrors(struct lsn *rec, int force_epfd)
{
	struct local *loc;
	unsigned int i;
	int err;

	for (loc = rec->locs; loc; loc = loc->next) {
		if (loc->gone)
			continue;
		for (i = 0; i < rec->nregs; i++) {
			struct reg *reg = &rec->regs[i];
			bool has = cpus_has(&reg->mirrored, loc->cpu);

			if (lsn_wants_mirror(rec, reg, loc)) {
				if (has && reg->epfd != force_epfd)
					continue;
				err = lsn_mirror(reg, loc);
				if (err)
					return err;
			} else if (has) {
				real_epoll_ctl(reg->epfd, EPOLL_CTL_DEL, loc->fd, NULL);
				cpus_del(&reg->mirrored, loc->cpu);
			}
		}
	}
	return 0;
}

/* -- spawning ---------------------------------------------------------------- */

/* The CPU this thread serves: its only allowed CPU, or (FSOCKET_PIN) its current one. */
static int pick_cpu(int fd)
{
	cpu_set_t set[AFFINITY_SIZE / sizeof(cpu_set_t)];
	size_t size = sizeof(set);
	int cpu = thread_cpu();

	if (cpu >= 0)
		return cpu;
	if (!conf.pin) {
		report(R_UNPINNED, "libfsocket: pid %d: not pinned to one CPU; listen fd %d not "
		       "accelerated (pin the worker or set FSOCKET_PIN=1)\n", (int)getpid(), fd);
		return -1;
	}
	cpu = sched_getcpu();
	if (cpu < 0 || cpu >= (int)(size * 8)) {
		report(R_UNPINNED, "libfsocket: pid %d: sched_getcpu: %s; not accelerated\n",
		       (int)getpid(), strerror(errno));
		return -1;
	}
	CPU_ZERO_S(size, set);
	CPU_SET_S(cpu, size, set);
	if (sched_setaffinity(0, size, set)) {
		report(R_UNPINNED, "libfsocket: pid %d: cannot pin to CPU %d: %s; not accelerated\n",
		       (int)getpid(), cpu, strerror(errno));
		return -1;
	}
	report(R_ALWAYS, "libfsocket: pid %d: pinned to CPU %d (FSOCKET_PIN=1)\n",
	       (int)getpid(), cpu);
	return cpu;
}

static bool listener_wanted(int fd, int *family);

/* Portable mode and fastsocket.ko both need the tables. */
static bool tracking(void)
{
	return conf.mode == FSOCKET_MODE_PORTABLE || conf.mode == FSOCKET_MODE_KERNEL;
}

/*
 * Portable mode, before G listens: G joins a SO_REUSEPORT group (made when it
 * listens), so that each worker's local listener can join it too.
 */
static void portable_prepare(int fd)
{
	int one = 1, family, saved = errno;

	if (listener_wanted(fd, &family) &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		report(R_LISTEN, "libfsocket: listen fd %d: SO_REUSEPORT: %s\n", fd, strerror(errno));
	errno = saved;
}

/*
 * Options a server sets on G that the connections it accepts inherit
 * (HAProxy's TCP_QUICKACK 0, nginx's so_keepalive, fastopen, rcvbuf, ...).
 * A portable-mode L takes G's value wherever it differs from L's own, a
 * fresh listener's. SO_RCVBUF and SO_SNDBUF read back doubled.
 */
static const struct copied_opt {
	int level, name;
	bool doubled;
} copied_opts[] = {
	{ SOL_SOCKET, SO_KEEPALIVE, false },	{ SOL_SOCKET, SO_PRIORITY, false },
	{ SOL_SOCKET, SO_MARK, false },		{ SOL_SOCKET, SO_RCVBUF, true },
	{ SOL_SOCKET, SO_SNDBUF, true },	{ SOL_SOCKET, SO_RCVLOWAT, false },
	{ IPPROTO_IP, IP_TOS, false },		{ IPPROTO_IP, IP_TTL, false },
	{ IPPROTO_IP, IP_FREEBIND, false },	{ IPPROTO_IP, IP_TRANSPARENT, false },
	{ IPPROTO_IPV6, IPV6_TCLASS, false },	{ IPPROTO_IPV6, IPV6_UNICAST_HOPS, false },
	{ IPPROTO_TCP, TCP_NODELAY, false },	{ IPPROTO_TCP, TCP_MAXSEG, false },
	{ IPPROTO_TCP, TCP_KEEPIDLE, false },	{ IPPROTO_TCP, TCP_KEEPINTVL, false },
	{ IPPROTO_TCP, TCP_KEEPCNT, false },	{ IPPROTO_TCP, TCP_DEFER_ACCEPT, false },
	{ IPPROTO_TCP, TCP_QUICKACK, false },	{ IPPROTO_TCP, TCP_USER_TIMEOUT, false },
	{ IPPROTO_TCP, TCP_FASTOPEN, false },	{ IPPROTO_TCP, TCP_WINDOW_CLAMP, false },
	{ IPPROTO_TCP, TCP_NOTSENT_LOWAT, false },
};

/* After L listens (listen() resets TCP_QUICKACK): G's inherited options onto L. */
static void portable_copy_options(int l, int g)
{
	char gcc[16], lcc[16];	/* TCP_CA_NAME_MAX */
	struct linger glg;
	unsigned int i;
	socklen_t len;
	int gv, lv;

	for (i = 0; i < sizeof(copied_opts) / sizeof(copied_opts[0]); i++) {
		const struct copied_opt *o = &copied_opts[i];

		len = sizeof(gv);
		if (getsockopt(g, o->level, o->name, &gv, &len))
			continue;	/* not an option of this family */
		len = sizeof(lv);
		if (getsockopt(l, o->level, o->name, &lv, &len) || gv == lv)
			continue;
		if (o->doubled)
			gv /= 2;
		if (setsockopt(l, o->level, o->name, &gv, sizeof(gv)))
			report(R_OPTION, "libfsocket: listen fd %d: copying option %d/%d to its local listener: %s\n",
			       g, o->level, o->name, strerror(errno));
	}
	len = sizeof(glg);
	if (!getsockopt(g, SOL_SOCKET, SO_LINGER, &glg, &len) && glg.l_onoff &&
	    setsockopt(l, SOL_SOCKET, SO_LINGER, &glg, sizeof(glg)))
		report(R_OPTION, "libfsocket: listen fd %d: copying SO_LINGER: %s\n", g, strerror(errno));
	len = sizeof(gcc);
	if (getsockopt(g, IPPROTO_TCP, TCP_CONGESTION, gcc, &len))
		return;
	gcc[sizeof(gcc) - 1] = '\0';
	len = sizeof(lcc);
	if (!getsockopt(l, IPPROTO_TCP, TCP_CONGESTION, lcc, &len) && strncmp(gcc, lcc, sizeof(gcc)) &&
	    setsockopt(l, IPPROTO_TCP, TCP_CONGESTION, gcc, strlen(gcc)))
		report(R_OPTION, "libfsocket: listen fd %d: copying TCP_CONGESTION %s: %s\n", g, gcc,
		       strerror(errno));
}

/*
 * Portable mode: L is a SO_REUSEPORT sibling of G on G's address, marked
 * with SO_INCOMING_CPU, so the group hands it the SYNs processed on cpu.
 * Returns 0 or an errno; *op names the call that failed.
 */
static int portable_local(int l, const struct lsn *rec, int cpu, const char **op)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int one = 1, val;
	socklen_t vlen = sizeof(val);

	*op = "getsockname";
	if (getsockname(rec->fd, (struct sockaddr *)&ss, &len))
		return errno;
	*op = "SO_REUSEADDR";
	if (!getsockopt(rec->fd, SOL_SOCKET, SO_REUSEADDR, &val, &vlen) && val &&
	    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		return errno;
	vlen = sizeof(val);
	*op = "IPV6_V6ONLY";
	if (rec->family == AF_INET6 &&
	    !getsockopt(rec->fd, IPPROTO_IPV6, IPV6_V6ONLY, &val, &vlen) &&
	    setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &val, sizeof(val)))
		return errno;
	*op = "SO_REUSEPORT";
	if (setsockopt(l, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		return errno;
	*op = "bind";
	if (bind(l, (struct sockaddr *)&ss, len))
		return errno;
	*op = "SO_INCOMING_CPU";
	if (setsockopt(l, SOL_SOCKET, SO_INCOMING_CPU, &cpu, sizeof(cpu)))
		return errno;
	*op = "listen";
	if (real_listen(l, rec->backlog > 0 ? rec->backlog : SOMAXCONN))
		return errno;
	portable_copy_options(l, rec->fd);
	return 0;
}

/*
 * No local listener for cpu: the process's first one failed, so the
 * process passes through and does not retry; a further one (another CPU
 * of a multi-threaded process) is not retried for that CPU, and the
 * local listeners the process has stay.
 */
static void lsn_spawn_failed(struct lsn *rec, int cpu, unsigned int what, const char *op, int err)
{
	if (!rec->locs) {
		lsn_fail(rec, what, op, err);
		return;
	}
	cpus_add(&rec->refused, cpu);
	report(what, "libfsocket: pid %d: no local listener for listen fd %d on CPU %d: %s: %s\n",
	       (int)getpid(), rec->fd, cpu, op, strerror(err));
}

/* Give the calling thread's CPU a local listener for rec, unless it has one. */
static void lsn_spawn(struct lsn *rec)
{
	struct fastsocket_local req;
	const char *op = "";
	struct local *loc;
	int fl, cpu, l, err;

	fl = fcntl(rec->fd, F_GETFL);
	if (fl < 0) {
		lsn_fail(rec, R_LOCAL, "fcntl", errno);
		return;
	}
	/* accept() would sleep on G's queue and never see L's connections. */
	if (!(fl & O_NONBLOCK)) {
		lsn_skip(rec, R_BLOCKING, "is blocking");
		return;
	}
	/* Nothing would wake the process for L's connections. */
	if (!rec->nregs) {
		lsn_skip(rec, R_NOEPOLL, "is not watched with epoll");
		return;
	}
	cpu = pick_cpu(rec->fd);
	if (cpu < 0) {
		if (!rec->locs)
			rec->state = LS_SKIP;
		return;
	}
	if (lsn_local_on(rec, cpu))
		return;
	l = socket(rec->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (l < 0) {
		lsn_spawn_failed(rec, cpu, R_LOCAL, "socket", errno);
		return;
	}
	if (l >= FSOCKET_MAX_FDS) {
		real_close(l);
		lsn_spawn_failed(rec, cpu, R_TABLE, "socket", EMFILE);
		return;
	}
	req.listen_fd = rec->fd;
	req.cpu = cpu;
	if (conf.mode == FSOCKET_MODE_KERNEL) {
		err = setsockopt(l, SOL_TCP, TCP_FASTSOCKET_LOCAL, &req, sizeof(req)) ? errno : 0;
		op = "TCP_FASTSOCKET_LOCAL";
	} else {
		err = portable_local(l, rec, cpu, &op);
	}
	if (err) {
		real_close(l);
		lsn_spawn_failed(rec, cpu, R_LOCAL, op, err);
		return;
	}
	loc = calloc(1, sizeof(*loc));
	if (!loc) {
		real_close(l);
		lsn_spawn_failed(rec, cpu, R_LOCAL, "calloc", ENOMEM);
		return;
	}
	loc->fd = l;
	loc->cpu = cpu;
	fdf_set(l, FD_LOCAL);
	loc->next = rec->locs;
	rec->locs = loc;
	rec->state = LS_LOCAL;
	lsn_publish(rec);
	err = lsn_sync_mirrors(rec, -1);
	if (err) {
		lsn_fail(rec, R_MIRROR, "epoll_ctl", err);
		return;
	}
	if (!cpus_has(&rec->announced, cpu)) {
		cpus_add(&rec->announced, cpu);
		report(R_ALWAYS, "libfsocket: pid %d: local listener fd %d for listen fd %d on CPU %d\n",
		       (int)getpid(), l, rec->fd, cpu);
	}
}

/*
 * Does an EPOLL_CTL_ADD of G into reg call for a local listener? The
 * process's first, and one for each further CPU a thread pinned to it
 * watches G from.
 */
static bool lsn_wants_local(const struct lsn *rec, const struct reg *reg)
{
	return !rec->locs || (reg->cpu >= 0 && !cpus_has(&rec->refused, reg->cpu) &&
			      !lsn_local_on(rec, reg->cpu));
}

/* The application registered, changed or removed G in epfd: follow with L. */
static void lsn_epoll(struct lsn *rec, int epfd, int op, const struct epoll_event *ev)
{
	int i = lsn_reg_index(rec, epfd);
	int err;

	switch (op) {
	case EPOLL_CTL_DEL:
		if (i >= 0) {
			lsn_reg_remove(rec, (unsigned int)i);
			epfd_refresh(epfd);
		}
		return;
	case EPOLL_CTL_ADD:
	case EPOLL_CTL_MOD:
		break;
	default:
		return;
	}
	if (i >= 0)
		rec->regs[i].ev = *ev;
	else
		i = lsn_reg_add(rec, epfd, ev);
	if (i < 0) {
		/* G is in an epoll set we cannot follow: L could strand connections. */
		if (epfd >= FSOCKET_MAX_FDS)
			lsn_fail(rec, R_TABLE, "epoll fd beyond the tracking table", EMFILE);
		else
			lsn_fail(rec, R_TABLE, "tracking the epoll fd", ENOMEM);
		return;
	}
	if (rec->locs) {
		err = lsn_sync_mirrors(rec, epfd);
		if (err) {
			lsn_fail(rec, R_MIRROR, "epoll_ctl", err);
			return;
		}
	}
	if (op == EPOLL_CTL_ADD && rec->state != LS_FAILED && lsn_wants_local(rec, &rec->regs[i])) {
		rec->accept_tried = false;
		lsn_spawn(rec);
	}
}

/* -- forgetting descriptors ---------------------------------------------------- */

static void lsn_forget(struct lsn *rec)
{
	struct lsn **p;
	unsigned int i;

	lsn_drop_local(rec, LS_NONE);
	for (p = &lsns; *p; p = &(*p)->next) {
		if (*p == rec) {
			*p = rec->next;
			break;
		}
	}
	fdf_clear(rec->fd, FD_LISTENER);
	for (i = 0; i < rec->nregs; i++)
		epfd_refresh(rec->regs[i].epfd);
	free(rec->regs);
	free(rec);
}

static void epfd_forget(int epfd)
{
	struct lsn *rec;
	unsigned int i;

	for (rec = lsns; rec; rec = rec->next) {
		for (i = 0; i < rec->nregs; ) {
			if (rec->regs[i].epfd == epfd)
				lsn_reg_remove(rec, i);
			else
				i++;
		}
	}
	fdf_clear(epfd, FD_EPOLL);
}

/* The application closes (or replaces) the number of one of our locals. */
static void local_number_closed(int fd)
{
	struct local *loc;
	struct lsn *rec;

	for (rec = lsns; rec; rec = rec->next) {
		for (loc = rec->locs; loc; loc = loc->next)
			if (!loc->gone && loc->fd == fd)
				break;
		if (!loc)
			continue;
		lsn_unmirror(rec, loc);
		loc->gone = true;
		lsn_drop_one(rec, loc);
		rec->accept_tried = false;
		report(R_ALWAYS, "libfsocket: pid %d: the application closed local listener fd %d\n",
		       (int)getpid(), fd);
	}
	for (loc = dead_locals; loc; loc = loc->next)
		if (loc->fd == fd)
			loc->gone = true;
	fdf_clear(fd, FD_LOCAL);
}

/* fd is about to be closed or replaced by the application (lock held, ours()). */
static void fd_released(int fd)
{
	unsigned int f = fdf_get(fd);
	struct lsn *rec;

	if (f & FD_LOCAL)
		local_number_closed(fd);
	if (f & FD_LISTENER) {
		rec = lsn_find(fd);
		if (rec)
			lsn_forget(rec);
		else
			fdf_clear(fd, FD_LISTENER);
	}
	if (f & FD_EPOLL)
		epfd_forget(fd);
}

static void fd_closing(int fd)
{
	int saved = errno;
	int cancel;

	tables_lock(&cancel);
	if (ours())
		fd_released(fd);
	tables_unlock(cancel);
	errno = saved;
}

static void fd_range_closing(unsigned int first, unsigned int last)
{
	int saved = errno;
	unsigned int fd;
	int cancel;

	if (!tracking())
		return;
	tables_lock(&cancel);
	if (ours())
		for (fd = first; fd < FSOCKET_MAX_FDS && fd <= last; fd++)
			if (fdf_get((int)fd))
				fd_released((int)fd);
	tables_unlock(cancel);
	errno = saved;
}

static bool fd_open(int fd)
{
	int saved = errno;
	bool open = fcntl(fd, F_GETFD) >= 0;

	errno = saved;
	return open;
}

/* -- accept -------------------------------------------------------------------- */

/*
 * The local listener accept() on G takes first (lock held): the calling
 * CPU's, else the process's only one, spawned if accept() may; NULL when
 * the process has none or only other CPUs' (their threads take those).
 */
static struct local *local_get(int fd)
{
	struct local *loc;
	struct lsn *rec;

	if (!ours_fast())
		return NULL;
	rec = lsn_find(fd);
	if (!rec)
		return NULL;
	if (!rec->locs && rec->state != LS_FAILED && !rec->accept_tried) {
		rec->accept_tried = true;
		lsn_spawn(rec);
	}
	loc = rec->locs;
	if (loc && loc->next)
		loc = lsn_local_on(rec, sched_getcpu());
	if (loc)
		loc->busy++;
	return loc;
}

static void local_put(struct local *loc, enum put_how how)
{
	struct lsn *rec;

	if (how == PUT_GONE)
		local_mark_gone(loc);
	if (how != PUT_KEEP) {
		rec = lsn_of_local(loc);
		if (rec) {
			lsn_drop_local(rec, LS_FAILED);
			report(R_SHUTDOWN, "libfsocket: pid %d: local listener for listen fd %d "
			       "shut down; passing through\n", (int)getpid(), rec->fd);
		}
	}
	loc->busy--;
	if (loc->dead && !loc->busy) {
		dead_unlink(loc);
		local_free(loc);
	}
}

static bool still_listening(int fd)
{
	socklen_t len;
	int val = 0;

	len = sizeof(val);
	return !getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) && val;
}

/*
 * accept() on an enabled listener: this process's local listener first.
 * Returns true with *res set when that is the answer, false to fall
 * through to the real accept() on fd (errno as on entry).
 */
static bool accept_local(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags,
			 int *res)
{
	enum put_how how = PUT_KEEP;
	int saved = errno;
	struct local *loc;
	bool done = false;
	int cancel, ret, err;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
	pthread_mutex_lock(&lock);
	loc = local_get(fd);
	pthread_mutex_unlock(&lock);
	if (!loc)
		goto out;

	/* L is non-blocking: this never sleeps, and loc->busy keeps it open. */
	ret = real_accept4(loc->fd, addr, len, flags);
	err = errno;
	if (ret >= 0) {
		done = true;
	} else if (err == EAGAIN || err == EWOULDBLOCK) {
		/* empty: G's queue next */
	} else if (err == EINVAL) {
		/* L shut down (module unloaded or G disabled), or bad arguments G will report */
		if (!still_listening(loc->fd))
			how = PUT_SHUTDOWN;
	} else if (err == EBADF || err == ENOTSOCK) {
		how = PUT_GONE;
	} else {
		done = true;	/* a real accept error (EMFILE, ECONNABORTED, ...) */
	}

	pthread_mutex_lock(&lock);
	local_put(loc, how);
	pthread_mutex_unlock(&lock);
	if (done)
		*res = ret;
	saved = done && ret < 0 ? err : saved;
out:
	pthread_setcancelstate(cancel, &cancel);
	errno = saved;
	return done;
}

/*
 * Kernel mode, once this process has G's local listener: the kernel's
 * accept() on G takes the calling CPU's local listener's queue first, and
 * the process's threads run on L's CPU, so the common case needs neither
 * the table lock nor a second system call. An empty answer on L's CPU
 * has seen L's queue too and is final, unless the previous accept() on G
 * was empty as well: that is what a caller woken over and over by an L
 * that no longer listens (module unloaded) sees, and the slow way, which
 * also tries L from a thread on another CPU, notices it. Returns false
 * when it does not apply.
 */
static bool accept_kernel(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags,
			  int *res)
{
	int ret, err;

	if (!(fdf_get(fd) & FD_KLOCAL) || !ours_fast())
		return false;
	ret = real_accept4(fd, addr, len, flags);
	if (ret >= 0) {
		if (__atomic_load_n(&klocal_empty[fd], __ATOMIC_RELAXED))
			__atomic_store_n(&klocal_empty[fd], 0, __ATOMIC_RELAXED);
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		err = errno;
		if (!__atomic_load_n(&klocal_empty[fd], __ATOMIC_RELAXED) &&
		    cpus_has(__atomic_load_n(&klocal_cpus[fd], __ATOMIC_ACQUIRE), sched_getcpu())) {
			__atomic_store_n(&klocal_empty[fd], 1, __ATOMIC_RELAXED);
			errno = err;
			*res = ret;
			return true;
		}
		__atomic_store_n(&klocal_empty[fd], 0, __ATOMIC_RELAXED);
		if (accept_local(fd, addr, len, flags, res))
			return true;
		errno = err;
	}
	*res = ret;
	return true;
}

/*
 * accept() and accept4() on fd: true with *res set when fd is an enabled
 * listener and the library answered; a non-listener costs one flag test.
 */
static bool accept_ours(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags, int *res)
{
	if (!(fdf_get(fd) & (FD_KLOCAL | FD_LISTENER)))
		return false;
	if (accept_kernel(fd, addr, len, flags, res))
		return true;
	return (fdf_get(fd) & FD_LISTENER) && accept_local(fd, addr, len, flags, res);
}

/* -- setup --------------------------------------------------------------------- */

static bool env_on(const char *name)
{
	const char *v = getenv(name);

	return v && *v && strcmp(v, "0");
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

static void atfork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&lock);
}

/*
 * The child keeps the enabled listeners (the sockets are shared) but not
 * the parent's local listeners: they serve the parent's CPU. They are
 * closed without EPOLL_CTL_DEL, which on an epoll set inherited from the
 * parent would remove the parent's registration. Other threads are gone,
 * so busy counts mean nothing any more.
 */
static void atfork_child(void)
{
	struct local *loc, *next;
	struct lsn *rec;
	unsigned int i;

	/* The forking thread took the lock in atfork_prepare(); it lives on here. */
	pthread_mutex_unlock(&lock);
	owner = getpid();
	fork_guard_set();
	reported = 0;
	for (rec = lsns; rec; rec = rec->next) {
		for (i = 0; i < rec->nregs; i++)
			fdf_clear(rec->regs[i].epfd, FD_EPOLL);
		rec->nregs = 0;
		fdf_clear(rec->fd, FD_KLOCAL);
		for (loc = rec->locs; loc; loc = next) {
			next = loc->next;
			local_free(loc);
		}
		rec->locs = NULL;
		rec->state = LS_NONE;
		rec->accept_tried = false;
		memset(&rec->announced, 0, sizeof(rec->announced));
		memset(&rec->refused, 0, sizeof(rec->refused));
	}
	for (loc = dead_locals; loc; loc = next) {
		next = loc->next;
		local_free(loc);
	}
	dead_locals = NULL;
}

/*
 * Receive Flow Deliver: with the module, each thread asks the kernel once,
 * at its first connect() or bind(port 0), for CPU-encoded ports for all of
 * its sockets (TCP_FASTSOCKET_RFD_TASK), which the threads and children it
 * creates afterwards inherit. Not in the constructor: a server that only
 * accepts (nginx) never asks, so the kernel never steers its packets.
 */
static void rfd_setup(void)
{
	const char *v = getenv("FSOCKET_RFD");

	if ((v && !strcmp(v, "0")) || access(FSOCKET_PROC, R_OK))
		conf.rfd = FSOCKET_RFD_OFF;
	else
		conf.rfd = FSOCKET_RFD_TASK;
}

/* This thread has asked for TCP_FASTSOCKET_RFD_TASK (or been refused). */
static __thread bool rfd_thread_asked;

/* A module without TCP_FASTSOCKET_RFD_TASK: fall back to the per-socket option. */
static void rfd_ask_task(void)
{
	int one = 1, s;

	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;	/* EMFILE and the like: ask again next time */
	rfd_thread_asked = true;
	if (setsockopt(s, SOL_TCP, TCP_FASTSOCKET_RFD_TASK, &one, sizeof(one))) {
		if (errno == ENOPROTOOPT) {
			__atomic_store_n(&conf.rfd, FSOCKET_RFD_SOCKET, __ATOMIC_RELAXED);
			report(R_RFD, "libfsocket: no TCP_FASTSOCKET_RFD_TASK in this module; "
			       "setting TCP_FASTSOCKET_RFD on each connect()\n");
		} else {
			report(R_RFD, "libfsocket: TCP_FASTSOCKET_RFD_TASK: %s\n", strerror(errno));
		}
	}
	real_close(s);
}

#define RESOLVE(name) (real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name))

static void fsocket_setup(void)
{
	cpu_set_t cpus[AFFINITY_SIZE / sizeof(cpu_set_t)];
	size_t size;
	const char *v;

	RESOLVE(listen);
	RESOLVE(accept);
	RESOLVE(accept4);
	RESOLVE(epoll_ctl);
	RESOLVE(close);
	RESOLVE(dup2);
	RESOLVE(dup3);
	RESOLVE(close_range);
	RESOLVE(closefrom);
	RESOLVE(connect);
	RESOLVE(bind);

	conf.verbose = env_on("FSOCKET_VERBOSE");
	conf.pin = env_on("FSOCKET_PIN");
	if (env_on("FSOCKET_DISABLE")) {
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
	rfd_setup();
	if (allowed_cpus(cpus, &size) == 1) {
		/* Every connection is local already: locality would only add work. */
		if (conf.verbose)
			say("libfsocket: this process may run on one CPU only; listen sockets pass through\n");
		conf.mode = FSOCKET_MODE_OFF;
		return;
	}
	if (access(FSOCKET_PROC, R_OK)) {
		conf.mode = FSOCKET_MODE_STOCK;
		v = getenv("FSOCKET_PORTABLE");
		if (v && !strcmp(v, "0")) {
			say("libfsocket: fastsocket module not loaded (%s missing); passing sockets through\n",
			    FSOCKET_PROC);
			return;
		}
		say("libfsocket: fastsocket module not loaded (%s missing); portable mode: "
		    "per-CPU SO_REUSEPORT listeners\n", FSOCKET_PROC);
	} else if (conf.verbose) {
		say("libfsocket: fastsocket module found\n");
	}
	owner = getpid();
	if (!real_accept4 || !real_epoll_ctl || !real_close ||
	    pthread_atfork(atfork_prepare, atfork_parent, atfork_child)) {
		conf.mode = FSOCKET_MODE_STOCK;
		if (conf.verbose)
			say("libfsocket: cannot track sockets in this process; passing sockets through\n");
		return;
	}
	fork_guard_init();
	conf.mode = access(FSOCKET_PROC, R_OK) ? FSOCKET_MODE_PORTABLE : FSOCKET_MODE_KERNEL;
}

static void fsocket_setup_once(void)
{
	fsocket_setup();
	__atomic_store_n(&setup_done, 1, __ATOMIC_RELEASE);
}

/*
 * Every wrapper starts here: it may run before our constructor. Once set
 * up, a load instead of a call into pthread_once() on every socket call.
 */
static inline void fsocket_ready(void)
{
	if (__builtin_expect(!__atomic_load_n(&setup_done, __ATOMIC_ACQUIRE), 0))
		pthread_once(&setup_once, fsocket_setup_once);
}

/*
 * The common case of the hottest wrappers, tested before anything else so
 * that it compiles to a few loads and a tail jump into libc, with no stack
 * frame: set up, the real function found, and fd carries none of @bits.
 * Everything else goes the slow way, which repeats the tests in order.
 * @real is read before setup_done (it is an argument): a pointer read
 * before setup finished is NULL, which only sends the call the slow way.
 */
static inline bool fast_pass(const void *real, int fd, unsigned int bits)
{
	return __builtin_expect(__atomic_load_n(&setup_done, __ATOMIC_ACQUIRE) && real &&
				!(fdf_get(fd) & bits), 1);
}

#define SLOW_PATH __attribute__((noinline, cold))

__attribute__((constructor)) static void fsocket_init(void)
{
	fsocket_ready();
}

/* -- listen ---------------------------------------------------------------------- */

/* A TCP listener of AF_INET or AF_INET6 on a port FSOCKET_PORTS wants? */
static bool listener_wanted(int fd, int *family)
{
	struct sockaddr_storage ss;
	socklen_t len, olen;
	int type, proto, port;
	unsigned int i;

	olen = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) || type != SOCK_STREAM)
		return false;
	olen = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &olen) || proto != IPPROTO_TCP)
		return false;
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return false;
	if (ss.ss_family == AF_INET)
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		return false;
	*family = ss.ss_family;
	if (!conf.nports)
		return true;
	for (i = 0; i < conf.nports; i++)
		if (conf.ports[i] == port)
			return true;
	return false;
}

static void track_listener(int fd, int backlog)
{
	struct lsn *rec;
	int one = 1;
	int family, cancel;

	if (!listener_wanted(fd, &family))
		return;
	if (conf.verbose)
		say("libfsocket: listen fd %d is a candidate for acceleration\n", fd);
	if (fd >= FSOCKET_MAX_FDS)
		return;
	tables_lock(&cancel);
	if (!ours())
		goto out;
	/*
	 * Also when fd is already tracked (listen() again for a new backlog, as
	 * on an nginx reload): enabling is idempotent, and this re-enables G
	 * after the module was reloaded, for the workers forked from now on.
	 */
	if (conf.mode == FSOCKET_MODE_KERNEL &&
	    setsockopt(fd, SOL_TCP, TCP_FASTSOCKET_LISTEN, &one, sizeof(one))) {
		report(R_LISTEN, "libfsocket: listen fd %d: TCP_FASTSOCKET_LISTEN: %s; passing through\n",
		       fd, strerror(errno));
		goto out;
	}
	rec = lsn_find(fd);
	if (rec) {
		rec->backlog = backlog;
		goto out;
	}
	rec = calloc(1, sizeof(*rec));
	if (!rec)
		goto out;	/* enabled but without locals: G behaves as before */
	rec->fd = fd;
	rec->family = family;
	rec->backlog = backlog;
	rec->state = LS_NONE;
	rec->next = lsns;
	lsns = rec;
	fdf_set(fd, FD_LISTENER);
	report(R_ALWAYS, "libfsocket: listen fd %d: per-CPU local listeners enabled\n", fd);
out:
	tables_unlock(cancel);
}

/* -- the intercepted functions ----------------------------------------------------- */

EXPORT int listen(int fd, int backlog)
{
	int ret, saved;

	fsocket_ready();
	if (!real_listen) {
		errno = ENOSYS;
		return -1;
	}
	if (conf.mode == FSOCKET_MODE_PORTABLE)
		portable_prepare(fd);
	ret = real_listen(fd, backlog);
	if (ret)
		return ret;
	saved = errno;
	if (tracking())
		track_listener(fd, backlog);
	errno = saved;
	return ret;
}

static SLOW_PATH int accept_slow(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len)
{
	int ret;

	fsocket_ready();
	if (!real_accept) {
		errno = ENOSYS;
		return -1;
	}
	if (accept_ours(fd, addr, len, 0, &ret))
		return ret;
	return real_accept(fd, addr, len);
}

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len)
{
	if (fast_pass(real_accept, fd, FD_KLOCAL | FD_LISTENER))
		return real_accept(fd, addr, len);
	return accept_slow(fd, addr, len);
}

static SLOW_PATH int accept4_slow(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags)
{
	int ret;

	fsocket_ready();
	if (!real_accept4) {
		errno = ENOSYS;
		return -1;
	}
	if (accept_ours(fd, addr, len, flags, &ret))
		return ret;
	return real_accept4(fd, addr, len, flags);
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *restrict len, int flags)
{
	if (fast_pass(real_accept4, fd, FD_KLOCAL | FD_LISTENER))
		return real_accept4(fd, addr, len, flags);
	return accept4_slow(fd, addr, len, flags);
}

static SLOW_PATH int epoll_ctl_slow(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct lsn *rec;
	int ret, saved, cancel;

	fsocket_ready();
	if (!real_epoll_ctl) {
		errno = ENOSYS;
		return -1;
	}
	if (!(fdf_get(fd) & FD_LISTENER))
		return real_epoll_ctl(epfd, op, fd, ev);

	tables_lock(&cancel);
	rec = ours() ? lsn_find(fd) : NULL;
	ret = real_epoll_ctl(epfd, op, fd, ev);
	saved = errno;
	if (rec && !ret)
		lsn_epoll(rec, epfd, op, ev);
	tables_unlock(cancel);
	errno = saved;
	return ret;
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	if (fast_pass(real_epoll_ctl, fd, FD_LISTENER))
		return real_epoll_ctl(epfd, op, fd, ev);
	return epoll_ctl_slow(epfd, op, fd, ev);
}

static SLOW_PATH int close_slow(int fd)
{
	fsocket_ready();
	if (!real_close) {
		errno = ENOSYS;
		return -1;
	}
	if (fdf_get(fd))
		fd_closing(fd);
	return real_close(fd);
}

EXPORT int close(int fd)
{
	if (fast_pass(real_close, fd, ~0U))
		return real_close(fd);
	return close_slow(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
	fsocket_ready();
	if (!real_dup2) {
		errno = ENOSYS;
		return -1;
	}
	/* Only when dup2() will really replace newfd. */
	if (oldfd != newfd && fdf_get(newfd) && fd_open(oldfd))
		fd_closing(newfd);
	return real_dup2(oldfd, newfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	fsocket_ready();
	if (!real_dup3) {
		errno = ENOSYS;
		return -1;
	}
	if (oldfd != newfd && !(flags & ~O_CLOEXEC) && fdf_get(newfd) && fd_open(oldfd))
		fd_closing(newfd);
	return real_dup3(oldfd, newfd, flags);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	fsocket_ready();
	if (!real_close_range) {
		errno = ENOSYS;
		return -1;
	}
	if (!((unsigned int)flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) &&
	    !((unsigned int)flags & CLOSE_RANGE_CLOEXEC) && first <= last)
		fd_range_closing(first, last);
	return real_close_range(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
	fsocket_ready();
	if (!real_closefrom) {
		errno = ENOSYS;
		return;
	}
	fd_range_closing(lowfd < 0 ? 0 : (unsigned int)lowfd, ~0U);
	real_closefrom(lowfd);
}

/* -- active connections (Receive Flow Deliver) ------------------------------------ */

/* Before connect() or bind(port 0) of an Internet socket: ask for a CPU-encoded port. */
static void rfd_prepare(int fd, const struct sockaddr *sa, socklen_t len, bool binding)
{
	enum fsocket_rfd rfd = __atomic_load_n(&conf.rfd, __ATOMIC_RELAXED);
	int one = 1, saved;
	in_port_t port;

	if (rfd == FSOCKET_RFD_OFF || (rfd == FSOCKET_RFD_TASK && rfd_thread_asked) || !sa ||
	    len < sizeof(sa_family_t))
		return;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
		port = ((const struct sockaddr_in *)sa)->sin_port;
	else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
		port = ((const struct sockaddr_in6 *)sa)->sin6_port;
	else
		return;
	if (binding && port)
		return;
	saved = errno;
	if (rfd == FSOCKET_RFD_TASK) {
		rfd_ask_task();
		rfd = __atomic_load_n(&conf.rfd, __ATOMIC_RELAXED);
		if (rfd == FSOCKET_RFD_TASK) {
			errno = saved;
			return;
		}
	}
	/* Fails harmlessly on UDP sockets and on a module without RFD. */
	if (setsockopt(fd, SOL_TCP, TCP_FASTSOCKET_RFD, &one, sizeof(one)) && errno != ENOPROTOOPT)
		report(R_RFD, "libfsocket: fd %d: TCP_FASTSOCKET_RFD: %s\n", fd, strerror(errno));
	errno = saved;
}

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
	fsocket_ready();
	if (!real_connect) {
		errno = ENOSYS;
		return -1;
	}
	rfd_prepare(fd, addr.__sockaddr__, len, false);
	return real_connect(fd, addr, len);
}

EXPORT int bind(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
	fsocket_ready();
	if (!real_bind) {
		errno = ENOSYS;
		return -1;
	}
	rfd_prepare(fd, addr.__sockaddr__, len, true);
	return real_bind(fd, addr, len);
}
