package ratelimit

import (
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ ns int64 }

func (c *fakeClock) now() int64              { return c.ns }
func (c *fakeClock) advance(d time.Duration) { c.ns += int64(d) }

func TestLimiter(t *testing.T) {
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
		{"burst of two at 20/s", 20, 2, 0, []step{{0, 5, 2}, {50 * time.Millisecond, 2, 1}}},
		{"rate above 1e9/s is one per ns", 2_000_000_000, 4, 0, []step{{0, 10, 4}, {3, 10, 3}}},
		{"disabled", 0, 0, 0, []step{{0, 100_000, 100_000}, {time.Hour, 10, 10}}},
		{"negative is disabled", -1, 5, 0, []step{{0, 1000, 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{ns: tt.start}
			l := New(tt.rate, tt.burst, c.now)
			for i, s := range tt.steps {
				c.advance(s.advance)
				got := 0
				for range s.asks {
					if l.Allow() {
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

// TestLimiterSustained: under a steady flood far above the rate, the
// tokens taken over a window are rate × window plus the burst, give or take
// one.
func TestLimiterSustained(t *testing.T) {
	for _, rate := range []int{1, 7, 200, 1000, 3000, 100_000} {
		c := &fakeClock{}
		l := New(rate, 0, c.now)
		allowed := 0
		// 2 s of a flood of one request every 10 µs.
		for range 200_000 {
			if l.Allow() {
				allowed++
			}
			c.advance(10 * time.Microsecond)
		}
		want := 2*rate + DefaultBurst(rate)
		if rate > 50_000 {
			want = 200_000 // the flood itself is slower than the limit
		}
		if allowed < want-1 || allowed > want+1 {
			t.Errorf("rate %d/s: %d allowed in 2 s of flood, want %d±1", rate, allowed, want)
		}
	}
}

// TestLimiterDisabledReadsNoClock: with no limit, deciding costs no clock
// read.
func TestLimiterDisabledReadsNoClock(t *testing.T) {
	for _, l := range []Limiter{New(0, 0, func() int64 { t.Fatal("clock read with no limit"); return 0 }), {}} {
		for range 10 {
			if !l.Allow() {
				t.Fatal("refused with no limit")
			}
		}
	}
}

func TestLimit(t *testing.T) {
	for _, c := range []struct {
		rate, burst  int
		interval     time.Duration
		wantBurst    int
		wantDisabled bool
	}{
		{rate: 10, interval: 100 * time.Millisecond, wantBurst: 10},
		{rate: 1000, burst: 3, interval: time.Millisecond, wantBurst: 3},
		{rate: 0, burst: 3, wantDisabled: true},
	} {
		l := New(c.rate, c.burst, nil)
		iv, b := l.Limit()
		if c.wantDisabled {
			if iv != 0 || b != 0 {
				t.Errorf("New(%d, %d).Limit() = %v, %d; want no limit", c.rate, c.burst, iv, b)
			}
			continue
		}
		if iv != c.interval || b != c.wantBurst {
			t.Errorf("New(%d, %d).Limit() = %v, %d; want %v, %d", c.rate, c.burst, iv, b, c.interval, c.wantBurst)
		}
	}
}

func TestMonotonic(t *testing.T) {
	a := Monotonic()
	time.Sleep(time.Millisecond)
	b := Monotonic()
	if a < 0 || b-a < int64(time.Millisecond) || b-a > int64(10*time.Second) {
		t.Errorf("Monotonic: %d then %d across a 1 ms sleep", a, b)
	}
	before := Monotonic()
	at := MonotonicAt(time.Now())
	after := Monotonic()
	if at < before || at > after {
		t.Errorf("MonotonicAt(time.Now()) = %d, not within [%d, %d]", at, before, after)
	}
	// A Limiter without a clock of its own reads Monotonic.
	l := New(1, 1, nil)
	if !l.Allow() || l.Allow() {
		t.Error("a limit of 1/s with a burst of 1 on the monotonic clock did not allow exactly one of two")
	}
}

// TestAllowDoesNotAllocate: the limiter serves hot paths.
func TestAllowDoesNotAllocate(t *testing.T) {
	c := &fakeClock{}
	l := New(1000, 1, c.now)
	if n := testing.AllocsPerRun(100, func() { c.advance(time.Microsecond); l.Allow() }); n != 0 {
		t.Errorf("%v allocs per Allow", n)
	}
}
