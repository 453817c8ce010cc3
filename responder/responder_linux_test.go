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
	"github.com/pxresp/pxresp/internal/test/conformance"
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

// TestConformanceWithKernel asks kernel proxy_arp (proxy_delay=0, as
// Calico sets it) and a Responder the shared table of proxy_arp's cases
// (conformance.Proxy), and requires the same reply, field for field, or the
// same silence, and exact counters.
func TestConformanceWithKernel(t *testing.T) {
	tp := newTopo(t, 2)
	tab := conformance.Proxy(t, tp)
	var r *Responder
	conformance.Run(t, tp, tab, func(pol *policy.Policy, onLink []netip.Prefix) {
		r = listenIn(t, tp, tab.Pod, pol, onLink)
		start(t, r)
	})
	conformance.Wait(t, tab.Want, func() conformance.Counts { return counts(r.Stats()) })
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
