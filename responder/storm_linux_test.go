package responder

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/policy"
)

// TestRateLimitOnSocket floods a rate-limited Responder from a pod through
// a real veth: every request read is either answered or counted as rate
// limited, the answers stay within the limit, and once the flood stops the
// pod, shed as a storm meanwhile, is answered again once the shedding
// ends.
func TestRateLimitOnSocket(t *testing.T) {
	const (
		rate  = 100
		burst = 10
		dur   = time.Second
		most  = 2_000_000 // frames, whatever dur allows
	)
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	r := listenLimited(t, tp, pod, rate)
	cl := newClient(t, pod)
	req := request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)

	sent := 0
	t0 := time.Now()
	for i := 0; i < most && (i&255 != 0 || time.Since(t0) < dur); i++ {
		if err := cl.c.Send(req); err == nil {
			sent++
		}
	}
	window := time.Since(t0)
	// Wait (at most 5 s) for the Responder to work through its queue: until
	// its counts stop moving for 50 ms.
	var st Stats
	for stable, deadline := 0, time.Now().Add(5*time.Second); stable < 50 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		if now := r.Stats(); now.Requests == st.Requests {
			stable++
		} else {
			st, stable = now, 0
		}
	}
	took := time.Since(t0)
	t.Logf("sent %d requests in %v; responder read %d, replied %d, rate limited %d (over %v)",
		sent, window.Round(time.Millisecond), st.Requests, st.Replies, st.RateLimited, took.Round(time.Millisecond))

	if sent < 20*rate {
		t.Fatalf("sent only %d requests in %v: not a flood against %d/s", sent, window, rate)
	}
	if st.Requests == 0 || st.Requests > uint64(sent) {
		t.Errorf("responder read %d requests of %d sent", st.Requests, sent)
	}
	if st.Replies+st.RateLimited+st.SendErrors != st.Requests {
		t.Errorf("stats %+v: every request read should be answered, rate limited or a send error", st)
	}
	if allowed := uint64(rate*took.Seconds()*1.05) + burst + 1; st.Replies > allowed || st.Replies == 0 {
		t.Errorf("%d replies in %v at %d/s with a burst of %d: want 1 to %d", st.Replies, took, rate, burst, allowed)
	}
	// The flood was a storm: the filter shed the pod until its rate fell,
	// which it notices within a second or two (bounded wait).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if shed, _ := r.Shedding(); shed == nil {
			break
		}
	}
	if shed, _ := r.Shedding(); shed != nil {
		t.Fatalf("still shedding %v after the flood", shed)
	}
	// The limit throttles; it does not ban. A token comes back every 10 ms.
	if reply := cl.ask(t, req, time.Second); reply == nil {
		t.Error("no answer after the flood stopped")
	}
}

// listenLimited opens a Responder with a reply limit on the host side of
// pod p, answering for the gateway.
func listenLimited(t *testing.T, tp *topo.Topology, p *topo.Pod, rate int) *Responder {
	t.Helper()
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var r *Responder
	err = tp.Host.Do(func() error {
		ifi, err := net.InterfaceByName(p.HostIf)
		if err != nil {
			return err
		}
		r, err = Listen(Config{Index: ifi.Index, Name: ifi.Name, Settings: Settings{MAC: ifi.HardwareAddr, Policy: pol},
			RateLimit: rate})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	return r
}

// askFor sends req from c and waits (at most wait) for a reply addressed
// to mac, skipping replies to other senders on the same link.
func askFor(t *testing.T, c *client, req []byte, mac net.HardwareAddr, wait time.Duration) bool {
	t.Helper()
	c.c.Drain()
	if err := c.c.Send(req); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for left := wait; left > 0; left = time.Until(deadline) {
		reply, err := c.c.NextReply(left)
		if err != nil {
			t.Fatal(err)
		}
		if reply == nil {
			return false
		}
		if bytes.Equal(reply[arpframe.OffEthDst:arpframe.OffEthDst+6], mac) {
			return true
		}
	}
	return false
}

// TestStormShedding floods a Responder from pod A until it sheds A's MAC in
// the socket filter, then checks, while the flood goes on, that another
// sender on A's link and pod B on its own link are answered every time and
// that A still gets replies; once the flood stops, the shedding ends and A
// is answered again. It asserts on counts and states only.
func TestStormShedding(t *testing.T) {
	const (
		rate      = 200
		probes    = 50
		maxFrames = 20_000_000
		maxFlood  = 30 * time.Second
		wait      = 2 * time.Second
	)
	tp := newTopo(t, 2)
	a, b := tp.Pods[0], tp.Pods[1]
	ra, rb := listenLimited(t, tp, a, rate), listenLimited(t, tp, b, rate)
	flooder, neighbour, cb := newClient(t, a), newClient(t, a), newClient(t, b)
	nMAC := net.HardwareAddr{0x02, 0x4e, 0x42, 0, 0, 1} // another host on A's link
	reqA := request(a.MAC, a.IP, topo.Gateway, arptest.Broadcast)
	reqN := request(nMAC, a.IP, topo.Gateway, arptest.Broadcast)
	reqB := request(b.MAC, b.IP, topo.Gateway, arptest.Broadcast)

	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		sent := 0
		defer func() { done <- sent }()
		t0 := time.Now()
		for i := 0; i < maxFrames; i++ {
			if i&255 == 0 {
				select {
				case <-stop:
					return
				default:
				}
				if time.Since(t0) > maxFlood {
					return
				}
			}
			if flooder.c.Send(reqA) == nil {
				sent++
			}
		}
	}()
	stopFlood := sync.OnceValue(func() int { close(stop); return <-done })
	defer stopFlood()

	// Engage: bounded wait for the filter to shed A.
	var shed net.HardwareAddr
	var sample uint64
	for deadline := time.Now().Add(10 * time.Second); shed == nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		shed, sample = ra.Shedding()
	}
	if !bytes.Equal(shed, a.MAC) || sample < 2 {
		t.Fatalf("shedding %v, sample %d: want pod A's %v, sampled", shed, sample, a.MAC)
	}
	repliesA := ra.Stats().Replies
	lostN, lostB := 0, 0
	for range probes {
		if !askFor(t, neighbour, reqN, nMAC, wait) {
			lostN++
		}
		if !askFor(t, cb, reqB, b.MAC, wait) {
			lostB++
		}
		time.Sleep(10 * time.Millisecond) // well within the limit
	}
	during := ra.Stats()
	if shed, _ := ra.Shedding(); !bytes.Equal(shed, a.MAC) {
		t.Errorf("after the probes, shedding %v: want pod A's %v still", shed, a.MAC)
	}
	sent := stopFlood()
	t.Logf("pod A sent %d; during the storm: %+v", sent, during)
	if lostN != 0 || lostB != 0 {
		t.Errorf("lost %d/%d requests of another sender on A's link and %d/%d of pod B", lostN, probes, lostB, probes)
	}
	if during.Replies <= repliesA+probes {
		t.Errorf("pod A got no replies while shed: %d before the probes, %d after (%d probes)", repliesA, during.Replies, probes)
	}
	if during.Storms != 1 || during.StormsEnded != 0 {
		t.Errorf("storms %d, ended %d: want 1, 0", during.Storms, during.StormsEnded)
	}
	if during.KernelQueued == 0 || during.KernelQueued+during.KernelDrops >= uint64(sent) {
		t.Errorf("kernel queued %d and dropped %d of %d frames sent: the filter shed none", during.KernelQueued, during.KernelDrops, sent)
	}
	if st := rb.Stats(); st.Storms != 0 || st.RateLimited != 0 {
		t.Errorf("pod B's responder: %+v, want no storm and nothing rate limited", st)
	}

	// Release: bounded wait for the shedding to end.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if shed, _ = ra.Shedding(); shed == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := ra.Stats()
	if shed != nil || st.StormsEnded != 1 {
		t.Fatalf("after the flood: shedding %v, %+v: want none, one storm ended", shed, st)
	}
	if st.Shed == 0 {
		t.Errorf("no frames counted as shed: %+v", st)
	}
	for range probes {
		if !askFor(t, flooder, reqA, a.MAC, wait) {
			t.Fatal("pod A not answered after the storm ended")
		}
		time.Sleep(10 * time.Millisecond) // within the limit
	}
}
