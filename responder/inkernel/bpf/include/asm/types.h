/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * linux/types.h includes <asm/types.h>, which Debian installs under the
 * build machine's multiarch directory (/usr/include/x86_64-linux-gnu, ...).
 * Every Linux architecture's asm/types.h is asm-generic/types.h (int-ll64),
 * so this one is, and the BPF build reads no host-architecture header.
 */
#include <asm-generic/types.h>
