// Package responder answers ARP requests on one interface, the per-interface
// hot path of pxresp. A Responder serves one AF_PACKET socket (Listen,
// Serve, Close), answers what its policy says with the reply the kernel's
// proxy_arp would send, byte for byte, and takes new settings in place with
// Apply. Its hot path does not allocate and takes no lock.
//
// # Frames and filter
//
// The socket is bound to one interface, with a BPF filter that lets through
// only inbound ARP requests (and frames claiming to be ARP that are
// malformed, so they can be counted). For each request the Responder asks
// the policy for a verdict and, on policy.Reply, sends the reply the
// kernel's proxy_arp would send (internal/arpframe): unicast to the
// requester, from the interface's current MAC, or the override MAC. Apply
// changes the settings (the MACs, the policy, the on-link prefixes) without
// reopening the socket; a new override MAC swaps the filter in place, in
// two steps, so that no request to the new MAC is lost.
//
// # Route mode
//
// A route-mode policy (policy.NewRoute) decides from the host's route to the
// target, which it asks Config.Router for only when the request's answer
// hangs on it (policy.Decide): probes, gratuitous requests and targets
// outside the policy cost no lookup.
//
// # Rate limit, dry run, latency
//
// Replies are rate limited per interface (Config.RateLimit, with
// internal/ratelimit), so that a pod flooding requests gets a bounded
// number of answers and costs a bounded amount of work to send them; a
// request over the limit is counted, not answered.
//
// With Config.DryRun a Responder decides, rate limits and counts as usual,
// and logs at info level each reply it would send, but sends nothing
// (Stats.DryRun). With Config.Latency it asks the kernel for each request's
// receive timestamp (SO_TIMESTAMPNS) and, for each reply sent, observes the
// seconds from that timestamp to the return of the send.
//
// # Hot path
//
// The hot path does not allocate, takes no locks and logs only at debug
// level (a dry run logs its would-be replies at info level, which
// allocates). A bad frame is dropped and counted; it never ends Serve.
package responder
