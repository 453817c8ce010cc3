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
// allocation. The whole cache is invalidated (emptied, and its generation
// counter advanced) on every netlink notification of the groups above: a
// route, address, link (a link going down flushes its routes without
// route notifications), rule, nexthop or netconf change. A lookup that
// raced with an invalidation (it began before it and ends after it) is
// returned to its caller but not stored. When the notification socket
// overflows (ENOBUFS) or fails, the cache stops storing, subscribes again,
// invalidates, and resumes (Stats.Resyncs); if subscribing fails it
// retries with a backoff, and meanwhile every request is a (rate limited)
// lookup.
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

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/pxresp/pxresp/internal/ratelimit"
	"github.com/pxresp/pxresp/policy"
)

// Defaults for Config.
const (
	DefaultMaxEntries = 65536
	DefaultMissRate   = 10000
)

// Config configures a Cache.
type Config struct {
	// Namespace is the network namespace whose routes are looked up. nil
	// means the namespace of the thread that calls New (normally the
	// process's). The Cache keeps its own duplicate of the handle: the
	// caller may close its own at any time.
	Namespace *netns.NsHandle
	// Logger receives a warn record for each resync and debug records for
	// notifications and failed lookups. nil means slog.Default().
	Logger *slog.Logger
	// MaxEntries bounds the number of cached answers; 0 means
	// DefaultMaxEntries.
	MaxEntries int
	// MissRate is the number of netlink lookups (cache misses) allowed per
	// second; 0 means DefaultMissRate. Misses beyond it get
	// policy.RouteUnknown and are counted in Stats.Limited.
	MissRate int
	// RecvBufSize is the receive buffer, in bytes, of the notification
	// socket (SO_RCVBUF, capped by the kernel at net.core.rmem_max); 0
	// keeps the system default. An overflow costs only a resync.
	RecvBufSize int
}

// Stats are a Cache's counters since New.
type Stats struct {
	// Hits counts answers served from the cache.
	Hits uint64
	// Misses counts netlink lookups made (cache misses within MissRate).
	Misses uint64
	// Limited counts cache misses refused by MissRate (RouteUnknown).
	Limited uint64
	// Errors counts lookups that failed for another reason than the
	// route (the interface is gone, netlink failed) and returned
	// RouteUnknown, and calls with invalid arguments.
	Errors uint64
	// Fallbacks counts lookups whose input lookup the kernel refused
	// (forwarding off, rp_filter) and whose output-route fallback found a
	// unicast route (see the package documentation).
	Fallbacks uint64
	// Invalidations counts how often the cache was emptied: once per
	// batch of netlink notifications read, and per resync.
	Invalidations uint64
	// Resyncs counts losses of the notification subscription (ENOBUFS
	// or another receive error) after which the Cache subscribed again.
	Resyncs uint64
	// Entries is the number of answers cached now.
	Entries uint64
}

// key identifies a lookup: input interface, sender and target, the
// addresses as big-endian uint32. It hashes as 12 plain bytes.
type key struct {
	iif      int32
	src, dst uint32
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (k key) addrs() (src, dst netip.Addr) {
	f := func(u uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
	}
	return f(k.src), f(k.dst)
}

// routeInfo is what the classification needs from a netlink route answer.
type routeInfo struct {
	typ int // unix.RTN_*
	oif int // output ifindex
}

// lookuper does the netlink lookups; tests replace it.
type lookuper interface {
	// input is `ip route get dst from src iif iif`.
	input(dst, src netip.Addr, iif int) (routeInfo, error)
	// output is `ip route get dst`.
	output(dst netip.Addr) (routeInfo, error)
	// devconf reads iif's forwarding and rp_filter (netconf) and whether
	// it has an IPv4 address.
	devconf(iif int) (devConf, error)
	close()
}

// subscriber opens notification subscriptions; tests replace it.
type subscriber interface {
	subscribe() (eventSub, error)
	close()
}

// eventSub is one open subscription. read blocks until a batch of
// notifications arrives (n > 0), the subscription fails, or close is
// called (then it returns an error).
type eventSub interface {
	read(buf []byte) (int, error)
	close() error
}

// Cache classifies routes (see the package documentation). It is safe for
// concurrent use. Create it with New and release it with Close.
type Cache struct {
	log   *slog.Logger
	debug bool
	max   int

	mu     sync.RWMutex
	m      map[key]policy.RouteClass
	gen    uint64
	live   bool // notifications are followed: answers may be stored
	closed bool

	lookupMu sync.Mutex // serialises misses; guards lk and limit
	lk       lookuper   // nil once closed
	limit    ratelimit.Limiter

	subs     subscriber
	subMu    sync.Mutex
	sub      eventSub
	stopping bool
	stop     chan struct{}
	done     chan struct{}
	backoff  time.Duration // first resubscribe retry delay

	closeOnce sync.Once
	closeErr  error

	hits, misses, limited, errs, fallbacks, invalidations, resyncs atomic.Uint64
}

// New opens a netlink socket for lookups and one subscribed to route,
// address, link, rule, nexthop and IPv4 netconf notifications in the
// namespace, and starts the goroutine that follows them. Close releases
// them.
func New(cfg Config) (*Cache, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	ns, err := ownNamespace(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	subs := &nlSubscriber{ns: ns, rcvbuf: cfg.RecvBufSize}
	lk, err := openLookup(ns)
	if err != nil {
		subs.close()
		return nil, err
	}
	c, err := newCache(cfg, lk, subs)
	if err != nil {
		lk.close()
		subs.close()
		return nil, err
	}
	return c, nil
}

func checkConfig(cfg *Config) error {
	switch {
	case cfg.MaxEntries < 0:
		return fmt.Errorf("route cache: MaxEntries %d: want 0 (default %d) or more", cfg.MaxEntries, DefaultMaxEntries)
	case cfg.MissRate < 0:
		return fmt.Errorf("route cache: MissRate %d: want 0 (default %d) or more", cfg.MissRate, DefaultMissRate)
	case cfg.RecvBufSize < 0:
		return fmt.Errorf("route cache: RecvBufSize %d: want 0 (system default) or more", cfg.RecvBufSize)
	case cfg.Namespace != nil && !cfg.Namespace.IsOpen():
		return errors.New("route cache: the network namespace handle is closed")
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MissRate == 0 {
		cfg.MissRate = DefaultMissRate
	}
	return nil
}

// newCache subscribes with subs and starts following notifications. On
// error the caller closes lk and subs.
func newCache(cfg Config, lk lookuper, subs subscriber) (*Cache, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	sub, err := subs.subscribe()
	if err != nil {
		return nil, fmt.Errorf("route cache: %w", err)
	}
	c := &Cache{
		log:     log,
		debug:   log.Enabled(context.Background(), slog.LevelDebug),
		max:     cfg.MaxEntries,
		m:       make(map[key]policy.RouteClass),
		live:    true,
		lk:      lk,
		limit:   newMissLimiter(cfg.MissRate, nil),
		subs:    subs,
		sub:     sub,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		backoff: 10 * time.Millisecond,
	}
	go c.watch()
	return c, nil
}

// Route classifies the host's route for a packet from src arriving on
// ifindex iif to dst (see the package documentation). It implements
// policy.Router: a cache hit takes no lock but a read lock, makes no
// system call and does not allocate. src and dst must be IPv4 addresses;
// otherwise, and after Close, it returns policy.RouteUnknown.
func (c *Cache) Route(iif int, src, dst netip.Addr) policy.RouteClass {
	if iif <= 0 || iif > math.MaxInt32 || !src.Is4() || !dst.Is4() {
		c.errs.Add(1)
		return policy.RouteUnknown
	}
	k := key{iif: int32(iif), src: addr4(src), dst: addr4(dst)}
	c.mu.RLock()
	cl, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		c.hits.Add(1)
		return cl
	}
	return c.miss(k)
}

// miss looks k up, one miss at a time, within the rate limit, and stores
// the answer unless the cache was invalidated meanwhile.
func (c *Cache) miss(k key) policy.RouteClass {
	c.lookupMu.Lock()
	defer c.lookupMu.Unlock()
	c.mu.RLock()
	cl, ok := c.m[k]
	gen, closed := c.gen, c.closed
	c.mu.RUnlock()
	switch {
	case ok:
		// Looked up while this one waited.
		c.hits.Add(1)
		return cl
	case closed || c.lk == nil:
		return policy.RouteUnknown
	case !c.limit.Allow():
		c.limited.Add(1)
		return policy.RouteUnknown
	}
	c.misses.Add(1)
	src, dst := k.addrs()
	cl, fallback, err := classify(c.lk, int(k.iif), src, dst)
	if err != nil {
		c.errs.Add(1)
		if c.debug {
			c.log.Debug("route lookup failed", "iif", k.iif, "src", src, "dst", dst, "err", err)
		}
		return policy.RouteUnknown
	}
	if fallback {
		c.fallbacks.Add(1)
	}
	if c.debug {
		c.log.Debug("route looked up", "iif", k.iif, "src", src, "dst", dst, "class", cl, "fallback", fallback)
	}
	c.store(k, cl, gen)
	return cl
}

// store caches cl for k if the cache is still at generation gen and
// following notifications. A full cache first loses one entry at random.
func (c *Cache) store(k key, cl policy.RouteClass, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || !c.live || c.closed {
		return
	}
	if len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = cl
}

// invalidate empties the cache and advances its generation, so that
// lookups in flight are not stored. live says whether answers may be
// stored from now on.
func (c *Cache) invalidate(live bool) {
	c.mu.Lock()
	c.gen++
	c.live = live
	if len(c.m) > 0 {
		// A new map rather than clear: clear costs the map's capacity,
		// and after a burst of misses that can be large.
		c.m = make(map[key]policy.RouteClass)
	}
	c.mu.Unlock()
	c.invalidations.Add(1)
}

// watch follows notifications until Close: each batch read invalidates
// the cache; a failed read makes it resubscribe.
func (c *Cache) watch() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	for {
		c.subMu.Lock()
		sub := c.sub
		c.subMu.Unlock()
		n, err := sub.read(buf)
		if c.isStopping() {
			return
		}
		if err == nil {
			c.invalidate(true)
			if c.debug {
				c.log.Debug("netlink notification; route cache invalidated", "type", msgType(buf[:n]), "bytes", n)
			}
			continue
		}
		// Notifications may have been lost: stop storing until a new
		// subscription is open, then start from an empty cache.
		c.invalidate(false)
		r := c.resyncs.Add(1)
		c.log.Warn("route cache: netlink notifications lost; resubscribing", "err", err, "resyncs", r)
		c.subMu.Lock()
		c.sub = nil
		c.subMu.Unlock()
		_ = sub.close()
		if !c.resubscribe() {
			return
		}
		c.invalidate(true)
	}
}

// resubscribe opens a new subscription, retrying with a backoff (up to 1
// s) until it succeeds or Close is called (then it returns false).
func (c *Cache) resubscribe() bool {
	delay := c.backoff
	for {
		sub, err := c.subs.subscribe()
		if err == nil {
			c.subMu.Lock()
			if c.stopping {
				c.subMu.Unlock()
				_ = sub.close()
				return false
			}
			c.sub = sub
			c.subMu.Unlock()
			return true
		}
		c.log.Warn("route cache: subscribing to netlink notifications failed; retrying", "err", err, "delay", delay)
		select {
		case <-c.stop:
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

func (c *Cache) isStopping() bool {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	return c.stopping
}

// Stats returns a snapshot of the counters. It is safe to call at any time.
func (c *Cache) Stats() Stats {
	c.mu.RLock()
	n := len(c.m)
	c.mu.RUnlock()
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		Limited:       c.limited.Load(),
		Errors:        c.errs.Load(),
		Fallbacks:     c.fallbacks.Load(),
		Invalidations: c.invalidations.Load(),
		Resyncs:       c.resyncs.Load(),
		Entries:       uint64(n),
	}
}

// Close stops following notifications, waits for the goroutine to end and
// closes the netlink sockets. Route then returns policy.RouteUnknown. It is
// safe to call more than once; later calls return nil.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		var err error
		c.subMu.Lock()
		c.stopping = true
		close(c.stop)
		if c.sub != nil {
			err = c.sub.close()
		}
		c.subMu.Unlock()
		<-c.done

		c.lookupMu.Lock()
		if c.lk != nil {
			c.lk.close()
			c.lk = nil
		}
		c.lookupMu.Unlock()
		c.subs.close()

		c.mu.Lock()
		c.closed = true
		c.m = make(map[key]policy.RouteClass)
		c.mu.Unlock()
		c.closeErr = err
	})
	return c.closeErr
}

// newMissLimiter returns the limiter of netlink lookups: rate per second,
// with a burst of a tenth of a second's worth (at least one), on the clock
// now (nil: the monotonic clock). It is used under lookupMu.
func newMissLimiter(rate int, now func() int64) ratelimit.Limiter {
	return ratelimit.New(rate, max(rate/10, 1), now)
}
