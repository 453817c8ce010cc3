// Package policy decides whether an ARP request deserves a proxy reply:
// Decide returns a Verdict for a Request, Reply or the reason to stay
// silent. It is pure (no I/O, no logging, no clocks: a route lookup is
// injected as a Router), Decide never allocates, and a Policy is immutable
// and safe for concurrent use. The package also holds the one check of each
// value pxresp answers with (CheckUnicast, CheckTarget, CheckMAC).
//
// # Modes
//
// A Policy works in one of two modes. In GatewayMode (New) it answers a
// fixed set of addresses: the gateways and target prefixes. In RouteMode
// (NewRoute) it answers what the kernel's proxy_arp would: any target the
// host routes out an interface other than the one the request came in on.
// Decide asks the Router the caller hands it for that route, once, and only
// when the answer hangs on it: probes, gratuitous requests, requests for
// another host and targets outside the policy cost no lookup. This is how
// the policy stays pure while route mode depends on the host's routes.
//
// # Verdicts
//
// The built-in refusals mirror what the Linux kernel's proxy_arp never
// answers (its arp_process), whatever targets are configured: frames for
// another host, address-conflict probes, gratuitous requests, bad senders
// and bad targets, and targets on the requester's own side of the link. The
// same Verdict value serves tests, logs and metrics: its String is the
// metrics' verdict label.
package policy
