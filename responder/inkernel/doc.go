package inkernel

// # The program
//
// bpf/pxresp.c is one tc program (SEC "tc", program type sched_cls),
// attached with tcx to the ingress of every selected interface, first in
// its tcx chain. For each frame it:
//
//   - passes on (TCX_NEXT) anything on an interface it has no entry for,
//     a frame tagged with a VLAN ID (the kernel has moved the tag to
//     skb->vlan_tci before tc runs; such a frame is for a VLAN device),
//     and anything that is not ARP. A priority tag (VLAN ID 0), and one
//     more inside it, are looked through, as the kernel's ARP does;
//   - counts as malformed, and passes on, ARP that is not a well-formed
//     Ethernet/IPv4 request or reply; passes replies on uncounted;
//   - passes on uncounted a request sent to another host's unicast MAC
//     (the packet datapath's socket filter drops those before pxresp
//     reads them), and counts every other request;
//   - decides as policy.Decide does in gateway mode (delivery, probe,
//     bad sender, gratuitous, bad target, not a target, own address), and
//     counts an ignored request under its verdict and passes it on;
//   - takes a token from the interface's rate limit, and drops (TC_ACT_SHOT)
//     and counts a request over it; in a dry run counts the would-be reply
//     and passes the request on;
//   - rewrites the request in place into the kernel's proxy_arp reply
//     (arpframe.EncodeReply: untagged, 42 bytes, any padding trimmed) and
//     redirects it out the same interface (bpf_redirect).
//
// # The maps
//
// All are keyed by ifindex, so that one loaded program serves every
// interface of the network namespace it attaches in:
//
//   - ifaces (hash): the interface's MAC, the MAC replies carry (the
//     override, or the interface's), the dry-run flag. Its entry is what
//     makes the program act on the interface: written last on Attach,
//     deleted first on Close;
//   - targets (LPM trie, key {32+bits, ifindex, address}): the gateways as
//     /32s and the target prefixes;
//   - onlink (LPM trie, same key): the prefixes the host routes out the
//     interface (responder.Settings.OnLink);
//   - limits (hash): the rate limit's GCRA state, the algorithm and the
//     interval and burst of internal/ratelimit, under a bpf_spin_lock; no
//     entry means no limit;
//   - stats (per-CPU hash): the counters, summed by Iface.Stats; the
//     verdicts are numbered as policy.Verdict.
//
// Apply rewrites the prefixes and the ifaces entry in place (new entries
// before stale ones are deleted); the link and the rate limit's state stay.
//
// # Route mode
//
// Route mode, and proxy entries, stay on the packet datapath: Attach and
// Apply refuse them with ErrRouteMode, and the daemon serves a route-mode
// rule's interfaces with AF_PACKET. internal/route answers as the kernel's
// proxy_arp does, from the route a packet from the requester arriving on
// the interface would take: with the interface as the input interface of
// the lookup, through the policy routing rules, and with the sysctls and
// local routes the kernel consults. bpf_fib_lookup does not reproduce
// that: it looks up a route for forwarding, not the kernel's
// input-route classification (local, back out the same interface,
// unreachable), so the two would disagree on the very cases route mode
// exists for.
//
// # Why tcx only
//
// A tcx link belongs to the file descriptors of the process that made it:
// when pxresp exits, even by kill -9, the kernel detaches the program and
// nothing answers any more, as with the packet datapath's sockets. A
// clsact qdisc with a cls_bpf filter would outlive a killed process and go
// on answering. So on kernels without tcx (before Linux 6.6) Supported
// says so, and the daemon's auto mode uses the packet datapath.
//
// # Capabilities
//
// Loading (Load, Supported) needs CAP_BPF and CAP_NET_ADMIN (sched_cls
// programs are networking programs: CAP_BPF alone does not load them).
