package responder

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pxresp/pxresp/policy"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ ns int64 }

func (c *fakeClock) now() int64              { return c.ns }
func (c *fakeClock) advance(d time.Duration) { c.ns += int64(d) }

// useClock makes r's limiter read c, from a full bucket.
func (c *fakeClock) useClock(r *Responder, cfg Config) {
	r.limit = newLimiter(&cfg, c.now)
	r.shedLimit, r.fullLimit = r.limit, r.limit
}

// TestLimiterFromConfig: Config.RateLimit and RateBurst make the limiter
// (internal/ratelimit tests the limiter itself).
func TestLimiterFromConfig(t *testing.T) {
	for _, c := range []struct {
		rate, burst int
		interval    time.Duration
		wantBurst   int
	}{
		{10, 0, 100 * time.Millisecond, 10},
		{DefaultRateLimit, 0, time.Millisecond, 100},
		{1000, 3, time.Millisecond, 3},
		{0, 5, 0, 0},
	} {
		r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
			RateLimit: c.rate, RateBurst: c.burst})
		if iv, b := r.limit.Limit(); iv != c.interval || b != c.wantBurst {
			t.Errorf("limiter from Config{RateLimit: %d, RateBurst: %d}: %v per token, burst %d; want %v, %d",
				c.rate, c.burst, iv, b, c.interval, c.wantBurst)
		}
	}
}

func rateLimitedResponder(t testing.TB, f transport, rate, burst int) (*Responder, *fakeClock) {
	cfg := Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
		RateLimit: rate, RateBurst: burst}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	r := newResponder(f, cfg)
	c := &fakeClock{}
	c.useClock(r, cfg)
	return r, c
}

// TestHandleRateLimited: requests over the limit are counted and not
// answered; requests the policy ignores take no token.
func TestHandleRateLimited(t *testing.T) {
	f := newFake()
	r, clk := rateLimitedResponder(t, f, 10, 3)
	notTarget := request(podMAC, podIP, netip.MustParseAddr("192.0.2.1"), bcast)
	for range 5 {
		r.handle(gwRequest)
	}
	for range 20 {
		r.handle(notTarget) // ignored: costs no token
	}
	if n := len(f.takeSent()); n != 3 {
		t.Errorf("%d replies to 5 requests with a burst of 3", n)
	}
	st := r.Stats()
	if st.Requests != 25 || st.Replies != 3 || st.RateLimited != 2 || st.Ignored[policy.NotTarget] != 20 {
		t.Errorf("stats %+v: want 25 requests, 3 replies, 2 rate limited, 20 not-a-target", st)
	}

	clk.advance(100 * time.Millisecond) // one token
	r.handle(gwRequest)
	r.handle(gwRequest)
	if n := len(f.takeSent()); n != 1 {
		t.Errorf("%d replies after one token's worth of time, want 1", n)
	}
	if st := r.Stats(); st.Replies != 4 || st.RateLimited != 3 {
		t.Errorf("stats %+v: want 4 replies, 3 rate limited", st)
	}
}

// TestHandleRateLimitedDoesNotAllocate: the limiter keeps the hot path free
// of allocations, whether it lets a reply through or not.
func TestHandleRateLimitedDoesNotAllocate(t *testing.T) {
	r, clk := rateLimitedResponder(t, nopTransport{}, 1000, 1)
	allowed := testing.AllocsPerRun(100, func() {
		clk.advance(time.Millisecond)
		r.handle(gwRequest)
	})
	limited := testing.AllocsPerRun(100, func() { r.handle(gwRequest) })
	if allowed != 0 || limited != 0 {
		t.Errorf("%v allocs per answered request, %v per rate-limited one; want 0", allowed, limited)
	}
	// And with the real clock.
	r = newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)},
		RateLimit: 1000})
	if n := testing.AllocsPerRun(1000, func() { r.handle(gwRequest) }); n != 0 {
		t.Errorf("%v allocs per request with the monotonic clock", n)
	}
	st := r.Stats()
	if st.Replies == 0 || st.RateLimited == 0 {
		t.Errorf("stats %+v: want both replies and rate-limited requests", st)
	}
}

// BenchmarkHandleRateLimit is BenchmarkHandle with a limit, on the
// monotonic clock: "answered" stays under the limit (each request is
// allowed), "limited" is a flood over it (1000/s with a burst of 1: nearly
// every request is refused).
func BenchmarkHandleRateLimit(b *testing.B) {
	for _, bc := range []struct {
		name        string
		rate, burst int
	}{{"answered", 1 << 40, 0}, {"limited", 1000, 1}} {
		b.Run(bc.name, func(b *testing.B) {
			r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(b),
				OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}},
				RateLimit: bc.rate, RateBurst: bc.burst})
			frame := request(podMAC, podIP, gateway, benchBcast)
			b.ReportAllocs()
			for b.Loop() {
				r.handle(frame)
			}
			st := r.Stats()
			b.ReportMetric(float64(st.RateLimited)/float64(st.Requests), "limited/op")
		})
	}
}

// TestWallClock: the wall clock read from the monotonic clock and an
// anchor is the wall clock, fresh or re-anchored, and costs no allocation.
func TestWallClock(t *testing.T) {
	var c wallClock
	for i := range 3 {
		if i == 2 {
			c.mono0 -= int64(2 * time.Second) // an anchor over a second old
		}
		before := time.Now().UnixNano()
		got := c.now()
		after := time.Now().UnixNano()
		if got < before || got > after {
			t.Errorf("read %d: %d, not within [%d, %d]", i, got, before, after)
		}
	}
	if n := testing.AllocsPerRun(100, func() { c.now() }); n != 0 {
		t.Errorf("%v allocs", n)
	}
}

// TestStormEngageRelease: a sender refused more than the limit allows in a
// window is shed by the filter (with the override MAC kept), and, once its
// frames stop, the next tick swaps the filter back. The counters and the
// filters set follow. Waits are bounded; nothing is timed.
func TestStormEngageRelease(t *testing.T) {
	f := newFake()
	ov := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	r := newResponder(f, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Override: ov, Policy: gwPolicy(t)},
		RateLimit: 100, RateBurst: 10})
	// The bucket holds 10; the storm is found at the 100th refusal of one
	// sender within a window, which 300 requests read at once reach. All
	// 300 were queued before the filter was swapped: not the sample.
	f.queued = 300
	for range 300 {
		r.handle(gwRequest)
	}
	sender, sample := r.Shedding()
	if !bytes.Equal(sender, podMAC) || sample < 2 {
		t.Fatalf("shedding %v, sample %d: want %v, sampled", sender, sample, podMAC)
	}
	f.mu.Lock()
	if n := len(f.sheds); n != 1 || f.sheds[0].mac != [6]byte(podMAC) || len(f.filters[0]) != 1 || !bytes.Equal(f.filters[0][0], ov) {
		t.Errorf("filters set: %v %v, want one shedding %v and passing %v", f.sheds, f.filters, podMAC, ov)
	}
	f.mu.Unlock()
	// Another sender on the interface: its bucket was refilled, and the
	// stormer's frames take from a bucket of their own.
	before := r.Stats()
	other := request(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}, netip.MustParseAddr("10.244.0.9"), gateway, bcast)
	for range 10 {
		r.handle(other)
		r.handle(gwRequest)
	}
	if st := r.Stats(); st.Replies < before.Replies+10 || st.Storms != 1 || st.StormsEnded != 0 {
		t.Errorf("after 10 requests of another sender: %+v, want 10 more replies, one storm going on", st)
	}
	// The sender stops: a tick ends the shedding.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s, _ := r.Shedding(); s == nil {
			break
		}
	}
	if s, _ := r.Shedding(); s != nil {
		t.Fatalf("still shedding %v after the sender stopped", s)
	}
	// The 10 frames of the stormer read after the backlog are the sample:
	// each stands for at most sample-1 dropped, and at least one.
	st := r.Stats()
	if st.Storms != 1 || st.StormsEnded != 1 || st.Shed < 10 || st.Shed > 10*(sample-1) {
		t.Errorf("stats %+v: want one storm, ended, 10 to %d frames shed", st, 10*(sample-1))
	}
	f.mu.Lock()
	last := f.sheds[len(f.sheds)-1]
	lastOv := f.filters[len(f.filters)-1]
	f.mu.Unlock()
	if last.active() || len(lastOv) != 1 || !bytes.Equal(lastOv[0], ov) {
		t.Errorf("last filter: shed %v, overrides %v; want no shedding, %v", last, lastOv, ov)
	}
	// Stopping does not leave a tick behind; Close counts nothing more.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if st2 := r.Stats(); st2.StormsEnded != 1 {
		t.Errorf("after Close: %+v", st2)
	}
}
