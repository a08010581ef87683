// SPDX-License-Identifier: GPL-2.0
/*
 * Slick: framework for in-kernel network services (module glue).
 *
 * The default workqueue is per-CPU rather than unbound: a socket callback
 * queues its work on the CPU that ran the softirq, so the handler finds
 * the socket's data in that CPU's cache, as nvmet-tcp does. Handlers
 * bound their work per call and requeue themselves, so one busy socket
 * does not hog a CPU's worker pool.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/workqueue.h>

#include "slick_internal.h"

struct workqueue_struct *slick_wq;

static int __init slick_init(void)
{
	slick_wq = alloc_workqueue("slick", 0, 0);
	if (!slick_wq)
		return -ENOMEM;
	return 0;
}

static void __exit slick_exit(void)
{
	destroy_workqueue(slick_wq);
}

module_init(slick_init);
module_exit(slick_exit);

MODULE_DESCRIPTION("Slick: framework for in-kernel network services");
MODULE_LICENSE("GPL");
