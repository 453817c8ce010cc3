// Package ratelimit is pxresp's one rate limiter: a token bucket of burst
// tokens refilled at a rate per second, kept as a single number (the
// "generic cell rate algorithm"). A rate of 0 or less means no limit.
//
// A Limiter takes no lock, starts no goroutine and does nothing while idle:
// each Allow reads the clock once and decides from it. It is not safe for
// concurrent use: one goroutine owns it, or its owner's lock guards it.
// Allow never allocates.
package ratelimit

import "time"

// MinBurst is the smallest burst New gives a limit whose burst it chooses.
const MinBurst = 10

// DefaultBurst is the burst New gives rate when none is asked for: a tenth
// of a second's worth of tokens, at least MinBurst. For 1000/s that is 100.
func DefaultBurst(rate int) int {
	return max(rate/10, MinBurst)
}

// monoBase anchors Monotonic: time.Since of a time with a monotonic reading
// reads only the runtime's monotonic clock (a vDSO call), not the wall
// clock.
var monoBase = time.Now()

// Monotonic returns monotonic nanoseconds since the process started: the
// clock a Limiter reads unless it is given another.
func Monotonic() int64 { return int64(time.Since(monoBase)) }

// MonotonicAt returns t on the clock of Monotonic. t must carry a monotonic
// reading (a time from time.Now).
func MonotonicAt(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// Limiter is a token bucket kept as tat, the "theoretical arrival time" at
// which the bucket would be full again. Each allowed token moves tat one
// interval (1/rate) later; a token is refused when that would put tat more
// than burst intervals ahead of now. The zero Limiter allows everything.
type Limiter struct {
	interval int64 // ns per token; 0 means no limit
	depth    int64 // burst * interval: how far ahead of now tat may go
	tat      int64 // in the clock's nanoseconds
	now      func() int64
}

// New returns a Limiter of rate tokens per second, at most burst at once
// (0 or less: DefaultBurst(rate)), reading the clock now (nanoseconds on any
// monotonic scale; nil means Monotonic). A rate of 0 or less means no limit:
// Allow then always says yes and reads no clock. The bucket starts full.
func New(rate, burst int, now func() int64) Limiter {
	if now == nil {
		now = Monotonic
	}
	if rate <= 0 {
		return Limiter{now: now}
	}
	if burst <= 0 {
		burst = DefaultBurst(rate)
	}
	// Above 1e9 per second a token costs 1 ns: the clock's resolution.
	interval := max(int64(time.Second)/int64(rate), 1)
	return Limiter{interval: interval, depth: int64(burst) * interval, now: now}
}

// Allow takes a token if there is one.
func (l *Limiter) Allow() bool {
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

// Limit returns the time one token takes to come back and the burst; 0
// and 0 for no limit.
func (l *Limiter) Limit() (interval time.Duration, burst int) {
	if l.interval == 0 {
		return 0, 0
	}
	return time.Duration(l.interval), int(l.depth / l.interval)
}
