/* SPDX-License-Identifier: GPL-2.0 */
/* Slick: state shared by the parts of slick.ko. */
#ifndef _SLICK_INTERNAL_H
#define _SLICK_INTERNAL_H

#include <linux/workqueue.h>

/* Default workqueue of registrations that do not bring their own. */
extern struct workqueue_struct *slick_wq;

#endif /* _SLICK_INTERNAL_H */
