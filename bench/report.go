package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/responder"
)

// fmtDur renders nanoseconds with three significant digits and a unit.
func fmtDur(ns int64) string {
	v := float64(ns)
	unit := "ns"
	switch {
	case v >= 1e9:
		v, unit = v/1e9, "s"
	case v >= 1e6:
		v, unit = v/1e6, "ms"
	case v >= 1e3:
		v, unit = v/1e3, "µs"
	}
	dec := 0
	switch {
	case unit == "ns":
	case v < 10:
		dec = 2
	case v < 100:
		dec = 1
	}
	return strconv.FormatFloat(v, 'f', dec, 64) + " " + unit
}

// fmtRatio renders a ratio: "2.15×", "143×", or "1/28600" below 0.01;
// "—" when it could not be computed.
func fmtRatio(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "—"
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64) + "×"
	case x >= 0.01:
		return strconv.FormatFloat(x, 'f', 2, 64) + "×"
	case x <= 0:
		return "0×"
	}
	return "1/" + strconv.FormatFloat(sig3(1/x), 'f', 0, 64)
}

// sig3 rounds x to three significant digits.
func sig3(x float64) float64 {
	if x == 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(math.Abs(x)))-2)
	return math.Round(x/p) * p
}

// fmtRate renders a rate per second.
func fmtRate(r float64) string {
	switch {
	case r >= 1e6:
		return strconv.FormatFloat(r/1e6, 'f', 2, 64) + " M/s"
	case r >= 1e3:
		return strconv.FormatFloat(r/1e3, 'f', 1, 64) + " k/s"
	}
	return strconv.FormatFloat(r, 'f', 1, 64) + " /s"
}

// fmtPct renders a fraction as a percentage.
func fmtPct(f float64) string {
	if f == 0 {
		return "0 %"
	}
	return strconv.FormatFloat(100*f, 'g', 3, 64) + " %"
}

// find returns a latency series or nil.
func (r *Results) find(scope, resp, k, mode string) *Series {
	for _, s := range r.Latency {
		if s.Scope == scope && s.Responder == resp && s.Kind == k && s.Mode == mode && s.Summary.N > 0 {
			return s
		}
	}
	return nil
}

// pct returns the named percentile of s (nil: 0, false).
func pct(s *Series, name string) (int64, bool) {
	if s == nil {
		return 0, false
	}
	switch name {
	case "p50":
		return s.Summary.P50, true
	case "p90":
		return s.Summary.P90, true
	case "p99":
		return s.Summary.P99, true
	case "p99.9":
		return s.Summary.P999, true
	case "max":
		return s.Summary.Max, true
	}
	return 0, false
}

// floodAgg aggregates the floods of one responder and pace over rounds.
type floodAgg struct {
	runs      int
	sent      int64
	replies   int64
	rates     []float64 // reply rates per round
	sendRates []float64
	drops     int64
	cpuTicks  uint64
	cpuNs     uint64
}

func (a floodAgg) medianRate() float64     { return median(a.rates) }
func (a floodAgg) medianSendRate() float64 { return median(a.sendRates) }
func (a floodAgg) loss() float64 {
	if a.sent == 0 {
		return math.NaN()
	}
	return 1 - float64(a.replies)/float64(a.sent)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *Results) flood(resp, pace string) floodAgg {
	var a floodAgg
	for _, f := range r.Flood {
		if f.Responder != resp || f.Pace != pace {
			continue
		}
		a.runs++
		a.sent += f.Sent
		a.replies += f.Replies
		a.rates = append(a.rates, f.ReplyRate)
		a.sendRates = append(a.sendRates, f.SendRate)
		a.drops += int64(f.ClientDrops)
		a.cpuTicks += f.CPUTicks
		a.cpuNs += f.CPUNs
	}
	return a
}

// memAt returns the memory point with the most interfaces >= n.
func (r *Results) memAt(n int) (MemPoint, bool) {
	var best MemPoint
	ok := false
	for _, m := range r.Memory {
		if m.Interfaces >= n && (!ok || m.Interfaces < best.Interfaces) {
			best, ok = m, true
		}
	}
	return best, ok
}

// Target is one line of the targets table.
type Target struct {
	Name     string
	Actual   string
	Limit    string
	OK       bool
	Measured bool
}

func (t Target) mark() string {
	switch {
	case !t.Measured:
		return "— not measured"
	case t.OK:
		return "✔"
	}
	return "✘"
}

// vsK0 is the target "percentile p of resp's round trips (pod scope, kind
// k, mode) is at most limit times K0's".
func vsK0(r *Results, resp, k, mode, p string, limit float64) Target {
	pk, ok1 := pct(r.find("pod", K0, k, mode), p)
	pr, ok2 := pct(r.find("pod", resp, k, mode), p)
	t := Target{Name: fmt.Sprintf("round trip %s, %s, %s", p, mode, k), Limit: "≤ " + strconv.FormatFloat(limit, 'f', -1, 64) + "× K0", Measured: ok1 && ok2}
	if t.Measured {
		x := ratio(float64(pr), float64(pk))
		t.Actual = fmt.Sprintf("%s (%s %s, K0 %s)", fmtRatio(x), resp, fmtDur(pr), fmtDur(pk))
		t.OK = x <= limit
	}
	return t
}

// floodTarget is "resp's replies/s in the flood at the maximum rate are at
// least min times K0's" (medians of the rounds).
func floodTarget(r *Results, resp string, min float64) Target {
	fk, fr := r.flood(K0, "max"), r.flood(resp, "max")
	t := Target{Name: "flood at the maximum rate, replies/s", Limit: "≥ " + strconv.FormatFloat(min, 'f', -1, 64) + "× K0", Measured: fk.runs > 0 && fr.runs > 0}
	if t.Measured {
		x := ratio(fr.medianRate(), fk.medianRate())
		t.Actual = fmt.Sprintf("%s (%s %s, K0 %s)", fmtRatio(x), resp, fmtRate(fr.medianRate()), fmtRate(fk.medianRate()))
		t.OK = x >= min
	}
	return t
}

// lossTarget is "resp answers every request of the floods at the fixed
// rate".
func lossTarget(r *Results, resp string) Target {
	fx := r.flood(resp, "fixed")
	t := Target{Name: fmt.Sprintf("loss at %s", fmtRate(r.Config.FloodRate)), Limit: "0", Measured: fx.runs > 0}
	if t.Measured {
		t.Actual = fmt.Sprintf("%s (%d of %d requests unanswered; sent at %s)", fmtPct(fx.loss()), fx.sent-fx.replies, fx.sent, fmtRate(fx.medianSendRate()))
		t.OK = fx.replies == fx.sent && fx.sent > 0
	}
	return t
}

// attachTarget is "p99 of host side up → first reply ≤ 1 ms, none failed".
func attachTarget(a *AttachResult) Target {
	t := Target{Name: "attach latency p99 (host side up → first reply)", Limit: "≤ 1 ms", Measured: a != nil && a.Summary.N > 0}
	if t.Measured {
		s := a.Summary
		t.Actual = fmt.Sprintf("%s (p50 %s, n=%d, %d failed)", fmtDur(s.P99), fmtDur(s.P50), s.N, a.Failed)
		t.OK = s.P99 <= int64(time.Millisecond) && a.Failed == 0
	}
	return t
}

// targets evaluates the packet datapath's (P's) targets on r.
func targets(r *Results) []Target {
	var ts []Target
	for _, k := range []string{"broadcast", "unicast"} {
		ts = append(ts, vsK0(r, P, k, "pinned", "p50", 1.5), vsK0(r, P, k, "pinned", "p99", 3), vsK0(r, P, k, "unpinned", "p50", 5))
	}
	for _, mode := range modes {
		pd, ok1 := pct(r.find("pod", Kd, "broadcast", mode), "p50")
		pp, ok2 := pct(r.find("pod", P, "broadcast", mode), "p50")
		t := Target{Name: "p50 better than Kd, broadcast, " + mode, Limit: "Kd/P ≥ 10000×", Measured: ok1 && ok2}
		if t.Measured {
			x := ratio(float64(pd), float64(pp))
			t.Actual = fmt.Sprintf("%s (Kd %s, P %s)", fmtRatio(x), fmtDur(pd), fmtDur(pp))
			t.OK = x >= 10000
		}
		ts = append(ts, t)
	}
	ts = append(ts, floodTarget(r, P, 0.75), lossTarget(r, P))
	t := Target{Name: "idle wake-ups, no ARP", Limit: "0", Measured: r.Idle != nil}
	if t.Measured {
		t.Actual = fmt.Sprintf("%d in %s with %d interfaces", r.Idle.Wakeups, fmtDur(r.Idle.DurationNs), r.Idle.Interfaces)
		t.OK = r.Idle.Wakeups == 0
	}
	ts = append(ts, t)
	m, ok := r.memAt(1000)
	t = Target{Name: "RSS with 1000 attached interfaces", Limit: "≤ 40 MB", Measured: ok}
	if ok {
		t.Actual = fmt.Sprintf("%.1f MB (%d interfaces)", float64(m.RSSkB)/1024, m.Interfaces)
		t.OK = m.RSSkB <= 40*1024
	}
	ts = append(ts, t, attachTarget(r.Attach))
	b := r.Burst
	t = Target{Name: "burst of 1000 attached (after the creating batch ends)", Limit: "≤ 1 s", Measured: b != nil && b.Interfaces >= 1000 && b.Attached >= b.Interfaces}
	if t.Measured {
		t.Actual = fmt.Sprintf("%s (%s from the batch's start; the batch itself took %s)", fmtAfter(b.AfterCreateNs), fmtDur(b.AllAttachedNs), fmtDur(b.HostBatchNs))
		t.OK = b.AfterCreateNs <= int64(time.Second)
	} else if b != nil {
		t.Actual = fmt.Sprintf("only %d interfaces in this run (%d attached)", b.Interfaces, b.Attached)
	}
	ts = append(ts, t)
	return append(ts, stormTargets(r)...)
}

// ebpfTargets evaluates the eBPF datapath's (E's) targets on r: round trips
// within 1.2× K0 at p50 and 2× at p99, pinned and unpinned; the flood at
// 0.95× K0 and no loss at the fixed rate; storms (ebpfStormTargets); the
// attach latency as for P.
func ebpfTargets(r *Results) []Target {
	var ts []Target
	for _, k := range []string{"broadcast", "unicast"} {
		for _, mode := range modes {
			ts = append(ts, vsK0(r, E, k, mode, "p50", 1.2), vsK0(r, E, k, mode, "p99", 2))
		}
	}
	ts = append(ts, floodTarget(r, E, 0.95), lossTarget(r, E))
	ts = append(ts, ebpfStormTargets(r)...)
	return append(ts, attachTarget(r.AttachE))
}

// table renders a Markdown table.
func table(w *strings.Builder, head []string, rows [][]string) {
	w.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		w.WriteString("---|")
	}
	w.WriteString("\n")
	for _, r := range rows {
		w.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	w.WriteString("\n")
}

// durCell renders a percentile of a series, or "—".
func durCell(s *Series, p string) string {
	if v, ok := pct(s, p); ok {
		return fmtDur(v)
	}
	return "—"
}

// ratioCell renders num/den of two series' percentiles.
func ratioCell(num, den *Series, p string) string {
	a, ok1 := pct(num, p)
	b, ok2 := pct(den, p)
	if !ok1 || !ok2 {
		return "—"
	}
	return fmtRatio(ratio(float64(a), float64(b)))
}

// renderMarkdown renders the whole report.
func renderMarkdown(r *Results) string {
	var w strings.Builder
	fmt.Fprintf(&w, "# pxresp benchmark, %s\n\n", r.Date)
	m := r.Machine
	fmt.Fprintf(&w, "Machine: %d CPUs (nproc), %s, Linux %s; bench built with %s, pxresp built with %s. ", m.NProc, m.CPUModel, m.Kernel, m.GoVersion, orDash(m.PxrespGo))
	fmt.Fprintf(&w, "Run started %s, took %.0f s", r.Started, r.DurationSec)
	if r.Config.Quick {
		w.WriteString(" (**--quick smoke run: few samples, not for conclusions**)")
	}
	w.WriteString(".\n\n")
	fmt.Fprintf(&w, "Responders: **K0** = kernel proxy_arp, proxy_delay=0 (Calico); **Kd** = kernel proxy_arp, default proxy_delay (%d = %s max random delay for broadcast requests); **P** = pxresp with the packet datapath (`%s`); **E** = pxresp with the eBPF datapath (the same with `--datapath ebpf`: a tc program answers in the sender's softirq); kernel proxy_arp off for P and E. Only one is active at any time. ",
		m.ProxyDelay, fmtDur(int64(m.ProxyDelay)*int64(10*time.Millisecond)), "ip netns exec HOST bin/pxresp --datapath packet --iface 'cali*' --gw 169.254.1.1 --rate-limit 0 --log-level warn")
	w.WriteString("Round trip = request sent → reply read, by an AF_PACKET client in the pod namespace, one request outstanding, blocking read. ")
	w.WriteString("**pinned** = client thread and pxresp on CPU 0 (`sched_setaffinity`, `taskset -c 0`; the kernel answers in softirq on the sender's CPU); **unpinned** = no affinity.\n\n")

	if len(r.Errors) > 0 {
		w.WriteString("## Errors (incomplete run)\n\n")
		for _, e := range r.Errors {
			w.WriteString("- " + e + "\n")
		}
		w.WriteString("\n")
	}

	w.WriteString("## Summary: P and E against K0 and Kd\n\n")
	// pxOnly is a row with figures of pxresp alone (P, E).
	pxOnly := func(name, p, e string) []string { return []string{name, "—", "—", p, e, "—", "—", "—"} }
	var rows [][]string
	for _, k := range []string{"broadcast", "unicast"} {
		for _, mode := range modes {
			for _, p := range []string{"p50", "p99"} {
				k0, kd, pp, pe := r.find("pod", K0, k, mode), r.find("pod", Kd, k, mode), r.find("pod", P, k, mode), r.find("pod", E, k, mode)
				name := fmt.Sprintf("round trip %s, %s, %s", k, mode, p)
				if k == "broadcast" && kd != nil {
					name += fmt.Sprintf(" (Kd: n=%d)", kd.Summary.N)
				}
				if k0 == nil && kd == nil && pp == nil && pe == nil {
					continue
				}
				rows = append(rows, []string{name, durCell(k0, p), durCell(kd, p), durCell(pp, p), durCell(pe, p),
					ratioCell(pp, k0, p), ratioCell(pe, k0, p), ratioCell(pp, kd, p)})
			}
			pp, pe := r.find("pod", P, k, mode), r.find("pod", E, k, mode)
			if pp != nil || pe != nil {
				rows = append(rows, pxOnly(fmt.Sprintf("pxresp context switches per request, %s, %s", k, mode), switchesCell(pp), switchesCell(pe)))
			}
		}
	}
	for _, mode := range modes {
		for _, p := range []string{"p50", "p99"} {
			k0, pp, pe := r.find("scale", K0, "broadcast", mode), r.find("scale", P, "broadcast", mode), r.find("scale", E, "broadcast", mode)
			if k0 == nil && pp == nil && pe == nil {
				continue
			}
			name := fmt.Sprintf("round trip over %d interfaces (%d sampled), broadcast, %s, %s", r.Config.Burst+1, r.Config.ScaleSample, mode, p)
			rows = append(rows, []string{name, durCell(k0, p), "—", durCell(pp, p), durCell(pe, p), ratioCell(pp, k0, p), ratioCell(pe, k0, p), "—"})
		}
	}
	fk0, fkd, fp, fe := r.flood(K0, "max"), r.flood(Kd, "max"), r.flood(P, "max"), r.flood(E, "max")
	if fk0.runs+fkd.runs+fp.runs+fe.runs > 0 {
		rows = append(rows, []string{"flood at max rate, replies/s (median of rounds)", rateCell(fk0), rateCell(fkd), rateCell(fp), rateCell(fe),
			fmtRatio(ratio(fp.medianRate(), fk0.medianRate())), fmtRatio(ratio(fe.medianRate(), fk0.medianRate())), fmtRatio(ratio(fp.medianRate(), fkd.medianRate()))})
		rows = append(rows, []string{"flood at max rate, loss", lossCell(fk0), lossCell(fkd), lossCell(fp), lossCell(fe), "—", "—", "—"})
		xk0, xkd, xp, xe := r.flood(K0, "fixed"), r.flood(Kd, "fixed"), r.flood(P, "fixed"), r.flood(E, "fixed")
		rows = append(rows, []string{"flood at " + fmtRate(r.Config.FloodRate) + ", loss", lossCell(xk0), lossCell(xkd), lossCell(xp), lossCell(xe), "—", "—", "—"})
		if fp.cpuNs > 0 || fe.runs > 0 {
			rows = append(rows, pxOnly("pxresp CPU per reply at max rate (utime+stime; schedstat)", cpuPerReplyCell(fp), cpuPerReplyCell(fe)))
		}
	}
	if r.Idle != nil {
		rows = append(rows, pxOnly(fmt.Sprintf("idle %s, %d interfaces: CPU time (utime+stime; schedstat)", fmtDur(r.Idle.DurationNs), r.Idle.Interfaces),
			fmt.Sprintf("%s; %s (%.4f %%)", fmtDur(int64(r.Idle.CPUTicks)*1e9/procstat.TicksPerSecond), fmtDur(int64(r.Idle.CPUNs)), r.Idle.CPUPercent), "—"))
		rows = append(rows, pxOnly(fmt.Sprintf("idle %s: wake-ups (context switches, all %d threads; %d before the window)", fmtDur(r.Idle.DurationNs), r.Idle.Threads, r.Idle.Switches0), strconv.FormatInt(r.Idle.Wakeups, 10), "—"))
	}
	for _, mp := range r.Memory {
		rows = append(rows, pxOnly(fmt.Sprintf("VmRSS, %d attached interface%s", mp.Interfaces, plural(mp.Interfaces)), fmt.Sprintf("%.1f MB", float64(mp.RSSkB)/1024), "—"))
	}
	if r.Attach != nil || r.AttachE != nil {
		rows = append(rows, pxOnly("attach: host side up → first reply, p50 / p99 (n)", attachCell(r.Attach), attachCell(r.AttachE)))
	}
	if b := r.Burst; b != nil && b.AllAttachedNs > 0 {
		rows = append(rows, pxOnly(fmt.Sprintf("burst of %d: all attached, after the host batch / from its start", b.Interfaces), fmtAfter(b.AfterCreateNs)+" / "+fmtDur(b.AllAttachedNs), "—"))
		rows = append(rows, pxOnly(fmt.Sprintf("burst of %d: all %d sampled interfaces answering, from the batch's start", b.Interfaces, b.Sampled), fmtDur(b.SampleAnswerNs), "—"))
	}
	table(&w, []string{"measure", "K0", "Kd", "P", "E", "P/K0", "E/K0", "P/Kd"}, rows)

	for _, tt := range []struct {
		title string
		ts    []Target
	}{{"## Targets: P, the packet datapath", targets(r)}, {"## Targets: E, the eBPF datapath", ebpfTargets(r)}} {
		w.WriteString(tt.title + "\n\n")
		rows = nil
		for _, t := range tt.ts {
			rows = append(rows, []string{t.Name, orDash(t.Actual), t.Limit, t.mark()})
		}
		table(&w, []string{"target", "actual", "limit", ""}, rows)
	}

	w.WriteString("## Round trips in detail\n\n")
	rows = nil
	for _, s := range sortedSeries(r.Latency) {
		sm := s.Summary
		rows = append(rows, []string{s.Scope, s.Responder, s.Kind, s.Mode, strconv.Itoa(sm.N), strconv.Itoa(sm.Lost), strconv.Itoa(s.Extra),
			fmtDur(sm.P50), fmtDur(sm.P90), fmtDur(sm.P99), fmtDur(sm.P999), fmtDur(sm.Max), roundSpread(s)})
	}
	table(&w, []string{"where", "resp.", "request", "mode", "n", "lost", "extra", "p50", "p90", "p99", "p99.9", "max", "p50 per round (min–max)"}, rows)

	if len(r.Flood) > 0 {
		w.WriteString("## Floods in detail (broadcast requests from one pod, unpinned)\n\n")
		rows = nil
		for _, f := range r.Flood {
			cpu, rdrops := "—", "—"
			if isPx(f.Responder) && f.Replies > 0 {
				cpu = fmtDur(int64(float64(f.CPUNs) / float64(f.Replies)))
			}
			if f.Responder == P {
				rdrops = strconv.FormatInt(f.RespDrops, 10)
			}
			rows = append(rows, []string{strconv.Itoa(f.Round), f.Responder, f.Pace, fmtDur(f.DurationNs), strconv.FormatInt(f.Sent, 10), fmtRate(f.SendRate),
				strconv.FormatInt(f.Replies, 10), fmtRate(f.ReplyRate), fmtPct(f.Loss), strconv.FormatUint(uint64(f.ClientDrops), 10), rdrops, cpu})
		}
		table(&w, []string{"round", "resp.", "pace", "sending", "sent", "send rate", "replies", "reply rate", "loss", "client drops", "pxresp socket drops", "pxresp CPU/reply"}, rows)
	}
	renderStorm(&w, r)
	if len(r.Notes) > 0 {
		w.WriteString("## How it was measured, and what is approximate\n\n")
		for _, n := range r.Notes {
			w.WriteString("- " + n + "\n")
		}
		w.WriteString("\n")
	}
	return w.String()
}

// rateCell renders the median reply rate of a, or "—".
func rateCell(a floodAgg) string {
	if a.runs == 0 {
		return "—"
	}
	return fmtRate(a.medianRate())
}

// lossCell renders the loss of a, or "—".
func lossCell(a floodAgg) string {
	if a.runs == 0 {
		return "—"
	}
	return fmtPct(a.loss())
}

// cpuPerReplyCell renders pxresp's CPU per reply over a's floods, from
// utime+stime and from schedstat, or "—".
func cpuPerReplyCell(a floodAgg) string {
	if a.runs == 0 || a.replies == 0 {
		return "—"
	}
	n := float64(a.replies)
	return fmt.Sprintf("%s; %s", fmtDur(int64(float64(a.cpuTicks)*1e9/procstat.TicksPerSecond/n)), fmtDur(int64(float64(a.cpuNs)/n)))
}

// switchesCell renders pxresp's context switches per request sent in s, or
// "—".
func switchesCell(s *Series) string {
	if s == nil || s.Sent == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", float64(s.PxSwitches)/float64(s.Sent))
}

// attachCell renders an attach result's p50 / p99 (n), or "—".
func attachCell(a *AttachResult) string {
	if a == nil || a.Summary.N == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s (%d)", fmtDur(a.Summary.P50), fmtDur(a.Summary.P99), a.Summary.N)
}

// fmtAfter renders a delay after an event that may be negative (done
// before the event).
func fmtAfter(ns int64) string {
	if ns <= 0 {
		return "0 (all attached before the batch returned)"
	}
	return fmtDur(ns)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// roundSpread renders the smallest and largest per-round p50.
func roundSpread(s *Series) string {
	var lo, hi int64 = math.MaxInt64, 0
	n := 0
	for _, rs := range s.Rounds {
		if rs.N == 0 {
			continue
		}
		lo, hi = min(lo, rs.P50), max(hi, rs.P50)
		n++
	}
	if n == 0 {
		return "—"
	}
	return fmt.Sprintf("%s–%s (%d)", fmtDur(lo), fmtDur(hi), n)
}

// sortedSeries orders series by scope, kind, mode, responder.
func sortedSeries(ss []*Series) []*Series {
	order := map[string]int{K0: 0, Kd: 1, P: 2, E: 3, "pod": 0, "scale": 1, "broadcast": 0, "unicast": 1, "pinned": 0, "unpinned": 1}
	out := slices.Clone(ss)
	slices.SortStableFunc(out, func(a, b *Series) int {
		for _, c := range [][2]string{{a.Scope, b.Scope}, {a.Kind, b.Kind}, {a.Mode, b.Mode}, {a.Responder, b.Responder}} {
			if d := order[c[0]] - order[c[1]]; d != 0 {
				return d
			}
		}
		return 0
	})
	return out
}

// notes explains the method and its approximations, with this run's numbers.
func notes(r *Results) []string {
	c := r.Config
	ns := []string{
		fmt.Sprintf("Alternation: %d latency rounds; each round runs K0, Kd, P and E in rotating order, and within each the pinned and unpinned blocks in alternating order. The kernel's proxy_arp is on only during K0/Kd slots; pxresp is started for each P and E block (after checking proxy_arp=0 on all and on the interface, and that a request goes unanswered) and stopped (SIGTERM to its PID) before the next slot. Replies beyond one per request are counted as \"extra\" and stop the run if they exceed the timeouts.", c.Rounds),
		fmt.Sprintf("Every block starts with %d unrecorded round trips (warm-up; none for Kd broadcast requests), for all responders alike.", warmup),
		"The client thread is locked to one OS thread and reads with a blocking read(2): every round trip, the kernel's included, contains the client's own wake-up when the reply is not already queued when read(2) is called. With K0 the reply is produced inside the sender's write(2) (softirq on the same CPU), so K0 is close to two syscalls. The client uses raw blocking syscalls, not the Go netpoller, so its K0 figure is lower than a netpoller-based client measures, which makes the P/K0 ratios stricter.",
		fmt.Sprintf("Kd broadcast: ≈0.4 s per sample, so only %d samples per pinning mode (spread over the rounds); its percentiles are rough, p99 and beyond are just the largest samples.", c.KdSamples),
		"P round trips include whatever pxresp does per frame at --log-level warn; pxresp runs unpinned unless the row says pinned (then `taskset -c 0`, so GOMAXPROCS=1). E's replies come from its tc program, in softirq on the CPU that sends the request (the client's, when pinned); its userspace only fills the maps and attaches.",
		"pxresp context switches per request = the delta, over each P or E latency block, of voluntary+nonvoluntary context switches summed over /proc/PID/task/*/status, divided by the requests the block sent (warm-up included; the block's 20 ms wait for late replies is inside the window).",
		fmt.Sprintf("Floods: broadcast requests from one pod's AF_PACKET socket on one unpinned thread, replies counted by a second unpinned thread on the same socket (32 MiB receive buffer; its own drops are reported as \"client drops\"); loss = 1 − replies/sent (so it includes client drops: a K0 loss at the maximum rate is the client's receiver falling behind, not the kernel), counting replies until %s after the last request (Kd: proxy_delay + 0.2 s). The fixed rate is paced in batches of rate/1000 every millisecond, catching up after late wake-ups (at most 2 batches at once). With 2 CPUs, the sender, the receiver and pxresp share them, so the maximum rate is a property of this machine as a whole.", "100 ms"),
		fmt.Sprintf("pxresp CPU per reply = delta of utime+stime in /proc/PID/stat (%d Hz ticks, coarse) and of the threads' schedstat run time (ns), over the whole flood, divided by replies. For E it is the userspace process's alone: the program's work is softirq time, charged to whatever runs on the CPU (the sender). The pxresp socket drops are P's (E has no socket).", procstat.TicksPerSecond),
		"Idle: pxresp with the pod's and N−1 extra veths attached (their far ends up, in one extra namespace, IPv6 disabled there and on the new host sides so that no router solicitation or DAD runs), after 2 s of settling; wake-ups = delta of voluntary+nonvoluntary context switches summed over /proc/PID/task/*/status (a thread that exits during the window would take its count with it).",
		fmt.Sprintf("Attach latency: for each of %d repetitions a new veth is created with netlink (host side cali*, down; far side up in the extra namespace); the bench waits for pxresp's attach log line, starts a client sending a broadcast request every %s (send, then ppoll up to the period) on the far side, and at T0 (just before the netlink call) sets the host side up; the time is T0 → first reply read. It includes up to one period of request spacing and the client's wake-up. pxresp runs at --log-level info here (attach lines); P's repetitions, then E's, each with a pxresp of its own.", c.AttachReps, c.AttachPeriod),
		fmt.Sprintf("Burst: %d veths created by one `ip -n HOST -batch -` (link add with the peer in the extra namespace + link set up, per interface), then one batch in the extra namespace setting the far ends up; attach times are when pxresp's `msg=attach` lines (--log-level info) were read from its stderr pipe. The target is checked on the time after the host batch returned, since pxresp cannot attach an interface before the kernel has made it; the time from the batch's start is shown too.", c.Burst),
		fmt.Sprintf("Scale: the round trips are measured on %d of the %d burst interfaces (evenly spread), whose far ends all sit in ONE extra namespace without IP addresses (not %d pod namespaces); the client sends requests with sender addresses 10.244.128.0/17, cycling over the sampled interfaces. pxresp is restarted for each P and E block and waits until it has attached all %d interfaces; K0 turns proxy_arp on only on the sampled ones.", c.ScaleSample, c.Burst, c.Burst, c.Burst+1),
		fmt.Sprintf("Storms: the flooding pods (1, then %d at once) each send broadcast requests for the gateway from one unpinned thread as fast as it can, for %s plus the observer's requests plus 0.5 s, replies counted as in the floods; the observer (another pod) asks %d broadcast requests, one outstanding, at most one every %s (no catching up after a late wake-up: a well-behaved pod), from %s after the floods start (pxresp finds and sheds a storm within that time), lost = no reply within the reply timeout; arrival is the same requests timed to the kernel's receive timestamp of each reply on the observer's socket (SIOCGSTAMPNS), without the observer thread's own wake-up. pxbench gives each of its flooding and observing threads a P of its own (GOMAXPROCS), so that the observer does not wait for its own process's scheduler. Its figures alone are measured in the same slot just before. pxresp runs at its defaults (no --rate-limit: %d replies/s per interface); CPU = schedstat run time of all its threads over the floods (drain included), in %% of one core. utime = its time in user mode (ticks). K0 answers in the senders' own softirq, and so does E (its rate limit holds in the program; it sheds nothing): neither has per-request CPU of its own to show. With P, the storm after the first starts once pxresp has logged the end of the first's shedding. E's storm targets compare the observer's worst p99 over the rounds with K0's worst. Backlog drops = /proc/net/softnet_stat drops, machine-wide: frames lost before any responder sees them.", c.StormPods, stormWarmup, c.StormProbes, stormEvery, stormWarmup, responder.DefaultRateLimit),
		"VmRSS is read from /proc/PID/status after the interfaces are attached and 0.5–2 s of settling; the Go runtime's RSS depends on GC timing, so it is a snapshot, not a peak.",
	}
	return ns
}
