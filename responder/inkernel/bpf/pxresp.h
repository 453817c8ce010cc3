/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The types pxresp.c shares with the Go side (bpf2go generates their Go
 * declarations). Every map is keyed by the interface's ifindex.
 */
#ifndef PXRESP_H
#define PXRESP_H

/* The verdicts, numbered as policy.Verdict; a Go test holds them equal. */
enum verdict {
	VERDICT_REPLY = 0,
	VERDICT_NOT_FOR_US,
	VERDICT_PROBE,
	VERDICT_GRATUITOUS,
	VERDICT_OWN_ADDRESS,
	VERDICT_BAD_SENDER,
	VERDICT_BAD_TARGET,
	VERDICT_NOT_TARGET,
	VERDICT_NO_ROUTE,
	VERDICT_LOCAL_ADDRESS,
	VERDICT_UNKNOWN_ROUTE,
	NUM_VERDICTS,
};

/* Per-CPU counters of one interface (responder.Stats' in-kernel part). */
struct counters {
	__u64 requests;
	__u64 replies;
	__u64 malformed;
	__u64 send_errors;
	__u64 rate_limited;
	__u64 dry_run;
	__u64 ignored[NUM_VERDICTS];
};

/* iface.flags */
enum iface_flag {
	IFACE_DRY_RUN = 1, /* count would-be replies, send nothing */
};

/* What one interface answers with: written by the Go side. */
struct iface {
	__u8 mac[6];    /* the interface's MAC */
	__u8 answer[6]; /* the MAC replies carry: the override, or mac */
	enum iface_flag flags;
};

/*
 * The interface's reply rate limit: a GCRA token bucket, the algorithm of
 * internal/ratelimit. tat is the time (bpf_ktime_get_ns) at which the
 * bucket is full again; a token moves it one interval later and is refused
 * when that would put it more than depth ahead of now. interval 0: no limit.
 *
 * One sender at a time, the storming one, is limited under a bucket of its
 * own (shed_tat, same interval and depth), so that it cannot starve the
 * interface's other senders, as the packet datapath sheds a stormer: the
 * first sender the interface's bucket refuses takes the slot when it is
 * free, or when its holder has not been refused for STORM_WINDOW_NS.
 * shed_refused is when the holder was last refused (taking the slot counts);
 * 0: the slot is free.
 */
struct limit {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tat;
	__u64 interval;
	__u64 depth;
	__u64 shed_tat;
	__u64 shed_refused;
	__u8 shed_mac[6];
	__u8 pad2[2];
};

/* How long the slot's holder keeps it without being refused: the packet
 * datapath's storm window. */
#define STORM_WINDOW_NS (100ULL * 1000 * 1000)

/*
 * A key of the LPM tries (targets and on-link prefixes): prefixlen counts
 * the ifindex's 32 bits plus the prefix's bits, so that a lookup matches
 * one interface's prefixes only.
 */
struct addr_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u8 addr[4]; /* network byte order */
};

#endif
