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

typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb_t cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
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
};

#define CHUNK 65536

struct chunk {
	struct chunk *next;
	size_t used;
	struct block b[CHUNK];
};

static struct chunk *chunks;
static char *prefix;
static unsigned int seq;
static int failed;

static struct block *new_block(void)
{
	struct chunk *c = chunks;

	if (!c || c->used == CHUNK) {
		c = calloc(1, sizeof(*c));
		if (!c) {
			qemu_plugin_outs("insncount: out of memory\n");
			abort();
		}
		c->next = chunks;
		chunks = c;
	}
	return &c->b[c->used++];
}

static void snapshot(unsigned int vcpu, void *udata)
{
	char path[4096];
	struct chunk *c;
	FILE *f;
	size_t i;

	(void)vcpu;
	(void)udata;
	snprintf(path, sizeof(path), "%s.%u", prefix, seq++);
	f = fopen(path, "wb");
	if (!f && !failed) {
		failed = 1;
		qemu_plugin_outs("insncount: cannot write a snapshot\n");
	}
	for (c = chunks; c; c = c->next) {
		for (i = 0; i < c->used; i++) {
			struct block *b = &c->b[i];
			uint64_t rec[2];

			if (!b->execs)
				continue;
			rec[0] = b->vaddr;
			rec[1] = b->execs * b->insns;
			b->execs = 0;
			if (f && fwrite(rec, sizeof(rec), 1, f) != 1 && !failed) {
				failed = 1;
				qemu_plugin_outs("insncount: short write of a snapshot\n");
			}
		}
	}
	if (f)
		fclose(f);
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
		else {
			fprintf(stderr, "insncount: unknown argument '%s' (want out=PREFIX)\n", argv[i]);
			return -1;
		}
	}
	if (!prefix) {
		fprintf(stderr, "insncount: missing out=PREFIX\n");
		return -1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
