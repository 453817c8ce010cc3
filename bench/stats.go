package main

import (
	"math"
	"slices"
)

// Summary describes a set of round-trip samples, in nanoseconds.
type Summary struct {
	N    int   `json:"n"`    // answered requests
	Lost int   `json:"lost"` // requests with no reply within the timeout
	Min  int64 `json:"min_ns"`
	P50  int64 `json:"p50_ns"`
	P90  int64 `json:"p90_ns"`
	P99  int64 `json:"p99_ns"`
	P999 int64 `json:"p999_ns"`
	Max  int64 `json:"max_ns"`
	Mean int64 `json:"mean_ns"`
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted:
// the smallest sample such that at least q of all samples are <= it. It
// returns 0 for no samples.
func percentile(sorted []int64, q float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(n) - 1e-9)) // 1-based; the epsilon absorbs q*n rounding up
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summarize sorts a copy of samples and describes it.
func summarize(samples []int64, lost int) Summary {
	s := Summary{N: len(samples), Lost: lost}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum float64
	for _, v := range sorted {
		sum += float64(v)
	}
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.P50 = percentile(sorted, 0.50)
	s.P90 = percentile(sorted, 0.90)
	s.P99 = percentile(sorted, 0.99)
	s.P999 = percentile(sorted, 0.999)
	s.Mean = int64(math.Round(sum / float64(len(sorted))))
	return s
}

// ratio is a/b, or NaN when b is 0 (no baseline measured).
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// cdfPoints returns the empirical CDF of samples as a step line of at most
// about 2×maxPoints points (x in the unit given by div, 1e3 for µs): it
// starts at (min, 0), rises at every kept sample and ends at (max, 1). Kept
// samples are evenly spaced in rank and always include the minimum and the
// maximum.
func cdfPoints(samples []int64, div float64, maxPoints int) (xs, ys []float64) {
	n := len(samples)
	if n == 0 || maxPoints < 2 {
		return nil, nil
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	k := min(n, maxPoints)
	prev := 0.0
	for i := range k {
		idx := 0
		if k > 1 {
			idx = int(math.Round(float64(i) * float64(n-1) / float64(k-1)))
		}
		x := float64(sorted[idx]) / div
		y := float64(idx+1) / float64(n)
		xs = append(xs, x, x)
		ys = append(ys, prev, y)
		prev = y
	}
	return xs, ys
}

// logTicks returns 1-2-5 ticks covering [lo, hi] (lo > 0).
func logTicks(lo, hi float64) []float64 {
	if lo <= 0 || hi < lo {
		return nil
	}
	var ts []float64
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= lo*0.999 && v <= hi*1.001 {
				ts = append(ts, v)
			}
		}
	}
	return ts
}
