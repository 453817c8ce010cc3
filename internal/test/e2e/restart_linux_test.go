package e2e

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// arpSeen is one ARP frame seen on the pod's host-side interface.
type arpSeen struct {
	at        time.Time
	reply     bool // an answer for the gateway (from pxresp)
	broadcast bool // a request to ff:ff:ff:ff:ff:ff (the pod's entry is not valid)
}

// sniffer records, on a host interface, the pod kernel's requests for the
// gateway and the replies for the gateway. It sees both directions: only an
// ETH_P_ALL socket gets outgoing frames too (it filters ARP itself; the
// pings add 200 frames/s).
type sniffer struct {
	c *packet.Conn

	mu     sync.Mutex
	frames []arpSeen
	added  chan struct{} // closed and replaced whenever a frame arrives
}

func sniff(t *testing.T, ns *topo.NS, ifname string, podMAC net.HardwareAddr) *sniffer {
	t.Helper()
	s := &sniffer{added: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s.c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("sniffer on %s: %v", ifname, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { s.c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := s.c.ReadFrom(buf)
			if err != nil {
				return
			}
			var f arpframe.Frame
			if arpframe.Decode(buf[:n], &f) != nil {
				continue
			}
			var e arpSeen
			switch {
			case f.Op == arpframe.OpRequest && bytes.Equal(f.SHA[:], podMAC) && f.TPA == topo.Gateway:
				e.broadcast = f.EthDst == arpframe.Broadcast
			case f.Op == arpframe.OpReply && f.SPA == topo.Gateway:
				e.reply = true
			default:
				continue
			}
			e.at = time.Now()
			s.mu.Lock()
			s.frames = append(s.frames, e)
			close(s.added)
			s.added = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	return s
}

// since returns the frames seen at or after from.
func (s *sniffer) since(from time.Time) []arpSeen {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []arpSeen
	for _, e := range s.frames {
		if !e.at.Before(from) {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits (at most timeout) until cond holds for the frames seen
// since from, and returns them.
func (s *sniffer) waitFor(t *testing.T, from time.Time, timeout time.Duration, what string, cond func([]arpSeen) bool) []arpSeen {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		added := s.added
		s.mu.Unlock()
		if fs := s.since(from); cond(fs) {
			return fs
		}
		select {
		case <-added:
		case <-deadline:
			t.Fatalf("not within %v: %s (frames since: %+v)", timeout, what, s.since(from))
		}
	}
}

// requests counts the pod's requests in fs.
func requests(fs []arpSeen) (n, broadcast int) {
	for _, e := range fs {
		if !e.reply {
			n++
			if e.broadcast {
				broadcast++
			}
		}
	}
	return n, broadcast
}

// hasRequest: the pod asked at least once.
func hasRequest(fs []arpSeen) bool { n, _ := requests(fs); return n > 0 }

// answeredRequest: a request and then a reply.
func answeredRequest(fs []arpSeen) bool {
	for i, e := range fs {
		if !e.reply {
			for _, r := range fs[i+1:] {
				if r.reply {
					return true
				}
			}
			return false
		}
	}
	return false
}

// Pod neighbour settings for the restart test (net.ipv4.neigh.eth0.* in the
// pod namespace), so that the pod re-probes the gateway every few hundred ms
// instead of every ~15-45 s (the kernel's state machine, net/core/neighbour.c):
//
//   - REACHABLE lasts a random 1/2..3/2 of base_reachable_time_ms (drawn
//     when the sysctl is written): 100-300 ms.
//   - Then, with traffic, DELAY for delay_first_probe_time (5 s by default;
//     0 goes straight on) and PROBE: ucast_solicit unicast requests,
//     retrans_time_ms apart. The entry stays usable during DELAY and PROBE,
//     so pings keep flowing to the old MAC.
//   - A reply makes it REACHABLE again. With none after ucast_solicit
//     probes it is FAILED; the next packet makes it INCOMPLETE: packets
//     are queued (unres_qlen_bytes) while mcast_solicit broadcast requests
//     go out, and dropped when those fail too.
//
// So the pod tolerates a silent gateway for 3 x 200 ms of unicast probes
// plus 3 x 200 ms of broadcast ones (where pings are queued, not lost) before
// it drops anything. The test requires more: that the pod's entry never
// leaves PROBE (no broadcast request), i.e. that the new pxresp answers one
// of the unicast probes.
var podNeighSysctls = [][2]string{
	{"base_reachable_time_ms", "200"},
	{"delay_first_probe_time", "0"},
	{"retrans_time_ms", "200"},
	{"ucast_solicit", "3"},
	{"mcast_solicit", "3"},
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// TestRestartLosesNothing restarts pxresp, once after SIGTERM and once
// after SIGKILL, while a pod pings the host every 10 ms with a neighbour
// entry for the gateway that re-probes every few hundred ms. Each mode
// restarts twice: at once, as a supervisor would, and a second time waiting,
// after the old process is gone, for the pod's next (unanswered) probe
// before starting the new one, so that ARP certainly happens in the gap.
// No ping may be lost, the pod's entry must never fail (no broadcast
// request), and the new process must answer the pod's retransmission.
// It runs on each datapath.
func TestRestartLosesNothing(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		pod := tp.Pods[0]
		ctx := context.Background()
		for _, kv := range podNeighSysctls {
			if err := pod.NS.Sysctl(ctx, "net.ipv4.neigh."+pod.PodIf+"."+kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
		for _, mode := range stopSignals {
			t.Run(mode, func(t *testing.T) { testRestart(t, dp, tp, pod, mode) })
		}
	})
}

// stopSignals are the ways pxresp is stopped (stopBy).
var stopSignals = []string{"SIGTERM", "SIGKILL"}

func testRestart(t *testing.T, dp datapath, tp *topo.Topology, pod *topo.Pod, mode string) {
	args := []string{"--iface", "cali*", "--gw", "169.254.1.1"}
	snf := sniff(t, tp.Host, pod.HostIf, pod.MAC)
	p := dp.start(t, tp, args...)
	p.WaitT(t, pxproc.Has("msg=attach"), 1)

	// 400 pings, 10 ms apart: 4 s at least (about 6 s here).
	pingCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ping := exec.CommandContext(pingCtx, "ip", "netns", "exec", pod.NS.Name,
		"ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", "400", tp.UplinkIP.String())
	var out bytes.Buffer
	ping.Stdout, ping.Stderr = &out, &out
	pingStart := time.Now()
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	pingDone := make(chan error, 1)
	go func() { pingDone <- ping.Wait() }()
	pingEnded, pingTook := false, time.Duration(0)
	defer func() {
		if !pingEnded {
			_ = ping.Process.Kill()
			<-pingDone
		}
	}()
	// The pod resolves the gateway, then re-probes: wait for a re-probe
	// answered by the first process.
	first := snf.waitFor(t, pingStart, 3*time.Second, "the pod's first probes answered", func(fs []arpSeen) bool {
		n, _ := requests(fs)
		return n >= 2 && answeredRequest(fs)
	})
	n, _ := requests(first)
	t.Logf("pod probes answered before the restarts: %d requests in %v", n, time.Since(pingStart).Round(time.Millisecond))

	// kill stops p as the mode says and returns when it has exited.
	kill := func(p *pxproc.Proc) time.Time {
		stopBy(t, p, mode)
		return time.Now()
	}
	var procs []*pxproc.Proc
	// 1: restart at once.
	exited := kill(p)
	p = dp.start(t, tp, args...)
	started := time.Now()
	p.WaitT(t, pxproc.Has("msg=attach"), 1)
	procs = append(procs, p)
	t.Logf("%s, immediate restart: %v from the old process's exit to the new one's attach line (%v of it from its start line)",
		mode, time.Since(exited).Round(time.Microsecond), time.Since(started).Round(time.Microsecond))

	// 2: the pod probes while nothing runs; the new process answers a
	// retransmission.
	exited = kill(p)
	unanswered := snf.waitFor(t, exited, 2*time.Second, "a pod probe with no pxresp running", hasRequest)
	probeAt := unanswered[0].at
	p = dp.start(t, tp, args...)
	p.WaitT(t, pxproc.Has("msg=attach"), 1)
	attached := time.Now()
	procs = append(procs, p)
	fs := snf.waitFor(t, probeAt, 3*time.Second, "a reply to the pod after the restart", func(fs []arpSeen) bool {
		for _, e := range fs {
			if e.reply {
				return true
			}
		}
		return false
	})
	var answerAt time.Time
	for _, e := range fs {
		if e.reply {
			answerAt = e.at
			break
		}
	}
	t.Logf("%s, restart with a probe in the gap: old exit -> unanswered probe %v -> new attach %v -> reply %v (%v without an answer; the pod gives up after 3 x 200 ms)",
		mode, probeAt.Sub(exited).Round(time.Millisecond), attached.Sub(probeAt).Round(time.Millisecond),
		answerAt.Sub(attached).Round(time.Millisecond), answerAt.Sub(probeAt).Round(time.Millisecond))
	if d := time.Since(pingStart); d > 3500*time.Millisecond {
		t.Errorf("the restarts ended %v after ping started: not inside its 4 s window", d.Round(time.Millisecond))
	}

	select {
	case err := <-pingDone:
		pingEnded = true
		pingTook = time.Since(pingStart)
		if err != nil {
			t.Errorf("ping: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ping did not end")
	}
	m := pingSummary.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary in ping's output: %s", out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	all := snf.since(pingStart)
	reqs, bcast := requests(all)
	t.Logf("%s: ping %d transmitted, %d received in %v; meanwhile the pod sent %d requests for the gateway (%d broadcast)",
		mode, sent, recv, pingTook.Round(time.Millisecond), reqs, bcast)
	if sent != 400 || recv != sent {
		t.Errorf("%s: %d pings transmitted, %d received; want 400 and no loss:\n%s", mode, sent, recv, out.String())
	}
	// The first request after the ping starts may be a broadcast (the pod had
	// no entry yet); none after that.
	if bcast > 0 && (bcast > 1 || !all[0].broadcast) {
		t.Errorf("%s: %d broadcast requests: the pod's entry for the gateway failed during the restarts", mode, bcast)
	}

	// The processes after the restarts answered requests themselves.
	p.StopT(t, time.Second)
	for i, q := range procs {
		var got int
		for _, l := range q.Lines() {
			if l.Attr("msg") == "detach" {
				got = int(l.Uint("requests"))
			}
		}
		if i == 1 && got == 0 {
			t.Errorf("%s: the process started after the probe in the gap logged no requests:\n%s", mode, q.Log())
		}
		if mode == "SIGTERM" || i == len(procs)-1 {
			t.Logf("%s: the process started by restart %d answered %d requests", mode, i+1, got)
		}
	}
}

// TestStopLeavesNothing stops pxresp on each datapath, by SIGTERM and by
// SIGKILL, with kernel proxy_arp off: afterwards no BPF program is
// attached to any interface of the host namespace, and no pod is answered
// any more. While it runs, the eBPF datapath has one program on each
// served interface, held by one BPF link fd of pxresp's, and the packet
// datapath none.
func TestStopLeavesNothing(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 2)
		var served []string
		for _, pod := range tp.Pods {
			proxyARPOff(t, tp.Host, pod.HostIf)
			served = append(served, pod.HostIf)
		}
		for _, mode := range stopSignals {
			t.Run(mode, func(t *testing.T) {
				checkAttached(t, dp, tp.Host, nil)
				p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
				p.WaitT(t, pxproc.Has("msg=attach", "datapath="+string(dp)), len(tp.Pods))
				checkAttached(t, dp, tp.Host, served)
				if s := snapshot(t, p); s.BPF.Links != dp.progsPerIface()*len(tp.Pods) {
					t.Errorf("pxresp holds %v, want a BPF link per served interface (%d)", s, dp.progsPerIface()*len(tp.Pods))
				}
				var clients []*arptest.Client
				for _, pod := range tp.Pods {
					c := topotest.Client(t, pod)
					clients = append(clients, c)
					if r := topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
						t.Errorf("%s: no reply while pxresp runs", pod.HostIf)
					}
				}

				stopBy(t, p, mode)
				waitDetached(t, tp.Host)
				for i, pod := range tp.Pods {
					if r := topotest.Ask(t, clients[i], arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), 300*time.Millisecond); r != nil {
						t.Errorf("%s: reply %x after pxresp stopped (%s)", pod.HostIf, r, mode)
					}
				}
			})
		}
	})
}
