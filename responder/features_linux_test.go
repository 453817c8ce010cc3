package responder

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/hostile"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/policy"
)

// Route mode, dry runs, the latency observation and Apply on real
// frames through a real veth, in namespaces of the test's own (the unit
// tests over the fake transport are in features_test.go).

// listenWith opens a Responder on the host side of pod p with cfg, whose
// Index, Name and MAC it fills in.
func listenWith(t *testing.T, tp *topo.Topology, p *topo.Pod, cfg Config) *Responder {
	t.Helper()
	var r *Responder
	err := tp.Host.Do(func() error {
		ifi, err := net.InterfaceByName(p.HostIf)
		if err != nil {
			return err
		}
		cfg.Index, cfg.Name, cfg.MAC = ifi.Index, ifi.Name, ifi.HardwareAddr
		r, err = Listen(cfg)
		return err
	})
	if err != nil {
		t.Fatalf("Listen on %s: %v", p.HostIf, err)
	}
	return r
}

// socketInode returns the inode of r's socket: the same socket keeps it.
func socketInode(t *testing.T, r *Responder) uint64 {
	t.Helper()
	pc, ok := r.t.(*packetConn)
	if !ok {
		t.Fatalf("transport %T, want *packetConn", r.t)
	}
	var st unix.Stat_t
	var serr error
	if err := pc.rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatalf("fstat: %v %v", err, serr)
	}
	return st.Ino
}

// waitFor polls cond every ms for at most 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestApplyOverrideOnVeth changes and clears the --mac override of a live
// Responder: the socket stays the same, a unicast request to the new
// override is answered with it at once, one to the old override reaches the
// host but is not answered (the new filter drops it in the kernel, so it is
// not counted either), and the counters are exact throughout.
func TestApplyOverrideOnVeth(t *testing.T) {
	a := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	h := newHostileRig(t, a)
	pod, good := h.Pod, h.Good
	ino := socketInode(t, h.r)
	to := func(mac net.HardwareAddr) []byte { return request(pod.MAC, pod.IP, topo.Gateway, mac) }

	h.Run(t, hostile.Case{Name: "override a: unicast to a", Frame: to(a), Fate: hostile.Answered})
	h.Run(t, hostile.Case{Name: "override a: unicast to b", Frame: to(b), Fate: hostile.Filtered})

	mustChange(t, h.r, func(s *Settings) { s.Override = b })
	h.MAC = b
	for _, c := range []hostile.Case{
		{Name: "override b: unicast to b", Frame: to(b), Fate: hostile.Answered},
		{Name: "override b: unicast to a, the old override", Frame: to(a), Fate: hostile.Filtered},
		{Name: "override b: broadcast", Frame: good, Fate: hostile.Answered},
		{Name: "override b: unicast to the interface's MAC", Frame: to(topo.GatewayMAC), Fate: hostile.Answered},
	} {
		h.Run(t, c)
	}

	mustChange(t, h.r, func(s *Settings) { s.Override = nil })
	h.MAC = topo.GatewayMAC
	for _, c := range []hostile.Case{
		{Name: "no override: broadcast", Frame: good, Fate: hostile.Answered},
		{Name: "no override: unicast to the interface's MAC", Frame: to(topo.GatewayMAC), Fate: hostile.Answered},
		{Name: "no override: unicast to b, the old override", Frame: to(b), Fate: hostile.Filtered},
		{Name: "no override: unicast to a", Frame: to(a), Fate: hostile.Filtered},
	} {
		h.Run(t, c)
	}
	if err := change(h.r, func(s *Settings) { s.Override = net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1} }); err == nil {
		t.Error("Apply accepted a multicast override MAC")
	}
	if got := socketInode(t, h.r); got != ino {
		t.Errorf("socket inode %d after Apply, %d before: the socket was reopened", got, ino)
	}
}

// TestApplyOverrideNoRequestLost flips the override while a pod asks: right
// after each Apply returns, a unicast request to the new MAC is
// answered with it; and broadcast requests sent while another goroutine
// flips the override as fast as it can are all answered, from one of the
// MACs, on the same socket.
func TestApplyOverrideNoRequestLost(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	cl := newClient(t, pod)
	a := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	b := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	r := listenWith(t, tp, pod, Config{Settings: Settings{Policy: gwPolicy(t)}})
	start(t, r)
	ino := socketInode(t, r)
	macs := []net.HardwareAddr{a, b, nil}

	const flips = 60
	for i := range flips {
		next := macs[i%len(macs)]
		mustChange(t, r, func(s *Settings) { s.Override = next })
		want, dst := next, next
		if next == nil {
			want, dst = topo.GatewayMAC, topo.GatewayMAC
		}
		got := cl.ask(t, request(pod.MAC, pod.IP, topo.Gateway, dst), time.Second)
		if got == nil || !bytes.Equal(got[arpframe.OffSHA:arpframe.OffSHA+6], want) {
			t.Fatalf("flip %d to %v: reply %x to a request sent to %v, want one from it", i, next, got, dst)
		}
	}

	const asks = 300
	stop := make(chan struct{})
	flipped := make(chan int, 1)
	go func() {
		n := 0
		defer func() { flipped <- n }()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := change(r, func(s *Settings) { s.Override = macs[n%len(macs)] }); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	stopFlipping := sync.OnceValue(func() int {
		close(stop)
		return <-flipped
	})
	t.Cleanup(func() { stopFlipping() }) // before the Responder closes
	good := request(pod.MAC, pod.IP, topo.Gateway, bcast)
	for i := range asks {
		got := cl.ask(t, good, time.Second)
		if got == nil {
			t.Fatalf("broadcast %d of %d went unanswered while the override changed (stats %+v)", i, asks, r.Stats())
		}
		if from := got[arpframe.OffSHA : arpframe.OffSHA+6]; !bytes.Equal(from, a) && !bytes.Equal(from, b) && !bytes.Equal(from, topo.GatewayMAC) {
			t.Fatalf("reply from %x", from)
		}
	}
	n := stopFlipping()
	st := r.Stats()
	t.Logf("%d broadcasts answered during %d override changes; stats %+v", asks, n, st)
	if st.Requests != flips+asks || st.Replies != flips+asks {
		t.Errorf("stats %+v: want %d requests, all answered", st, flips+asks)
	}
	if got := socketInode(t, r); got != ino {
		t.Errorf("socket inode %d after Apply, %d before: the socket was reopened", got, ino)
	}
}

// TestLatencyOnVeth: with Config.Latency, each reply observes the time since
// the kernel stamped the request: one observation per reply, none for an
// ignored request.
func TestLatencyOnVeth(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	cl := newClient(t, pod)
	obs := &obsRecorder{}
	r := listenWith(t, tp, pod, Config{Settings: Settings{Policy: gwPolicy(t)}, Latency: obs})
	start(t, r)
	good := request(pod.MAC, pod.IP, topo.Gateway, bcast)

	if cl.ask(t, good, time.Second) == nil {
		t.Fatal("no reply")
	}
	// The observation is made before Replies counts the reply.
	waitFor(t, "the reply to be counted", func() bool { return r.Stats().Replies == 1 })
	got := obs.values()
	if len(got) != 1 || got[0] <= 0 || got[0] >= 1 {
		t.Fatalf("observations %v after one reply: want one, in (0, 1) s", got)
	}
	t.Logf("in-daemon latency of a reply: %.1f µs", got[0]*1e6)

	if reply := cl.ask(t, request(pod.MAC, netip.IPv4Unspecified(), topo.Gateway, bcast), 100*time.Millisecond); reply != nil {
		t.Fatalf("reply %x to a DAD probe", reply)
	}
	waitFor(t, "the probe to be counted", func() bool { return r.Stats().Ignored[policy.Probe] == 1 })
	if cl.ask(t, good, time.Second) == nil {
		t.Fatal("no reply")
	}
	waitFor(t, "the reply to be counted", func() bool { return r.Stats().Replies == 2 })
	if got := obs.values(); len(got) != 2 || got[1] <= 0 || got[1] >= 1 {
		t.Fatalf("observations %v after two replies and a probe: want two, in (0, 1) s", got)
	}
}

// TestDryRunOnVeth: a dry run answers nothing on a real veth and counts and
// logs what it would have answered. Beside kernel proxy_arp, which is what a
// dry run is for, the pod gets exactly one reply: the kernel's.
func TestDryRunOnVeth(t *testing.T) {
	tp := newTopo(t, 1)
	ctx := context.Background()
	pod := tp.Pods[0]
	cl := newClient(t, pod)
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := listenWith(t, tp, pod, Config{Settings: Settings{Policy: gwPolicy(t)}, DryRun: true, Logger: log})
	start(t, r)
	good := request(pod.MAC, pod.IP, topo.Gateway, bcast)

	if reply := cl.ask(t, good, 300*time.Millisecond); reply != nil {
		t.Fatalf("reply %x in a dry run", reply)
	}
	waitFor(t, "the would-be reply to be counted", func() bool { return r.Stats().DryRun == 1 })
	want := Stats{Requests: 1, DryRun: 1, KernelQueued: 1}
	if st := r.Stats(); st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	lines := logs.lines(`msg="dry run: would reply"`)
	if len(lines) != 1 || !strings.Contains(lines[0], "iface="+pod.HostIf) || !strings.Contains(lines[0], "mac="+topo.GatewayMAC.String()) ||
		!strings.Contains(lines[0], "sender="+pod.IP.String()) || !strings.Contains(lines[0], "target="+topo.Gateway.String()) {
		t.Errorf("dry-run log lines %q", lines)
	}

	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, true, 0); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tp.SetKernelProxyARP(ctx, pod.HostIf, false, -1) }()
	reply := cl.ask(t, good, time.Second)
	if reply == nil {
		t.Fatal("no reply from the kernel's proxy_arp")
	}
	if extra, err := cl.c.NextReply(300 * time.Millisecond); err != nil || extra != nil {
		t.Fatalf("a second reply %x (%v) beside the kernel's", extra, err)
	}
	waitFor(t, "the second would-be reply to be counted", func() bool { return r.Stats().DryRun == 2 })
	if st := r.Stats(); st.Replies != 0 || st.Requests != 2 {
		t.Errorf("stats %+v: want 2 requests and no reply sent", st)
	}
}

// TestRouteModeOnVeth: a route-mode Responder with a Router that classifies
// by target answers exactly the targets routed elsewhere, asks the Router
// with the interface's index and the requester's address, and does not ask
// for requests refused before any route matters.
func TestRouteModeOnVeth(t *testing.T) {
	tp := newTopo(t, 2)
	pod, other := tp.Pods[0], tp.Pods[1]
	cl := newClient(t, pod)
	back := netip.MustParseAddr("10.244.200.2")
	none := netip.MustParseAddr("192.0.2.1")
	// The Router is a fake: it calls this the host's own address. (For
	// the host's real addresses the kernel answers itself, with or
	// without pxresp.)
	local := netip.MustParseAddr("10.244.250.1")
	tr := &tableRouter{recording: true, table: map[netip.Addr]policy.RouteClass{
		other.IP:  policy.RouteElsewhere,
		tp.SinkIP: policy.RouteElsewhere,
		back:      policy.RouteBack,
		local:     policy.RouteLocal,
		none:      policy.RouteNone,
	}}
	r := listenWith(t, tp, pod, Config{Settings: Settings{Policy: routePolicy(t)}, Router: tr})
	start(t, r)

	cases := []struct {
		name    string
		frame   []byte
		verdict policy.Verdict
		lookup  bool
	}{
		{"another pod, routed out its own interface", request(pod.MAC, pod.IP, other.IP, bcast), policy.Reply, true},
		{"unicast re-probe for it", request(pod.MAC, pod.IP, other.IP, topo.GatewayMAC), policy.Reply, true},
		{"the sink, routed out the uplink", request(pod.MAC, pod.IP, tp.SinkIP, bcast), policy.Reply, true},
		{"routed back out this interface", request(pod.MAC, pod.IP, back, bcast), policy.OwnAddress, true},
		{"the host's own address", request(pod.MAC, pod.IP, local, bcast), policy.LocalAddress, true},
		{"no route", request(pod.MAC, pod.IP, none, bcast), policy.NoRoute, true},
		{"DAD probe", request(pod.MAC, netip.IPv4Unspecified(), other.IP, bcast), policy.Probe, false},
		{"gratuitous", request(pod.MAC, pod.IP, pod.IP, bcast), policy.Gratuitous, false},
		{"multicast destination", request(pod.MAC, pod.IP, other.IP, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), policy.NotForUs, false},
	}
	var want Stats
	for _, c := range cases {
		before := tr.calls.Load()
		wait := time.Second
		if c.verdict != policy.Reply {
			wait = 100 * time.Millisecond
		}
		got := cl.ask(t, c.frame, wait)
		want.Requests++
		if c.verdict == policy.Reply {
			want.Replies++
			if !bytes.Equal(got, hostile.ReplyTo(t, c.frame, topo.GatewayMAC)) {
				t.Errorf("%s: reply %x, want %x", c.name, got, hostile.ReplyTo(t, c.frame, topo.GatewayMAC))
			}
		} else {
			want.Ignored[c.verdict]++
			if got != nil {
				t.Errorf("%s: reply %x, want none (%v)", c.name, got, c.verdict)
			}
		}
		want.KernelQueued++ // every request passes the filter
		waitFor(t, c.name+" to be counted", func() bool { return r.Stats() == want })
		if calls := tr.calls.Load() - before; calls != map[bool]int64{false: 0, true: 1}[c.lookup] {
			t.Errorf("%s: %d route lookups, want lookup=%v", c.name, calls, c.lookup)
		}
		t.Logf("%-45s %v", c.name, c.verdict)
	}
	if iif, src, dst := tr.last(); iif != r.index || src != pod.IP || dst != none {
		t.Errorf("last lookup Route(%d, %v, %v), want Route(%d, %v, %v)", iif, src, dst, r.index, pod.IP, none)
	}
}
