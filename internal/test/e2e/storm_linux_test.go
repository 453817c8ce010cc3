package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// Storm containment: one pod floods pxresp with requests for the gateway as
// fast as a raw socket can send them. The rate limit caps what it gets
// back, and other senders, on another interface and on the flooding one,
// are still answered.

const (
	stormLimit    = 200                    // --rate-limit for the test: small, so that it shows
	stormBurst    = 20                     // what pxresp derives from it (a tenth of a second, at least 10)
	stormMinFlood = 2 * time.Second        // the flood lasts at least this long...
	stormMaxFlood = 10 * time.Second       // ...and never longer than this
	stormMaxSent  = 20_000_000             // nor sends more than this many frames
	stormDrain    = 200 * time.Millisecond // replies still counted after the flood stops
	stormProbes   = 200                    // pod B's requests, one outstanding at a time
	stormEvery    = 8 * time.Millisecond   // pod B's pace: 200 probes take ~1.6 s
	stormWait     = 250 * time.Millisecond // pod B's wait for each answer
)

// stormStats are pod B's round trips.
type stormStats struct {
	rtts  []time.Duration // sorted, answered probes only
	asked int
}

func (s stormStats) answered() int { return len(s.rtts) }

// quantile returns the q-quantile of the answered round trips (0 if none).
func (s stormStats) quantile(q float64) time.Duration {
	if len(s.rtts) == 0 {
		return 0
	}
	return s.rtts[min(int(q*float64(len(s.rtts))), len(s.rtts)-1)]
}

func (s stormStats) String() string {
	return fmt.Sprintf("%d/%d answered, p50 %v p90 %v p99 %v max %v", s.answered(), s.asked,
		s.quantile(0.5), s.quantile(0.9), s.quantile(0.99), s.quantile(1))
}

// stormProbe sends n requests, one at a time, every `every`, and times each
// answer (a reply to the request's sender MAC: other senders' replies on
// the interface are skipped). Frames still queued from an earlier probe are
// dropped first, so that a late answer is never taken for the next one's.
// stop, if it is closed, ends the probes early.
func stormProbe(t *testing.T, c *arptest.Client, req []byte, n int, every time.Duration, stop <-chan struct{}) stormStats {
	t.Helper()
	var s stormStats
	tick := time.NewTicker(every)
	defer tick.Stop()
	for range n {
		select {
		case <-stop:
			slices.Sort(s.rtts)
			return s
		case <-tick.C:
		}
		c.Drain()
		start := time.Now()
		if err := c.Send(req); err != nil {
			t.Errorf("probe send: %v", err)
			break
		}
		s.asked++
		r, err := c.NextReplyTo(req[6:12], stormWait)
		rtt := time.Since(start)
		if err != nil {
			t.Errorf("probe receive: %v", err)
			break
		}
		if r != nil {
			s.rtts = append(s.rtts, rtt)
		}
	}
	slices.Sort(s.rtts)
	return s
}

// stormCPUTicks returns utime+stime of process pid (all its threads), in
// clock ticks.
func stormCPUTicks(t *testing.T, pid int) int64 {
	t.Helper()
	ticks, err := procstat.CPUTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return int64(ticks)
}

// stormSender is a well-behaved sender during the storm: pod B on its own
// interface, and a second sender on the flooding pod's interface (another
// MAC and address in pod A's namespace), each asking one request at a time.
type stormSender struct {
	name string
	c    *arptest.Client
	req  []byte
}

// TestStormContainment: pod A floods broadcast requests for the gateway as
// fast as one raw socket can, while pod B, and a second sender on pod A's
// interface, ask one request at a time. With --rate-limit 200, A gets at
// most 200/s (plus the burst) back but not much less, and the two others
// are answered every time, as without the storm. It runs on each datapath
// with the same assertions on counts and states; the packet datapath also
// sheds the storm in the kernel and logs its start and end. What the storm
// costs in time and CPU is logged, not asserted: timings belong to the
// benchmark.
func TestStormContainment(t *testing.T) {
	eachDatapath(t, testStorm)
}

func testStorm(t *testing.T, dp datapath) {
	tp := newTopo(t, 2)
	a, b := tp.Pods[0], tp.Pods[1]
	p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1", "--rate-limit", strconv.Itoa(stormLimit))
	p.WaitT(t, pxproc.Has("msg=attach"), 2)
	pid := p.Pid() // ip netns exec execs pxresp in place
	ca := topotest.Client(t, a)
	reqA := arptest.Request(a.MAC, a.IP, topo.Gateway, arptest.Broadcast)
	mates := []stormSender{
		{"pod B", topotest.Client(t, b), arptest.Request(b.MAC, b.IP, topo.Gateway, arptest.Broadcast)},
		{"pod A's interface, another sender", topotest.Client(t, a),
			arptest.Request(net.HardwareAddr{0x02, 0, 0, 0, 0x0a, 0x02}, netip.MustParseAddr("10.244.0.250"), topo.Gateway, arptest.Broadcast)},
	}
	// probeAll runs every mate's probes at once, paced as during the storm.
	probeAll := func(stop <-chan struct{}) []stormStats {
		st := make([]stormStats, len(mates))
		var wg sync.WaitGroup
		for i, m := range mates {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st[i] = stormProbe(t, m.c, m.req, stormProbes, stormEvery, stop)
			}()
		}
		wg.Wait()
		return st
	}

	// Baseline: the well-behaved senders alone.
	base := probeAll(nil)
	for i, m := range mates {
		t.Logf("baseline, %s alone: %v", m.name, base[i])
		if base[i].answered() < stormProbes*99/100 {
			t.Fatalf("baseline: %s got %d answers to %d requests without a storm", m.name, base[i].answered(), base[i].asked)
		}
	}

	// The storm. The sender stops once the mates are done and stormMinFlood
	// has passed, or at stormMaxFlood or stormMaxSent; the receiver counts
	// A's replies until stormDrain after that.
	var (
		wg                sync.WaitGroup
		sent, sendErrs    int
		replies           int
		floodStart        time.Time
		floodDur          time.Duration
		recvErr, firstErr error
	)
	started := make(chan struct{}) // the sender has sent its first 1000 frames, or stopped
	var startOnce sync.Once
	markStarted := func() { startOnce.Do(func() { close(started) }) }
	matesDone := make(chan struct{})
	sendDone := make(chan struct{})
	cpu0 := stormCPUTicks(t, pid)
	wall0 := time.Now()
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(sendDone)
		floodStart = time.Now()
		minEnd, maxEnd := floodStart.Add(stormMinFlood), floodStart.Add(stormMaxFlood)
		finished := false
		for i := 0; i < stormMaxSent; i++ {
			if i&255 == 0 {
				now := time.Now()
				select {
				case <-matesDone:
					finished = true
				default:
				}
				if now.After(maxEnd) || finished && now.After(minEnd) {
					break
				}
			}
			if i == 1000 {
				markStarted()
			}
			if err := ca.Send(reqA); err != nil {
				if sendErrs++; firstErr == nil {
					firstErr = err
				}
				continue
			}
			sent++
		}
		floodDur = time.Since(floodStart)
		markStarted()
	}()
	go func() {
		defer wg.Done()
		var drainEnd time.Time
		for range 1_000_000 { // a bound; the drain deadline ends it
			r, err := ca.NextReplyTo(a.MAC, 20*time.Millisecond)
			if err != nil {
				recvErr = err
				return
			}
			if r != nil {
				replies++
			}
			select {
			case <-sendDone:
				if drainEnd.IsZero() {
					drainEnd = time.Now().Add(stormDrain)
				}
			default:
			}
			if !drainEnd.IsZero() && time.Now().After(drainEnd) {
				return
			}
		}
	}()

	<-started
	storm := probeAll(sendDone)
	close(matesDone)
	wg.Wait()
	wall := time.Since(wall0)
	cpu := float64(stormCPUTicks(t, pid)-cpu0) / procstat.TicksPerSecond
	if recvErr != nil {
		t.Fatalf("pod A receiver: %v", recvErr)
	}
	var startLine pxproc.Line
	if dp == packetDP {
		// The storm was shed in the kernel, and the shedding ends once the
		// flood does: logged once each, for pod A's interface and MAC only.
		startLine = p.WaitT(t, pxproc.Has(`msg="storm start"`, "iface="+a.HostIf, "sender="+a.MAC.String()), 1)
		p.WaitT(t, pxproc.Has(`msg="storm end"`, "iface="+a.HostIf, "sender="+a.MAC.String()), 1)
	}
	// The limit throttles; it does not ban: once the flood is over, pod A
	// is answered again (a token comes back every 5 ms).
	after := topotest.Ask(t, ca, reqA, time.Second) != nil
	p.StopT(t, time.Second)
	if dp == packetDP {
		if n, m := p.Count(pxproc.Has(`msg="storm start"`)), p.Count(pxproc.Has(`msg="storm end"`)); n != 1 || m != 1 {
			t.Errorf("%d storm start and %d storm end lines, want one each:\n%s", n, m, p.Log())
		}
		if rate, err := strconv.ParseFloat(startLine.Attr("rate"), 64); err != nil || rate < 2*stormLimit {
			t.Errorf("storm start line %q: want the sender's rate, over twice the limit", startLine.Text)
		}
	}
	detach := detachLine(t, p, a.HostIf)
	requests, pxReplies, limited := detach.Uint("requests"), detach.Uint("replies"), detach.Uint("rate_limited")
	// pxresp's count on A's interface includes the other sender's replies.
	matesOnA := uint64(storm[1].answered() + base[1].answered())

	window := floodDur.Seconds()
	t.Logf("storm: pod A sent %d requests in %v (%.0f/s, %d send errors, first %v)",
		sent, floodDur.Round(time.Millisecond), float64(sent)/window, sendErrs, firstErr)
	t.Logf("storm: pod A got %d replies (%.1f/s over the flood; limit %d/s, burst %d)",
		replies, float64(replies)/window, stormLimit, stormBurst)
	t.Logf("storm: pxresp on %s counted %d requests (%.0f%% of those sent), replied %d (%d of them to the other sender), rate limited %d",
		a.HostIf, requests, 100*float64(requests)/float64(max(sent, 1)), pxReplies, matesOnA, limited)
	t.Logf("storm: pxresp used %.2f CPU-s in %v, flood and drain (%.2f CPU-s per second of flood, %.1f µs per request counted)",
		cpu, wall.Round(time.Millisecond), cpu/window, cpu*1e6/float64(max(requests, 1)))
	for i, m := range mates {
		t.Logf("storm: %s: %v (without the storm: %v)", m.name, storm[i], base[i])
	}

	// It was a storm: far more requests than the limit.
	if float64(sent) < 20*stormLimit*window {
		t.Fatalf("pod A sent only %d requests in %v: not a storm against a limit of %d/s", sent, floodDur, stormLimit)
	}
	// Pod A's replies: the limit over the flood and the drain, plus the
	// burst, plus 5% and 10 for the clocks' disagreement. Once shed (packet
	// datapath), the sender's sample has a bucket of its own: one more
	// burst.
	maxReplies := stormLimit*(window+stormDrain.Seconds())*1.05 + 2*stormBurst + 10
	if float64(replies) > maxReplies || float64(pxReplies-matesOnA) > maxReplies {
		t.Errorf("pod A got %d replies (pxresp sent %d to it) in %v; the limit allows at most %.0f", replies, pxReplies-matesOnA, floodDur, maxReplies)
	}
	// The limit throttles the storm; it does not ban the pod.
	if float64(replies) < stormLimit*window/4 {
		t.Errorf("pod A got only %d replies in %v: under a quarter of the limit", replies, floodDur)
	}
	if limited == 0 || pxReplies+limited > requests {
		t.Errorf("pxresp counts on %s: %d requests, %d replies, %d rate limited", a.HostIf, requests, pxReplies, limited)
	}
	if !after {
		t.Error("pod A not answered after the flood stopped")
	}
	// The others: answered, every time. A starved interface or sender shows
	// as lost requests (or as round trips of many milliseconds, logged).
	for i, m := range mates {
		if storm[i].asked < stormProbes*9/10 {
			t.Errorf("%s asked only %d of %d times before the flood ended", m.name, storm[i].asked, stormProbes)
		}
		if storm[i].answered() != storm[i].asked {
			t.Errorf("%s got %d answers to %d requests during the storm, want all", m.name, storm[i].answered(), storm[i].asked)
		}
	}
}
