// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fastsocket: per-core TCP connection locality.
 *
 * This file holds the module's life cycle and its /proc/net/fastsocket
 * report. User space (libfsocket) looks for that file to decide whether
 * the kernel side is present.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>

#define FASTSOCKET_VERSION "0.1"

static int fastsocket_proc_show(struct seq_file *seq, void *v)
{
	seq_printf(seq, "fastsocket %s\n", FASTSOCKET_VERSION);
	seq_printf(seq, "cpus %u\n", num_online_cpus());
	return 0;
}

static int __init fastsocket_init(void)
{
	if (!proc_create_single("fastsocket", 0444, init_net.proc_net,
				fastsocket_proc_show))
		return -ENOMEM;
	pr_info("loaded (version %s)\n", FASTSOCKET_VERSION);
	return 0;
}

static void __exit fastsocket_exit(void)
{
	remove_proc_entry("fastsocket", init_net.proc_net);
	pr_info("unloaded\n");
}

module_init(fastsocket_init);
module_exit(fastsocket_exit);

MODULE_DESCRIPTION("Fastsocket: per-core TCP connection locality");
MODULE_LICENSE("GPL");
MODULE_VERSION(FASTSOCKET_VERSION);
