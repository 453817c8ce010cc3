// Package inkernel answers ARP from a tc eBPF program, attached with tcx to
// the ingress of each selected interface, instead of a userspace socket.
// It takes what the packet datapath takes, responder.Config and
// responder.Settings, gives back the same responder.Stats, and sends the
// same replies: the kernel's proxy_arp reply, byte for byte, to the requests
// policy.Decide answers in gateway mode. Route-mode policies stay on the
// packet datapath (ErrRouteMode).
//
// Load loads the program and its maps, once per process; Program.Attach
// attaches it to one interface and returns an Iface, which has the methods
// the daemon uses on a *responder.Responder. Supported says whether this
// process and kernel can run it. Loading needs CAP_BPF and CAP_NET_ADMIN;
// serving needs none.
//
// # The program
//
// bpf/pxresp.c is one tc program (SEC "tc", program type sched_cls),
// attached with tcx to the ingress of every selected interface, first in
// its tcx chain, so that the ARP requests pxresp answers are answered
// whatever other tcx programs (a CNI's) do with the rest. For each frame
// it:
//
//   - passes on (TCX_NEXT) anything on an interface it has no entry for,
//     a frame tagged with a VLAN ID (the kernel has moved the tag to
//     skb->vlan_tci before tc runs; such a frame is for a VLAN device), and
//     anything that is not ARP. A priority tag (VLAN ID 0), and one more
//     inside it, are looked through, as the kernel's ARP does;
//   - passes on uncounted an ARP frame sent to another host's unicast MAC,
//     malformed or not: the packet datapath's socket filter drops those
//     (PACKET_OTHERHOST) before pxresp reads them;
//   - counts as malformed, and passes on, ARP that is not a well-formed
//     Ethernet/IPv4 request or reply; passes replies on uncounted;
//   - counts every request, and decides as policy.Decide does in gateway
//     mode (delivery, probe, bad sender, gratuitous, bad target, not a
//     target, own address); an ignored request is counted under its
//     verdict and passed on;
//   - takes a token from the interface's rate limit, and drops (TC_ACT_SHOT)
//     and counts a request over it; in a dry run counts the would-be reply
//     and passes the request on (to the kernel's proxy_arp, if it is on);
//   - rewrites the request in place into the kernel's proxy_arp reply
//     (arpframe.EncodeReply: untagged, 42 bytes, any padding trimmed with
//     bpf_skb_change_tail, tags popped), counts it, and redirects it out
//     the same interface (bpf_redirect).
//
// The shared tables hold both datapaths to the kernel and to each other:
// testdata/arp-frames.txt through BPF_PROG_TEST_RUN, FuzzProgram against a
// model of the packet datapath, and on real veths the tables of
// internal/test/conformance (the kernel's replies, byte for byte) and
// internal/test/hostile.
//
// Where the datapaths differ:
//
//   - a frame tagged with a VLAN ID and sent to the --mac override is
//     answered by the packet datapath (the tag is gone before its filter
//     runs) and not by the program, nor by the kernel;
//   - a request inside three or more priority tags is answered by the
//     kernel and the packet datapath, not by the program;
//   - SendErrors counts the replies the program could not write (a failed
//     helper; the frame is dropped); a redirect that fails after the
//     program returns (the interface went down) shows in the interface's
//     TX drop counter, not in Stats. The counters of the packet datapath's
//     socket and storm shedding (ReadErrors, KernelQueued, KernelDrops,
//     Storms, StormsEnded, Shed) stay 0: a storm costs the program a map
//     lookup and a spin lock per request, in the sender's softirq, and no
//     userspace CPU.
//
// # The maps
//
// All are keyed by ifindex, so that one loaded program serves every
// interface of one network namespace, the namespace of the first Attach,
// up to 16384 interfaces and 65536 prefixes of each kind (entries are
// allocated as they are added):
//
//   - ifaces (hash): the interface's MAC, the MAC replies carry (the
//     override, or the interface's), the dry-run flag. Its entry is what
//     makes the program act on the interface: written last on Attach,
//     deleted first on Close;
//   - targets (LPM trie, key {32+bits, ifindex, address}): the gateways as
//     /32s and the target prefixes;
//   - onlink (LPM trie, same key): the prefixes the host routes out the
//     interface (responder.Settings.OnLink);
//   - limits (hash): the rate limit's GCRA state, the algorithm, interval
//     and burst of internal/ratelimit, under a bpf_spin_lock; no entry
//     means no limit. It holds a second bucket for one storming sender, as
//     the packet datapath sheds one: the first sender the interface's
//     bucket refuses is limited under a bucket of its own from then on,
//     and the interface's bucket is full again for the other senders, who
//     are never starved by it. The slot passes to the next refused sender
//     once its holder has not been refused for 100 ms (the packet
//     datapath's storm window). While a sender holds it, the interface may
//     send up to twice the limit, as on the packet datapath;
//   - stats (per-CPU hash): the counters, summed by Iface.Stats; the
//     verdicts are numbered as policy.Verdict (a test holds the C enum to
//     the Go one).
//
// Apply rewrites the prefixes and the ifaces entry in place, new entries
// before stale ones are deleted; the link and the rate limit's state stay.
// Close detaches the link, reads the final counters and deletes every
// entry of the interface.
//
// # Route mode
//
// Route mode, and proxy entries, stay on the packet datapath: Attach and
// Apply refuse them with ErrRouteMode, and the daemon serves a route-mode
// rule's interfaces with AF_PACKET. internal/route answers as the kernel's
// proxy_arp does, from the input route of a packet from the requester
// arriving on the interface: with that interface as the lookup's input
// interface, through the policy routing rules, with the sysctls and local
// routes the kernel consults. bpf_fib_lookup does not reproduce that: it
// looks up a forwarding route, not the kernel's classification of the
// input route (local, back out the same interface, unreachable), so the
// two would disagree on the very cases route mode exists for.
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
// A tcx link goes with its interface into another network namespace, and
// the program runs there until Close: Bound reports false as soon as the
// interface has left the Program's namespace, and the daemon closes it as
// it closes a packet datapath's socket.
//
// # Capabilities
//
// Load (and Supported, which loads the program) needs CAP_BPF and
// CAP_NET_ADMIN in the effective set, and nothing else: CAP_BPF to create
// the maps, CAP_NET_ADMIN (with CAP_BPF) to load a sched_cls program. The
// program needs no CAP_PERFMON: it reads the frame with bpf_skb_load_bytes
// and writes the reply with bpf_skb_store_bytes rather than through packet
// pointers, and indexes its counters with a verdict the verifier sees as a
// bounded unknown, the two kinds of pointer arithmetic the verifier
// refuses without CAP_PERFMON (its Spectre mitigations).
//
// Serving needs no capability at all: attaching the loaded program to a
// new interface (a tcx link made from the program's file descriptor),
// Apply, Stats, Bound and Close work with an empty effective set, because
// the kernel checks the capabilities when the program and the maps are
// created and serving uses their file descriptors. TestLoadCapabilities and
// TestServingCapabilities hold both on the kernel they run on. A daemon
// that serves every interface in the kernel can drop every capability once
// Load has returned; it keeps CAP_NET_RAW only for interfaces the packet
// datapath serves (route mode).
package inkernel
