package main

import (
	"strings"
	"testing"
	"time"
)

// cycles makes n cycles of samples: a quiet one (8 attached) and a burst one
// (58 attached) each, with RSS and threads from the functions given.
func cycles(n int, rss func(i int) int, threads func(i int) int) []Sample {
	var ss []Sample
	for i := range n {
		at := time.Duration(i) * 10 * time.Second
		ss = append(ss,
			Sample{At: at, Cycle: i, Phase: Quiet, Attached: 8, FDs: 18, Sockets: 13, Threads: threads(i), RSSKB: rss(i)},
			Sample{At: at + 5*time.Second, Cycle: i, Phase: Burst, Attached: 58, FDs: 68, Sockets: 63, Threads: threads(i), RSSKB: rss(i) + 500})
	}
	return ss
}

func constant(v int) func(int) int { return func(int) int { return v } }

func TestJudge(t *testing.T) {
	cases := []struct {
		name    string
		samples []Sample
		flat    bool
		reason  string // substring of a reason when not flat
	}{
		{"flat", cycles(60, constant(12000), constant(8)), true, ""},
		{"noise within 10%", cycles(60, func(i int) int { return 12000 + (i%7)*150 }, constant(8)), true, ""},
		{"small RSS within the 2 MB slack", cycles(30, func(i int) int { return 6000 + i*50 }, constant(8)), true, ""},
		{"RSS leak", cycles(60, func(i int) int { return 12000 + i*100 }, constant(8)), false, "RSS grew"},
		{"threads settle late, within slack", cycles(60, constant(12000), func(i int) int { return 8 + min(i/20, 3) }), true, ""},
		{"thread leak", cycles(60, constant(12000), func(i int) int { return 8 + i/5 }), false, "threads grew"},
		{"too short", cycles(2, constant(12000), constant(8)), false, "need at least 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Judge(c.samples, DefaultLimits)
			if v.Flat != c.flat {
				t.Fatalf("Flat = %v, want %v; reasons %q", v.Flat, c.flat, v.Reasons)
			}
			if c.reason != "" && !strings.Contains(strings.Join(v.Reasons, "; "), c.reason) {
				t.Errorf("reasons %q, want one containing %q", v.Reasons, c.reason)
			}
		})
	}
}

func TestJudgeFDs(t *testing.T) {
	ss := cycles(9, constant(12000), constant(8))
	v := Judge(ss, DefaultLimits)
	if !v.Flat || v.QuietSamples != 9 || v.BurstSamples != 9 {
		t.Fatalf("baseline: %+v", v)
	}
	// One fd more at one quiet sample: a leak, or a sample not taken at
	// the same point of the cycle. Either way not flat.
	ss[10].FDs++ // cycle 5, quiet
	v = Judge(ss, DefaultLimits)
	if v.Flat || !strings.Contains(strings.Join(v.Reasons, "; "), "fds not constant at 8 attached: [18 19]") {
		t.Errorf("an extra fd: Flat %v, reasons %q", v.Flat, v.Reasons)
	}
	// A socket swapped for another kind of fd: fds equal, sockets not.
	ss = cycles(9, constant(12000), constant(8))
	ss[3].Sockets--
	v = Judge(ss, DefaultLimits)
	if v.Flat || !strings.Contains(strings.Join(v.Reasons, "; "), "sockets not constant at 58 attached") {
		t.Errorf("a missing socket: Flat %v, reasons %q", v.Flat, v.Reasons)
	}
	// Different attached counts may differ.
	ss = cycles(9, constant(12000), constant(8))
	ss = append(ss, Sample{Phase: Burst, Attached: 30, FDs: 40, Sockets: 35, Threads: 8, RSSKB: 12000})
	if v := Judge(ss, DefaultLimits); !v.Flat {
		t.Errorf("another attached count: %q", v.Reasons)
	}
}

func TestJudgeThirds(t *testing.T) {
	// 10 quiet samples: thirds of 3; the middle ones do not count.
	ss := cycles(10, func(i int) int {
		if i >= 3 && i <= 6 {
			return 50000 // a transient peak in the middle
		}
		return 12000
	}, constant(8))
	v := Judge(ss, DefaultLimits)
	if !v.Flat || v.RSSFirstKB != 12000 || v.RSSLastKB != 12000 {
		t.Errorf("middle peak: %+v", v)
	}
}
