package route

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// Privileged tests: a Cache on the host namespace of the reference topology
// (internal/test/topo), with real routes, addresses, links and sysctls.
//
//	host: caliP0 (pod0 10.244.0.2/32), caliP1 (pod1 10.244.0.3/32),
//	      up0 198.18.0.1/24, default via 198.18.0.2 (the sink)
//	plus, added here: 10.50.0.0/24 via 198.18.0.2, 10.90.0.0/24 dev caliP0,
//	      blackhole 10.70.0.0/24, unreachable 10.71.0.0/24, prohibit 10.72.0.0/24

const tag = "pxrroute"

var (
	pod0IP   = netip.MustParseAddr("10.244.0.2")
	pod1IP   = netip.MustParseAddr("10.244.0.3")
	hostIP   = netip.MustParseAddr("198.18.0.1")
	sinkIP   = netip.MustParseAddr("198.18.0.2")
	gwIP     = netip.MustParseAddr("169.254.1.1")
	viaUp    = netip.MustParseAddr("10.50.0.7")
	backIP   = netip.MustParseAddr("10.90.0.5")
	bhIP     = netip.MustParseAddr("10.70.0.1")
	unreachI = netip.MustParseAddr("10.71.0.1")
	prohibIP = netip.MustParseAddr("10.72.0.1")
	bcastIP  = netip.MustParseAddr("198.18.0.255")
)

type node struct {
	tp         *topo.Topology
	pod0, pod1 int // host-side ifindexes
	up0        int
	mon        *netmon.Monitor // the host namespace's, for newCache
}

func newNode(t testing.TB) *node {
	t.Helper()
	if err := topo.CleanupStale(tag); err != nil {
		t.Logf("cleanup of stale namespaces: %v", err)
	}
	tp := topotest.New(t, 2, tag)
	n := &node{tp: tp}
	n.pod0 = ifindex(t, tp.Host, tp.Pods[0].HostIf)
	n.pod1 = ifindex(t, tp.Host, tp.Pods[1].HostIf)
	n.up0 = ifindex(t, tp.Host, "up0")
	n.ip(t, "route", "add", "10.50.0.0/24", "via", sinkIP.String(), "dev", "up0")
	n.ip(t, "route", "add", "10.90.0.0/24", "dev", tp.Pods[0].HostIf)
	n.ip(t, "route", "add", "blackhole", "10.70.0.0/24")
	n.ip(t, "route", "add", "unreachable", "10.71.0.0/24")
	n.ip(t, "route", "add", "prohibit", "10.72.0.0/24")
	n.mon = startMonitor(t, tp.Host, netmon.Config{Logger: testLogger(t)})
	return n
}

func ifindex(t testing.TB, ns *topo.NS, name string) int {
	t.Helper()
	var idx int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			idx = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatalf("ifindex of %s in %s: %v", name, ns.Name, err)
	}
	return idx
}

func (n *node) ip(t testing.TB, args ...string) {
	t.Helper()
	if err := n.tp.Host.IP(context.Background(), args...); err != nil {
		t.Fatal(err)
	}
}

func (n *node) sysctl(t testing.TB, key, value string) {
	t.Helper()
	if err := n.tp.Host.Sysctl(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
}

// newCache opens a Cache on the host namespace's Monitor, closed when t
// ends, and waits for the Monitor's listing.
func (n *node) newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	cfg.Monitor = n.mon
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	waitListed(t, c)
	return c
}

// startMonitor runs a Monitor on ns (the namespace of the calling thread
// if ns is nil) until t ends.
func startMonitor(t testing.TB, ns *topo.NS, cfg netmon.Config) *netmon.Monitor {
	t.Helper()
	if ns != nil {
		h, err := ns.Handle()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close() // the Monitor keeps its own duplicate
		cfg.Namespace = &h
	}
	m, err := netmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("monitor: %v", err)
		}
		m.Close()
	})
	return m
}

// waitListed waits (at most 5 s) until the Monitor has delivered c its
// listing: from then on, answers are stored.
func waitListed(t testing.TB, c *Cache) {
	t.Helper()
	select {
	case <-c.delivered:
	case <-time.After(5 * time.Second):
		t.Fatal("the Monitor did not list for the Cache within 5s")
	}
}

// kernelInput makes the kernel's input route lookup directly, bypassing the
// Cache, to show which path a case takes.
func (n *node) kernelInput(t *testing.T, iif int, src, dst netip.Addr) error {
	t.Helper()
	h, err := n.tp.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	_, err = nh.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{IifIndex: iif, SrcAddr: src.AsSlice()})
	return err
}

// cached asks until the answer is want and a second ask is a hit. A
// second ask that is not a hit is allowed only if the cache was
// invalidated in between (a notification of an earlier change arriving
// late); it is then retried, at most for 5 s.
func cached(t *testing.T, c *Cache, iif int, src, dst netip.Addr, want policy.RouteClass) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		inv := c.Stats().Invalidations
		if got := c.Route(iif, src, dst); got != want {
			t.Fatalf("Route(%d, %v, %v) = %v, want %v", iif, src, dst, got, want)
		}
		h := c.Stats().Hits
		if got := c.Route(iif, src, dst); got != want {
			t.Fatalf("Route(%d, %v, %v) again = %v, want %v", iif, src, dst, got, want)
		}
		s := c.Stats()
		if s.Hits == h+1 {
			return
		}
		if s.Invalidations == inv {
			t.Fatalf("Route(%d, %v, %v) asked again: not a hit, and no invalidation in between: %+v", iif, src, dst, s)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Route(%d, %v, %v): no hit within 5s: %+v", iif, src, dst, s)
		}
		time.Sleep(time.Millisecond)
	}
}

// becomes polls (bounded) until the Cache answers want: the change made
// just before must invalidate the cached answer.
func becomes(t *testing.T, c *Cache, iif int, src, dst netip.Addr, want policy.RouteClass) {
	t.Helper()
	var got policy.RouteClass
	waitFor(t, fmt.Sprintf("Route(%d, %v, %v) to become %v", iif, src, dst, want), func() bool {
		got = c.Route(iif, src, dst)
		return got == want
	})
}

func TestClasses(t *testing.T) {
	n := newNode(t)
	c := n.newCache(t, Config{})
	for _, tc := range []struct {
		name string
		iif  int
		src  netip.Addr
		dst  netip.Addr
		want policy.RouteClass
	}{
		{"another pod", n.pod0, pod0IP, pod1IP, policy.RouteElsewhere},
		{"another pod, asked from it", n.pod1, pod1IP, pod0IP, policy.RouteElsewhere},
		{"uplink neighbour", n.pod0, pod0IP, sinkIP, policy.RouteElsewhere},
		{"route via the uplink", n.pod0, pod0IP, viaUp, policy.RouteElsewhere},
		{"gateway, by the default route", n.pod0, pod0IP, gwIP, policy.RouteElsewhere},
		{"host address", n.pod0, pod0IP, hostIP, policy.RouteLocal},
		{"subnet broadcast", n.pod0, pod0IP, bcastIP, policy.RouteNone},
		{"route back out the interface", n.pod0, pod0IP, backIP, policy.RouteBack},
		{"same route, other interface", n.pod1, pod1IP, backIP, policy.RouteElsewhere},
		{"blackhole", n.pod0, pod0IP, bhIP, policy.RouteNone},
		{"unreachable", n.pod0, pod0IP, unreachI, policy.RouteNone},
		{"prohibit", n.pod0, pod0IP, prohibIP, policy.RouteNone},
	} {
		t.Run(tc.name, func(t *testing.T) { cached(t, c, tc.iif, tc.src, tc.dst, tc.want) })
	}
	// No route at all.
	n.ip(t, "route", "del", "default")
	becomes(t, c, n.pod0, pod0IP, gwIP, policy.RouteNone)
	cached(t, c, n.pod0, pod0IP, netip.MustParseAddr("10.99.0.1"), policy.RouteNone)
	if s := c.Stats(); s.Errors != 0 || s.Fallbacks != 0 || s.Limited != 0 {
		t.Errorf("stats %+v: want no errors, fallbacks or limited lookups", s)
	}
	// A deleted interface is an error, not an answer, and is not cached.
	e := c.Stats().Errors
	if got := c.Route(99999, pod0IP, pod1IP); got != policy.RouteUnknown || c.Stats().Errors != e+1 {
		t.Errorf("Route on a missing ifindex = %v (errors %d -> %d), want unknown and an error", got, e, c.Stats().Errors)
	}
}

func TestInvalidation(t *testing.T) {
	n := newNode(t)
	c := n.newCache(t, Config{})
	host := n.tp
	p0 := host.Pods[0].HostIf
	target := netip.MustParseAddr("10.93.0.1")

	t.Run("route added", func(t *testing.T) {
		cached(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere) // the default route
		n.ip(t, "route", "add", "10.93.0.0/24", "dev", p0)
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteBack)
	})
	t.Run("route changed", func(t *testing.T) {
		cached(t, c, n.pod0, pod0IP, target, policy.RouteBack)
		n.ip(t, "route", "replace", "blackhole", "10.93.0.0/24")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteNone)
		cached(t, c, n.pod0, pod0IP, target, policy.RouteNone)
		n.ip(t, "route", "replace", "10.93.0.0/24", "dev", p0)
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteBack)
	})
	t.Run("route deleted", func(t *testing.T) {
		cached(t, c, n.pod0, pod0IP, target, policy.RouteBack)
		n.ip(t, "route", "del", "10.93.0.0/24")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
	})
	t.Run("address added", func(t *testing.T) {
		cached(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
		n.ip(t, "addr", "add", target.String()+"/32", "dev", "lo")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteLocal)
		cached(t, c, n.pod0, pod0IP, target, policy.RouteLocal)
		n.ip(t, "addr", "del", target.String()+"/32", "dev", "lo")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
	})
	t.Run("rule added", func(t *testing.T) {
		cached(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
		n.ip(t, "route", "add", "blackhole", "default", "table", "100")
		n.ip(t, "rule", "add", "from", pod0IP.String(), "iif", p0, "lookup", "100", "priority", "100")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteNone)
		// The rule matches the sender on its interface only.
		cached(t, c, n.pod1, pod1IP, target, policy.RouteElsewhere)
		n.ip(t, "rule", "del", "priority", "100")
		becomes(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
	})
	t.Run("link down", func(t *testing.T) {
		// The kernel flushes up0's routes silently; the link event must
		// invalidate them.
		cached(t, c, n.pod0, pod0IP, gwIP, policy.RouteElsewhere)
		cached(t, c, n.pod0, pod0IP, sinkIP, policy.RouteElsewhere)
		n.ip(t, "link", "set", "up0", "down")
		becomes(t, c, n.pod0, pod0IP, gwIP, policy.RouteNone)
		becomes(t, c, n.pod0, pod0IP, sinkIP, policy.RouteNone)
		n.ip(t, "link", "set", "up0", "up")
		n.ip(t, "route", "add", "default", "via", sinkIP.String(), "dev", "up0")
		becomes(t, c, n.pod0, pod0IP, gwIP, policy.RouteElsewhere)
	})
	t.Run("forwarding sysctl", func(t *testing.T) {
		// forwarding=0 sends the lookup through the fallback: the
		// netconf notification must invalidate the cached answer.
		cached(t, c, n.pod0, pod0IP, pod1IP, policy.RouteElsewhere)
		f := c.Stats().Fallbacks
		n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "0")
		waitFor(t, "a fallback lookup", func() bool {
			if got := c.Route(n.pod0, pod0IP, pod1IP); got != policy.RouteElsewhere {
				t.Fatalf("Route = %v, want elsewhere", got)
			}
			return c.Stats().Fallbacks > f
		})
		n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "1")
	})
	if s := c.Stats(); s.Invalidations == 0 || s.Errors != 0 || n.mon.Resyncs() != 0 {
		t.Errorf("stats %+v, %d resyncs", s, n.mon.Resyncs())
	}
}

func TestFallback(t *testing.T) {
	n := newNode(t)
	p0 := n.tp.Pods[0].HostIf
	local2 := netip.MustParseAddr("10.80.0.1")
	n.ip(t, "addr", "add", local2.String()+"/32", "dev", "lo")
	cases := func(t *testing.T) {
		// A new Cache: no answer from before the change.
		c := n.newCache(t, Config{})
		for _, tc := range []struct {
			dst, src     netip.Addr
			want         policy.RouteClass
			wantFallback bool
		}{
			{pod1IP, pod0IP, policy.RouteElsewhere, true},
			{viaUp, pod0IP, policy.RouteElsewhere, true},
			{gwIP, pod0IP, policy.RouteElsewhere, true},
			{backIP, pod0IP, policy.RouteBack, true},
			{hostIP, pod0IP, policy.RouteLocal, false},
			{local2, pod0IP, policy.RouteLocal, false},
			{bhIP, pod0IP, policy.RouteNone, false},
			{unreachI, pod0IP, policy.RouteNone, false},
			{prohibIP, pod0IP, policy.RouteNone, false},
			// A sender that is a host address: refused whatever the
			// sysctls say.
			{pod1IP, hostIP, policy.RouteNone, false},
		} {
			f := c.Stats().Fallbacks
			cached(t, c, n.pod0, tc.src, tc.dst, tc.want)
			if got := c.Stats().Fallbacks > f; got != tc.wantFallback {
				t.Errorf("%v from %v: fallback counted %v, want %v", tc.dst, tc.src, got, tc.wantFallback)
			}
		}
		if s := c.Stats(); s.Errors != 0 {
			t.Errorf("stats %+v", s)
		}
	}

	t.Run("forwarding off", func(t *testing.T) {
		// A Cache from before the change: the netconf notification (the
		// only one this change makes) must invalidate its answer.
		c := n.newCache(t, Config{})
		cached(t, c, n.pod0, pod0IP, pod1IP, policy.RouteElsewhere)
		n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "0")
		if err := n.kernelInput(t, n.pod0, pod0IP, pod1IP); !errors.Is(err, unix.EHOSTUNREACH) {
			t.Fatalf("kernel input lookup with forwarding off: %v, want EHOSTUNREACH", err)
		}
		waitFor(t, "a fallback lookup", func() bool {
			if got := c.Route(n.pod0, pod0IP, pod1IP); got != policy.RouteElsewhere {
				t.Fatalf("Route = %v, want elsewhere", got)
			}
			return c.Stats().Fallbacks > 0
		})
		cases(t)
		n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "1")
	})
	t.Run("rp_filter", func(t *testing.T) {
		// Strict rp_filter and no route back to the pod: the state after
		// a link down/up flushed Calico's /32 route.
		n.sysctl(t, "net.ipv4.conf."+p0+".rp_filter", "1")
		n.ip(t, "route", "del", pod0IP.String()+"/32", "dev", p0)
		err := n.kernelInput(t, n.pod0, pod0IP, pod1IP)
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EXDEV) {
			t.Fatalf("kernel input lookup with rp_filter: %v, want EINVAL or EXDEV", err)
		}
		cases(t)
	})
}

func TestMissRateLimitsNetlinkLookups(t *testing.T) {
	n := newNode(t)
	c := n.newCache(t, Config{MissRate: 10}) // burst 1
	start := time.Now()
	const asks = 50
	for i := range asks {
		c.Route(n.pod0, pod0IP, netip.AddrFrom4([4]byte{10, 99, 0, byte(i)}))
	}
	elapsed := time.Since(start)
	s := c.Stats()
	limit := 1 + uint64(10*elapsed.Seconds()) + 1
	t.Logf("%d distinct targets in %v: %+v", asks, elapsed, s)
	if s.Misses+s.Limited != asks || s.Limited == 0 || s.Misses > limit {
		t.Errorf("stats %+v: want misses + limited = %d, misses at most %d", s, asks, limit)
	}
	// A limited request gets RouteUnknown, and hits are never limited.
	if got := c.Route(n.pod0, pod0IP, netip.MustParseAddr("10.99.1.1")); got != policy.RouteUnknown && c.Stats().Limited == s.Limited {
		t.Errorf("over the limit: %v", got)
	}
	h := c.Stats().Hits
	for range 100 {
		c.Route(n.pod0, pod0IP, netip.MustParseAddr("10.99.0.0"))
	}
	if c.Stats().Hits != h+100 {
		t.Error("hits were limited")
	}
}

func TestMaxEntriesBound(t *testing.T) {
	n := newNode(t)
	c := n.newCache(t, Config{MaxEntries: 4})
	for i := range 20 {
		if got := c.Route(n.pod0, pod0IP, netip.AddrFrom4([4]byte{10, 50, 0, byte(i)})); got != policy.RouteElsewhere {
			t.Fatalf("Route = %v", got)
		}
		if e := c.Stats().Entries; e > 4 {
			t.Fatalf("%d entries, want at most 4", e)
		}
	}
	if s := c.Stats(); s.Misses != 20 || s.Entries != 4 {
		t.Errorf("stats %+v: want 20 misses, 4 entries", s)
	}
}

// Responders on several interfaces ask at once while routes change
// elsewhere: run with -race; every answer must be right.
func TestConcurrentLookupsAndChanges(t *testing.T) {
	n := newNode(t)
	c := n.newCache(t, Config{})
	type ask struct {
		iif      int
		src, dst netip.Addr
		want     policy.RouteClass
	}
	asks := []ask{
		{n.pod0, pod0IP, pod1IP, policy.RouteElsewhere},
		{n.pod1, pod1IP, pod0IP, policy.RouteElsewhere},
		{n.pod0, pod0IP, backIP, policy.RouteBack},
		{n.pod0, pod0IP, hostIP, policy.RouteLocal},
		{n.pod1, pod1IP, bhIP, policy.RouteNone},
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := asks[(g+i)%len(asks)]
				if got := c.Route(a.iif, a.src, a.dst); got != a.want {
					bad.Add(1)
				}
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	for i := range 40 {
		// Changes that must not alter the answers above.
		n.ip(t, "route", "add", fmt.Sprintf("10.94.%d.0/24", i), "dev", "up0")
		n.ip(t, "route", "del", fmt.Sprintf("10.94.%d.0/24", i), "dev", "up0")
	}
	// Each change is one notification, one invalidation at least.
	waitFor(t, "80 invalidations", func() bool { return c.Stats().Invalidations >= 80 })
	close(stop)
	wg.Wait()
	s := c.Stats()
	t.Logf("stats %+v", s)
	if bad.Load() != 0 || s.Errors != 0 || s.Hits == 0 {
		t.Errorf("%d wrong answers; stats %+v", bad.Load(), s)
	}
}

// An overflowing notification socket makes the Monitor resync, and the
// Cache with it. The Monitor is made with a nil Namespace on a thread in the
// host namespace, so the resubscription, from another thread, must find its
// way back there.
func TestResyncAfterOverflow(t *testing.T) {
	n := newNode(t)
	var mon *netmon.Monitor
	if err := n.tp.Host.Do(func() error {
		mon = startMonitor(t, nil, netmon.Config{RecvBufSize: 1, Logger: testLogger(t)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Monitor: mon, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitListed(t, c)
	cached(t, c, n.pod0, pod0IP, pod1IP, policy.RouteElsewhere)
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "link add pxo%d type veth peer name pxp%d\n", i, i)
	}
	for i := range 20 {
		fmt.Fprintf(&b, "link del pxo%d\n", i)
	}
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for burst := 0; mon.Resyncs() == 0; burst++ {
		if burst == 10 {
			t.Fatalf("no resync after 10 bursts of links: %+v", c.Stats())
		}
		n.ip(t, "-batch", batch)
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("after the bursts: %+v, %d resyncs", c.Stats(), mon.Resyncs())
	// Answers are right, and notifications still invalidate.
	cached(t, c, n.pod0, pod0IP, pod1IP, policy.RouteElsewhere)
	target := netip.MustParseAddr("10.95.0.1")
	cached(t, c, n.pod0, pod0IP, target, policy.RouteElsewhere)
	n.ip(t, "route", "add", "10.95.0.0/24", "dev", n.tp.Pods[0].HostIf)
	becomes(t, c, n.pod0, pod0IP, target, policy.RouteBack)
}

func TestCloseReleasesEverything(t *testing.T) {
	n := newNode(t)
	h, err := n.tp.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	runtime.GC()
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	c, err := New(Config{Namespace: &h})
	if err != nil {
		t.Fatal(err)
	}
	cached(t, c, n.pod0, pod0IP, pod1IP, policy.RouteElsewhere)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	leakcheck.WaitGoroutines(t, gs)
	if got := leakcheck.FDs(t); got != fds {
		t.Errorf("%d fds after Close, %d before New", got, fds)
	}
	if got := c.Route(n.pod0, pod0IP, pod1IP); got != policy.RouteUnknown {
		t.Errorf("Route after Close = %v", got)
	}
}

func TestClosedNamespaceHandle(t *testing.T) {
	h := netns.None()
	if _, err := New(Config{Namespace: &h}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("New with a closed handle: %v", err)
	}
}

// The netconf and address reading the fallback decides from.
func TestDevconf(t *testing.T) {
	n := newNode(t)
	h, err := n.tp.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mon, err := netmon.New(netmon.Config{Namespace: &h})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	lk, err := openLookup(mon)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.close()
	check := func(iif int, want devConf) {
		t.Helper()
		got, err := lk.devconf(iif)
		if err != nil || got != want {
			t.Errorf("devconf(%d) = %+v, %v; want %+v", iif, got, err, want)
		}
	}
	check(n.pod0, devConf{forwarding: true})
	check(n.up0, devConf{forwarding: true, hasAddr: true})
	p0 := n.tp.Pods[0].HostIf
	n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "0")
	n.sysctl(t, "net.ipv4.conf."+p0+".rp_filter", "1")
	n.sysctl(t, "net.ipv4.conf.all.rp_filter", "2")
	check(n.pod0, devConf{forwarding: false, rpFilter: 2}) // max(all, own)
	check(n.up0, devConf{forwarding: true, rpFilter: 2, hasAddr: true})
	if _, err := lk.devconf(99999); err == nil {
		t.Error("devconf of a missing ifindex succeeded")
	}
}

// The Cache needs no privilege: run it as nobody, without any capability,
// inside the host namespace (the test binary re-runs itself there), through
// a hit, a miss and the fallback (forwarding off: netconf and addresses).
func TestWorksWithoutPrivileges(t *testing.T) {
	if os.Getenv("PXRESP_ROUTE_UNPRIVILEGED") == "1" {
		unprivilegedChild(t)
		return
	}
	n := newNode(t)
	p0 := n.tp.Pods[0].HostIf
	n.sysctl(t, "net.ipv4.conf."+p0+".forwarding", "0")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.tp.Host.Name,
		"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
		"--inh-caps", "-all", "--ambient-caps", "-all", "--bounding-set", "-all", "--no-new-privs",
		exe, "-test.run", "^TestWorksWithoutPrivileges$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), "PXRESP_ROUTE_UNPRIVILEGED=1",
		fmt.Sprintf("PXRESP_ROUTE_IIF=%d", n.pod0), fmt.Sprintf("PXRESP_ROUTE_IIF2=%d", n.pod1))
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil || !strings.Contains(string(out), "unprivileged: ok") {
		t.Fatalf("the unprivileged run failed: %v", err)
	}
}

func unprivilegedChild(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("the child runs as root")
	}
	caps, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(caps), "\n") {
		if strings.HasPrefix(l, "CapEff:") || strings.HasPrefix(l, "CapPrm:") {
			if !strings.HasSuffix(l, "0000000000000000") {
				t.Fatalf("the child has capabilities: %s", l)
			}
		}
	}
	iif, _ := strconv.Atoi(os.Getenv("PXRESP_ROUTE_IIF"))
	iif2, _ := strconv.Atoi(os.Getenv("PXRESP_ROUTE_IIF2"))
	c, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// pod1's interface forwards: a plain lookup, then a hit.
	cached(t, c, iif2, pod1IP, pod0IP, policy.RouteElsewhere)
	// pod0's does not: the fallback.
	cached(t, c, iif, pod0IP, pod1IP, policy.RouteElsewhere)
	if s := c.Stats(); s.Fallbacks == 0 || s.Errors != 0 {
		t.Fatalf("stats %+v: want a fallback and no errors", s)
	}
	t.Log("unprivileged: ok")
}
