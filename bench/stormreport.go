package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/responder"
)

// worstStorm returns, of the P storms with n stormers, the one with the
// highest pxresp CPU, or nil.
func (r *Results) worstStorm(n int) *StormRun {
	var w *StormRun
	for _, s := range r.Storm {
		if s.Responder == P && s.Stormers == n && (w == nil || s.CPUPercent > w.CPUPercent) {
			w = s
		}
	}
	return w
}

// stormTargets evaluates the storm targets on the worst P storm (the most
// CPU) of one pod and of StormPods pods; the loss, over every round.
func stormTargets(r *Results) []Target {
	var ts []Target
	limit := float64(responder.DefaultRateLimit)
	for _, c := range []struct {
		n      int
		cpuMax float64
	}{{1, 10}, {r.Config.StormPods, 20}} {
		s := r.worstStorm(c.n)
		name := fmt.Sprintf("storm, %d pod%s", c.n, plural(c.n))
		if c.n > 1 {
			name += fmt.Sprintf(" (the observer is pod %d)", c.n+1)
		}
		add := func(what, lim string, eval func(s *StormRun) (string, bool)) {
			t := Target{Name: name + ": " + what, Limit: lim, Measured: s != nil && s.During.N > 0}
			if t.Measured {
				t.Actual, t.OK = eval(s)
			}
			ts = append(ts, t)
		}
		add("pxresp CPU", fmt.Sprintf("≤ %.0f%% of a core", c.cpuMax), func(s *StormRun) (string, bool) {
			return fmt.Sprintf("%.1f%% (%.1f%% with the observer alone)", s.CPUPercent, s.BaselineCPUPercent), s.CPUPercent <= c.cpuMax
		})
		add("another pod's p50", "≤ 2× its own without a storm", func(s *StormRun) (string, bool) {
			x := ratio(float64(s.During.P50), float64(s.Baseline.P50))
			return fmt.Sprintf("%s (%s, alone %s)", fmtRatio(x), fmtDur(s.During.P50), fmtDur(s.Baseline.P50)), x <= 2
		})
		add("another pod's p99", "≤ 5× its own, and < 1 ms", func(s *StormRun) (string, bool) {
			x := ratio(float64(s.During.P99), float64(s.Baseline.P99))
			return fmt.Sprintf("%s (%s, alone %s)", fmtRatio(x), fmtDur(s.During.P99), fmtDur(s.Baseline.P99)),
				x <= 5 && s.During.P99 < int64(time.Millisecond)
		})
		add("another pod's loss, every round", "0", func(*StormRun) (string, bool) { return r.stormLoss(P, c.n) })
		add("replies to each flooding pod", fmt.Sprintf("≥ 90%% of the limit (%.0f/s)", limit), func(s *StormRun) (string, bool) {
			return fmtRate(s.ReplyRate) + " each", s.ReplyRate >= 0.9*limit
		})
	}
	return ts
}

// stormLoss renders the observer's losses over every storm of resp with n
// stormers, and whether there were none.
func (r *Results) stormLoss(resp string, n int) (string, bool) {
	lost, asked := 0, 0
	for _, s := range r.Storm {
		if s.Responder == resp && s.Stormers == n {
			lost += s.During.Lost
			asked += s.During.N + s.During.Lost
		}
	}
	return fmt.Sprintf("%d of %d", lost, asked), lost == 0
}

// stormMax returns, of the storms of resp with n stormers that measured the
// observer, the largest of f, and whether there was one.
func (r *Results) stormMax(resp string, n int, f func(*StormRun) float64) (float64, bool) {
	m, ok := 0.0, false
	for _, s := range r.Storm {
		if s.Responder == resp && s.Stormers == n && s.During.N > 0 {
			m, ok = max(m, f(s)), true
		}
	}
	return m, ok
}

// ebpfStormTargets evaluates E's storm targets, for one pod and for
// StormPods pods storming: no time in user mode (utime, every round), the
// observer's p99 within 2× K0's (the worst round of each), and no loss.
func ebpfStormTargets(r *Results) []Target {
	var ts []Target
	for _, n := range []int{1, r.Config.StormPods} {
		name := fmt.Sprintf("storm, %d pod%s", n, plural(n))
		if n > 1 {
			name += fmt.Sprintf(" (the observer is pod %d)", n+1)
		}
		ticks, ok := r.stormMax(E, n, func(s *StormRun) float64 { return float64(s.UserTicks) })
		cpu, _ := r.stormMax(E, n, func(s *StormRun) float64 { return s.CPUPercent })
		t := Target{Name: name + ": pxresp userspace CPU", Limit: "0 (utime, every round)", Measured: ok}
		if ok {
			t.Actual = fmt.Sprintf("%.0f ticks of %s (all threads, user and kernel: %.2f%% of a core)", ticks, fmtDur(int64(time.Second/procstat.TicksPerSecond)), cpu)
			t.OK = ticks == 0
		}
		ts = append(ts, t)
		pe, ok1 := r.stormMax(E, n, func(s *StormRun) float64 { return float64(s.During.P99) })
		pk, ok2 := r.stormMax(K0, n, func(s *StormRun) float64 { return float64(s.During.P99) })
		t = Target{Name: name + ": another pod's p99", Limit: "≤ 2× K0's (worst rounds)", Measured: ok1 && ok2}
		if t.Measured {
			x := ratio(pe, pk)
			t.Actual = fmt.Sprintf("%s (E %s, K0 %s)", fmtRatio(x), fmtDur(int64(pe)), fmtDur(int64(pk)))
			t.OK = x <= 2
		}
		ts = append(ts, t)
		t = Target{Name: name + ": another pod's loss, every round", Limit: "0", Measured: ok1}
		if t.Measured {
			t.Actual, t.OK = r.stormLoss(E, n)
		}
		ts = append(ts, t)
	}
	return ts
}

// renderStorm writes the storm section.
func renderStorm(w *strings.Builder, r *Results) {
	if len(r.Storm) == 0 {
		return
	}
	fmt.Fprintf(w, "## ARP storms (pods flooding at their maximum rate, another pod asking every %s; P and E at their default settings)\n\n", stormEvery)
	var rows [][]string
	for _, s := range r.Storm {
		cpu := "—"
		if isPx(s.Responder) {
			cpu = fmt.Sprintf("%.1f%% (alone %.1f%%); utime %d ticks", s.CPUPercent, s.BaselineCPUPercent, s.UserTicks)
		}
		storms := "—"
		if s.Responder == P {
			storms = strconv.Itoa(s.Storms)
		}
		rows = append(rows, []string{strconv.Itoa(s.Round), s.Responder, strconv.Itoa(s.Stormers), fmtRate(s.SendRate), fmtRate(s.ReplyRate),
			fmtDur(s.Baseline.P50) + " / " + fmtDur(s.Baseline.P99), fmtDur(s.During.P50) + " / " + fmtDur(s.During.P99),
			fmtDur(s.Arrived.P50) + " / " + fmtDur(s.Arrived.P99),
			fmtRatio(ratio(float64(s.During.P50), float64(s.Baseline.P50))) + " / " + fmtRatio(ratio(float64(s.During.P99), float64(s.Baseline.P99))),
			fmt.Sprintf("%d / %d", s.During.Lost, s.During.N+s.During.Lost), cpu, storms, strconv.FormatUint(s.BacklogDrops, 10)})
	}
	table(w, []string{"round", "resp.", "flooding pods", "their send rate (sum)", "replies to each", "other pod alone p50 / p99",
		"other pod during p50 / p99", "its replies' arrival p50 / p99", "ratio", "other pod lost", "pxresp CPU", "storms shed", "backlog drops"}, rows)
}
