package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// TestInterfaceMovesNetns moves a served pod's host-side interface to
// another namespace and back while pxresp runs. Moving out is a deletion
// for pxresp's namespace: it detaches, its socket is closed, and nothing
// answers the pod. The interface comes back down, without its routes, and
// here under another (still matching) name: pxresp attaches it again,
// follows the rename and the up, and answers; with the route re-added the
// pod pings the host again. pxresp never serves an interface of the other
// namespace. (MAC change, down/up and renames within the namespace are in
// TestInterfaceLifecycle.)
func TestInterfaceMovesNetns(t *testing.T) {
	tp := newTopo(t, 2)
	pod, other := tp.Pods[0], tp.Pods[1]
	ctx := context.Background()
	away := topotest.AddNS(t, tp.Prefix+"away")
	// The AF_PACKET datapath: the test counts its sockets.
	p := startPxresp(t, tp, "--datapath", "packet", "--iface", "cali*", "--gw", "169.254.1.1")
	p.WaitT(t, pxproc.Has("msg=attach"), 2)
	c, co := topotest.Client(t, pod), topotest.Client(t, other)
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	reqOther := arptest.Request(other.MAC, other.IP, topo.Gateway, arptest.Broadcast)
	if r := topotest.Ask(t, c, req, time.Second); r == nil {
		t.Fatal("no reply before the move")
	}
	before := snapshot(t, p)
	idx := -1
	for i, f := range p.Attached() {
		if f.Name == pod.HostIf {
			idx = i
		}
	}
	if idx < 0 || before.Packet[idx] != 1 {
		t.Fatalf("%s not attached with one socket before the move (attached %v, sockets %v)", pod.HostIf, p.Attached(), before.Packet)
	}

	// Out: detached, its socket closed, the pod unanswered; the other pod
	// is still served.
	start := time.Now()
	if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, "netns", away.Name); err != nil {
		t.Fatal(err)
	}
	p.WaitT(t, pxproc.Has("msg=detach", "iface="+pod.HostIf), 1)
	t.Logf("moved out: detached %v after `ip link set netns` started", time.Since(start).Round(time.Microsecond))
	out := snapshot(t, p)
	if out.FDs != before.FDs-1 || out.Packet[idx] != 0 || out.PacketSockets() != 1 {
		t.Errorf("after the move out: %v, sockets by ifindex %v; before: %v", out, out.Packet, before)
	}
	// In the other namespace the interface is down; bring it up there so
	// that the pod's requests do reach it: nobody may answer.
	if err := away.IP(ctx, "link", "set", pod.HostIf, "up"); err != nil {
		t.Fatal(err)
	}
	if r := topotest.Ask(t, c, req, 300*time.Millisecond); r != nil {
		t.Errorf("reply %x while the interface is in another namespace", r)
	}
	if r := topotest.Ask(t, co, reqOther, time.Second); r == nil {
		t.Error("the other pod got no reply while the first one's interface was away")
	}

	// Back, renamed on the way (a name that matches too): attached again.
	const moved = "calimoved0"
	for _, args := range [][]string{
		{"link", "set", pod.HostIf, "down"},
		{"link", "set", pod.HostIf, "name", moved},
		{"link", "set", moved, "netns", tp.Host.Name},
	} {
		if err := away.IP(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+moved), 1)
	for i, f := range p.Attached() {
		if f.Name == moved {
			t.Logf("moved back as %s: attached, ifindex %d (was %d)", moved, i, idx)
		}
	}
	// Its old name, up, and the pod's route, as Calico would restore them.
	rename(t, tp, moved, pod.HostIf)
	if err := tp.Host.IP(ctx, "route", "replace", pod.IP.String()+"/32", "dev", pod.HostIf, "scope", "link"); err != nil {
		t.Fatal(err)
	}
	p.WaitT(t, pxproc.Has(`msg="link changed"`, "iface="+pod.HostIf, "up=true"), 1)
	if r := topotest.Ask(t, c, req, time.Second); r == nil {
		t.Error("no reply after the interface came back")
	}
	back := snapshot(t, p)
	att := p.Attached()
	t.Logf("before the move: %v; after the move back: %v", before, back)
	if len(att) != 2 || back.FDs != before.FDs || back.PacketSockets() != 2 {
		t.Errorf("after the move back: attached %v, %v; before the move: %v", att, back, before)
	}
	for i, n := range att {
		if back.Packet[i] != 1 {
			t.Errorf("%s (ifindex %d): %d sockets bound to it, want 1", n, i, back.Packet[i])
		}
	}
	if n := p.Count(pxproc.Has("msg=attach")); n != 3 {
		t.Errorf("%d attach lines, want 3 (two at start, one after the move back)", n)
	}
	// The pod's kernel uses the gateway again: ping the host.
	if out := topotest.Exec(t, pod.NS, "ping", "-c", "3", "-i", "0.2", "-W", "1", tp.UplinkIP.String()); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping after the move back: %s", out)
	}
	p.StopT(t, time.Second)
}
