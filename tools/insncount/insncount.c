// SPDX-License-Identifier: GPL-2.0
/*
 * insncount: a QEMU TCG plugin that counts the guest instructions executed
 * per translation block, on every vCPU, and writes the counts out each time
 * the guest executes the marker instruction (see marker.c).
 *
 *   qemu-system-x86_64 -icount shift=0,sleep=off -plugin insncount.so,out=PREFIX ...
 *
 * Snapshot k goes to PREFIX.k: little-endian (u64 block address, u64
 * instructions) records for every block executed since snapshot k-1, after
 * which the counts start again from zero. A block's instructions are charged
 * to its first address, which for kernel code names the function.
 *
 * The counters are plain adds emitted into the translated code. They are
 * exact when QEMU runs the vCPUs in turn on one thread, as it does under
 * icount (which excludes multi-threaded TCG): load it only with -icount.
 *
 * With lines=PREFIX2 the plugin also follows every load and store to kernel
 * memory (the upper half of the address space: sockets, listeners, epoll)
 * through a write-invalidate model of per-vCPU caches with no capacity
 * limit, and counts cache-line transfers: a store to a line that another
 * vCPU holds, or a load of a line that another vCPU has modified since this
 * one last held it. Those are the bounces a multi-core machine pays for and
 * icount's cacheless clock does not. Snapshot k then also writes PREFIX2.k:
 * (u64 block address, u64 transfers) records, the transfers charged to the
 * block whose instruction made the access. Lines are keyed by virtual
 * address, which for the kernel's direct map, vmalloc and image is one
 * mapping per line; the model sees as many vCPUs as fit in a 15-bit mask.
 *
 * QEMU ships no header for the plugin API in Debian, so the handful of
 * declarations this uses are spelled out below, as of plugin API version 1
 * (QEMU 5.2 to 8.1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;

typedef struct {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	_Bool system_emulation;
	union {
		struct {
			int smp_vcpus;
			int max_vcpus;
		} system;
	};
} qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
typedef uint32_t qemu_plugin_meminfo_t;

typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
			 void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, mem_cb_t cb,
				      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw,
				      void *userdata);
_Bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info);
unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))

EXPORT int qemu_plugin_version = 1;

/* nopl 0x4b4d5346(%rax,%rax,1): an 8-byte NOP whose displacement spells "FSMK" */
static const unsigned char marker[8] = { 0x0f, 0x1f, 0x84, 0x00, 0x46, 0x53, 0x4d, 0x4b };

struct block {
	uint64_t vaddr;
	uint64_t execs;		/* the translated code adds 1 at each entry */
	uint64_t insns;
	uint64_t xfers;		/* cache-line transfers its accesses caused (lines=) */
};

#define CHUNK 65536

struct chunk {
	struct chunk *next;
	size_t used;
	struct block b[CHUNK];
};

static struct chunk *chunks;
static char *prefix, *lines_prefix;
static unsigned int seq;
static int failed;

/*
 * The line model: a 16-bit state per 64-byte line, bits 0-14 the vCPUs
 * holding it, bit 15 set when the one holder has modified it. States live
 * in leaves of 2^LEAF_BITS lines, found by a small open-addressing table
 * keyed on the line number's high bits (kernel addresses are sparse).
 */
#define LINE_SHIFT 6
#define LEAF_BITS 18
#define LEAF_SLOTS 4096		/* 2^18 lines (16 MiB) per leaf: 256 leaves cover 4 GiB */
#define DIRTY 0x8000u
#define MAX_LINE_VCPUS 15
#define KERNEL_BASE 0xffff800000000000ull

struct leaf {
	uint64_t key;		/* line >> LEAF_BITS, plus one so that 0 is free */
	uint16_t *state;
};

static struct leaf leaves[LEAF_SLOTS];
static struct leaf *last_leaf;

static void *must_calloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p) {
		qemu_plugin_outs("insncount: out of memory\n");
		abort();
	}
	return p;
}

static uint16_t *line_state(uint64_t line)
{
	uint64_t key = (line >> LEAF_BITS) + 1;
	size_t i, n;

	if (last_leaf && last_leaf->key == key)
		return &last_leaf->state[line & ((1u << LEAF_BITS) - 1)];
	i = (size_t)(key * 0x9e3779b97f4a7c15ull >> 52) % LEAF_SLOTS;
	for (n = 0; n < LEAF_SLOTS; n++, i = (i + 1) % LEAF_SLOTS) {
		if (leaves[i].key == key)
			break;
		if (!leaves[i].key) {
			leaves[i].key = key;
			leaves[i].state = must_calloc(1u << LEAF_BITS, sizeof(uint16_t));
			break;
		}
	}
	if (n == LEAF_SLOTS) {
		qemu_plugin_outs("insncount: the line table is full\n");
		abort();
	}
	last_leaf = &leaves[i];
	return &last_leaf->state[line & ((1u << LEAF_BITS) - 1)];
}

static void line_access(struct block *b, uint16_t me, _Bool store, uint64_t line)
{
	uint16_t *s = line_state(line);

	if (store) {
		if (*s & ~(DIRTY | me))
			b->xfers++;	/* others held it: invalidated, or fetched if dirty */
		*s = me | DIRTY;
	} else if (!(*s & me)) {
		if (*s & DIRTY)
			b->xfers++;	/* modified in another vCPU's cache */
		*s = (*s & ~DIRTY) | me;
	}
}

static void mem_access(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
	uint64_t first = vaddr >> LINE_SHIFT;
	uint64_t last = (vaddr + (1u << qemu_plugin_mem_size_shift(info)) - 1) >> LINE_SHIFT;
	_Bool store = qemu_plugin_mem_is_store(info);

	if (vaddr < KERNEL_BASE || vcpu >= MAX_LINE_VCPUS)
		return;
	line_access(udata, 1u << vcpu, store, first);
	if (last != first)	/* an access across two lines touches both */
		line_access(udata, 1u << vcpu, store, last);
}

static struct block *new_block(void)
{
	struct chunk *c = chunks;

	if (!c || c->used == CHUNK) {
		c = must_calloc(1, sizeof(*c));
		c->next = chunks;
		chunks = c;
	}
	return &c->b[c->used++];
}

static FILE *open_snapshot(const char *pfx, unsigned int k)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s.%u", pfx, k);
	f = fopen(path, "wb");
	if (!f && !failed) {
		failed = 1;
		qemu_plugin_outs("insncount: cannot write a snapshot\n");
	}
	return f;
}

static void put_record(FILE *f, uint64_t addr, uint64_t n)
{
	uint64_t rec[2] = { addr, n };

	if (f && fwrite(rec, sizeof(rec), 1, f) != 1 && !failed) {
		failed = 1;
		qemu_plugin_outs("insncount: short write of a snapshot\n");
	}
}

static void snapshot(unsigned int vcpu, void *udata)
{
	FILE *f, *lf = NULL;
	struct chunk *c;
	size_t i;

	(void)vcpu;
	(void)udata;
	f = open_snapshot(prefix, seq);
	if (lines_prefix)
		lf = open_snapshot(lines_prefix, seq);
	seq++;
	for (c = chunks; c; c = c->next) {
		for (i = 0; i < c->used; i++) {
			struct block *b = &c->b[i];

			/* a block's own marker resets execs before its later accesses */
			if (b->execs)
				put_record(f, b->vaddr, b->execs * b->insns);
			if (b->xfers)
				put_record(lf, b->vaddr, b->xfers);
			b->execs = 0;
			b->xfers = 0;
		}
	}
	if (f)
		fclose(f);
	if (lf)
		fclose(lf);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	struct block *b = new_block();
	size_t n = qemu_plugin_tb_n_insns(tb);
	size_t i;

	(void)id;
	b->vaddr = qemu_plugin_tb_vaddr(tb);
	b->insns = n;
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
	for (i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);

		if (lines_prefix)
			qemu_plugin_register_vcpu_mem_cb(insn, mem_access, QEMU_PLUGIN_CB_NO_REGS,
							 QEMU_PLUGIN_MEM_RW, b);
		if (qemu_plugin_insn_size(insn) == sizeof(marker) &&
		    !memcmp(qemu_plugin_insn_data(insn), marker, sizeof(marker)))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, snapshot, QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	(void)id;
	(void)udata;
	if (failed)
		fprintf(stderr, "insncount: some snapshots under %s are missing or short\n", prefix);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	int i;

	if (!info->system_emulation) {
		fprintf(stderr, "insncount: needs system emulation\n");
		return -1;
	}
	for (i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "out=", 4) && argv[i][4])
			prefix = argv[i] + 4;
		else if (!strncmp(argv[i], "lines=", 6) && argv[i][6])
			lines_prefix = argv[i] + 6;
		else {
			fprintf(stderr, "insncount: unknown argument '%s' (want out=PREFIX[,lines=PREFIX2])\n",
				argv[i]);
			return -1;
		}
	}
	if (!prefix) {
		fprintf(stderr, "insncount: missing out=PREFIX\n");
		return -1;
	}
	if (lines_prefix && info->system.max_vcpus > MAX_LINE_VCPUS) {
		fprintf(stderr, "insncount: lines= models at most %d vCPUs, this machine has %d\n",
			MAX_LINE_VCPUS, info->system.max_vcpus);
		return -1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
