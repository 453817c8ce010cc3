package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFormatting(t *testing.T) {
	for ns, want := range map[int64]string{
		850:           "850 ns",
		6_500:         "6.50 µs",
		12_345:        "12.3 µs",
		123_456:       "123 µs",
		412_000_000:   "412 ms",
		1_234_000_000: "1.23 s",
	} {
		if got := fmtDur(ns); got != want {
			t.Errorf("fmtDur(%d) = %q, want %q", ns, got, want)
		}
	}
	for x, want := range map[float64]string{2.154: "2.15×", 143.2: "143×", 0.5: "0.50×", 1.0 / 28571: "1/28600", math.NaN(): "—", 0: "0×"} {
		if got := fmtRatio(x); got != want {
			t.Errorf("fmtRatio(%v) = %q, want %q", x, got, want)
		}
	}
	if got := fmtRate(203456); got != "203.5 k/s" {
		t.Errorf("fmtRate = %q", got)
	}
	if got := fmtPct(0.0123); got != "1.23 %" {
		t.Errorf("fmtPct = %q", got)
	}
	if got := tickLabel(1000); got != "1 ms" {
		t.Errorf("tickLabel = %q", got)
	}
}

func TestTable(t *testing.T) {
	var w strings.Builder
	table(&w, []string{"a", "b"}, [][]string{{"1", "2"}, {"3", "4"}})
	want := "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\n"
	if w.String() != want {
		t.Errorf("table:\n%s\nwant\n%s", w.String(), want)
	}
}

// series makes a Series whose every sample is v ns.
func constSeries(scope, resp, k, mode string, v int64, n int) *Series {
	s := &Series{Scope: scope, Responder: resp, Kind: k, Mode: mode}
	for range n {
		s.Samples = append(s.Samples, v)
	}
	s.Summary = summarize(s.Samples, 0)
	s.Rounds = []Summary{s.Summary}
	return s
}

func fixture() *Results {
	r := &Results{Date: "2025-01-01T000000", Config: Config{FloodRate: 100000, Burst: 1000, ScaleSample: 50}}
	r.Machine = Machine{NProc: 2, CPUModel: "Test CPU", Kernel: "6.18", GoVersion: "go1.26", ProxyDelay: 80}
	for _, k := range []string{"broadcast", "unicast"} {
		r.Latency = append(r.Latency,
			constSeries("pod", K0, k, "pinned", 6_500, 100),
			constSeries("pod", P, k, "pinned", 9_000, 100), // 1.38×: passes 1.5×
			constSeries("pod", K0, k, "unpinned", 6_500, 100),
			constSeries("pod", P, k, "unpinned", 40_000, 100), // 6.2×: fails 5×
		)
	}
	// E: 1.08× pinned, 1.23× unpinned broadcast (fails 1.2×), 1.15× unpinned unicast.
	r.Latency = append(r.Latency,
		constSeries("pod", E, "broadcast", "pinned", 7_000, 100),
		constSeries("pod", E, "broadcast", "unpinned", 8_000, 100),
		constSeries("pod", E, "unicast", "pinned", 7_000, 100),
		constSeries("pod", E, "unicast", "unpinned", 7_500, 100),
	)
	r.Latency = append(r.Latency,
		constSeries("pod", Kd, "broadcast", "pinned", 400_000_000, 16),   // 44444× P pinned
		constSeries("pod", Kd, "broadcast", "unpinned", 400_000_000, 16), // 10000× P unpinned exactly
		constSeries("pod", Kd, "unicast", "pinned", 6_600, 100),
	)
	r.Flood = []*FloodRun{
		{Responder: K0, Pace: "max", Sent: 200000, Replies: 200000, ReplyRate: 200000},
		{Responder: P, Pace: "max", Sent: 200000, Replies: 160000, ReplyRate: 160000, CPUNs: 800_000_000, CPUTicks: 80},
		{Responder: P, Pace: "fixed", Sent: 100000, Replies: 100000, SendRate: 99990, ReplyRate: 99990},
		{Responder: E, Pace: "max", Sent: 196000, Replies: 196000, ReplyRate: 196000}, // 0.98×
		{Responder: E, Pace: "fixed", Sent: 100000, Replies: 100000, SendRate: 99990, ReplyRate: 99990},
	}
	r.Idle = &IdleResult{Interfaces: 100, DurationNs: 10e9, Wakeups: 3, Threads: 6}
	r.Memory = []MemPoint{{1, 6000}, {100, 8000}, {1001, 20000}}
	r.Attach = &AttachResult{Reps: 20}
	for i := range 20 {
		r.Attach.UpToReply = append(r.Attach.UpToReply, int64(200+i)*1000)
	}
	r.Attach.Summary = summarize(r.Attach.UpToReply, 0)
	r.AttachE = &AttachResult{Responder: E, Reps: 20, Failed: 1}
	for i := range 19 {
		r.AttachE.UpToReply = append(r.AttachE.UpToReply, int64(300+i)*1000)
	}
	r.AttachE.Summary = summarize(r.AttachE.UpToReply, 1)
	r.Burst = &BurstResult{Interfaces: 1000, Attached: 1000, HostBatchNs: 6e8, AllAttachedNs: 7e8, AfterCreateNs: 1e8, SampleAnswerNs: 8e8, Sampled: 50}
	return r
}

func TestTargets(t *testing.T) {
	got := map[string]Target{}
	for _, tg := range targets(fixture()) {
		got[tg.Name] = tg
	}
	want := map[string]bool{
		"round trip p50, pinned, broadcast":                      true,
		"round trip p99, pinned, broadcast":                      true,
		"round trip p50, unpinned, broadcast":                    false,
		"round trip p50, pinned, unicast":                        true,
		"p50 better than Kd, broadcast, pinned":                  true,
		"p50 better than Kd, broadcast, unpinned":                true,
		"flood at the maximum rate, replies/s":                   true, // 0.8×
		"loss at 100.0 k/s":                                      true,
		"idle wake-ups, no ARP":                                  false,
		"RSS with 1000 attached interfaces":                      true,
		"attach latency p99 (host side up → first reply)":        true,
		"burst of 1000 attached (after the creating batch ends)": true,
	}
	for name, ok := range want {
		tg, found := got[name]
		if !found {
			t.Errorf("no target %q", name)
			continue
		}
		if !tg.Measured || tg.OK != ok {
			t.Errorf("%s: measured %v ok %v (%s), want ok %v", name, tg.Measured, tg.OK, tg.Actual, ok)
		}
	}
	if a := got["RSS with 1000 attached interfaces"].Actual; !strings.Contains(a, "19.5 MB (1001 interfaces)") {
		t.Errorf("RSS actual %q", a)
	}

	// Nothing measured: every target says so, none passes.
	for _, tg := range targets(&Results{}) {
		if tg.Measured || tg.OK || tg.mark() != "— not measured" {
			t.Errorf("empty results: %+v", tg)
		}
	}
	// A quick run's small burst is not the 1000 target.
	r := fixture()
	r.Burst.Interfaces, r.Burst.Attached = 100, 100
	for _, tg := range targets(r) {
		if strings.HasPrefix(tg.Name, "burst") && tg.Measured {
			t.Errorf("burst of 100 counted for the 1000 target: %+v", tg)
		}
	}
	// Loss: one unanswered request fails.
	r = fixture()
	r.Flood[2].Replies--
	for _, tg := range targets(r) {
		if strings.HasPrefix(tg.Name, "loss") && tg.OK {
			t.Errorf("loss target passed with a lost request: %+v", tg)
		}
	}
}

// TestEBPFTargets: E against the targets for the eBPF datapath,
// on the fixture and on storms.
func TestEBPFTargets(t *testing.T) {
	got := map[string]Target{}
	for _, tg := range ebpfTargets(fixture()) {
		got[tg.Name] = tg
	}
	for name, ok := range map[string]bool{
		"round trip p50, pinned, broadcast":               true,
		"round trip p99, pinned, broadcast":               true, // 1.08× ≤ 2×
		"round trip p50, unpinned, broadcast":             false,
		"round trip p99, unpinned, broadcast":             true, // 1.23× ≤ 2×
		"round trip p50, pinned, unicast":                 true,
		"round trip p50, unpinned, unicast":               true,
		"flood at the maximum rate, replies/s":            true,
		"loss at 100.0 k/s":                               true,
		"attach latency p99 (host side up → first reply)": false, // one failed
	} {
		tg, found := got[name]
		if !found || !tg.Measured || tg.OK != ok {
			t.Errorf("%s: found %v, %+v; want ok %v", name, found, tg, ok)
		}
	}
	// Nothing of E measured: every target says so, none passes.
	r := fixture()
	r.Latency = slices.DeleteFunc(r.Latency, func(s *Series) bool { return s.Responder == E })
	r.Flood = slices.DeleteFunc(r.Flood, func(f *FloodRun) bool { return f.Responder == E })
	r.AttachE = nil
	for _, tg := range ebpfTargets(r) {
		if tg.Measured || tg.OK {
			t.Errorf("no E results: %+v", tg)
		}
	}
	// The flood at 0.95× K0 fails just below.
	r = fixture()
	r.Flood[3].ReplyRate = 189000
	for _, tg := range ebpfTargets(r) {
		if strings.HasPrefix(tg.Name, "flood") && tg.OK {
			t.Errorf("0.945× K0 passed: %+v", tg)
		}
	}

	us := int64(time.Microsecond)
	r = &Results{Config: Config{StormPods: 10}}
	r.Storm = []*StormRun{
		{Responder: K0, Stormers: 1, During: Summary{N: 10, P99: 100 * us}},
		{Responder: E, Stormers: 1, During: Summary{N: 10, P99: 150 * us}, CPUPercent: 0.1},
		{Responder: K0, Stormers: 10, During: Summary{N: 10, P99: 300 * us}},
		{Responder: E, Stormers: 10, During: Summary{N: 10, P99: 500 * us}},
		{Responder: E, Stormers: 10, During: Summary{N: 9, Lost: 1, P99: 700 * us}, UserTicks: 1},
		{Responder: P, Stormers: 10, During: Summary{N: 10, P99: 100 * us}},
	}
	sg := map[string]Target{}
	for _, tg := range ebpfStormTargets(r) {
		sg[tg.Name] = tg
	}
	for name, ok := range map[string]bool{
		"storm, 1 pod: pxresp userspace CPU":                                       true,
		"storm, 1 pod: another pod's p99":                                          true, // 1.5×
		"storm, 1 pod: another pod's loss, every round":                            true,
		"storm, 10 pods (the observer is pod 11): pxresp userspace CPU":            false,
		"storm, 10 pods (the observer is pod 11): another pod's p99":               false, // worst 700 µs: 2.33×
		"storm, 10 pods (the observer is pod 11): another pod's loss, every round": false,
	} {
		tg, found := sg[name]
		if !found || !tg.Measured || tg.OK != ok {
			t.Errorf("%s: found %v, %+v; want ok %v", name, found, tg, ok)
		}
	}
	if a := sg["storm, 10 pods (the observer is pod 11): another pod's p99"].Actual; !strings.Contains(a, "2.33× (E 700 µs, K0 300 µs)") {
		t.Errorf("p99 actual %q", a)
	}
}

func TestRenderMarkdown(t *testing.T) {
	r := fixture()
	r.Notes = notes(r)
	md := renderMarkdown(r)
	for _, want := range []string{
		"| measure | K0 | Kd | P | E | P/K0 | E/K0 | P/Kd |",
		"| round trip broadcast, pinned, p50 (Kd: n=16) | 6.50 µs | 400 ms | 9.00 µs | 7.00 µs | 1.38× | 1.08× | 1/44400 |",
		"| round trip unicast, pinned, p50 | 6.50 µs | 6.60 µs | 9.00 µs | 7.00 µs | 1.38× | 1.08× | 1.36× |",
		"| flood at max rate, replies/s (median of rounds) | 200.0 k/s | — | 160.0 k/s | 196.0 k/s | 0.80× | 0.98× | — |",
		"| flood at 100.0 k/s, loss | — | — | 0 % | 0 % | — | — | — |",
		"| VmRSS, 1001 attached interfaces | — | — | 19.5 MB | — | — | — | — |",
		"| attach: host side up → first reply, p50 / p99 (n) | — | — | 209 µs / 219 µs (20) | 309 µs / 318 µs (19) | — | — | — |",
		"## Targets: P, the packet datapath",
		"| round trip p50, unpinned, broadcast | 6.15× (P 40.0 µs, K0 6.50 µs) | ≤ 5× K0 | ✘ |",
		"## Targets: E, the eBPF datapath",
		"| round trip p50, unpinned, broadcast | 1.23× (E 8.00 µs, K0 6.50 µs) | ≤ 1.2× K0 | ✘ |",
		"| pod | E | broadcast | pinned | 100 | 0 | 0 | 7.00 µs |",
		"pxresp --datapath packet --iface",
		"| idle wake-ups, no ARP | 3 in 10.0 s with 100 interfaces | 0 | ✘ |",
		"| pod | P | broadcast | pinned | 100 | 0 | 0 | 9.00 µs |",
		"Machine: 2 CPUs (nproc), Test CPU, Linux 6.18",
		"ONE extra namespace",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "Errors") {
		t.Error("error section without errors")
	}
	r.Errors = []string{"flood: boom"}
	if md := renderMarkdown(r); !strings.Contains(md, "## Errors (incomplete run)\n\n- flood: boom") {
		t.Error("errors not reported")
	}
	if got := time.Duration(r.Attach.Summary.P99); got != 219*time.Microsecond {
		t.Errorf("attach p99 %v", got)
	}
}

func TestRotate(t *testing.T) {
	if got := strings.Join(rotate([]string{K0, Kd, P}, 1), ","); got != "Kd,P,K0" {
		t.Errorf("rotate = %s", got)
	}
	if got := strings.Join(rotate([]string{K0, Kd, P}, 3), ","); got != "K0,Kd,P" {
		t.Errorf("rotate by len = %s", got)
	}
}

func TestScaleSampleAndOptions(t *testing.T) {
	idx := scaleSample(1000, 50)
	if len(idx) != 50 || idx[0] != 10 || idx[49] != 990 {
		t.Errorf("scaleSample = %v", idx)
	}
	o, err := parseOptions([]string{"--quick", "--rounds", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Rounds != 3 || o.Samples != 300 || o.Burst != 100 || !o.sections["scale"] {
		t.Errorf("quick options %+v", o.Config)
	}
	if _, err := parseOptions([]string{"--sections", "latency,nope"}); err == nil {
		t.Error("unknown section accepted")
	}
	if _, err := parseOptions([]string{"--scale-sample", "2000"}); err == nil {
		t.Error("sample larger than the burst accepted")
	}
	if cpuModel("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") != "AMD EPYC 7B13" {
		t.Error("cpuModel")
	}
}

func TestParseSoftnetDrops(t *testing.T) {
	in := "0001a2b3 00000002 00000000 00000000\n00000010 0000000a 00000001 00000000\n"
	if got, err := parseSoftnetDrops(in); err != nil || got != 12 {
		t.Errorf("parseSoftnetDrops = %d, %v; want 12", got, err)
	}
	if _, err := parseSoftnetDrops("00000001\n"); err == nil {
		t.Error("a line without a second column: no error")
	}
}

// TestStormTargets: the storm targets judge the worst P storm of each size,
// against the observer's own figures without a storm.
func TestStormTargets(t *testing.T) {
	ms := int64(time.Millisecond)
	r := &Results{Config: Config{StormPods: 10}}
	r.Storm = []*StormRun{
		{Responder: K0, Stormers: 1, During: Summary{N: 10, P50: 1, P99: 2}, Baseline: Summary{N: 10, P50: 1, P99: 2}},
		{Responder: P, Stormers: 1, CPUPercent: 6, ReplyRate: 1000,
			Baseline: Summary{N: 10, P50: ms / 10, P99: ms / 5}, During: Summary{N: 10, P50: ms / 10, P99: ms / 2}},
		{Responder: P, Stormers: 1, CPUPercent: 5, ReplyRate: 1000,
			Baseline: Summary{N: 10, P50: ms / 10, P99: ms / 5}, During: Summary{N: 10, P50: ms / 10, P99: ms / 2}},
		{Responder: P, Stormers: 10, CPUPercent: 20, ReplyRate: 1000,
			Baseline: Summary{N: 10, P50: ms / 10, P99: ms / 5}, During: Summary{N: 9, Lost: 1, P50: ms / 10, P99: ms / 5}},
		{Responder: P, Stormers: 10, CPUPercent: 25, ReplyRate: 500,
			Baseline: Summary{N: 10, P50: ms / 10, P99: ms / 5}, During: Summary{N: 10, P50: ms, P99: 2 * ms}},
	}
	got := map[string]bool{}
	for _, tg := range stormTargets(r) {
		if !tg.Measured {
			t.Errorf("%s: not measured", tg.Name)
		}
		got[tg.Name] = tg.OK
	}
	for name, want := range map[string]bool{
		"storm, 1 pod: another pod's loss, every round":                            true,
		"storm, 10 pods (the observer is pod 11): another pod's loss, every round": false,
		"storm, 1 pod: pxresp CPU":                                                 true,
		"storm, 1 pod: another pod's p99":                                          true,
		"storm, 1 pod: replies to each flooding pod":                               true,
		"storm, 10 pods (the observer is pod 11): pxresp CPU":                      false,
		"storm, 10 pods (the observer is pod 11): another pod's p50":               false,
		"storm, 10 pods (the observer is pod 11): replies to each flooding pod":    false,
	} {
		if ok, found := got[name]; !found || ok != want {
			t.Errorf("%s: ok=%v (found %v), want %v; all: %v", name, ok, found, want, got)
		}
	}
	md := renderMarkdown(r)
	if !strings.Contains(md, "## ARP storms") {
		t.Error("no storm section in the report")
	}
}
