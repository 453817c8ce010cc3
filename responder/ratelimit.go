package responder

import (
	"time"

	"github.com/pxresp/pxresp/internal/ratelimit"
)

// DefaultRateLimit is the replies per second per interface that pxresp
// allows unless told otherwise (--rate-limit). A pod asks for its gateway
// once when it starts and then re-probes it every half minute or so; even a
// pod that starts hundreds of connections at once needs one answer, not a
// thousand a second. The limit is there only to contain a storm: a
// misbehaving or hostile pod that floods requests.
const DefaultRateLimit = 1000

// newLimiter returns the reply limiter cfg asks for, on the clock now (nil:
// the monotonic clock). Only the Serve goroutine uses it, so it takes no
// lock.
func newLimiter(cfg *Config, now func() int64) ratelimit.Limiter {
	return ratelimit.New(cfg.RateLimit, cfg.RateBurst, now)
}

// wallClock reads the wall clock (CLOCK_REALTIME, the clock of the kernel's
// receive timestamps) for the latency observation at the cost of the
// monotonic clock alone, about half the cost of time.Now, which reads both.
// It adds the monotonic time elapsed since an anchor, a time.Now reading it
// takes again once it is a second old. The two clocks advance at the same
// rate (NTP slews both), so the result is the wall clock's, except for up
// to a second after the wall clock is stepped. Only the Serve goroutine
// uses it, so it takes no lock.
type wallClock struct {
	mono0, wall0 int64 // ratelimit.Monotonic and Unix nanoseconds at the anchor
}

// now returns the current wall clock time in Unix nanoseconds.
func (c *wallClock) now() int64 {
	m := ratelimit.Monotonic()
	if c.wall0 == 0 || m-c.mono0 > int64(time.Second) {
		t := time.Now()
		c.wall0, c.mono0 = t.UnixNano(), ratelimit.MonotonicAt(t)
		return c.wall0
	}
	return c.wall0 + m - c.mono0
}
