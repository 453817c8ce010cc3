package responder

import "time"

// DefaultRateLimit is the replies per second per interface that pxresp
// allows unless told otherwise (--rate-limit). A pod asks for its gateway
// once when it starts and then re-probes it every half minute or so; even a
// pod that starts hundreds of connections at once needs one answer, not a
// thousand a second. The limit is there only to contain a storm: a
// misbehaving or hostile pod that floods requests.
const DefaultRateLimit = 1000

// minBurst is the smallest burst a limit gets (see burstFor).
const minBurst = 10

// burstFor is the burst a rate gets when Config.RateBurst is 0: a tenth of a
// second's worth of replies, at least minBurst. For the default 1000/s that
// is 100.
func burstFor(rate int) int {
	return max(rate/10, minBurst)
}

// monoBase anchors monotonicNow: time.Since of a time with a monotonic
// reading reads only the runtime's monotonic clock (a vDSO call, ~20 ns),
// not the wall clock.
var monoBase = time.Now()

// monotonicNow returns monotonic nanoseconds since the process started.
func monotonicNow() int64 { return int64(time.Since(monoBase)) }

// rateLimiter is a token bucket of burst tokens refilled at rate per second,
// kept as one number (the "generic cell rate algorithm"): tat, the time at
// which the bucket would be full again. Each allowed reply moves tat one
// interval (1/rate) later; a reply is refused when that would put tat more
// than burst intervals ahead of now. It is computed from the clock read at
// each decision: no timer, no goroutine, nothing happens while idle. Only
// the Serve goroutine uses it, so it takes no lock.
type rateLimiter struct {
	interval int64 // ns per token; 0 means no limit
	depth    int64 // burst * interval: how far ahead of now tat may go
	tat      int64 // the theoretical arrival time, in now's nanoseconds
	now      func() int64
}

// newRateLimiter returns a limiter of rate tokens per second with the given
// burst (0: burstFor(rate)). A rate of 0 or less means no limit.
func newRateLimiter(rate, burst int, now func() int64) rateLimiter {
	if rate <= 0 {
		return rateLimiter{now: now}
	}
	if burst <= 0 {
		burst = burstFor(rate)
	}
	interval := max(int64(time.Second)/int64(rate), 1)
	return rateLimiter{interval: interval, depth: int64(burst) * interval, now: now}
}

// allow takes a token if there is one.
func (l *rateLimiter) allow() bool {
	if l.interval == 0 {
		return true
	}
	now := l.now()
	// A bucket idle for long enough is full: tat never lags behind now.
	tat := max(l.tat, now) + l.interval
	if tat-now > l.depth {
		return false
	}
	l.tat = tat
	return true
}

// wallClock reads the wall clock (CLOCK_REALTIME, the clock of the kernel's
// receive timestamps) for the latency observation at the cost of the
// monotonic clock alone: time.Now reads both clocks (~44 ns on the 2-vCPU
// VM), monotonicNow one (~24 ns). It adds the monotonic time elapsed since
// an anchor, a time.Now reading it takes again once it is a second old. The
// two clocks advance at the same rate (NTP slews both), so the result is
// the wall clock's, except for up to a second after the wall clock is
// stepped. Only the Serve goroutine uses it, so it takes no lock.
type wallClock struct {
	mono0, wall0 int64 // monotonicNow and Unix nanoseconds at the anchor
}

// now returns the current wall clock time in Unix nanoseconds.
func (c *wallClock) now() int64 {
	m := monotonicNow()
	if c.wall0 == 0 || m-c.mono0 > int64(time.Second) {
		t := time.Now()
		c.wall0, c.mono0 = t.UnixNano(), int64(t.Sub(monoBase))
		return c.wall0
	}
	return c.wall0 + m - c.mono0
}
