package main

import (
	"math"
	"slices"
	"testing"
)

func TestPercentileNearestRank(t *testing.T) {
	s := []int64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	for _, c := range []struct {
		q    float64
		want int64
	}{
		{0.001, 10}, {0.1, 10}, {0.5, 50}, {0.51, 60}, {0.9, 90}, {0.99, 100}, {0.999, 100}, {1, 100},
	} {
		if got := percentile(s, c.q); got != c.want {
			t.Errorf("percentile(%v) = %d, want %d", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %d", got)
	}
	if got := percentile([]int64{7}, 0.999); got != 7 {
		t.Errorf("percentile of one sample = %d", got)
	}
	// 1000 samples 1..1000: p99.9 is the 999th, not the maximum.
	big := make([]int64, 1000)
	for i := range big {
		big[i] = int64(i + 1)
	}
	if got := percentile(big, 0.999); got != 999 {
		t.Errorf("p99.9 of 1..1000 = %d, want 999", got)
	}
	if got := percentile(big, 0.99); got != 990 {
		t.Errorf("p99 of 1..1000 = %d, want 990", got)
	}
}

func TestSummarize(t *testing.T) {
	in := []int64{5, 1, 4, 2, 3}
	orig := slices.Clone(in)
	s := summarize(in, 2)
	if !slices.Equal(in, orig) {
		t.Error("summarize reordered its input")
	}
	want := Summary{N: 5, Lost: 2, Min: 1, P50: 3, P90: 5, P99: 5, P999: 5, Max: 5, Mean: 3}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if s := summarize(nil, 3); s != (Summary{Lost: 3}) {
		t.Errorf("summarize(nil) = %+v", s)
	}
}

func TestRatio(t *testing.T) {
	if r := ratio(3, 2); r != 1.5 {
		t.Errorf("ratio = %v", r)
	}
	if r := ratio(1, 0); !math.IsNaN(r) {
		t.Errorf("ratio over 0 = %v, want NaN", r)
	}
}

func TestCDFPoints(t *testing.T) {
	xs, ys := cdfPoints([]int64{3000, 1000, 2000}, 1e3, 10)
	wantX := []float64{1, 1, 2, 2, 3, 3}
	wantY := []float64{0, 1.0 / 3, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1}
	if !slices.Equal(xs, wantX) || !slices.Equal(ys, wantY) {
		t.Errorf("cdfPoints = %v %v, want %v %v", xs, ys, wantX, wantY)
	}
	// Downsampled: still from the minimum to the maximum, y ending at 1.
	many := make([]int64, 10000)
	for i := range many {
		many[i] = int64(10000 - i)
	}
	xs, ys = cdfPoints(many, 1, 100)
	if len(xs) != 200 || xs[0] != 1 || xs[len(xs)-1] != 10000 || ys[0] != 0 || ys[len(ys)-1] != 1 {
		t.Errorf("downsampled CDF: %d points, x %v..%v, y %v..%v", len(xs), xs[0], xs[len(xs)-1], ys[0], ys[len(ys)-1])
	}
	if !slices.IsSorted(xs) || !slices.IsSorted(ys) {
		t.Error("CDF not monotonic")
	}
	if xs, _ := cdfPoints(nil, 1, 10); xs != nil {
		t.Error("CDF of nothing")
	}
}

func TestLogTicks(t *testing.T) {
	got := logTicks(1, 100)
	want := []float64{1, 2, 5, 10, 20, 50, 100}
	if !slices.Equal(got, want) {
		t.Errorf("logTicks(1, 100) = %v, want %v", got, want)
	}
	if got := logTicks(3, 40); !slices.Equal(got, []float64{5, 10, 20}) {
		t.Errorf("logTicks(3, 40) = %v", got)
	}
	if logTicks(0, 1) != nil {
		t.Error("logTicks from 0")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing")
	}
}
