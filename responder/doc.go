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
// request over the limit is counted, not answered. A sender that storms is
// shed in the kernel (below).
//
// # Storms
//
// The limit bounds the replies a flooding sender gets, not what its flood
// costs: every frame would still pass the filter, be queued, woken up for,
// read and decided before the limit refuses it. So a Responder sheds a
// storm in the kernel. A sender (Ethernet source MAC) whose requests the
// limit refuses more often, within stormWindow, than the limit allows in
// it (and at least the burst) is storming: the socket's filter is swapped,
// in place, for one that drops that sender's frames first, before any other
// test, except a random one in N (SKF_AD_RANDOM modulo N), N chosen so
// that about a quarter more than the limit gets through. That sample is
// answered under a bucket of its own, so the stormer still gets its limit
// and the interface's other senders keep theirs (which is refilled when
// the shedding starts): while a sender is shed, the interface may send up
// to twice the limit. Every stormTick, the frames of the sample read since
// the last tick, times N, estimate the sender's rate: under half the limit,
// the filter is swapped back; otherwise N is adapted, when it is off by
// more than an eighth. The decision needs no frame: a timer runs only
// while a sender is shed. Start and end are logged once each (warning
// level) with the interface, the sender and the rate;
// Stats counts storms, an estimate of the frames shed (each frame of the
// sample stands for N-1 dropped; the kernel counts no frame its filter
// drops; the frames queued before the swap, which the kernel's count of
// queued frames tells, are not the sample), and the kernel's exact counts
// of frames queued for the socket and dropped because its queue was full
// (PACKET_STATISTICS).
//
// A sender that is never refused is never shed: at the default limit no
// well-behaved pod or LAN host comes close. Other senders on the storming
// interface, such as the other hosts of a shared segment in route mode, are
// not shed; one sender per interface is shed at a time, and a second
// stormer on the same interface meanwhile costs what it did before. A
// stormer that stops is answered again once the next tick has seen it
// stop: until then its requests are sampled too. A host that forges another
// host's source MAC on a shared segment can have that host's requests
// sampled; it could as well poison the segment's ARP caches.
//
// While a sender is shed, the Serve goroutine reads its socket in batches:
// once the queue is empty it waits shedPace before it reads again, rather
// than waking up for each frame of the sample. Requests on that interface
// wait up to shedPace longer meanwhile; none is lost. It measured about a
// quarter less CPU during a one-pod storm than reading each frame as it
// comes; each frame of the sample still wakes the runtime's netpoller.
//
// Each wake-up reads at most batch frames before the goroutine yields
// (runtime.Gosched), so that a socket whose queue never empties does not
// keep its thread while the other sockets' frames wait.
//
// What a storm still costs pxresp is wake-ups, not frames: its threads'
// context switches (the Go runtime's sysmon thread among them), which the
// other pods' requests cause as much as the sample, and which grow when
// the flood keeps the CPUs busy. A sample of one in a power of two (a mask
// instead of a modulo: between once and twice the limit through), or
// reading a shed socket only on a clock, measured the same CPU; the
// modulo is kept for its tighter sample. Raw syscalls (which do not wake
// sysmon) measured less, but a reply's write runs the CPU's network
// softirq while its thread keeps the runtime's P, and with several
// interfaces storming every other socket then waited. See
// docs/performance.md.
//
// Alternatives, measured with the storm section of make bench (see
// docs/performance.md): without shedding, pxresp spent most of a core on
// one flooding pod. Shedding the whole interface instead of one sender
// would cost the other hosts of a shared segment their answers. A filter
// that admits only what the limit allows cannot be built in classic BPF,
// which keeps no state between frames; a random sample needs none.
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
