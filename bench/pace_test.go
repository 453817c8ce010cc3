package main

import (
	"testing"
	"time"
)

func TestPacedDue(t *testing.T) {
	for _, c := range []struct {
		el    time.Duration
		rate  float64
		total int64
		want  int64
	}{
		{0, 100000, 1e9, 0},
		{-time.Second, 100000, 1e9, 0},
		{time.Millisecond, 100000, 1e9, 100},
		{1500 * time.Microsecond, 100000, 1e9, 150},
		{time.Second, 100000, 1e9, 100000},
		{2 * time.Second, 100000, 150000, 150000}, // capped at total
		{time.Second, 0, 1e9, 0},
		{9 * time.Microsecond, 100000, 1e9, 0}, // 0.9 of a request: not yet
	} {
		if got := pacedDue(c.el, c.rate, c.total); got != c.want {
			t.Errorf("pacedDue(%v, %v, %d) = %d, want %d", c.el, c.rate, c.total, got, c.want)
		}
	}
}

func TestPacedBatch(t *testing.T) {
	for _, c := range []struct {
		sent, due int64
		max, want int
	}{
		{0, 100, 200, 100},
		{100, 100, 200, 0},
		{150, 100, 200, 0},  // ahead
		{0, 1000, 200, 200}, // late: capped
		{999, 1000, 200, 1},
	} {
		if got := pacedBatch(c.sent, c.due, c.max); got != c.want {
			t.Errorf("pacedBatch(%d, %d, %d) = %d, want %d", c.sent, c.due, c.max, got, c.want)
		}
	}
}

func TestPacedSleep(t *testing.T) {
	// 100k/s, batches of 100: the batch after 100 sent is due at 2 ms.
	if got := pacedSleep(1200*time.Microsecond, 100, 100000, 100); got != 800*time.Microsecond {
		t.Errorf("pacedSleep = %v, want 800µs", got)
	}
	if got := pacedSleep(3*time.Millisecond, 100, 100000, 100); got != 0 {
		t.Errorf("pacedSleep when late = %v, want 0", got)
	}
	if got := pacedSleep(time.Millisecond, 0, 0, 100); got != 0 {
		t.Errorf("pacedSleep at rate 0 = %v", got)
	}
	if batchFor(100000) != 100 || batchFor(500) != 1 {
		t.Errorf("batchFor: %d, %d", batchFor(100000), batchFor(500))
	}
}

// TestPacingSimulation drives the pacing functions with a clock that
// oversleeps by up to 300µs, as a real timer does: the average rate still
// holds, and no burst exceeds two batches.
func TestPacingSimulation(t *testing.T) {
	const rate, dur = 100000.0, time.Second
	total := int64(rate * dur.Seconds())
	batch := batchFor(rate)
	var now time.Duration
	var sent int64
	maxBurst := 0
	for i := 0; i < 1_000_000 && sent < total; i++ {
		n := pacedBatch(sent, pacedDue(now, rate, total), 2*batch)
		maxBurst = max(maxBurst, n)
		sent += int64(n)
		if d := pacedSleep(now, sent, rate, batch); d > 0 {
			now += d + time.Duration(i%4)*100*time.Microsecond // oversleep 0-300µs
		} else {
			now += time.Microsecond // the sends themselves
		}
	}
	if sent != total {
		t.Fatalf("sent %d, want %d", sent, total)
	}
	if maxBurst > 2*batch {
		t.Errorf("burst of %d, want <= %d", maxBurst, 2*batch)
	}
	if now > dur+5*time.Millisecond {
		t.Errorf("took %v of simulated time for %v worth of requests", now, dur)
	}
}
