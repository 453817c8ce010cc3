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

// useClock makes r's limiter read c, from a full bucket.
func (c *fakeClock) useClock(r *Responder, cfg Config) {
	r.limit = newLimiter(&cfg, c.now)
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
