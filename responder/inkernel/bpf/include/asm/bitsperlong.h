/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/* See types.h: the BPF target's asm/bitsperlong.h is the generic one. */
#include <asm-generic/bitsperlong.h>
