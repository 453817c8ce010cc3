package route

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/policy"
)

// Unit tests: the cache logic over a fake lookuper and fake notifications.
// The privileged tests in route_linux_test.go run it against the kernel.

type answer struct {
	ri  routeInfo
	err error
}

// fakeLookup answers from tables; gate, if set, is waited on by each input
// lookup after it read its answer.
type fakeLookup struct {
	mu      sync.Mutex
	in      map[netip.Addr]answer // by dst
	out     map[netip.Addr]answer // by dst
	calls   int
	gate    chan struct{}
	inside  chan struct{} // receives a value when a lookup waits on gate
	closed  bool
	conf    devConf
	confErr error
}

func newFakeLookup() *fakeLookup {
	return &fakeLookup{in: map[netip.Addr]answer{}, out: map[netip.Addr]answer{}, conf: devConf{forwarding: true}}
}

func (f *fakeLookup) devconf(int) (devConf, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conf, f.confErr
}

func (f *fakeLookup) set(dst string, in, out answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := netip.MustParseAddr(dst)
	f.in[a], f.out[a] = in, out
}

func (f *fakeLookup) input(dst, _ netip.Addr, _ int) (routeInfo, error) {
	f.mu.Lock()
	f.calls++
	a, ok := f.in[dst]
	gate, inside := f.gate, f.inside
	f.mu.Unlock()
	if gate != nil {
		inside <- struct{}{}
		<-gate
	}
	if !ok {
		return routeInfo{}, unix.ENETUNREACH
	}
	return a.ri, a.err
}

func (f *fakeLookup) output(dst netip.Addr) (routeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.out[dst]
	if !ok {
		return routeInfo{}, unix.ENETUNREACH
	}
	return a.ri, a.err
}

func (f *fakeLookup) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

func (f *fakeLookup) nCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// fakeMonitor stands in for the netmon.Monitor the Cache registers with:
// the test makes the Monitor's calls.
type fakeMonitor struct {
	mu           sync.Mutex
	c            netmon.Consumer
	unregistered bool
}

func (f *fakeMonitor) register(c netmon.Consumer) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c = c
	return func() {
		f.mu.Lock()
		f.unregistered = true
		f.mu.Unlock()
	}
}

func (f *fakeMonitor) consumer() netmon.Consumer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c
}

// change delivers one notification.
func (f *fakeMonitor) change() { f.consumer().Change(&netmon.Message{Type: unix.RTM_NEWROUTE}) }

// lost says that notifications were lost.
func (f *fakeMonitor) lost() { f.consumer().Lost("receive: no buffer space available") }

// resync delivers a listing.
func (f *fakeMonitor) resync() { f.consumer().Resync(&netmon.Listing{}) }

func (f *fakeMonitor) isUnregistered() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unregistered
}

var (
	ifA     = 7
	ifB     = 8
	podA    = netip.MustParseAddr("10.244.0.2")
	far     = netip.MustParseAddr("10.50.0.9")
	routeTo = func(oif int) answer { return answer{ri: routeInfo{typ: unix.RTN_UNICAST, oif: oif}} }
	local   = answer{ri: routeInfo{typ: unix.RTN_LOCAL, oif: 1}}
	fails   = func(errno unix.Errno) answer { return answer{err: fmt.Errorf("wrapped: %w", errno)} }
)

// testLogger logs to t at info level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newTestCache returns a Cache over a fake lookuper, registered with a
// fake Monitor that has delivered its first listing.
func newTestCache(t *testing.T, cfg Config) (*Cache, *fakeLookup, *fakeMonitor) {
	t.Helper()
	lk, mon := newFakeLookup(), &fakeMonitor{}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	c := newCache(cfg, lk, mon.register)
	mon.resync()
	t.Cleanup(func() { c.Close() })
	return c, lk, mon
}

// waitFor polls cond every millisecond, at most 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClassify(t *testing.T) {
	self := netip.MustParseAddr("198.18.0.1")
	viaB, viaA := routeTo(ifB), routeTo(ifA)
	noRoute := fails(unix.ENETUNREACH)
	cases := []struct {
		name         string
		dst          string
		src          netip.Addr
		fwdOff       bool
		rp           int
		hasAddr      bool
		in, out      answer
		srcOut       *answer // the sender's route; default: back through iif
		confErr      error
		want         policy.RouteClass
		wantFallback bool
		wantErr      bool
	}{
		{name: "local", dst: "198.18.0.1", in: local, want: policy.RouteLocal},
		{name: "elsewhere", dst: "10.50.0.9", in: viaB, want: policy.RouteElsewhere},
		{name: "back", dst: "10.244.0.7", in: viaA, want: policy.RouteBack},
		{name: "broadcast", dst: "10.1.2.255", in: answer{ri: routeInfo{typ: unix.RTN_BROADCAST, oif: 1}}, want: policy.RouteNone},
		{name: "no route", dst: "10.99.0.1", in: noRoute, want: policy.RouteNone},
		{name: "prohibit", dst: "10.72.0.1", in: fails(unix.EACCES), want: policy.RouteNone},
		{name: "unreachable", dst: "10.71.0.1", in: fails(unix.EHOSTUNREACH), out: viaB, want: policy.RouteNone},
		{name: "blackhole", dst: "10.70.0.1", in: fails(unix.EINVAL), out: viaB, want: policy.RouteNone},
		{name: "blackhole, rp_filter passes", dst: "10.70.0.1", rp: 1, in: fails(unix.EINVAL), out: viaB, want: policy.RouteNone},
		{name: "blackhole, loose rp_filter passes", dst: "10.70.0.1", rp: 2, hasAddr: true, in: fails(unix.EINVAL), out: viaB,
			srcOut: &viaB, want: policy.RouteNone},

		{name: "forwarding off", dst: "10.50.0.9", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: viaB,
			want: policy.RouteElsewhere, wantFallback: true},
		{name: "forwarding off, back", dst: "10.244.0.7", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: viaA,
			want: policy.RouteBack, wantFallback: true},
		{name: "forwarding off, local", dst: "198.18.0.1", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: local, want: policy.RouteLocal},
		{name: "forwarding off, unreachable", dst: "10.71.0.1", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: fails(unix.EHOSTUNREACH),
			want: policy.RouteNone},
		{name: "forwarding off, blackhole", dst: "10.70.0.1", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: fails(unix.EINVAL),
			want: policy.RouteNone},
		{name: "forwarding off, no route", dst: "10.99.0.1", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: noRoute, want: policy.RouteNone},

		{name: "strict rp_filter, no route back", dst: "10.50.0.9", rp: 1, in: fails(unix.EINVAL), out: viaB, srcOut: &noRoute,
			want: policy.RouteElsewhere, wantFallback: true},
		{name: "strict rp_filter, route back elsewhere", dst: "10.50.0.9", rp: 1, hasAddr: true, in: fails(unix.EINVAL), out: viaB,
			srcOut: &viaB, want: policy.RouteElsewhere, wantFallback: true},
		{name: "rp_filter before 6.13", dst: "10.50.0.9", rp: 1, in: fails(unix.EXDEV), out: viaB, srcOut: &noRoute,
			want: policy.RouteElsewhere, wantFallback: true},
		{name: "loose rp_filter, no address on iif", dst: "10.50.0.9", rp: 2, in: fails(unix.EINVAL), out: viaB, srcOut: &viaB,
			want: policy.RouteElsewhere, wantFallback: true},
		{name: "loose rp_filter, no route back", dst: "10.50.0.9", rp: 2, hasAddr: true, in: fails(unix.EINVAL), out: viaB,
			srcOut: &noRoute, want: policy.RouteElsewhere, wantFallback: true},
		{name: "rp_filter, blackhole", dst: "10.70.0.1", rp: 1, in: fails(unix.EINVAL), out: fails(unix.EINVAL), srcOut: &noRoute,
			want: policy.RouteNone},

		{name: "martian target", dst: "0.1.2.3", fwdOff: true, in: fails(unix.EINVAL), out: viaB, want: policy.RouteNone},
		{name: "martian sender", dst: "10.50.0.9", fwdOff: true, src: netip.MustParseAddr("0.0.0.9"), in: fails(unix.EINVAL), out: viaB,
			want: policy.RouteNone},
		{name: "sender is a host address", dst: "10.50.0.9", src: self, fwdOff: true, rp: 1, in: fails(unix.EINVAL), out: viaB,
			srcOut: &local, want: policy.RouteNone},

		{name: "interface gone", dst: "10.50.0.9", in: fails(unix.ENODEV), wantErr: true},
		{name: "netconf fails", dst: "10.50.0.9", in: fails(unix.EHOSTUNREACH), confErr: errors.New("fake"), wantErr: true},
		{name: "netlink error in the fallback", dst: "10.50.0.9", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: fails(unix.EBADF),
			wantErr: true},
		{name: "netlink error on the sender", dst: "10.50.0.9", fwdOff: true, in: fails(unix.EHOSTUNREACH), out: viaB,
			srcOut: &answer{err: unix.EBADF}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lk := newFakeLookup()
			lk.conf = devConf{forwarding: !tc.fwdOff, rpFilter: tc.rp, hasAddr: tc.hasAddr}
			lk.confErr = tc.confErr
			src := tc.src
			if !src.IsValid() {
				src = podA
			}
			lk.set(tc.dst, tc.in, tc.out)
			if tc.srcOut != nil {
				lk.out[src] = *tc.srcOut
			} else {
				lk.out[src] = viaA
			}
			cl, fb, err := classify(lk, ifA, src, netip.MustParseAddr(tc.dst))
			if tc.wantErr {
				if err == nil || cl != policy.RouteUnknown {
					t.Fatalf("classify = %v, %v, %v; want RouteUnknown and an error", cl, fb, err)
				}
				return
			}
			if err != nil || cl != tc.want || fb != tc.wantFallback {
				t.Fatalf("classify = %v, fallback %v, err %v; want %v, fallback %v", cl, fb, err, tc.want, tc.wantFallback)
			}
		})
	}
}

func TestHitMissAndNegativeEntries(t *testing.T) {
	c, lk, _ := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	for i := range 3 {
		if got := c.Route(ifA, podA, far); got != policy.RouteElsewhere {
			t.Fatalf("call %d: Route = %v, want elsewhere", i, got)
		}
	}
	none := netip.MustParseAddr("10.99.0.1") // no route: cached as RouteNone
	for i := range 3 {
		if got := c.Route(ifA, podA, none); got != policy.RouteNone {
			t.Fatalf("call %d: Route = %v, want none", i, got)
		}
	}
	// Another interface or sender is another key.
	c.Route(ifB, podA, far)
	c.Route(ifA, netip.MustParseAddr("10.244.0.3"), far)
	s := c.Stats()
	if s.Misses != 4 || s.Hits != 4 || s.Entries != 4 || lk.nCalls() != 4 {
		t.Errorf("stats %+v, %d lookups; want 4 misses, 4 hits, 4 entries, 4 lookups", s, lk.nCalls())
	}
}

func TestHitDoesNotAllocate(t *testing.T) {
	c, lk, _ := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	c.Route(ifA, podA, far)
	if n := testing.AllocsPerRun(1000, func() { c.Route(ifA, podA, far) }); n != 0 {
		t.Errorf("a hit allocates %v times", n)
	}
}

func TestNotificationInvalidates(t *testing.T) {
	c, lk, mon := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	c.Route(ifA, podA, far)
	lk.set("10.50.0.9", routeTo(ifA), answer{}) // the route changed
	if got := c.Route(ifA, podA, far); got != policy.RouteElsewhere {
		t.Fatalf("before the notification: %v, want the cached elsewhere", got)
	}
	inv := c.Stats().Invalidations
	mon.change()
	if got := c.Stats().Invalidations; got != inv+1 {
		t.Fatalf("%d invalidations after a notification, want %d", got, inv+1)
	}
	if got := c.Route(ifA, podA, far); got != policy.RouteBack {
		t.Fatalf("after the notification: %v, want back", got)
	}
	if s := c.Stats(); s.Misses != 2 || s.Entries != 1 {
		t.Errorf("stats %+v, want 2 misses, 1 entry", s)
	}
}

// A lookup that began before an invalidation and ends after it must not be
// stored.
func TestLookupRacingInvalidationIsNotStored(t *testing.T) {
	c, lk, mon := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	gate, inside := make(chan struct{}), make(chan struct{}, 1)
	lk.mu.Lock()
	lk.gate, lk.inside = gate, inside
	lk.mu.Unlock()
	got := make(chan policy.RouteClass)
	go func() { got <- c.Route(ifA, podA, far) }()
	<-inside // the lookup has its answer, from before the change
	mon.change()
	lk.mu.Lock()
	lk.gate = nil
	lk.mu.Unlock()
	lk.set("10.50.0.9", routeTo(ifA), answer{}) // the change the notification announced
	close(gate)
	// The racing lookup returns what it saw, but leaves nothing behind.
	if cl := <-got; cl != policy.RouteElsewhere {
		t.Fatalf("racing lookup returned %v, want its own answer, elsewhere", cl)
	}
	if s := c.Stats(); s.Entries != 0 {
		t.Fatalf("the racing lookup was stored: %+v", s)
	}
	if cl := c.Route(ifA, podA, far); cl != policy.RouteBack {
		t.Fatalf("after the race: %v, want back (a fresh lookup)", cl)
	}
}

func TestResyncAfterLostNotifications(t *testing.T) {
	c, lk, mon := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	c.Route(ifA, podA, far)
	mon.lost()
	if s := c.Stats(); s.Entries != 0 {
		t.Fatalf("after lost notifications: %+v, want an empty cache", s)
	}
	// Until the resync nothing is stored: every call looks up.
	m := c.Stats().Misses
	c.Route(ifA, podA, far)
	c.Route(ifA, podA, far)
	if s := c.Stats(); s.Misses != m+2 || s.Entries != 0 {
		t.Fatalf("while lost: %+v, want 2 more misses and nothing stored", s)
	}
	// Notifications while lost do not make it store again.
	mon.change()
	c.Route(ifA, podA, far)
	if s := c.Stats(); s.Entries != 0 {
		t.Fatalf("a notification while lost made the cache store: %+v", s)
	}
	mon.resync()
	c.Route(ifA, podA, far)
	h := c.Stats().Hits
	c.Route(ifA, podA, far)
	if s := c.Stats(); s.Hits != h+1 || s.Entries != 1 {
		t.Fatalf("no hit after the resync: %+v", s)
	}
	// Notifications invalidate again.
	lk.set("10.50.0.9", routeTo(ifA), answer{})
	mon.change()
	if got := c.Route(ifA, podA, far); got != policy.RouteBack {
		t.Fatalf("after the resync and a notification: %v, want back", got)
	}
}

// Nothing is stored before the Monitor's first listing: notifications
// before it may have been missed.
func TestNothingStoredBeforeFirstListing(t *testing.T) {
	lk, mon := newFakeLookup(), &fakeMonitor{}
	cfg := Config{Logger: testLogger(t)}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	c := newCache(cfg, lk, mon.register)
	defer c.Close()
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	for range 2 {
		if got := c.Route(ifA, podA, far); got != policy.RouteElsewhere {
			t.Fatalf("Route = %v, want elsewhere", got)
		}
	}
	if s := c.Stats(); s.Misses != 2 || s.Entries != 0 {
		t.Fatalf("before the first listing: %+v, want 2 misses, nothing stored", s)
	}
	mon.resync()
	c.Route(ifA, podA, far)
	if s := c.Stats(); s.Entries != 1 {
		t.Fatalf("after the first listing: %+v, want the answer stored", s)
	}
}

func TestMissRate(t *testing.T) {
	c, _, _ := newTestCache(t, Config{MissRate: 20}) // burst 2
	var now time.Duration
	c.lookupMu.Lock()
	c.limit = newMissLimiter(20, func() int64 { return int64(now) })
	c.lookupMu.Unlock()
	dst := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 99, 0, byte(i)}) }
	got := make([]policy.RouteClass, 5)
	for i := range got {
		got[i] = c.Route(ifA, podA, dst(i))
	}
	want := []policy.RouteClass{policy.RouteNone, policy.RouteNone, policy.RouteUnknown, policy.RouteUnknown, policy.RouteUnknown}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("burst: %v, want %v", got, want)
	}
	now += 50 * time.Millisecond // one token
	if a, b := c.Route(ifA, podA, dst(2)), c.Route(ifA, podA, dst(3)); a != policy.RouteNone || b != policy.RouteUnknown {
		t.Fatalf("after 50 ms: %v, %v; want none, unknown", a, b)
	}
	// Hits need no token.
	for range 10 {
		if c.Route(ifA, podA, dst(0)) != policy.RouteNone {
			t.Fatal("a hit was limited")
		}
	}
	if s := c.Stats(); s.Misses != 3 || s.Limited != 4 || s.Hits != 10 {
		t.Errorf("stats %+v, want 3 misses, 4 limited, 10 hits", s)
	}
}

func TestMaxEntries(t *testing.T) {
	c, _, _ := newTestCache(t, Config{MaxEntries: 8, MissRate: 1 << 30})
	for i := range 100 {
		c.Route(ifA, podA, netip.AddrFrom4([4]byte{10, 99, 0, byte(i)}))
		if n := c.Stats().Entries; n > 8 {
			t.Fatalf("%d entries after %d misses, want at most 8", n, i+1)
		}
	}
	if s := c.Stats(); s.Entries != 8 || s.Misses != 100 {
		t.Errorf("stats %+v, want 8 entries, 100 misses", s)
	}
	// The latest answer is always kept.
	h := c.Stats().Hits
	c.Route(ifA, podA, netip.AddrFrom4([4]byte{10, 99, 0, 99}))
	if c.Stats().Hits != h+1 {
		t.Error("the entry stored last was evicted")
	}
}

func TestInvalidArguments(t *testing.T) {
	c, lk, _ := newTestCache(t, Config{})
	v6 := netip.MustParseAddr("2001:db8::1")
	mapped := netip.MustParseAddr("::ffff:10.50.0.9")
	for _, tc := range []struct {
		iif      int
		src, dst netip.Addr
	}{{0, podA, far}, {-1, podA, far}, {1 << 40, podA, far}, {ifA, v6, far}, {ifA, podA, v6}, {ifA, podA, mapped}, {ifA, netip.Addr{}, far}} {
		if got := c.Route(tc.iif, tc.src, tc.dst); got != policy.RouteUnknown {
			t.Errorf("Route(%d, %v, %v) = %v, want unknown", tc.iif, tc.src, tc.dst, got)
		}
	}
	if s := c.Stats(); s.Errors != 7 || lk.nCalls() != 0 {
		t.Errorf("stats %+v, %d lookups; want 7 errors and no lookup", s, lk.nCalls())
	}
}

func TestConfigErrors(t *testing.T) {
	mon, err := netmon.New(netmon.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	closed := netns.None()
	for _, cfg := range []Config{{MaxEntries: -1}, {MissRate: -1}, {RecvBufSize: -1}, {Monitor: mon, RecvBufSize: 1},
		{Monitor: mon, Namespace: &closed}, {Namespace: &closed}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// Many goroutines use the cache while notifications invalidate it: run
// with -race. Every answer must be one the lookuper gave for that key.
func TestConcurrentUse(t *testing.T) {
	c, lk, mon := newTestCache(t, Config{MaxEntries: 16, MissRate: 1 << 30})
	dsts := make([]netip.Addr, 32)
	for i := range dsts {
		dsts[i] = netip.AddrFrom4([4]byte{10, 50, 0, byte(i)})
		if i%2 == 0 {
			lk.set(dsts[i].String(), routeTo(ifB), answer{})
		}
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 5000 {
				i := r.IntN(len(dsts))
				want := policy.RouteNone
				if i%2 == 0 {
					want = policy.RouteElsewhere
				}
				if got := c.Route(ifA, podA, dsts[i]); got != want {
					bad.Add(1)
				}
				if r.IntN(100) == 0 {
					c.Stats()
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			if i%50 == 49 {
				mon.lost()
				mon.resync()
			} else {
				mon.change()
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d wrong answers", n)
	}
	if s := c.Stats(); s.Hits == 0 || s.Misses == 0 || s.Entries > 16 {
		t.Errorf("stats %+v: want hits, misses, at most 16 entries", s)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	c, lk, mon := newTestCache(t, Config{})
	lk.set("10.50.0.9", routeTo(ifB), answer{})
	c.Route(ifA, podA, far)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	leakcheck.WaitGoroutines(t, before)
	if !lk.closed || !mon.isUnregistered() {
		t.Error("Close left the lookuper open or the Cache registered")
	}
	if got := c.Route(ifA, podA, far); got != policy.RouteUnknown {
		t.Errorf("Route after Close = %v, want unknown", got)
	}
	// A call that was in progress when Close unregistered is harmless.
	mon.change()
	if s := c.Stats(); s.Entries != 0 {
		t.Errorf("stats after Close: %+v", s)
	}
}

// Close while notifications are lost (the Monitor retries).
func TestCloseWhileLost(t *testing.T) {
	before := runtime.NumGoroutine()
	c, _, mon := newTestCache(t, Config{})
	mon.lost()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	leakcheck.WaitGoroutines(t, before)
	mon.resync() // late: stores nothing
	if got := c.Route(ifA, podA, far); got != policy.RouteUnknown {
		t.Errorf("Route after Close = %v, want unknown", got)
	}
}
