package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// Robustness tests of the built binary (churn, restarts, namespace moves).

// matchingLinks lists the cali* links of the host namespace (ifindex ->
// name) through netlink.
func matchingLinks(t *testing.T, tp *topo.Topology) map[int]string {
	t.Helper()
	h, err := tp.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	links, err := nh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[int]string)
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "cali") {
			m[l.Attrs().Index] = l.Attrs().Name
		}
	}
	return m
}

// askStats counts one client's requests and replies.
type askStats struct {
	sent, replied, errs int
	maxWait             time.Duration
}

// keepAsking sends req every `every` (at most limit times) until ctx is done
// and waits up to a second for each reply.
func keepAsking(ctx context.Context, c *arptest.Client, req []byte, every time.Duration, limit int) askStats {
	var st askStats
	tick := time.NewTicker(every)
	defer tick.Stop()
	for st.sent < limit {
		select {
		case <-ctx.Done():
			return st
		case <-tick.C:
		}
		start := time.Now()
		r, err := c.Ask(req, time.Second)
		st.sent++
		switch {
		case err != nil:
			st.errs++
		case r != nil:
			st.replied++
			st.maxWait = max(st.maxWait, time.Since(start))
		}
	}
	return st
}

// TestInterfaceChurn creates and deletes 1000 veths in bursts while two
// real pods keep sending requests, on each datapath. Afterwards every live
// cali interface is answered, pxresp's attached set (from its log) equals
// the live set, and what it holds matches it: an AF_PACKET socket bound to
// each live interface (packet), or a BPF link each and exactly one program
// attached to each (eBPF, BPF_PROG_QUERY in the namespace), with as many
// maps and programs as before the churn. Once the rest is deleted it holds
// exactly the fds it held before, and once it stops, no program is left
// attached.
//
// The churned veths' pod ends all live in one extra namespace, without
// addresses: raw ARP clients need none. Deletions are batched with
// `link set X group G` and `link del group G`, which the kernel does in one
// unregister batch (one `link del` each costs a 20 ms RCU wait here).
//
// Goroutines of the external process cannot be read from /proc: each
// listener goroutine owns its socket, so the socket and fd equality stands
// for them, and the thread count is logged as a bound. The in-process
// TestDaemonLeavesNothingBehind counts goroutines.
//
// A netlink overflow is forced, and the resync checked, in ifwatch's
// TestNetnsOverflow (1-byte receive buffer). Here the bursts overflow
// pxresp's default-sized subscription too, most rounds (pxresp closes
// ~11 ms per detached socket, and the next burst arrives meanwhile); the
// test logs how many resyncs the run had, and the final checks hold either
// way. New veths asked during the churn must be answered within 5 s; the
// test logs the slowest.
func TestInterfaceChurn(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		const (
			rounds  = 10
			perRnd  = 100 // veths created per round: 1000 in all
			keep    = 10  // older churned veths that survive each round
			sampled = 5   // new veths per round that get a request during the churn
			group   = "4242"
		)
		start := time.Now()
		tp := newTopo(t, 2)
		churnNS := topotest.AddNS(t, tp.Prefix+"churn")
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=attach"), 2)
		base := snapshot(t, p)
		t.Logf("before: %v", base)
		if base.BPF.Links != dp.progsPerIface()*len(tp.Pods) {
			t.Errorf("pxresp holds %v with %d pods attached", base, len(tp.Pods))
		}

		// Real traffic: both pods ask every 5 ms for the whole churn.
		trafficCtx, stopTraffic := context.WithCancel(context.Background())
		defer stopTraffic()
		var wg sync.WaitGroup
		podStats := make([]askStats, len(tp.Pods))
		for i, pod := range tp.Pods {
			c := topotest.Client(t, pod)
			req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
			wg.Add(1)
			go func() {
				defer wg.Done()
				podStats[i] = keepAsking(trafficCtx, c, req, 5*time.Millisecond, 12000)
			}()
		}

		rng := rand.New(rand.NewPCG(1, 2))
		var live []int // indexes of the churned veths alive now
		name := func(i int) string { return fmt.Sprintf("calich%04d", i) }
		peer := func(i int) string { return fmt.Sprintf("chp%04d", i) }
		var duringAsked, duringAnswered int
		var worstFirst time.Duration
		for r := range rounds {
			var host, pods []string
			fresh := make([]int, perRnd)
			for j := range fresh {
				i := r*perRnd + j
				fresh[j] = i
				host = append(host,
					fmt.Sprintf("link add %s type veth peer name %s netns %s", name(i), peer(i), churnNS.Name),
					"link set "+name(i)+" up")
				pods = append(pods, "link set "+peer(i)+" up")
			}
			rng.Shuffle(len(live), func(a, b int) { live[a], live[b] = live[b], live[a] })
			var doomed []int
			if len(live) > keep {
				doomed, live = live[keep:], live[:keep]
				for _, i := range doomed {
					host = append(host, "link set "+name(i)+" group "+group)
				}
				host = append(host, "link del group "+group)
			}
			topotest.Batch(t, tp.Host, host)
			topotest.Batch(t, churnNS, pods)
			live = append(live, fresh...)

			// Some of the new veths get requests while pxresp is still
			// catching up with the burst.
			for _, i := range fresh[:sampled] {
				duringAsked++
				d, ok := firstReply(t, churnNS, peer(i), 5*time.Second)
				if ok {
					duringAnswered++
					worstFirst = max(worstFirst, d)
				}
			}
			t.Logf("round %d: +%d -%d veths, %d churned alive, pxresp has %d attached; sampled new veths answered after at most %v",
				r, len(fresh), len(doomed), len(live), len(p.Attached()), worstFirst.Round(time.Millisecond))
		}
		stopTraffic()
		wg.Wait()
		churnDone := time.Since(start)

		// pxresp converges on exactly the live set.
		want := make(map[int]string)
		for idx, n := range matchingLinks(t, tp) {
			want[idx] = n
		}
		if len(want) != len(live)+len(tp.Pods) {
			t.Fatalf("%d cali links in the host, want %d churned + %d pods", len(want), len(live), len(tp.Pods))
		}
		settle := time.Now()
		if err := p.WaitUntil(context.Background(), 30*time.Second, func() bool {
			got := p.Attached()
			if len(got) != len(want) {
				return false
			}
			for idx, n := range want {
				if got[idx].Name != n {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("pxresp's attached set = the %d live cali links: %v", len(want), err)
		}
		t.Logf("churn took %v; attached set equal to the %d live links %v after the last burst",
			churnDone.Round(time.Millisecond), len(want), time.Since(settle).Round(time.Millisecond))

		after := snapshot(t, p)
		t.Logf("with %d churned veths alive: %v", len(live), after)
		checkHeld(t, dp, base, after, len(live))
		if dp == packetDP {
			for idx, n := range want {
				if after.Packet[idx] != 1 {
					t.Errorf("%s (ifindex %d): pxresp has %d AF_PACKET sockets bound to it, want 1", n, idx, after.Packet[idx])
				}
			}
			for idx, c := range after.Packet {
				if _, ok := want[idx]; !ok {
					t.Errorf("pxresp has %d AF_PACKET sockets bound to ifindex %d, which is not a live cali link", c, idx)
				}
			}
		}
		checkAttached(t, dp, tp.Host, slices.Collect(maps.Values(want)))

		// Every live interface answers: the pods through their client, each
		// churned veth through a new one.
		for _, pod := range tp.Pods {
			if r := topotest.Ask(t, topotest.Client(t, pod), arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
				t.Errorf("pod %s: no reply after the churn", pod.HostIf)
			}
		}
		unanswered := 0
		for _, i := range live {
			if _, ok := firstReply(t, churnNS, peer(i), time.Second); !ok {
				unanswered++
				t.Errorf("%s: no reply after the churn", name(i))
			}
		}
		t.Logf("after the churn: %d of %d live churned veths and all %d pods answered", len(live)-unanswered, len(live), len(tp.Pods))

		// Delete the rest: pxresp is back to exactly what it held before.
		var host []string
		for _, i := range live {
			host = append(host, "link set "+name(i)+" group "+group)
		}
		topotest.Batch(t, tp.Host, append(host, "link del group "+group))
		if err := p.WaitUntil(context.Background(), 30*time.Second, func() bool { return len(p.Attached()) == len(tp.Pods) }); err != nil {
			t.Fatalf("only the two pods attached: %v", err)
		}
		end := snapshot(t, p)
		t.Logf("after deleting the rest: %v", end)
		checkHeld(t, dp, base, end, 0)
		if dp == packetDP && end.PacketSockets() != len(tp.Pods) {
			t.Errorf("pxresp holds %v after all churned veths were deleted, want an AF_PACKET socket per pod", end)
		}
		checkAttached(t, dp, tp.Host, []string{tp.Pods[0].HostIf, tp.Pods[1].HostIf})
		// Go keeps idle threads; a thread per blocked syscall at most. Not a
		// leak detector, a sanity bound.
		if end.Threads > base.Threads+32 {
			t.Errorf("pxresp has %d threads, %d before the churn", end.Threads, base.Threads)
		}

		for i, st := range podStats {
			t.Logf("pod %s during the churn: %d requests, %d replies, %d errors, slowest reply %v",
				tp.Pods[i].HostIf, st.sent, st.replied, st.errs, st.maxWait.Round(time.Microsecond))
			if st.sent < 100 || st.replied != st.sent {
				t.Errorf("pod %s: %d of %d requests answered during the churn (%d errors)", tp.Pods[i].HostIf, st.replied, st.sent, st.errs)
			}
		}
		t.Logf("new veths asked during the churn: %d of %d answered, the slowest %v after the first request",
			duringAnswered, duringAsked, worstFirst.Round(time.Millisecond))
		if duringAnswered != duringAsked {
			t.Errorf("%d of %d new veths sampled during the churn answered within 5 s", duringAnswered, duringAsked)
		}
		resyncs := p.Count(pxproc.Contains("netlink subscription lost"))
		t.Logf("%d attach and %d detach lines; %d netlink resyncs (overflows recovered); whole test %v",
			p.Count(pxproc.Has("msg=attach")), p.Count(pxproc.Has("msg=detach")), resyncs, time.Since(start).Round(time.Millisecond))
		p.StopT(t, time.Second)
		waitDetached(t, tp.Host)
		waitDetached(t, churnNS)
	})
}

// checkHeld compares what pxresp holds with extra interfaces attached
// beyond those it held at base: one more fd each, an AF_PACKET socket
// (packet datapath) or a BPF link (eBPF datapath); the same BPF maps and
// programs (one program for all interfaces, maps keyed by ifindex); on
// eBPF, no AF_PACKET socket for a gateway-mode rule.
func checkHeld(t *testing.T, dp datapath, base, now procstat.Snapshot, extra int) {
	t.Helper()
	wantSockets, wantLinks := base.Sockets, base.BPF.Links
	if dp == packetDP {
		wantSockets += extra
	} else {
		wantLinks += extra
	}
	if now.FDs != base.FDs+extra || now.Sockets != wantSockets || now.BPF.Links != wantLinks ||
		now.BPF.Maps != base.BPF.Maps || now.BPF.Progs != base.BPF.Progs {
		t.Errorf("pxresp holds %v with %d more interfaces attached than when it held %v", now, extra, base)
	}
	if dp == ebpfDP && now.PacketSockets() != 0 {
		t.Errorf("pxresp on eBPF holds %d AF_PACKET sockets: %v", now.PacketSockets(), now.Packet)
	}
}

// firstReply opens a client on ifname in ns and asks for the gateway (from
// a made-up pod address) until a reply comes, for at most limit. It returns
// how long that took.
func firstReply(t *testing.T, ns *topo.NS, ifname string, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	c, err := arptest.Open(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mac, err := linkMAC(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	req := arptest.Request(mac, netip.MustParseAddr("10.244.200.1"), topo.Gateway, arptest.Broadcast)
	start := time.Now()
	for i := 0; i < 1000 && time.Since(start) < limit; i++ {
		r, err := c.Ask(req, 20*time.Millisecond)
		if err != nil {
			t.Fatalf("ask on %s: %v", ifname, err)
		}
		if r != nil {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// linkMAC returns the MAC of ifname in ns.
func linkMAC(ns *topo.NS, ifname string) ([]byte, error) {
	var mac []byte
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		mac = slices.Clone(l.Attrs().HardwareAddr)
		return nil
	})
	return mac, err
}
