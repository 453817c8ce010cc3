package main

import (
	"fmt"
	"slices"
	"time"
)

// The flatness verdict: pure, unit-tested in flat_test.go.

// Phase says where in the churn cycle a sample was taken.
type Phase string

const (
	// Quiet: at the start of a cycle, only the pods attached.
	Quiet Phase = "quiet"
	// Burst: the cycle's churned veths all attached.
	Burst Phase = "burst"
)

// Sample is what pxresp held at one moment, read from /proc.
type Sample struct {
	At       time.Duration // since the measured run began
	Cycle    int
	Phase    Phase
	Attached int // interfaces pxresp serves (its attach minus detach lines)
	FDs      int
	Sockets  int
	Threads  int
	RSSKB    int
}

// Limits says how much growth still counts as flat.
type Limits struct {
	// RSS: the mean of the last third of the quiet samples may exceed the
	// mean of the first third by RSSRatio (0.10 = 10 %) or by RSSSlackKB,
	// whichever is larger.
	RSSRatio   float64
	RSSSlackKB int
	// Threads: the last third's maximum may exceed the first third's by
	// ThreadSlack. The Go runtime keeps the threads it made, and makes one
	// when a goroutine blocks in a slow syscall, so a few may come late;
	// a leak keeps climbing.
	ThreadSlack int
}

// DefaultLimits are the limits of the soak's verdict.
var DefaultLimits = Limits{RSSRatio: 0.10, RSSSlackKB: 2048, ThreadSlack: 4}

// Verdict is the outcome of Judge.
type Verdict struct {
	Flat    bool
	Reasons []string // why not, or empty

	// Means and maxima of the first and last thirds of the quiet samples.
	RSSFirstKB, RSSLastKB      float64
	ThreadsFirst, ThreadsLast  int
	FDsByAttached              map[int][]int // distinct fd counts seen at each attached count
	QuietSamples, BurstSamples int
}

// Judge decides whether the samples are flat:
//
//   - RSS: the mean of the last third of the quiet samples is within
//     lim.RSSRatio or lim.RSSSlackKB of the mean of the first third;
//   - threads: the last third's maximum is within lim.ThreadSlack of the
//     first third's;
//   - fds and sockets: every sample with the same attached count (the same
//     point of the churn cycle) has the same number, exactly.
//
// It needs at least 3 quiet samples.
func Judge(samples []Sample, lim Limits) Verdict {
	v := Verdict{FDsByAttached: make(map[int][]int)}
	var quiet []Sample
	for _, s := range samples {
		switch s.Phase {
		case Quiet:
			quiet = append(quiet, s)
		case Burst:
			v.BurstSamples++
		}
	}
	v.QuietSamples = len(quiet)
	if len(quiet) < 3 {
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d quiet samples, need at least 3 (run longer)", len(quiet)))
		return v
	}
	k := len(quiet) / 3
	first, last := quiet[:k], quiet[len(quiet)-k:]

	v.RSSFirstKB, v.RSSLastKB = meanRSS(first), meanRSS(last)
	allowed := max(v.RSSFirstKB*(1+lim.RSSRatio), v.RSSFirstKB+float64(lim.RSSSlackKB))
	if v.RSSLastKB > allowed {
		v.Reasons = append(v.Reasons, fmt.Sprintf("RSS grew: last-third mean %.0f kB > %.0f kB allowed (first-third mean %.0f kB + max(%.0f%%, %d kB))",
			v.RSSLastKB, allowed, v.RSSFirstKB, lim.RSSRatio*100, lim.RSSSlackKB))
	}

	v.ThreadsFirst, v.ThreadsLast = maxThreads(first), maxThreads(last)
	if v.ThreadsLast > v.ThreadsFirst+lim.ThreadSlack {
		v.Reasons = append(v.Reasons, fmt.Sprintf("threads grew: last-third max %d > first-third max %d + %d",
			v.ThreadsLast, v.ThreadsFirst, lim.ThreadSlack))
	}

	socks := make(map[int][]int)
	for _, s := range samples {
		if !slices.Contains(v.FDsByAttached[s.Attached], s.FDs) {
			v.FDsByAttached[s.Attached] = append(v.FDsByAttached[s.Attached], s.FDs)
		}
		if !slices.Contains(socks[s.Attached], s.Sockets) {
			socks[s.Attached] = append(socks[s.Attached], s.Sockets)
		}
	}
	for _, a := range sortedKeys(v.FDsByAttached) {
		if fds := v.FDsByAttached[a]; len(fds) > 1 {
			slices.Sort(fds)
			v.Reasons = append(v.Reasons, fmt.Sprintf("fds not constant at %d attached: %v", a, fds))
		}
		if ss := socks[a]; len(ss) > 1 {
			slices.Sort(ss)
			v.Reasons = append(v.Reasons, fmt.Sprintf("sockets not constant at %d attached: %v", a, ss))
		}
	}
	v.Flat = len(v.Reasons) == 0
	return v
}

func meanRSS(ss []Sample) float64 {
	var sum float64
	for _, s := range ss {
		sum += float64(s.RSSKB)
	}
	return sum / float64(len(ss))
}

func maxThreads(ss []Sample) int {
	m := 0
	for _, s := range ss {
		m = max(m, s.Threads)
	}
	return m
}

func sortedKeys(m map[int][]int) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
