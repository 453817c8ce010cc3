// Package conformance holds the tables of requests that the kernel's
// proxy_arp and every pxresp datapath are asked in turn, on a real veth of
// a test topology (internal/test/topo): pxresp must send the kernel's
// reply byte for byte, or stay silent where the table says so, and count
// exactly what the table says. Each datapath's tests run the same tables
// with Run, so that the datapaths cannot drift apart.
package conformance

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// Silence is how long Run waits for a reply that must not come: the
// kernel's replies (proxy_delay=0) and pxresp's take microseconds.
const Silence = 300 * time.Millisecond

// Case is one request, sent from the table's pod.
type Case struct {
	Name  string
	Frame []byte
	// Kernel and Pxresp say whether each answers it; where both do, the
	// replies are identical.
	Kernel, Pxresp bool
}

// Counts are the counters a datapath must show after a table: those of
// responder.Stats that both datapaths keep.
type Counts struct {
	Requests, Replies uint64
	Ignored           [policy.NumVerdicts]uint64
}

// Table is a set of requests from one pod, with what pxresp is told.
type Table struct {
	Pod    *topo.Pod
	Cases  []Case
	Policy *policy.Policy
	OnLink []netip.Prefix
	// Want is what pxresp counts for the whole table.
	Want Counts
}

var (
	bcast    = arptest.Broadcast
	stranger = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
)

// Proxy is the table of proxy_arp's cases, on a topology of 2 or more
// pods, asked from pod 0: the gateway, another pod and the host's uplink
// address are answered; a DAD probe, a gratuitous request, the pod's own
// second address (which it adds: the host routes it back out the pod's
// link) and a frame for another host's MAC are not. pxresp answers for
// the gateway, the pod network and the uplink address, told what the host
// routes out the pod's link.
func Proxy(t testing.TB, tp *topo.Topology) Table {
	t.Helper()
	pod, other := tp.Pods[0], tp.Pods[1]
	podSecond := netip.MustParseAddr("10.244.200.2")
	if err := tp.Host.IP(context.Background(), "route", "add", podSecond.String()+"/32", "dev", pod.HostIf, "scope", "link"); err != nil {
		t.Fatal(err)
	}
	mac := topo.GatewayMAC
	req := func(sender, target netip.Addr, dst net.HardwareAddr) []byte {
		return arptest.Request(pod.MAC, sender, target, dst)
	}
	pol, err := policy.New([]netip.Addr{topo.Gateway}, []netip.Prefix{topo.PodCIDR, netip.PrefixFrom(tp.UplinkIP, 32)})
	if err != nil {
		t.Fatal(err)
	}
	tab := Table{
		Pod: pod,
		Cases: []Case{
			{"broadcast for the gateway", req(pod.IP, topo.Gateway, bcast), true, true},
			{"unicast re-probe for the gateway", req(pod.IP, topo.Gateway, mac), true, true},
			{"another pod's address", req(pod.IP, other.IP, bcast), true, true},
			{"the host's uplink address", req(pod.IP, tp.UplinkIP, bcast), true, true},
			{"DAD probe", req(netip.IPv4Unspecified(), topo.Gateway, bcast), false, false},
			{"gratuitous request", req(pod.IP, pod.IP, bcast), false, false},
			{"own address, routed back out this link", req(pod.IP, podSecond, bcast), false, false},
			{"unicast to another host's MAC", req(pod.IP, topo.Gateway, stranger), false, false},
		},
		Policy: pol,
		OnLink: []netip.Prefix{netip.PrefixFrom(pod.IP, 32), netip.PrefixFrom(podSecond, 32)},
		// A frame for another host is dropped unread, and not counted.
		Want: Counts{Requests: 7, Replies: 4},
	}
	tab.Want.Ignored[policy.Probe] = 1
	tab.Want.Ignored[policy.Gratuitous] = 1
	tab.Want.Ignored[policy.OwnAddress] = 1
	return tab
}

// VLAN is the table of VLAN tags and multicast, asked from pod 0 for the
// gateway: the kernel answers a priority-tagged frame (VLAN 0, also
// around another VLAN 0) and drops one tagged with a VLAN ID; pxresp does
// the same. The kernel, with proxy_delay=0, also answers a request sent to
// a multicast MAC; pxresp does not, by design (it answers only broadcast or
// what is addressed to its MAC), and counts it as not for us.
func VLAN(t testing.TB, tp *topo.Topology) Table {
	t.Helper()
	pod := tp.Pods[0]
	good := arptest.Request(pod.MAC, pod.IP, topo.Gateway, bcast)
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tab := Table{
		Pod: pod,
		Cases: []Case{
			{"untagged broadcast", good, true, true},
			{"802.1Q priority tag (VLAN 0)", arptest.VLANTag(good, 0x8100, 0), true, true},
			{"802.1ad VLAN 0 around 802.1Q VLAN 0", arptest.VLANTag(arptest.VLANTag(good, 0x8100, 0), 0x88a8, 0), true, true},
			{"802.1Q VLAN 5", arptest.VLANTag(good, 0x8100, 5), false, false},
			{"802.1Q VLAN 5, unicast to our MAC", arptest.VLANTag(arptest.Request(pod.MAC, pod.IP, topo.Gateway, topo.GatewayMAC), 0x8100, 5), false, false},
			{"802.1ad VLAN 5", arptest.VLANTag(good, 0x88a8, 5), false, false},
			{"multicast destination MAC", arptest.Request(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), true, false},
		},
		Policy: pol,
		// The tagged frames never reach pxresp as requests.
		Want: Counts{Requests: 4, Replies: 3},
	}
	tab.Want.Ignored[policy.NotForUs] = 1
	return tab
}

// Run asks the kernel's proxy_arp (on, proxy_delay=0) every case of tab,
// turns it off, calls start to start the datapath under test on the host
// side of tab.Pod with tab's policy and on-link prefixes, and asks again:
// pxresp must answer with the kernel's very bytes, or stay silent, as the
// table says. The caller then checks its counters against tab.Want (Wait).
func Run(t *testing.T, tp *topo.Topology, tab Table, start func(pol *policy.Policy, onLink []netip.Prefix)) {
	t.Helper()
	ctx := context.Background()
	pod := tab.Pod
	cl := topotest.Client(t, pod)
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, true, 0); err != nil {
		t.Fatal(err)
	}
	kernel := make([][]byte, len(tab.Cases))
	for i, c := range tab.Cases {
		kernel[i] = topotest.Ask(t, cl, c.Frame, Silence)
		if (kernel[i] != nil) != c.Kernel {
			t.Fatalf("%s: kernel reply %x, expected answered=%v: the test's premise is wrong", c.Name, kernel[i], c.Kernel)
		}
	}
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, false, -1); err != nil {
		t.Fatal(err)
	}
	start(tab.Policy, tab.OnLink)
	for i, c := range tab.Cases {
		got := topotest.Ask(t, cl, c.Frame, Silence)
		switch {
		case (got != nil) != c.Pxresp:
			t.Errorf("%s: pxresp reply %x, want answered=%v", c.Name, got, c.Pxresp)
		case got != nil && !bytes.Equal(got, kernel[i]):
			t.Errorf("%s:\n pxresp %x\n kernel %x", c.Name, got, kernel[i])
		default:
			t.Logf("%-42s kernel answered=%-5v pxresp answered=%v", c.Name, c.Kernel, c.Pxresp)
		}
	}
}

// Wait polls counts (every ms, at most 2 s) until it returns want, and
// fails t if it does not: a datapath counts a reply once it is sent, which
// the client can beat.
func Wait(t testing.TB, want Counts, counts func() Counts) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for counts() != want {
		if time.Now().After(deadline) {
			t.Fatalf("counters\n got %+v\nwant %+v", counts(), want)
		}
		time.Sleep(time.Millisecond)
	}
}
