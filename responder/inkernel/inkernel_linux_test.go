package inkernel

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/conformance"
	"github.com/pxresp/pxresp/internal/test/hostile"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// These tests attach the program only to the host side of pods of a
// topology of their own (internal/test/topo), from a thread in its host
// namespace, and send real frames from the pods.

// silence is how long a test waits for a reply that must not come: the
// kernel's and the program's replies take microseconds.
const silence = 300 * time.Millisecond

// load loads the program for t, closed when t ends.
func load(t testing.TB) *Program {
	t.Helper()
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Program.Close: %v", err)
		}
	})
	return p
}

// attachTo attaches p to the host side of pod with the settings edit
// makes of the defaults: the interface's MAC, the gateway policy, no
// on-link prefixes.
func attachTo(t testing.TB, p *Program, tp *topo.Topology, pod *topo.Pod, edit func(*responder.Config)) *Iface {
	t.Helper()
	ifi := hostIf(t, tp, pod)
	var i *Iface
	err := tp.Host.Do(func() error {
		var err error
		cfg := responder.Config{Index: ifi.Index, Name: ifi.Name,
			Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t)}}
		if edit != nil {
			edit(&cfg)
		}
		i, err = p.Attach(cfg)
		return err
	})
	if err != nil {
		t.Fatalf("Attach to %s: %v", pod.HostIf, err)
	}
	t.Cleanup(func() {
		if err := i.Close(); err != nil {
			t.Errorf("Iface.Close: %v", err)
		}
	})
	return i
}

// inNS starts a goroutine locked on a thread in ns, which runs the
// functions given to the returned func there, one at a time, until t ends.
// The thread is in ns when inNS returns, and stays there whatever
// capabilities the test drops afterwards.
func inNS(t testing.TB, ns *topo.NS) func(fn func()) {
	t.Helper()
	jobs := make(chan func())
	done := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error {
			for job := range jobs {
				job()
			}
			return nil
		})
	}()
	gone := false
	run := func(fn func()) {
		ok := make(chan struct{})
		select {
		case jobs <- func() { fn(); close(ok) }:
			<-ok
		case err := <-done:
			gone = true
			t.Fatalf("the thread in %s is gone: %v", ns.Name, err)
		}
	}
	t.Cleanup(func() {
		close(jobs)
		if gone {
			return
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	run(func() {}) // in ns now
	return run
}

// hostIf returns the host side of pod, as its namespace sees it.
func hostIf(t testing.TB, tp *topo.Topology, pod *topo.Pod) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	err := tp.Host.Do(func() error {
		var err error
		ifi, err = net.InterfaceByName(pod.HostIf)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ifi
}

func gatewayPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// TestGatewayLikeKernel: a pod's request for its gateway is answered by
// the program, with the kernel's proxy_arp off, with the very bytes the
// kernel sends with it on.
func TestGatewayLikeKernel(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	ctx := context.Background()
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)

	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, true, 0); err != nil {
		t.Fatal(err)
	}
	kernel := topotest.Ask(t, cl, req, silence)
	if kernel == nil {
		t.Fatal("the kernel's proxy_arp did not answer: the test's premise is wrong")
	}
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, false, -1); err != nil {
		t.Fatal(err)
	}
	if got := topotest.Ask(t, cl, req, silence); got != nil {
		t.Fatalf("answered %x with proxy_arp off and no program", got)
	}

	p := load(t)
	i := attachTo(t, p, tp, pod, nil)
	got := topotest.Ask(t, cl, req, time.Second)
	if !bytes.Equal(got, kernel) {
		t.Fatalf("program's reply\n got %x\nkernel %x", got, kernel)
	}
	want := responder.Stats{Requests: 1, Replies: 1}
	if st := i.Stats(); st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	if !i.Bound() {
		t.Error("Bound() = false while attached")
	}
	if !bytes.Equal(i.MAC(), topo.GatewayMAC) {
		t.Errorf("MAC() = %v, want %v", i.MAC(), topo.GatewayMAC)
	}
}

// counts returns the counters of s that the conformance tables check.
func counts(s responder.Stats) conformance.Counts {
	return conformance.Counts{Requests: s.Requests, Replies: s.Replies, Ignored: s.Ignored}
}

// runConformance runs a shared table of internal/test/conformance on the
// program: the kernel's replies, byte for byte, the same silences, exact
// counters.
func runConformance(t *testing.T, tp *topo.Topology, tab conformance.Table) {
	t.Helper()
	p := load(t)
	var i *Iface
	conformance.Run(t, tp, tab, func(pol *policy.Policy, onLink []netip.Prefix) {
		i = attachTo(t, p, tp, tab.Pod, func(c *responder.Config) { c.Policy, c.OnLink = pol, onLink })
	})
	conformance.Wait(t, tab.Want, func() conformance.Counts { return counts(i.Stats()) })
}

// TestConformanceWithKernel: proxy_arp's cases (conformance.Proxy).
func TestConformanceWithKernel(t *testing.T) {
	tp := topotest.New(t, 2, "pxik")
	runConformance(t, tp, conformance.Proxy(t, tp))
}

// TestVLANAndMulticastLikeKernel: VLAN tags and multicast
// (conformance.VLAN).
func TestVLANAndMulticastLikeKernel(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	runConformance(t, tp, conformance.VLAN(t, tp))
}

// newHostileRig is the shared hostile-frame rig with the program on the
// pod's host side.
func newHostileRig(t *testing.T, override net.HardwareAddr) (*hostile.Rig[responder.Stats], *Iface) {
	t.Helper()
	p := load(t)
	var i *Iface
	h := hostile.NewRig(t, "pxik", override, func(tp *topo.Topology, pod *topo.Pod, pol *policy.Policy) func() responder.Stats {
		i = attachTo(t, p, tp, pod, func(c *responder.Config) { c.Policy, c.Override = pol, override })
		return i.Stats
	}, addStats)
	return h, i
}

// addStats returns want with the counters of one frame of fate c.Fate
// added.
func addStats(want responder.Stats, c hostile.Case) responder.Stats {
	switch c.Fate {
	case hostile.Answered:
		want.Requests++
		want.Replies++
	case hostile.Malformed:
		want.Malformed++
	case hostile.Ignored:
		want.Requests++
		want.Ignored[c.Verdict]++
	}
	return want
}

// TestHostileFramesOnVeth runs the shared table of hostile frames
// (hostile.Rig.RunTable) on the program.
func TestHostileFramesOnVeth(t *testing.T) {
	h, _ := newHostileRig(t, nil)
	h.RunTable(t)
}

// TestOverrideMACAndVLAN: with an override MAC, the shared table of
// frames for the override, other hosts and VLANs
// (hostile.Rig.OverrideTable); a frame tagged with a VLAN ID and sent to the
// override is not answered, as the kernel does not answer it.
func TestOverrideMACAndVLAN(t *testing.T) {
	h, _ := newHostileRig(t, net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1})
	for _, c := range h.OverrideTable(hostile.Filtered) {
		h.Run(t, c)
	}
}
