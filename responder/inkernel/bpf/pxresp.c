// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * pxresp's in-kernel ARP responder: a tc (tcx ingress) program on the host
 * side of each selected interface. It answers the ARP requests that
 * policy.Decide answers in gateway mode, rewriting the request in place into
 * the reply the kernel's proxy_arp sends and redirecting it out the same
 * interface; everything else goes on (TCX_NEXT) untouched, except requests
 * over the interface's rate limit, which are dropped.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "pxresp.h"

#ifndef TCX_NEXT
#define TCX_NEXT (-1) /* tcx: the next program decides (Linux 6.6 uapi) */
#endif

#define ETH_HLEN 14
#define ARP_LEN 42 /* an Ethernet/IPv4 ARP frame, unpadded */
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define VLAN_VID_MASK 0x0fff
#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2
#define ETH_P_IP 0x0800

#define MAX_IFACES 16384
#define MAX_PREFIXES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct iface);
	__uint(max_entries, MAX_IFACES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct limit);
	__uint(max_entries, MAX_IFACES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, struct counters);
	__uint(max_entries, MAX_IFACES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} stats SEC(".maps");

/* Gateways (as /32) and target prefixes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct addr_key);
	__type(value, __u8);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} targets SEC(".maps");

/* The prefixes the host routes out the interface: the requester's side. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct addr_key);
	__type(value, __u8);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} onlink SEC(".maps");

/* The Ethernet addresses, at the start of every frame. */
struct eth_addrs {
	__u8 dst[6];
	__u8 src[6];
};

/* An Ethernet/IPv4 ARP packet, after the EtherType. */
struct arp_pkt {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

/* The reply: an untagged Ethernet/IPv4 ARP frame. */
struct arp_frame {
	struct eth_addrs eth;
	__be16 proto;
	struct arp_pkt arp;
} __attribute__((packed));

_Static_assert(sizeof(struct arp_frame) == ARP_LEN, "arp_frame layout");

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

static __always_inline int mac_zero(const __u8 *a)
{
	return (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0;
}

static __always_inline int mac_broadcast(const __u8 *a)
{
	return (a[0] & a[1] & a[2] & a[3] & a[4] & a[5]) == 0xff;
}

/* policy's badTarget: 0.0.0.0, loopback, multicast or broadcast. */
static __always_inline int bad_addr(__u32 a /* host order */)
{
	return a == 0 || (a >> 24) == 127 || (a >> 28) == 0xe || a == 0xffffffff;
}

static __always_inline int in_trie(void *trie, __u32 ifindex, __be32 addr)
{
	struct addr_key k = { .prefixlen = 64, .ifindex = ifindex };

	__builtin_memcpy(k.addr, &addr, 4);
	return bpf_map_lookup_elem(trie, &k) != NULL;
}

/* take takes a token from the bucket whose full-again time is *tat. */
static __always_inline int take(__u64 *tat, __u64 now, __u64 interval, __u64 depth)
{
	__u64 t = *tat > now ? *tat : now;

	t += interval;
	if (t - now > depth)
		return 0;
	*tat = t;
	return 1;
}

/*
 * allow takes a token for a reply to sender sha from l, if there is one:
 * from the shed sender's own bucket for the shed sender, from the
 * interface's for every other. A sender the interface's bucket refuses
 * takes the shed slot if no other sender holds it (see struct limit); the
 * interface's bucket is then full again, for the others.
 */
static __always_inline int allow(struct limit *l, const __u8 *sha)
{
	__u64 now = bpf_ktime_get_ns();
	int ok;

	bpf_spin_lock(&l->lock);
	if (l->shed_refused != 0 && mac_eq(sha, l->shed_mac)) {
		ok = take(&l->shed_tat, now, l->interval, l->depth);
		if (!ok)
			l->shed_refused = now;
	} else {
		ok = take(&l->tat, now, l->interval, l->depth);
		if (!ok && (l->shed_refused == 0 || now - l->shed_refused > STORM_WINDOW_NS)) {
			__builtin_memcpy(l->shed_mac, sha, 6);
			l->shed_refused = now;
			l->shed_tat = now + l->depth; /* empty: it had its burst */
			l->tat = now;
		}
	}
	bpf_spin_unlock(&l->lock);
	return ok;
}

/*
 * decide is policy.Decide for a gateway-mode policy, on a request whose
 * delivery (broadcast, or unicast to mac or answer) was checked; bad_sha
 * says the sender MAC is zero or a group address. A global function: the
 * verifier checks it on its own, and its result is then an unknown scalar
 * on every path of the caller, as counting by verdict needs without
 * CAP_PERFMON (an index that is a different constant on different paths is
 * refused). Its BTF also carries enum verdict to bpf2go.
 */
__noinline enum verdict decide(__u32 ifindex, int bad_sha, __be32 spa, __be32 tpa)
{
	if (spa == 0)
		return VERDICT_PROBE;
	if (bad_sha || bad_addr(bpf_ntohl(spa)))
		return VERDICT_BAD_SENDER;
	if (spa == tpa)
		return VERDICT_GRATUITOUS;
	if (bad_addr(bpf_ntohl(tpa)))
		return VERDICT_BAD_TARGET;
	if (!in_trie(&targets, ifindex, tpa))
		return VERDICT_NOT_TARGET;
	if (in_trie(&onlink, ifindex, tpa))
		return VERDICT_OWN_ADDRESS;
	return VERDICT_REPLY;
}

/* The start of a frame: Ethernet header and, after a priority tag, one more tag. */
struct frame_head {
	struct eth_addrs eth;
	__be16 proto;
	__be16 inner_tci;   /* a second tag's TCI, */
	__be16 inner_proto; /* and the EtherType after it */
} __attribute__((packed));

/*
 * The program reads the frame with bpf_skb_load_bytes and writes the reply
 * with bpf_skb_store_bytes, never through packet pointers: arithmetic on a
 * packet pointer with a variable offset (the ARP header's, after an
 * optional tag) is refused by the verifier without CAP_PERFMON, and the
 * helpers also read a frame that is not linear.
 */
SEC("tc")
int pxresp(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface *ifc;
	struct counters *c;
	struct limit *lim;
	struct frame_head head;
	struct arp_pkt arp;
	struct arp_frame out;
	__u32 off = ETH_HLEN; /* where the ARP packet starts */
	__be16 proto;
	__be32 spa, tpa;
	enum verdict v;
	int for_us;

	/*
	 * Every frame of the interface comes here: all but ARP leave at once,
	 * on skb->protocol alone. The kernel has moved a VLAN tag out of the
	 * frame, into skb->vlan_tci, before tc runs. A frame tagged with a
	 * VLAN ID is for a VLAN device, and is never ARP for this interface; a
	 * priority tag (VLAN ID 0) is taken off after tc, and the frame inside
	 * is ordinary, as is one more priority tag inside it.
	 */
	if (skb->vlan_present) {
		if ((skb->vlan_tci & VLAN_VID_MASK) != 0)
			return TCX_NEXT;
		if (skb->protocol != bpf_htons(ETH_P_ARP) && skb->protocol != bpf_htons(ETH_P_8021Q) &&
		    skb->protocol != bpf_htons(ETH_P_8021AD))
			return TCX_NEXT;
	} else if (skb->protocol != bpf_htons(ETH_P_ARP)) {
		return TCX_NEXT;
	}

	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ifc)
		return TCX_NEXT;
	c = bpf_map_lookup_elem(&stats, &ifindex);
	if (!c)
		return TCX_NEXT;

	if (bpf_skb_load_bytes(skb, 0, &head, ETH_HLEN) < 0)
		return TCX_NEXT;
	proto = head.proto;
	if (skb->vlan_present && (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &head.inner_tci, 4) < 0)
			return TCX_NEXT;
		if ((bpf_ntohs(head.inner_tci) & VLAN_VID_MASK) != 0)
			return TCX_NEXT;
		proto = head.inner_proto;
		off += 4;
	}
	if (proto != bpf_htons(ETH_P_ARP))
		return TCX_NEXT;

	/*
	 * Delivery. A frame sent to another host's unicast MAC is not counted,
	 * malformed or not: the packet datapath's socket filter drops it
	 * (PACKET_OTHERHOST) before pxresp reads it. A request sent to a
	 * multicast MAC is counted, as not for us.
	 */
	for_us = mac_broadcast(head.eth.dst) || mac_eq(head.eth.dst, ifc->mac) || mac_eq(head.eth.dst, ifc->answer);
	if (!for_us && !(head.eth.dst[0] & 1))
		return TCX_NEXT;

	if (skb->len < off + sizeof(arp)) {
		c->malformed++;
		return TCX_NEXT;
	}
	if (bpf_skb_load_bytes(skb, off, &arp, sizeof(arp)) < 0)
		return TCX_NEXT;
	if (arp.htype != bpf_htons(ARPHRD_ETHER) || arp.ptype != bpf_htons(ETH_P_IP) || arp.hlen != 6 || arp.plen != 4) {
		c->malformed++;
		return TCX_NEXT;
	}
	if (arp.op == bpf_htons(ARPOP_REPLY))
		return TCX_NEXT;
	if (arp.op != bpf_htons(ARPOP_REQUEST)) {
		c->malformed++;
		return TCX_NEXT;
	}
	c->requests++;
	if (!for_us) {
		c->ignored[VERDICT_NOT_FOR_US]++;
		return TCX_NEXT;
	}
	__builtin_memcpy(&spa, arp.spa, 4);
	__builtin_memcpy(&tpa, arp.tpa, 4);
	v = decide(ifindex, (arp.sha[0] & 1) || mac_zero(arp.sha), spa, tpa);
	/* Keep the bounds check below, which the compiler knows true and the
	 * verifier needs. */
	asm volatile("" : "+r"(v));
	if (v != VERDICT_REPLY) {
		if (v < NUM_VERDICTS)
			c->ignored[v]++;
		return TCX_NEXT;
	}
	lim = bpf_map_lookup_elem(&limits, &ifindex);
	if (lim && !allow(lim, arp.sha)) {
		c->rate_limited++;
		return TC_ACT_SHOT;
	}
	if (ifc->flags & IFACE_DRY_RUN) {
		c->dry_run++;
		return TCX_NEXT;
	}

	/* The reply, as arpframe.EncodeReply builds it. */
	__builtin_memcpy(out.eth.dst, arp.sha, 6);
	__builtin_memcpy(out.eth.src, ifc->answer, 6);
	out.proto = bpf_htons(ETH_P_ARP);
	out.arp.htype = bpf_htons(ARPHRD_ETHER);
	out.arp.ptype = bpf_htons(ETH_P_IP);
	out.arp.hlen = 6;
	out.arp.plen = 4;
	out.arp.op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(out.arp.sha, ifc->answer, 6);
	__builtin_memcpy(out.arp.spa, &tpa, 4);
	__builtin_memcpy(out.arp.tha, arp.sha, 6);
	__builtin_memcpy(out.arp.tpa, &spa, 4);

	/*
	 * Untagged and unpadded, 42 bytes, as the kernel sends it. Popping the
	 * outer (offloaded) tag moves an inner one out of the frame into its
	 * place; the second pop drops that.
	 */
	if (skb->vlan_present && bpf_skb_vlan_pop(skb) < 0)
		goto send_error;
	if (skb->vlan_present && bpf_skb_vlan_pop(skb) < 0)
		goto send_error;
	if (skb->len != ARP_LEN && bpf_skb_change_tail(skb, ARP_LEN, 0) < 0)
		goto send_error;
	if (bpf_skb_store_bytes(skb, 0, &out, ARP_LEN, 0) < 0)
		goto send_error;
	c->replies++;
	return bpf_redirect(ifindex, 0);

send_error:
	c->send_errors++;
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
