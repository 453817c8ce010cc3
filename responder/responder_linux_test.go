package responder

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// These tests run real frames through real veths in namespaces of their own
// (internal/test/topo): a raw-socket client in a pod namespace asks, and either
// the kernel's proxy_arp or a Responder in the host namespace answers.

// newClient opens a raw ARP client on pod p's eth0.
func newClient(t testing.TB, p *topo.Pod) *client {
	t.Helper()
	c, err := arptest.Open(p.NS, p.PodIf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c}
}

type client struct{ c *arptest.Client }

// ask sends frame and returns the first ARP reply within wait, or nil.
func (c *client) ask(t *testing.T, frame []byte, wait time.Duration) []byte {
	t.Helper()
	reply, err := c.c.Ask(frame, wait)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// listenIn opens a Responder on the host side of pod p.
func listenIn(t *testing.T, tp *topo.Topology, p *topo.Pod, pol *policy.Policy, onLink []netip.Prefix) *Responder {
	t.Helper()
	var r *Responder
	err := tp.Host.Do(func() error {
		ifi, err := net.InterfaceByName(p.HostIf)
		if err != nil {
			return err
		}
		r, err = Listen(Config{Index: ifi.Index, Name: ifi.Name, Settings: Settings{MAC: ifi.HardwareAddr, Policy: pol,
			OnLink: onLink}})
		return err
	})
	if err != nil {
		t.Fatalf("Listen on %s: %v", p.HostIf, err)
	}
	return r
}

// start runs r.Serve until the test ends and checks that it returns nil.
func start(t *testing.T, r *Responder) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return within 5s of Close")
		}
	})
}

func newTopo(t *testing.T, pods int) *topo.Topology { return topotest.New(t, pods, "pxrr") }

// TestConformanceWithKernel sends the same requests to kernel proxy_arp
// (proxy_delay=0, as Calico sets it) and to a Responder, and requires the
// same reply, field for field, or the same silence.
func TestConformanceWithKernel(t *testing.T) {
	tp := newTopo(t, 2)
	ctx := context.Background()
	pod, other := tp.Pods[0], tp.Pods[1]
	cl := newClient(t, pod)
	mac := net.HardwareAddr(topo.GatewayMAC)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	stranger := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	// A second address of the pod itself: the host routes it back out the
	// pod's own interface, so asking for it from there is never answered.
	podSecond := netip.MustParseAddr("10.244.200.2")
	if err := tp.Host.IP(ctx, "route", "add", podSecond.String()+"/32", "dev", pod.HostIf, "scope", "link"); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		frame []byte
		reply bool
	}{
		{"broadcast for the gateway", request(pod.MAC, pod.IP, topo.Gateway, bcast), true},
		{"unicast re-probe for the gateway", request(pod.MAC, pod.IP, topo.Gateway, mac), true},
		{"another pod's address", request(pod.MAC, pod.IP, other.IP, bcast), true},
		{"the host's uplink address", request(pod.MAC, pod.IP, tp.UplinkIP, bcast), true},
		{"DAD probe", request(pod.MAC, netip.IPv4Unspecified(), topo.Gateway, bcast), false},
		{"gratuitous request", request(pod.MAC, pod.IP, pod.IP, bcast), false},
		{"own address, routed back out this link", request(pod.MAC, pod.IP, podSecond, bcast), false},
		{"unicast to another host's MAC", request(pod.MAC, pod.IP, topo.Gateway, stranger), false},
	}
	silence := 300 * time.Millisecond // kernel replies with proxy_delay=0 take microseconds

	// The kernel first.
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, true, 0); err != nil {
		t.Fatal(err)
	}
	kernel := make([][]byte, len(cases))
	for i, c := range cases {
		kernel[i] = cl.ask(t, c.frame, silence)
		if (kernel[i] != nil) != c.reply {
			t.Fatalf("%s: kernel replied %x, expected reply=%v: the test's premise is wrong", c.name, kernel[i], c.reply)
		}
	}
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, false, -1); err != nil {
		t.Fatal(err)
	}

	// Then pxresp, with kernel proxy_arp off, answering for the gateway and
	// the pod network, told what the host routes out this link.
	pol, err := policy.New([]netip.Addr{topo.Gateway}, []netip.Prefix{topo.PodCIDR, netip.PrefixFrom(tp.UplinkIP, 32)})
	if err != nil {
		t.Fatal(err)
	}
	r := listenIn(t, tp, pod, pol, []netip.Prefix{netip.PrefixFrom(pod.IP, 32), netip.PrefixFrom(podSecond, 32)})
	start(t, r)
	for i, c := range cases {
		got := cl.ask(t, c.frame, silence)
		switch {
		case got == nil && kernel[i] == nil:
			t.Logf("%s: both silent", c.name)
		case !bytes.Equal(got, kernel[i]):
			t.Errorf("%s:\n pxresp %x\n kernel %x", c.name, got, kernel[i])
		default:
			t.Logf("%s: identical %d-byte replies", c.name, len(got))
		}
	}
	waitFor(t, "the replies to be counted", func() bool { return r.Stats().Replies >= 4 })
	st := r.Stats()
	if st.Replies != 4 || st.Ignored[policy.Probe] != 1 || st.Ignored[policy.Gratuitous] != 1 || st.Ignored[policy.OwnAddress] != 1 {
		t.Errorf("stats %+v", st)
	}
	if st.Ignored[policy.NotForUs] != 0 {
		t.Errorf("a frame for another host reached userspace: the BPF filter should drop it (stats %+v)", st)
	}
}

// TestFilterAndMalformedFrames checks on a real socket that the BPF filter
// keeps replies and other hosts' frames out, lets malformed ARP in to be
// counted, and that none of it stops the responder.
func TestFilterAndMalformedFrames(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	cl := newClient(t, pod)
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := listenIn(t, tp, pod, pol, nil)
	start(t, r)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	good := request(pod.MAC, pod.IP, topo.Gateway, bcast)

	replyFrame := bytes.Clone(good)
	replyFrame[arpframe.OffOp+1] = arpframe.OpReply
	badHType := bytes.Clone(good)
	badHType[arpframe.OffHType+1] = 6
	badOp := bytes.Clone(good)
	badOp[arpframe.OffOp+1] = 9
	truncated := bytes.Clone(good[:30])
	otherHost := request(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99})
	for _, f := range [][]byte{replyFrame, badHType, truncated, otherHost, badOp} {
		if got := cl.ask(t, f, 50*time.Millisecond); got != nil {
			t.Errorf("reply %x to a frame that must be ignored: %x", got, f)
		}
		if got := cl.ask(t, good, time.Second); got == nil {
			t.Fatalf("no reply to a good request after %x", f)
		}
	}
	// The responder counts a reply once its send returned, which can be
	// after the client read it.
	waitFor(t, "the last reply to be counted", func() bool { return r.Stats().Replies >= 5 })
	st := r.Stats()
	if st.Malformed != 3 || st.Requests != 5 || st.Replies != 5 {
		t.Errorf("stats %+v: want 3 malformed, 5 requests, 5 replies (replies and other hosts' frames filtered out)", st)
	}
}

// TestLinkDownUpAndDelete: the responder serves again after the link comes
// back up, and ends cleanly, leaving no fd or goroutine, when the link is
// deleted and the responder closed (what the daemon does on detach).
func TestLinkDownUpAndDelete(t *testing.T) {
	tp := newTopo(t, 1)
	ctx := context.Background()
	pod := tp.Pods[0]
	cl := newClient(t, pod)
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := request(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})

	fds, goroutines := leakcheck.FDs(t), runtime.NumGoroutine()
	r := listenIn(t, tp, pod, pol, nil)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	if cl.ask(t, good, time.Second) == nil {
		t.Fatal("no reply before link down")
	}
	for _, state := range []string{"down", "up"} {
		if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, state); err != nil {
			t.Fatal(err)
		}
	}
	if cl.ask(t, good, time.Second) == nil {
		t.Fatalf("no reply after link down/up (stats %+v)", r.Stats())
	}
	if err := tp.DelPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after delete: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of Close")
	}
	if n := leakcheck.FDs(t); n != fds {
		t.Errorf("%d fds open after close, %d before", n, fds)
	}
	leakcheck.WaitGoroutines(t, goroutines)
}
