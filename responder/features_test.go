package responder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/policy"
)

// Unit tests, over the fake transport, of route mode (Config.Router), dry
// runs (Config.DryRun), the latency observation (Config.Latency) and
// Apply. The same features on real packets are in
// features_linux_test.go.

// tableRouter is a Router that answers from a fixed table (RouteNone for
// what is not in it) and records its calls. It does not allocate.
type tableRouter struct {
	table map[netip.Addr]policy.RouteClass
	calls atomic.Int64

	mu        sync.Mutex
	iif       int
	src, dst  netip.Addr
	recording bool
}

func (tr *tableRouter) Route(iif int, src, dst netip.Addr) policy.RouteClass {
	tr.calls.Add(1)
	if tr.recording {
		tr.mu.Lock()
		tr.iif, tr.src, tr.dst = iif, src, dst
		tr.mu.Unlock()
	}
	if c, ok := tr.table[dst]; ok {
		return c
	}
	return policy.RouteNone
}

func (tr *tableRouter) last() (int, netip.Addr, netip.Addr) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.iif, tr.src, tr.dst
}

// obsRecorder is an Observer that keeps every observation.
type obsRecorder struct {
	mu  sync.Mutex
	obs []float64
}

func (o *obsRecorder) Observe(v float64) {
	o.mu.Lock()
	o.obs = append(o.obs, v)
	o.mu.Unlock()
}

func (o *obsRecorder) values() []float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.obs)
}

// atomicObserver counts and sums observations with atomics, the way a
// Prometheus histogram does (without the buckets): no lock, no allocation.
type atomicObserver struct {
	n   atomic.Uint64
	sum atomic.Uint64 // nanoseconds
}

func (a *atomicObserver) Observe(v float64) {
	a.n.Add(1)
	a.sum.Add(uint64(v * 1e9))
}

var (
	routeElsewhere = netip.MustParseAddr("10.244.0.3")
	routeBack      = netip.MustParseAddr("10.244.0.9")
	routeLocal     = netip.MustParseAddr("198.18.0.1")
	routeNone      = netip.MustParseAddr("192.0.2.1")
)

func newTableRouter() *tableRouter {
	return &tableRouter{table: map[netip.Addr]policy.RouteClass{
		routeElsewhere: policy.RouteElsewhere,
		routeBack:      policy.RouteBack,
		routeLocal:     policy.RouteLocal,
		routeNone:      policy.RouteNone,
	}}
}

func routePolicy(t testing.TB, targets ...netip.Prefix) *policy.Policy {
	t.Helper()
	p, err := policy.NewRoute(targets)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRouteMode: the Router is asked only when the policy needs the route,
// with the interface's index and the request's addresses, and its answer
// decides the verdict.
func TestRouteMode(t *testing.T) {
	f := newFake()
	tr := newTableRouter()
	tr.recording = true
	r := newResponder(f, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: routePolicy(t)}, Router: tr})
	stranger := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	cases := []struct {
		name    string
		frame   []byte
		verdict policy.Verdict
		lookup  bool
	}{
		{"routed elsewhere", request(podMAC, podIP, routeElsewhere, bcast), policy.Reply, true},
		{"routed elsewhere, unicast re-probe", request(podMAC, podIP, routeElsewhere, hostMAC), policy.Reply, true},
		{"routed back", request(podMAC, podIP, routeBack, bcast), policy.OwnAddress, true},
		{"local address", request(podMAC, podIP, routeLocal, bcast), policy.LocalAddress, true},
		{"no route", request(podMAC, podIP, routeNone, bcast), policy.NoRoute, true},
		{"DAD probe", request(podMAC, netip.IPv4Unspecified(), routeElsewhere, bcast), policy.Probe, false},
		{"gratuitous", request(podMAC, podIP, podIP, bcast), policy.Gratuitous, false},
		{"for another host", request(podMAC, podIP, routeElsewhere, stranger), policy.NotForUs, false},
		{"bad target", request(podMAC, podIP, netip.MustParseAddr("224.0.0.1"), bcast), policy.BadTarget, false},
	}
	var want Stats
	for _, c := range cases {
		before := tr.calls.Load()
		r.handle(c.frame)
		sent := f.takeSent()
		if calls := tr.calls.Load() - before; calls != map[bool]int64{false: 0, true: 1}[c.lookup] {
			t.Errorf("%s: %d route lookups, want lookup=%v", c.name, calls, c.lookup)
		}
		want.Requests++
		if c.verdict == policy.Reply {
			want.Replies++
			if len(sent) != 1 {
				t.Errorf("%s: sent %d frames, want a reply", c.name, len(sent))
			}
		} else {
			want.Ignored[c.verdict]++
			if len(sent) != 0 {
				t.Errorf("%s: sent %x, want nothing (%v)", c.name, sent, c.verdict)
			}
		}
		if st := r.Stats(); st != want {
			t.Fatalf("%s: stats\n got %+v\nwant %+v", c.name, st, want)
		}
	}
	if iif, src, dst := tr.last(); iif != 7 || src != podIP || dst != routeNone {
		t.Errorf("last lookup Route(%d, %v, %v), want Route(7, %v, %v)", iif, src, dst, podIP, routeNone)
	}

	// Targets outside a route-mode policy's own targets cost no lookup.
	mustChange(t, r, func(s *Settings) { s.Policy = routePolicy(t, netip.MustParsePrefix("10.244.0.0/16")) })
	before := tr.calls.Load()
	r.handle(request(podMAC, podIP, routeNone, bcast))
	r.handle(request(podMAC, podIP, routeElsewhere, bcast))
	if calls := tr.calls.Load() - before; calls != 1 {
		t.Errorf("%d lookups for one request outside the targets and one inside, want 1", calls)
	}
	// A gateway-mode policy never asks, and the switch back to route mode
	// (a reload) uses the same Router.
	mustChange(t, r, func(s *Settings) { s.Policy = gwPolicy(t) })
	before = tr.calls.Load()
	r.handle(gwRequest)
	r.handle(request(podMAC, podIP, routeElsewhere, bcast))
	if calls := tr.calls.Load() - before; calls != 0 {
		t.Errorf("gateway mode made %d route lookups", calls)
	}
	mustChange(t, r, func(s *Settings) { s.Policy = routePolicy(t) })
	r.handle(request(podMAC, podIP, routeElsewhere, bcast))
	if calls := tr.calls.Load() - before; calls != 1 {
		t.Errorf("back in route mode: %d route lookups, want 1", calls)
	}
	if n := len(f.takeSent()); n != 3 {
		t.Errorf("sent %d replies after the policy changes, want 3", n)
	}
}

// TestRouteModeWithoutRouter: without a Router every request that needs a
// route is route-unknown, and none is answered.
func TestRouteModeWithoutRouter(t *testing.T) {
	f := newFake()
	r := newResponder(f, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: routePolicy(t)}})
	r.handle(request(podMAC, podIP, routeElsewhere, bcast))
	r.handle(request(podMAC, netip.IPv4Unspecified(), routeElsewhere, bcast))
	st := r.Stats()
	if len(f.takeSent()) != 0 || st.Ignored[policy.UnknownRoute] != 1 || st.Ignored[policy.Probe] != 1 {
		t.Errorf("stats %+v: want one route-unknown and one probe, nothing sent", st)
	}
}

func TestHandleRouteModeDoesNotAllocate(t *testing.T) {
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: routePolicy(t)},
		Router: newTableRouter()})
	for _, frame := range [][]byte{
		request(podMAC, podIP, routeElsewhere, bcast),
		request(podMAC, podIP, routeBack, bcast),
		request(podMAC, podIP, routeNone, bcast),
		request(podMAC, netip.IPv4Unspecified(), routeElsewhere, bcast),
	} {
		if n := testing.AllocsPerRun(100, func() { r.handle(frame) }); n != 0 {
			t.Errorf("%v allocs per frame %x", n, frame)
		}
	}
	if st := r.Stats(); st.Replies == 0 || st.Ignored[policy.NoRoute] == 0 {
		t.Errorf("stats %+v: the frames were not decided as meant", st)
	}
}

// logBuffer is an io.Writer for a slog handler, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.b.String()) {
		if strings.Contains(line, substr) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// TestDryRun: a dry run decides and rate limits as usual, sends nothing,
// counts each would-be reply in DryRun (not in Replies) and logs it at info
// level.
func TestDryRun(t *testing.T) {
	f := newFake()
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	override := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	cfg := Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)}, Logger: log,
		DryRun: true, RateLimit: 10, RateBurst: 3}
	r := newResponder(f, cfg)
	clk := &fakeClock{}
	clk.useClock(r, cfg)
	for range 5 {
		r.handle(gwRequest)
	}
	r.handle(request(podMAC, netip.IPv4Unspecified(), gateway, bcast)) // a probe: not a would-be reply
	r.handle(request(podMAC, podIP, routeNone, bcast))                 // not a target
	clk.advance(100 * time.Millisecond)                                // one token
	mustChange(t, r, func(s *Settings) { s.Override = override })
	r.handle(request(podMAC, podIP, gateway, override))
	if sent := f.takeSent(); len(sent) != 0 {
		t.Fatalf("a dry run sent %d frames", len(sent))
	}
	want := Stats{Requests: 8, DryRun: 4, RateLimited: 2}
	want.Ignored[policy.Probe] = 1
	want.Ignored[policy.NotTarget] = 1
	if st := r.Stats(); st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	lines := logs.lines(`msg="dry run: would reply"`)
	if len(lines) != 4 {
		t.Fatalf("%d dry-run log lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for i, line := range lines {
		mac, delivery := hostMAC, "broadcast"
		if i == 3 {
			mac, delivery = override, "unicast"
		}
		for _, kv := range []string{"level=INFO", "iface=calitest", "ifindex=7", "sender=10.244.0.2", "target=169.254.1.1",
			"delivery=" + delivery, "mac=" + mac.String()} {
			if !strings.Contains(line, " "+kv) {
				t.Errorf("dry-run log line %q lacks %q", line, kv)
			}
		}
	}
}

// TestDryRunQuietDoesNotAllocate: with info logging off, a dry run keeps
// the hot path free of allocations.
func TestDryRunQuietDoesNotAllocate(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&logBuffer{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
		Logger: log, DryRun: true})
	if n := testing.AllocsPerRun(100, func() { r.handle(gwRequest) }); n != 0 {
		t.Errorf("%v allocs per would-be reply", n)
	}
	if st := r.Stats(); st.DryRun == 0 || st.Replies != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestLatencyObserved: each reply sent observes the time since the
// request's receive timestamp, once; nothing else does.
func TestLatencyObserved(t *testing.T) {
	f := newFake()
	obs := &obsRecorder{}
	cfg := Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)}, Latency: obs,
		RateLimit: 10, RateBurst: 1}
	r := newResponder(f, cfg)
	clk := &fakeClock{}
	clk.useClock(r, cfg)
	const age = 5 * time.Millisecond
	stamp := func() int64 { return time.Now().Add(-age).UnixNano() }

	r.handleAt(gwRequest, stamp()) // answered: observed
	r.handleAt(gwRequest, stamp()) // rate limited
	clk.advance(time.Second)
	r.handleAt(request(podMAC, netip.IPv4Unspecified(), gateway, bcast), stamp()) // a probe
	r.handleAt(request(podMAC, podIP, routeNone, bcast), stamp())                 // not a target
	r.handleAt([]byte{1, 2, 3}, stamp())                                          // malformed
	r.handleAt(gwRequest, 0)                                                      // answered, no timestamp
	clk.advance(time.Second)
	r.handleAt(gwRequest, time.Now().Add(time.Hour).UnixNano()) // answered, the clock stepped back
	clk.advance(time.Second)
	f.sendErr = syscall.ENOBUFS
	r.handleAt(gwRequest, stamp()) // the send fails
	f.sendErr = nil

	got := obs.values()
	if len(got) != 1 {
		t.Fatalf("%d observations %v, want 1", len(got), got)
	}
	if got[0] < age.Seconds() || got[0] > 10 {
		t.Errorf("observed %v s for a request stamped %v before, want at least that (and not absurd)", got[0], age)
	}
	if st := r.Stats(); st.Replies != 3 || st.SendErrors != 1 || st.RateLimited != 1 {
		t.Errorf("stats %+v: want 3 replies, 1 send error, 1 rate limited", st)
	}

	// Through Serve: the transport's timestamp reaches the observation.
	f = newFake()
	f.rxAge = age
	obs = &obsRecorder{}
	r = newResponder(f, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)}, Latency: obs})
	done := serve(t, r, t.Context())
	f.in <- gwRequest
	f.in <- request(podMAC, podIP, podIP, bcast) // gratuitous
	f.in <- gwRequest
	_ = r.Close()
	if err := waitServe(t, done); err != nil {
		t.Fatal(err)
	}
	if got := obs.values(); len(got) != 2 || got[0] < age.Seconds() || got[1] < age.Seconds() {
		t.Errorf("observations %v: want 2, each at least %v", got, age)
	}

	// A dry run sends nothing, and observes nothing.
	obs = &obsRecorder{}
	r = newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
		Latency: obs, DryRun: true,
		Logger: slog.New(slog.NewTextHandler(&logBuffer{}, nil))})
	r.handleAt(gwRequest, stamp())
	if got := obs.values(); len(got) != 0 || r.Stats().DryRun != 1 {
		t.Errorf("dry run: observations %v, stats %+v", got, r.Stats())
	}
}

func TestHandleLatencyDoesNotAllocate(t *testing.T) {
	obs := &atomicObserver{}
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
		Latency: obs})
	rx := time.Now().UnixNano()
	if n := testing.AllocsPerRun(100, func() { r.handleAt(gwRequest, rx) }); n != 0 {
		t.Errorf("%v allocs per observed reply", n)
	}
	if obs.n.Load() == 0 {
		t.Error("nothing observed")
	}
}

// mustChange is change, failing t on error.
func mustChange(t *testing.T, r *Responder, mod func(*Settings)) {
	t.Helper()
	if err := change(r, mod); err != nil {
		t.Fatal(err)
	}
}

// TestApplyOverride: the override is set, changed and cleared in place; the
// next reply carries it, and the filter is replaced through a moment that
// passes both the old and the new MAC.
func TestApplyOverride(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	a := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	replyMAC := func(what string, frame []byte, want net.HardwareAddr) {
		t.Helper()
		r.handle(frame)
		sent := f.takeSent()
		switch {
		case want == nil && len(sent) != 0:
			t.Errorf("%s: sent %x, want nothing", what, sent)
		case want == nil:
		case len(sent) != 1:
			t.Errorf("%s: sent %d frames, want a reply from %v", what, len(sent), want)
		case !bytes.Equal(sent[0][arpframe.OffEthSrc:arpframe.OffEthSrc+6], want) || !bytes.Equal(sent[0][arpframe.OffSHA:arpframe.OffSHA+6], want):
			t.Errorf("%s: reply %x, want it from %v", what, sent[0], want)
		}
	}
	filters := func(want ...[]net.HardwareAddr) {
		t.Helper()
		f.mu.Lock()
		got := f.filters
		f.filters = nil
		f.mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("filters %v, want %v", got, want)
		}
		for i := range got {
			if !slices.EqualFunc(got[i], want[i], func(x, y net.HardwareAddr) bool { return bytes.Equal(x, y) }) {
				t.Fatalf("filters %v, want %v", got, want)
			}
		}
	}

	override := func(mac net.HardwareAddr) func(*Settings) { return func(s *Settings) { s.Override = mac } }
	mustChange(t, r, override(a))
	filters([]net.HardwareAddr{a}, []net.HardwareAddr{a})
	if !bytes.Equal(r.MAC(), a) {
		t.Errorf("MAC() = %v, want %v", r.MAC(), a)
	}
	replyMAC("broadcast, override a", gwRequest, a)
	replyMAC("unicast to a", request(podMAC, podIP, gateway, a), a)
	replyMAC("unicast to the interface's MAC", request(podMAC, podIP, gateway, hostMAC), a)

	mustChange(t, r, override(b))
	filters([]net.HardwareAddr{a, b}, []net.HardwareAddr{b})
	replyMAC("unicast to b", request(podMAC, podIP, gateway, b), b)
	replyMAC("unicast to a, the old override", request(podMAC, podIP, gateway, a), nil)
	newDev := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	mustChange(t, r, func(s *Settings) { s.MAC = newDev }) // the device MAC changes; the override stays
	filters()
	replyMAC("broadcast after a MAC change, override b", gwRequest, b)

	mustChange(t, r, override(nil))
	filters([]net.HardwareAddr{b}, nil)
	replyMAC("broadcast, no override", gwRequest, newDev)
	replyMAC("unicast to b, the old override", request(podMAC, podIP, gateway, b), nil)
	mustChange(t, r, func(s *Settings) { s.MAC = hostMAC })
	replyMAC("broadcast after a MAC change, no override", gwRequest, hostMAC)
	if st := r.Stats(); st.Ignored[policy.NotForUs] != 2 || st.Replies != 7 {
		t.Errorf("stats %+v: want 7 replies and 2 not-for-us", st)
	}

	// Bad MACs change nothing and name the interface.
	for _, bad := range []net.HardwareAddr{
		{0x02, 0, 0, 0, 1},
		{0x01, 0, 0x5e, 0, 0, 1},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0, 0, 0, 0, 0, 0},
		{0x02, 0, 0, 0, 0, 0, 0, 1},
	} {
		err := change(r, override(bad))
		if err == nil || !strings.Contains(err.Error(), "calitest") || !strings.Contains(err.Error(), bad.String()) {
			t.Errorf("Apply with the override %v = %v, want an error naming the interface and the MAC", bad, err)
		}
	}
	filters()
	replyMAC("broadcast after bad overrides", gwRequest, hostMAC)

	// The same settings again change nothing: no filter, the same state.
	st := r.st.Load()
	mustChange(t, r, func(*Settings) {})
	if filters(); r.st.Load() != st {
		t.Error("Apply of the current settings published a new state")
	}

	// The filter cannot be replaced: the override stays, the rest of the
	// settings apply.
	f.filterErr, f.filterOK = errors.New("boom"), 0
	wide := gwPolicy(t) // another policy, answering the same
	if err := change(r, func(s *Settings) { s.Override, s.Policy = a, wide }); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Apply with a failing filter = %v", err)
	}
	if r.st.Load().policy != wide {
		t.Error("the policy did not change with a failing filter")
	}
	replyMAC("broadcast after a failed override change", gwRequest, hostMAC)
	// The final filter fails: the new MAC is in use (the transitional
	// filter passes it), and the error says so.
	f.filterOK = 1
	if err := change(r, override(a)); err == nil {
		t.Error("Apply with a failing final filter succeeded")
	}
	replyMAC("broadcast after a half-failed override change", gwRequest, a)
}

// TestApplyAll: one Apply changes the MAC, the override, the policy and the
// on-link prefixes at once, and the next request sees all of them.
func TestApplyAll(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	dev := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	ov := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	podB := netip.MustParseAddr("10.244.0.3")
	p, err := policy.New([]netip.Addr{gateway}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(Settings{MAC: dev, Override: ov, Policy: p, OnLink: []netip.Prefix{netip.PrefixFrom(podIP, 32)}}); err != nil {
		t.Fatal(err)
	}
	if len(f.filters) != 2 {
		t.Errorf("filters %v, want the two-step change", f.filters)
	}
	r.handle(request(podMAC, podIP, podB, dev))                               // a target of the new policy, to the new device MAC
	r.handle(request(net.HardwareAddr{0x02, 0, 0, 0, 0, 7}, podB, podIP, ov)) // on link now
	r.handle(request(podMAC, podIP, gateway, hostMAC))                        // to the old device MAC
	sent := f.takeSent()
	if len(sent) != 1 || !bytes.Equal(sent[0][arpframe.OffSHA:arpframe.OffSHA+6], ov) {
		t.Fatalf("sent %x, want one reply from %v", sent, ov)
	}
	if st := r.Stats(); st.Ignored[policy.OwnAddress] != 1 || st.Ignored[policy.NotForUs] != 1 {
		t.Errorf("stats %+v: want one own-address and one not-for-us", st)
	}
}

func TestListenRefusesGroupOverride(t *testing.T) {
	p := gwPolicy(t)
	for _, mac := range []net.HardwareAddr{{0x01, 0, 0x5e, 0, 0, 1}, {0, 0, 0, 0, 0, 0}} {
		if _, err := Listen(Config{Index: 1, Name: "x", Settings: Settings{MAC: hostMAC, Override: mac, Policy: p}}); err == nil || !strings.Contains(err.Error(), `"x"`) {
			t.Errorf("Listen with override %v: %v, want an error naming the interface", mac, err)
		}
	}
}

// cmsg appends a control message of the given level, type and data to b.
func cmsg(b []byte, level, typ int32, data []byte) []byte {
	h := make([]byte, unix.CmsgSpace(len(data)))
	hdr := (*unix.Cmsghdr)(unsafe.Pointer(&h[0]))
	hdr.Level, hdr.Type = level, typ
	hdr.SetLen(unix.CmsgLen(len(data)))
	copy(h[unix.CmsgLen(0):], data)
	return append(b, h...)
}

func timespecBytes(ns int64) []byte {
	ts := unix.NsecToTimespec(ns)
	return unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts))
}

func TestRxTimestamp(t *testing.T) {
	const ns = 1_790_000_000_123_456_789
	ts := timespecBytes(ns)
	aux := make([]byte, 20) // a PACKET_AUXDATA-sized message before it
	good := cmsg(nil, unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, ts)
	cut := slices.Clone(good)
	(*unix.Cmsghdr)(unsafe.Pointer(&cut[0])).SetLen(unix.CmsgLen(len(ts) - 8))
	tooLong := slices.Clone(good)
	(*unix.Cmsghdr)(unsafe.Pointer(&tooLong[0])).SetLen(len(good) + 8)
	tooShort := slices.Clone(good)
	(*unix.Cmsghdr)(unsafe.Pointer(&tooShort[0])).SetLen(4)
	for _, c := range []struct {
		name string
		oob  []byte
		want int64
	}{
		{"timestamp", good, ns},
		{"after another message", cmsg(cmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, aux), unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, ts), ns},
		{"before another message", cmsg(slices.Clone(good), unix.SOL_PACKET, unix.PACKET_AUXDATA, aux), ns},
		{"none", nil, 0},
		{"only another message", cmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, aux), 0},
		{"another socket-level message", cmsg(nil, unix.SOL_SOCKET, unix.SCM_TIMESTAMPING, ts), 0},
		{"timestamp cut short", cut, 0},
		{"length past the buffer", tooLong, 0},
		{"length shorter than a header", tooShort, 0},
		{"buffer shorter than a header", good[:8], 0},
		{"buffer cut inside the timestamp", good[:unix.CmsgLen(0)+4], 0},
	} {
		if got := rxTimestamp(c.oob); got != c.want {
			t.Errorf("%s: rxTimestamp = %d, want %d", c.name, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { rxTimestamp(good) }); n != 0 {
		t.Errorf("rxTimestamp: %v allocs", n)
	}
}

// bpfRun interprets the instructions filter produces, with the packet
// metadata the kernel's extensions read, and returns what the filter keeps
// of the frame (0: dropped).
func bpfRun(t *testing.T, prog []bpf.RawInstruction, pkttype uint32, vlan bool, frame []byte) uint32 {
	t.Helper()
	return bpfRunRand(t, prog, pkttype, vlan, frame, 0)
}

// bpfRunRand is bpfRun with rnd as the random number SKF_AD_RANDOM gives.
func bpfRunRand(t *testing.T, prog []bpf.RawInstruction, pkttype uint32, vlan bool, frame []byte, rnd uint32) uint32 {
	t.Helper()
	var a uint32
	for pc, steps := 0, 0; pc < len(prog) && steps < 1000; steps++ {
		in := prog[pc].Disassemble()
		pc++
		switch in := in.(type) {
		case bpf.LoadExtension:
			switch in.Num {
			case bpf.ExtType:
				a = pkttype
			case bpf.ExtLen:
				a = uint32(len(frame))
			case bpf.ExtVLANTagPresent:
				a = map[bool]uint32{false: 0, true: 1}[vlan]
			case bpf.ExtRand:
				a = rnd
			default:
				t.Fatalf("extension %v", in.Num)
			}
		case bpf.LoadAbsolute:
			end := int(in.Off) + in.Size
			if end > len(frame) {
				return 0 // the kernel drops the frame on an out-of-bounds load
			}
			switch in.Size {
			case 4:
				a = binary.BigEndian.Uint32(frame[in.Off:])
			case 2:
				a = uint32(binary.BigEndian.Uint16(frame[in.Off:]))
			default:
				t.Fatalf("load size %d", in.Size)
			}
		case bpf.JumpIf:
			var ok bool
			switch in.Cond {
			case bpf.JumpEqual:
				ok = a == in.Val
			case bpf.JumpNotEqual:
				ok = a != in.Val
			case bpf.JumpGreaterThan:
				ok = a > in.Val
			case bpf.JumpLessThan:
				ok = a < in.Val
			case bpf.JumpGreaterOrEqual:
				ok = a >= in.Val
			case bpf.JumpLessOrEqual:
				ok = a <= in.Val
			default:
				t.Fatalf("condition %v", in.Cond)
			}
			if ok {
				pc += int(in.SkipTrue)
			} else {
				pc += int(in.SkipFalse)
			}
		case bpf.Jump:
			pc += int(in.Skip)
		case bpf.ALUOpConstant:
			switch {
			case in.Op == bpf.ALUOpAnd:
				a &= in.Val
			case in.Op == bpf.ALUOpMod && in.Val != 0:
				a %= in.Val
			default:
				t.Fatalf("ALU op %v, %d", in.Op, in.Val)
			}
		case bpf.RetConstant:
			return in.Val
		default:
			t.Fatalf("instruction %#v", in)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

// TestFilterOverrides runs the filter for none, one and two override MACs
// over frames of every class the kernel can hand it.
func TestFilterOverrides(t *testing.T) {
	a := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	nearA := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 2} // first four bytes as a
	nearB := net.HardwareAddr{0x02, 0xbc, 0, 0, 0, 2} // last two bytes as b
	stranger := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	reply := request(podMAC, podIP, gateway, hostMAC)
	reply[arpframe.OffOp+1] = arpframe.OpReply
	badHType := bytes.Clone(gwRequest)
	badHType[arpframe.OffHType+1] = 6

	for _, set := range [][]net.HardwareAddr{nil, {a}, {b}, {a, b}, {b, a}, {a, a}, {nil, a}, {{1, 2, 3}, b}} {
		prog, err := filter(shedRule{}, set...)
		if err != nil {
			t.Fatalf("filter(%v): %v", set, err)
		}
		passes := func(dst net.HardwareAddr) bool {
			return slices.ContainsFunc(set, func(m net.HardwareAddr) bool { return bytes.Equal(m, dst) })
		}
		for _, c := range []struct {
			name    string
			pkttype uint32
			vlan    bool
			frame   []byte
			want    bool
		}{
			{"broadcast request", unix.PACKET_BROADCAST, false, gwRequest, true},
			{"request to us", unix.PACKET_HOST, false, request(podMAC, podIP, gateway, hostMAC), true},
			{"multicast request", unix.PACKET_MULTICAST, false, request(podMAC, podIP, gateway, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}), true},
			{"outgoing", unix.PACKET_OUTGOING, false, gwRequest, false},
			{"VLAN tag left on", unix.PACKET_BROADCAST, true, gwRequest, false},
			{"reply to us", unix.PACKET_HOST, false, reply, false},
			{"malformed", unix.PACKET_BROADCAST, false, badHType, true},
			{"short", unix.PACKET_BROADCAST, false, gwRequest[:20], true},
			{"other host: a", unix.PACKET_OTHERHOST, false, request(podMAC, podIP, gateway, a), passes(a)},
			{"other host: b", unix.PACKET_OTHERHOST, false, request(podMAC, podIP, gateway, b), passes(b)},
			{"other host: near a", unix.PACKET_OTHERHOST, false, request(podMAC, podIP, gateway, nearA), false},
			{"other host: near b", unix.PACKET_OTHERHOST, false, request(podMAC, podIP, gateway, nearB), false},
			{"other host: stranger", unix.PACKET_OTHERHOST, false, request(podMAC, podIP, gateway, stranger), false},
			{"other host: reply to a", unix.PACKET_OTHERHOST, false, append(slices.Clone(a), reply[6:]...), false},
		} {
			if got := bpfRun(t, prog, c.pkttype, c.vlan, c.frame) != 0; got != c.want {
				t.Errorf("filter(%v): %s: passed=%v, want %v", set, c.name, got, c.want)
			}
		}
	}
}

// TestFilterShedding runs the filter with a shed sender: of its frames only
// those whose random number is 0 modulo the sample go on to the usual tests;
// every other sender's frames, and frames to an override MAC, are as
// without shedding.
func TestFilterShedding(t *testing.T) {
	storm := net.HardwareAddr{0x02, 0x57, 0, 0, 0, 1}
	nearStorm := net.HardwareAddr{0x02, 0x57, 0, 0, 0, 2}
	ov := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	rule := shedRule{mac: [6]byte(storm), n: 7}
	for _, set := range [][]net.HardwareAddr{nil, {ov}, {ov, hostMAC}} {
		prog, err := filter(rule, set...)
		if err != nil {
			t.Fatalf("filter(%v, %v): %v", rule, set, err)
		}
		for _, c := range []struct {
			name    string
			pkttype uint32
			frame   []byte
			want    bool // without shedding
		}{
			{"broadcast request from the stormer", unix.PACKET_BROADCAST, request(storm, podIP, gateway, bcast), true},
			{"broadcast request from another sender", unix.PACKET_BROADCAST, request(nearStorm, podIP, gateway, bcast), true},
			{"broadcast request from the pod", unix.PACKET_BROADCAST, gwRequest, true},
			{"request to the override from the stormer", unix.PACKET_OTHERHOST, request(storm, podIP, gateway, ov), len(set) > 0},
			{"outgoing from the stormer", unix.PACKET_OUTGOING, request(storm, podIP, gateway, bcast), false},
		} {
			stormer := bytes.Equal(c.frame[arpframe.OffEthSrc:arpframe.OffEthSrc+6], storm)
			for _, rnd := range []uint32{0, 1, 6, 7, 8, 14, 0xfffffffb, 0xfffffffc} {
				want := c.want && (!stormer || rnd%7 == 0)
				if got := bpfRunRand(t, prog, c.pkttype, false, c.frame, rnd) != 0; got != want {
					t.Errorf("filter(%v, %v): %s, random %#x: passed=%v, want %v", rule, set, c.name, rnd, got, want)
				}
			}
		}
	}
}

// TestSampleFor checks the sample for a sender's rate: about
// sampleMargin times the limit gets through, never less than the limit,
// and the sample stays within 2..maxSample.
func TestSampleFor(t *testing.T) {
	for _, c := range []struct {
		rate, limit float64
		want        uint32
	}{
		{1000, 1000, 2}, {2000, 1000, 2}, {2500, 1000, 2}, {4000, 1000, 3}, {150_000, 1000, 120}, {166_000, 1000, 133},
		{1e12, 1000, maxSample}, {5000, 0, 2},
	} {
		got := sampleFor(c.rate, c.limit)
		if got != c.want {
			t.Errorf("sampleFor(%v, %v) = %d, want %d", c.rate, c.limit, got, c.want)
		}
		if c.limit > 0 && got > 2 && got < maxSample {
			if through := c.rate / float64(got); through < c.limit || through > 1.5*c.limit {
				t.Errorf("sampleFor(%v, %v) = %d lets %v/s through", c.rate, c.limit, got, through)
			}
		}
	}
}

// TestResample: the sample changes only for a change of more than an
// eighth.
func TestResample(t *testing.T) {
	for _, c := range []struct {
		n, want uint32
		swap    bool
	}{{136, 136, false}, {136, 150, false}, {136, 153, false}, {136, 154, true}, {136, 119, false}, {136, 118, true}, {2, 3, true}, {2, 2, false}, {maxSample, 2, true}} {
		if got := resample(c.n, c.want); got != c.swap {
			t.Errorf("resample(%d, %d) = %v, want %v", c.n, c.want, got, c.swap)
		}
	}
}

// TestDetector: a sender refused threshold times within a window is a
// storm, found at once; refusals spread over several windows, or shared
// among senders, are not.
func TestDetector(t *testing.T) {
	a, b := [6]byte{2, 0, 0, 0, 0, 0xa}, [6]byte{2, 0, 0, 0, 0, 0xb}
	const threshold = 100
	ms := int64(time.Millisecond)
	var d detector
	now := int64(time.Hour)
	// 99 refusals of a per window, windows apart: never a storm.
	for w := range 3 {
		for i := range threshold - 1 {
			if _, _, ok := d.refuse(a, now+int64(w)*int64(stormWindow)+int64(i), threshold); ok {
				t.Fatalf("window %d, refusal %d: a storm", w, i)
			}
		}
	}
	// a and b alternating: neither dominates.
	now += 10 * int64(stormWindow)
	for i := range 4 * threshold {
		src := a
		if i%2 == 1 {
			src = b
		}
		if _, _, ok := d.refuse(src, now+int64(i), threshold); ok {
			t.Fatalf("refusal %d: a storm while two senders share the refusals", i)
		}
	}
	// a refused 100 times in 10 ms, among b's: a storm at the 100th
	// refusal of a beyond b's, at 10k/s.
	now += 10 * int64(stormWindow)
	d = detector{}
	var found bool
	for i := 0; i < 2*threshold && !found; i++ {
		mac, rate, ok := d.refuse(a, now+int64(i)*ms/10, threshold)
		if ok {
			found = true
			if mac != a || i != threshold-1 || rate < 9000 || rate > 11000 {
				t.Errorf("storm of %v at refusal %d, %v/s: want a at %d, about 10000/s", mac, i, rate, threshold-1)
			}
		}
	}
	if !found {
		t.Error("no storm")
	}
	if n := testing.AllocsPerRun(100, func() { d.refuse(b, now, threshold) }); n != 0 {
		t.Errorf("%v allocs", n)
	}
}
