package responder

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pxresp/pxresp/policy"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ ns int64 }

func (c *fakeClock) now() int64              { return c.ns }
func (c *fakeClock) advance(d time.Duration) { c.ns += int64(d) }
func (c *fakeClock) limiter(rate, burst int) rateLimiter {
	return newRateLimiter(rate, burst, c.now)
}

func TestRateLimiter(t *testing.T) {
	type step struct {
		advance time.Duration // move the clock first
		asks    int           // then ask this many times at that instant
		want    int           // and expect this many allowed
	}
	tests := []struct {
		name        string
		rate, burst int
		start       int64 // the clock's first reading
		steps       []step
	}{
		{"burst then empty", 1000, 100, 0, []step{{0, 150, 100}, {0, 10, 0}}},
		{"refill one token per interval", 1000, 100, 0, []step{
			{0, 100, 100}, {time.Millisecond, 5, 1}, {500 * time.Microsecond, 5, 0},
			{500 * time.Microsecond, 5, 1}, {10 * time.Millisecond, 50, 10}}},
		{"idle refills only up to the burst", 1000, 100, 0, []step{
			{0, 100, 100}, {time.Hour, 1_000_000, 100}, {0, 1, 0}}},
		{"clock far from zero starts full", 200, 20, int64(90 * 24 * time.Hour), []step{{0, 25, 20}, {5 * time.Millisecond, 2, 1}}},
		{"default burst is a tenth of a second", 1000, 0, 0, []step{{0, 1000, 100}}},
		{"default burst is at least 10", 5, 0, 0, []step{{0, 20, 10}, {200 * time.Millisecond, 5, 1}}},
		{"burst of one", 10, 1, 0, []step{{0, 3, 1}, {99 * time.Millisecond, 1, 0}, {time.Millisecond, 3, 1}}},
		{"rate above 1e9/s is one per ns", 2_000_000_000, 4, 0, []step{{0, 10, 4}, {3, 10, 3}}},
		{"disabled", 0, 0, 0, []step{{0, 100_000, 100_000}, {time.Hour, 10, 10}}},
		{"negative is disabled", -1, 5, 0, []step{{0, 1000, 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{ns: tt.start}
			l := c.limiter(tt.rate, tt.burst)
			for i, s := range tt.steps {
				c.advance(s.advance)
				got := 0
				for range s.asks {
					if l.allow() {
						got++
					}
				}
				if got != s.want {
					t.Fatalf("step %d (+%v, %d asks): %d allowed, want %d", i, s.advance, s.asks, got, s.want)
				}
			}
		})
	}
}

// TestRateLimiterSustained: under a steady flood far above the rate, the
// replies over a window are rate × window plus the burst, give or take one.
func TestRateLimiterSustained(t *testing.T) {
	for _, rate := range []int{1, 7, 200, 1000, 3000, 100_000} {
		c := &fakeClock{}
		l := c.limiter(rate, 0)
		allowed := 0
		// 2 s of a flood of one request every 10 µs.
		for range 200_000 {
			if l.allow() {
				allowed++
			}
			c.advance(10 * time.Microsecond)
		}
		want := 2*rate + burstFor(rate)
		if rate > 50_000 {
			want = 200_000 // the flood itself is slower than the limit
		}
		if allowed < want-1 || allowed > want+1 {
			t.Errorf("rate %d/s: %d allowed in 2 s of flood, want %d±1", rate, allowed, want)
		}
	}
}

// TestRateLimiterDisabledReadsNoClock: with no limit, deciding costs no
// clock read.
func TestRateLimiterDisabledReadsNoClock(t *testing.T) {
	l := newRateLimiter(0, 0, func() int64 { t.Fatal("clock read with no limit"); return 0 })
	for range 10 {
		if !l.allow() {
			t.Fatal("refused with no limit")
		}
	}
}

func TestMonotonicNow(t *testing.T) {
	a := monotonicNow()
	time.Sleep(time.Millisecond)
	b := monotonicNow()
	if a < 0 || b-a < int64(time.Millisecond) || b-a > int64(10*time.Second) {
		t.Errorf("monotonicNow: %d then %d across a 1 ms sleep", a, b)
	}
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", MAC: hostMAC, Policy: gwPolicy(t), RateLimit: 10})
	if r.limit.now == nil || r.limit.interval != int64(100*time.Millisecond) || r.limit.depth != int64(time.Second) {
		t.Errorf("limiter from Config{RateLimit: 10}: %+v, want 100 ms per token, burst 10 and a clock", r.limit)
	}
}

func rateLimitedResponder(t testing.TB, f transport, rate, burst int) (*Responder, *fakeClock) {
	cfg := Config{Index: 7, Name: "calitest", MAC: hostMAC, Policy: gwPolicy(t), RateLimit: rate, RateBurst: burst}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	r := newResponder(f, cfg)
	c := &fakeClock{}
	r.limit.now = c.now
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
	r = newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", MAC: hostMAC, Policy: gwPolicy(t), RateLimit: 1000})
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
			r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", MAC: hostMAC, Policy: gwPolicy(b),
				OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}, RateLimit: bc.rate, RateBurst: bc.burst})
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
