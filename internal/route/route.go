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

	"github.com/vishvananda/netns"

	"github.com/pxresp/pxresp/internal/netmon"
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
	// Monitor is the namespace's netlink monitor: the Cache looks routes
	// up in its namespace and is invalidated by its notifications. The
	// caller runs it. nil means a Monitor of the Cache's own, on
	// Namespace, run until Close.
	Monitor *netmon.Monitor
	// Namespace is the network namespace of the Cache's own Monitor (set
	// it only without Monitor). nil means the namespace of the thread that
	// calls New (normally the process's). The caller may close its handle
	// at any time.
	Namespace *netns.NsHandle
	// Logger receives debug records for invalidations and failed lookups,
	// and is the own Monitor's logger. nil means slog.Default().
	Logger *slog.Logger
	// MaxEntries bounds the number of cached answers; 0 means
	// DefaultMaxEntries.
	MaxEntries int
	// MissRate is the number of netlink lookups (cache misses) allowed per
	// second; 0 means DefaultMissRate. Misses beyond it get
	// policy.RouteUnknown and are counted in Stats.Limited.
	MissRate int
	// RecvBufSize is the receive buffer, in bytes, of the own Monitor's
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
	// netlink notification, and once per loss and per resync of the
	// Monitor.
	Invalidations uint64
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

	unregister func()          // from the Monitor
	delivered  chan struct{}   // closed at the Monitor's first call
	once       sync.Once       // closes delivered
	own        *netmon.Monitor // the Cache's own Monitor, if any
	stopOwn    context.CancelFunc
	ownDone    chan error // the own Monitor's Run result

	closeOnce sync.Once

	hits, misses, limited, errs, fallbacks, invalidations atomic.Uint64
}

// New opens a netlink socket for lookups in the Monitor's namespace and
// registers the Cache with the Monitor (one of its own if cfg.Monitor is
// nil: New then waits for its first listing). Close releases them.
func New(cfg Config) (*Cache, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mon := cfg.Monitor
	if mon == nil {
		var err error
		mon, err = netmon.New(netmon.Config{Namespace: cfg.Namespace, Logger: log, RecvBufSize: cfg.RecvBufSize})
		if err != nil {
			return nil, fmt.Errorf("route cache: %w", err)
		}
	}
	lk, err := openLookup(mon)
	if err != nil {
		if cfg.Monitor == nil {
			mon.Close()
		}
		return nil, err
	}
	c := newCache(cfg, lk, mon.Register)
	if cfg.Monitor != nil {
		return c, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.own, c.stopOwn, c.ownDone = mon, cancel, make(chan error, 1)
	go func() { c.ownDone <- mon.Run(ctx) }()
	select {
	case <-c.delivered:
		return c, nil
	case err := <-c.ownDone:
		c.ownDone <- err // for Close
		c.Close()
		return nil, fmt.Errorf("route cache: %w", err)
	}
}

func checkConfig(cfg *Config) error {
	switch {
	case cfg.MaxEntries < 0:
		return fmt.Errorf("route cache: MaxEntries %d: want 0 (default %d) or more", cfg.MaxEntries, DefaultMaxEntries)
	case cfg.MissRate < 0:
		return fmt.Errorf("route cache: MissRate %d: want 0 (default %d) or more", cfg.MissRate, DefaultMissRate)
	case cfg.RecvBufSize < 0:
		return fmt.Errorf("route cache: RecvBufSize %d: want 0 (system default) or more", cfg.RecvBufSize)
	case cfg.Monitor != nil && (cfg.Namespace != nil || cfg.RecvBufSize != 0):
		return errors.New("route cache: Namespace and RecvBufSize are for a Cache without Monitor")
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

// newCache returns a Cache over lk, registered with register (a
// Monitor's Register). cfg must have passed checkConfig.
func newCache(cfg Config, lk lookuper, register func(netmon.Consumer) func()) *Cache {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{
		log:       log,
		debug:     log.Enabled(context.Background(), slog.LevelDebug),
		max:       cfg.MaxEntries,
		m:         make(map[key]policy.RouteClass),
		lk:        lk,
		limit:     newMissLimiter(cfg.MissRate, nil),
		delivered: make(chan struct{}),
	}
	c.unregister = register(invalidator{c})
	return c
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
func (c *Cache) invalidate(live bool) { c.empty(&live) }

// empty is invalidate; a nil live leaves that unchanged.
func (c *Cache) empty(live *bool) {
	c.mu.Lock()
	c.gen++
	if live != nil {
		c.live = *live
	}
	if len(c.m) > 0 {
		// A new map rather than clear: clear costs the map's capacity,
		// and after a burst of misses that can be large.
		c.m = make(map[key]policy.RouteClass)
	}
	c.mu.Unlock()
	c.invalidations.Add(1)
}

// invalidator is the Cache as a netmon.Consumer.
type invalidator struct{ c *Cache }

// Resync: the Monitor (re)subscribed; answers may be stored from now on.
func (v invalidator) Resync(*netmon.Listing) {
	v.c.invalidate(true)
	v.c.once.Do(func() { close(v.c.delivered) })
}

// Change: something changed; answers from before may be wrong.
func (v invalidator) Change(m *netmon.Message) {
	v.c.empty(nil)
	if v.c.debug {
		v.c.log.Debug("netlink notification; route cache invalidated", "type", netmon.MsgType(m.Type))
	}
}

// Lost: changes may go unseen until the resync: store nothing meanwhile.
func (v invalidator) Lost(reason string) {
	v.c.invalidate(false)
	v.c.once.Do(func() { close(v.c.delivered) })
	if v.c.debug {
		v.c.log.Debug("route cache: notifications lost; storing no answers until the resync", "reason", reason)
	}
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
		Entries:       uint64(n),
	}
}

// Close unregisters the Cache from its Monitor (stopping and closing its
// own, if it has one) and closes the lookup socket. Route then returns
// policy.RouteUnknown. It is safe to call more than once.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.unregister()
		if c.own != nil {
			c.stopOwn()
			<-c.ownDone
			c.own.Close()
		}
		c.lookupMu.Lock()
		if c.lk != nil {
			c.lk.close()
			c.lk = nil
		}
		c.lookupMu.Unlock()

		c.mu.Lock()
		c.closed = true
		c.m = make(map[key]policy.RouteClass)
		c.mu.Unlock()
	})
	return nil
}

// newMissLimiter returns the limiter of netlink lookups: rate per second,
// with a burst of a tenth of a second's worth (at least one), on the clock
// now (nil: the monotonic clock). It is used under lookupMu.
func newMissLimiter(rate int, now func() int64) ratelimit.Limiter {
	return ratelimit.New(rate, max(rate/10, 1), now)
}
