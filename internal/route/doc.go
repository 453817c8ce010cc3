// Package route classifies the host's route to an ARP request's target, as
// the kernel's proxy_arp sees it, for pxresp's route mode; with a cache in
// front, so that a steady stream of requests costs no netlink round trip.
//
// # How a route is classified
//
// For a request from sender S arriving on interface I (ifindex) for target
// T, the kernel's arp_process (net/ipv4/arp.c) calls
// ip_route_input_noref(skb, T, S, 0, I): an input route lookup, as for a
// packet from S to T arriving on I, with I's forwarding and rp_filter
// settings and the policy routing rules that match on iif and from. It then
// answers, with proxy_arp on, when the result is RTN_UNICAST and leaves
// through a device other than I (arp_fwd_proxy), and answers its own
// addresses (RTN_LOCAL) itself, proxy_arp or not.
//
// Cache.Route asks the kernel the same question over netlink: an
// RTM_GETROUTE with RTA_IIF = I, RTA_SRC = S and RTA_DST = T (what
// `ip route get T from S iif I` sends), which runs the same
// ip_route_input_rcu, and classifies the answer:
//
//	RTN_LOCAL                            policy.RouteLocal
//	RTN_UNICAST, output device != I      policy.RouteElsewhere (proxy_arp answers)
//	RTN_UNICAST, output device == I      policy.RouteBack
//	any other type (broadcast, ...)      policy.RouteNone
//	ENETUNREACH (no route), EACCES       policy.RouteNone
//	(prohibit)
//	EHOSTUNREACH, EINVAL, EXDEV          policy.RouteNone, or the fallback below
//	anything else (ENODEV: I is gone)    policy.RouteUnknown, counted in
//	                                     Stats.Errors, not cached
//
// For RTN_UNICAST back out I, the kernel's input lookup of an ARP packet
// fails outright (__mkroute_input refuses it for non-IP packets unless
// proxy_arp_pvlan is set), and netlink's, made for an IP packet, returns
// the route: both mean "no reply", which is what RouteBack means to the
// policy.
//
// # The fallback: deliberate differences from the kernel
//
// The kernel's input lookup also fails when forwarding is off on I
// (EHOSTUNREACH) or when rp_filter rejects S on I (EINVAL since Linux
// 6.13, EXDEV before; rp_filter 1, or 2 on an interface without an IPv4
// address such as a Calico veth, needs a route back to S through I, which
// a pod's veth has only while Calico's /32 route to the pod exists). The
// kernel's proxy_arp is then silent. pxresp exists to work where those
// sysctls cannot be set, so in exactly these cases Route falls back to an
// output route lookup of T alone (`ip route get T`) and classifies it by
// type and device as above.
//
// The same errors also come from routes and addresses that no sysctl makes
// answerable: an unreachable route (EHOSTUNREACH), a blackhole route, a
// martian sender or target (0.0.0.0/8) or a sender that is one of the
// host's own addresses (EINVAL). So on those errors Route first reads the
// interface's forwarding and rp_filter (max of all and the interface,
// RTM_GETNETCONF), whether it has an IPv4 address, and the route back to
// S, and falls back only when the error is explained by the sysctls:
//
//   - 0.0.0.0/8 as sender or target, or a sender whose own route is
//     RTN_LOCAL: RouteNone, whatever the sysctls;
//   - forwarding on and EHOSTUNREACH: an unreachable route, RouteNone;
//   - forwarding on and EINVAL or EXDEV: the fallback only if rp_filter is
//     on and would reject S (strict: no unicast route back to S through I;
//     loose: no unicast route back to S at all, or I has no IPv4 address
//     and the route back is not through I), RouteNone otherwise;
//   - forwarding off: the fallback.
//
// In the fallback, the output lookup of an unreachable, blackhole or
// prohibit route fails too and gives RouteNone. A fallback that ends in a
// unicast route (RouteElsewhere or RouteBack) is counted in
// Stats.Fallbacks.
//
// So, in route mode, pxresp answers where the kernel would not:
//
//   - forwarding is off on the request's interface (net.ipv4.conf.I.forwarding=0);
//   - rp_filter (1 or 2) rejects the sender on that interface.
//
// The fallback's output lookup knows neither I nor S: policy routing rules
// that match on iif or from are not applied to it (a rule sending this
// sender's traffic to a blackhole does not stop the fallback).
//
// Other differences, not deliberate but known:
//
//   - Multipath routes: for an ARP packet the kernel hashes bytes of the ARP
//     header as if they were an IP header to pick a nexthop; netlink hashes
//     S and T. When the nexthops of one route leave through different
//     devices, one of them I, the two can pick differently. The route back
//     to S for rp_filter is judged from one nexthop.
//   - The cache follows route, address, link, rule, nexthop and netconf
//     (forwarding, rp_filter, proxy_arp...) changes. Sysctls that the
//     kernel does not announce over netlink (accept_local, route_localnet,
//     proxy_arp_pvlan, ...) take effect on the next invalidation.
//   - A change is seen when its netlink notification has been read, a few
//     microseconds after the kernel made it. A request answered from the
//     cache in between gets the previous answer.
//
// # The cache
//
// Answers are cached by (I, S, T), negative ones (RouteNone) too. A hit
// takes a read lock and a map lookup, no netlink round trip and no
// allocation. The Cache is a consumer of the namespace's netmon.Monitor:
// the whole cache is invalidated (emptied, and its generation counter
// advanced) on every notification the Monitor delivers, of the groups
// above: a route, address, link (a link going down flushes its routes
// without route notifications), rule, nexthop or netconf change. A lookup
// that raced with an invalidation (it began before it and ends after it) is
// returned to its caller but not stored. When the Monitor reports that
// notifications were lost, the cache empties itself and stops storing
// answers until the Monitor's resync (every request is then a rate limited
// lookup), then resumes. Until the Monitor's first listing nothing is
// stored either.
//
// The cache holds at most Config.MaxEntries answers. A new answer when it
// is full evicts one entry chosen at random (Go map iteration order).
//
// Misses are limited to Config.MissRate netlink lookups per second, for
// the whole Cache (a token bucket with a burst of a tenth of a second's
// worth). A miss beyond it gets policy.RouteUnknown, counted in
// Stats.Limited, and is not answered: a pod asking for random targets
// cannot make pxresp do unbounded netlink work. Misses are serialised (one
// netlink request at a time); a miss first re-checks the cache, so that
// requests for the same key queued behind one lookup cost one lookup.
package route
