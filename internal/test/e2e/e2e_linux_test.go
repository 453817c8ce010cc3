package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arping"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// End-to-end tests: the built pxresp binary runs in the host namespace of a
// reference topology (internal/test/topo) with kernel proxy_arp off everywhere,
// and real clients in the pod namespaces (the pod's kernel, ping, arping,
// raw ARP frames) talk through it.

func TestMain(m *testing.M) { pxproc.Main(m) }

// startPxresp runs pxresp in tp's host namespace and waits until it has
// started and dropped its capabilities (or logged that there is nothing to
// drop): tests that count its fds start after that.
func startPxresp(t *testing.T, tp *topo.Topology, args ...string) *pxproc.Proc {
	t.Helper()
	return startPxrespAs(t, tp, nil, args...)
}

// startPxrespAs is startPxresp under the wrapper command (setpriv, say).
func startPxrespAs(t *testing.T, tp *topo.Topology, wrapper []string, args ...string) *pxproc.Proc {
	t.Helper()
	p := pxproc.StartT(t, tp.Host, pxproc.Options{Wrapper: wrapper, Args: args})
	p.WaitT(t, pxproc.Has("msg=start"), 1)
	p.WaitT(t, pxproc.Contains("privileges"), 1)
	return p
}

// snapshot reads what pxresp holds from /proc.
func snapshot(t *testing.T, p *pxproc.Proc) procstat.Snapshot {
	t.Helper()
	s, err := procstat.Snap(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// detachLine returns pxresp's detach line for iface, with its counts.
func detachLine(t *testing.T, p *pxproc.Proc, iface string) pxproc.Line {
	t.Helper()
	l, ok := p.Find(pxproc.Has("msg=detach", "iface="+iface))
	if !ok {
		t.Fatalf("no detach line for %s in the log:\n%s", iface, p.Log())
	}
	return l
}

func newTopo(t *testing.T, pods int) *topo.Topology { return topotest.New(t, pods, "pxre") }

// rename renames a host interface (down, rename, up, as ip requires).
func rename(t *testing.T, tp *topo.Topology, from, to string) {
	t.Helper()
	ctx := context.Background()
	for _, args := range [][]string{{from, "down"}, {from, "name", to}, {to, "up"}} {
		if err := tp.Host.IP(ctx, append([]string{"link", "set"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
}

// podsPing has the first two pods ping each other, and the first the
// uplink, count times each, and requires no loss.
func podsPing(t *testing.T, tp *topo.Topology, count int) {
	t.Helper()
	a, b := tp.Pods[0], tp.Pods[1]
	for _, c := range []struct {
		from *topo.Pod
		to   netip.Addr
	}{{a, b.IP}, {b, a.IP}, {a, tp.UplinkIP}} {
		out := topotest.Exec(t, c.from.NS, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", c.to.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %v from %s: %s", c.to, c.from.NS.Name, out)
		}
	}
}

// replyMAC is the MAC a reply claims for the requested address.
func replyMAC(r []byte) net.HardwareAddr {
	return net.HardwareAddr(r[arpframe.OffSHA : arpframe.OffSHA+6])
}

// TestPodsTalkThroughPxresp is the main job: with kernel proxy_arp off, the
// pods' own kernels resolve 169.254.1.1 through pxresp, and ping works pod
// to pod and pod to host; arping gets answers.
func TestPodsTalkThroughPxresp(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 2)
		a := tp.Pods[0]
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=attach"), 2)

		podsPing(t, tp, 3)
		neigh := topotest.Exec(t, a.NS, "ip", "neigh", "show", "169.254.1.1")
		if !strings.Contains(neigh, "lladdr ee:ee:ee:ee:ee:ee") {
			t.Errorf("pod neighbour entry for the gateway: %q", neigh)
		}
		args, err := arping.Args(a.PodIf, topo.Gateway, 2, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out := topotest.Exec(t, a.NS, args...)
		rs := arping.Replies(out)
		if len(rs) < 2 {
			t.Errorf("arping: %d replies, want 2: %s", len(rs), out)
		}
		for _, r := range rs {
			if r.IP != topo.Gateway || r.MAC.String() != topo.GatewayMAC.String() {
				t.Errorf("arping: reply %v is-at %v, want %v is-at %v", r.IP, r.MAC, topo.Gateway, topo.GatewayMAC)
			}
		}
		p.StopT(t, time.Second)
	})
}

// TestRequestsAndRefusals: broadcast and unicast requests are answered; DAD
// probes, gratuitous requests, own-address requests, frames for another
// host and requests on an interface outside --iface are not.
func TestRequestsAndRefusals(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 2)
		a, other := tp.Pods[0], tp.Pods[1]
		// Take the second pod out of the selection before pxresp starts.
		rename(t, tp, other.HostIf, "tap0e2e")
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1", "--target", "10.244.0.0/16")
		p.WaitT(t, pxproc.Has("msg=attach"), 1)
		ca, co := topotest.Client(t, a), topotest.Client(t, other)
		gwMAC := net.HardwareAddr(topo.GatewayMAC)
		bc := arptest.Broadcast

		for _, c := range []struct {
			name  string
			frame []byte
		}{
			{"broadcast", arptest.Request(a.MAC, a.IP, topo.Gateway, bc)},
			{"unicast", arptest.Request(a.MAC, a.IP, topo.Gateway, gwMAC)},
			{"another pod", arptest.Request(a.MAC, a.IP, other.IP, bc)},
		} {
			r := topotest.Ask(t, ca, c.frame, time.Second)
			if r == nil || !bytes.Equal(replyMAC(r), gwMAC) {
				t.Errorf("%s: reply %x, want one from %v", c.name, r, gwMAC)
			}
		}
		for _, c := range []struct {
			name  string
			c     *arptest.Client
			frame []byte
		}{
			{"DAD probe", ca, arptest.Request(a.MAC, netip.IPv4Unspecified(), topo.Gateway, bc)},
			{"gratuitous", ca, arptest.Request(a.MAC, a.IP, a.IP, bc)},
			{"own address", ca, arptest.Request(a.MAC, netip.MustParseAddr("10.244.9.9"), a.IP, bc)},
			{"for another host", ca, arptest.Request(a.MAC, a.IP, topo.Gateway, net.HardwareAddr{2, 0, 0, 0, 0, 0x99})},
			{"not a target", ca, arptest.Request(a.MAC, a.IP, netip.MustParseAddr("192.0.2.1"), bc)},
			{"interface not selected", co, arptest.Request(other.MAC, other.IP, topo.Gateway, bc)},
		} {
			if r := topotest.Ask(t, c.c, c.frame, 300*time.Millisecond); r != nil {
				t.Errorf("%s: unexpected reply %x", c.name, r)
			}
		}
		if n := p.Count(pxproc.Has("msg=attach")); n != 1 {
			t.Errorf("%d attaches, want 1 (tap0e2e must not be attached)", n)
		}
		p.StopT(t, time.Second)
	})
}

// TestInterfaceLifecycle: a veth created after start is served (the test
// reports how fast), MAC changes are used at once, link down/up and renames
// are followed, and a deleted veth is let go without leaking an fd; an
// interface renamed out of the glob keeps no program attached.
func TestInterfaceLifecycle(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		ctx := context.Background()
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=attach"), 1)
		fds := snapshot(t, p).FDs

		// A new pod after start: poll with requests until the first reply.
		start := time.Now()
		pod, err := tp.AddPod(ctx)
		if err != nil {
			t.Fatal(err)
		}
		created := time.Since(start)
		c := topotest.Client(t, pod)
		req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
		var reply []byte
		for i := 0; reply == nil && i < 5000; i++ {
			reply = topotest.Ask(t, c, req, time.Millisecond)
		}
		if reply == nil {
			t.Fatal("new veth not answered within 5000 tries")
		}
		t.Logf("new veth answered %v after AddPod started (%v of it creating the pod)", time.Since(start).Round(time.Microsecond), created.Round(time.Microsecond))
		if out := topotest.Exec(t, pod.NS, "ping", "-c", "1", "-W", "1", tp.UplinkIP.String()); !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping from the new pod: %s", out)
		}

		// MAC change: the reply carries the new MAC as soon as ifwatch sees it.
		newMAC := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x01}
		if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, "address", newMAC.String()); err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has(`msg="mac changed"`, "mac="+newMAC.String()), 1)
		if r := topotest.Ask(t, c, req, time.Second); r == nil || !bytes.Equal(replyMAC(r), newMAC) {
			t.Errorf("after MAC change: reply %x, want MAC %v", r, newMAC)
		}

		// Link down and up: still served.
		for _, s := range []string{"down", "up"} {
			if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, s); err != nil {
				t.Fatal(err)
			}
		}
		p.WaitT(t, pxproc.Has(`msg="link changed"`, "iface="+pod.HostIf), 2)
		// The pod's end regains its carrier through the kernel's linkwatch,
		// which may take up to a second after the host's end is up; until
		// then the pod's qdisc drops what it sends. So ask a few times.
		var r []byte
		for i := 0; r == nil && i < 5; i++ {
			r = topotest.Ask(t, c, req, 500*time.Millisecond)
		}
		if r == nil {
			t.Error("no reply after link down/up")
		}

		// Rename out of the glob: detached and silent; back in: attached again.
		rename(t, tp, pod.HostIf, "tapout0")
		p.WaitT(t, pxproc.Has("msg=detach"), 1)
		checkAttached(t, dp, tp.Host, []string{tp.Pods[0].HostIf})
		if r := topotest.Ask(t, c, req, 300*time.Millisecond); r != nil {
			t.Errorf("reply %x on an interface renamed out of the glob", r)
		}
		rename(t, tp, "tapout0", pod.HostIf)
		p.WaitT(t, pxproc.Has("msg=attach"), 3)
		if r := topotest.Ask(t, c, req, time.Second); r == nil {
			t.Error("no reply after renaming back into the glob")
		}

		// Delete: detached, and the socket is gone.
		if err := tp.DelPod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has("msg=detach"), 2)
		if n := snapshot(t, p).FDs; n != fds {
			t.Errorf("pxresp has %d fds after the veth was deleted, %d before it was created", n, fds)
		}
		checkAttached(t, dp, tp.Host, []string{tp.Pods[0].HostIf})
		p.StopT(t, time.Second)
	})
}

// TestCapabilities: as an unprivileged user holding only CAP_NET_RAW,
// pxresp serves; with no capability at all it exits 1 at once, naming
// CAP_NET_RAW.
func TestCapabilities(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	netRawOnly := slices.Concat(procstat.AsNobody, []string{"--inh-caps", "-all,+net_raw", "--ambient-caps", "-all,+net_raw", "--bounding-set", "-all,+net_raw"})
	noCaps := slices.Concat(procstat.AsNobody, []string{"--inh-caps", "-all", "--bounding-set", "-all"})
	args := []string{"--datapath", "packet", "--iface", "cali*", "--gw", "169.254.1.1"}

	p := startPxrespAs(t, tp, netRawOnly, args...)
	p.WaitT(t, pxproc.Has("msg=attach"), 1)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65534", "CapEff:\t0000000000002000"} {
		if !strings.Contains(string(status), want) {
			t.Fatalf("pxresp is not running as nobody with CAP_NET_RAW only (%q missing):\n%s", want, status)
		}
	}
	c := topotest.Client(t, pod)
	if r := topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
		t.Error("no reply from pxresp holding only CAP_NET_RAW")
	}
	p.StopT(t, time.Second)

	q := pxproc.StartT(t, tp.Host, pxproc.Options{Wrapper: noCaps, Args: args})
	code, err := q.WaitExit(5 * time.Second)
	if code != 1 || q.Count(pxproc.Contains("needs CAP_NET_RAW")) == 0 {
		t.Errorf("without capabilities: exit %d (%v), output %q; want exit 1 naming CAP_NET_RAW", code, err, q.Log())
	}
}
