package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// datapath is a value of pxresp's --datapath.
type datapath string

const (
	packetDP datapath = "packet"
	ebpfDP   datapath = "ebpf"
)

// eachDatapath runs f as a subtest per datapath (pxproc.Datapaths), named
// after it: one table, one set of assertions, both datapaths.
func eachDatapath(t *testing.T, f func(t *testing.T, dp datapath)) {
	for _, dp := range pxproc.Datapaths {
		t.Run(dp, func(t *testing.T) { f(t, datapath(dp)) })
	}
}

// start is startPxresp with --datapath dp; it also waits for the start-up
// line saying that dp was chosen.
func (dp datapath) start(t *testing.T, tp *topo.Topology, args ...string) *pxproc.Proc {
	t.Helper()
	return dp.startAs(t, tp, nil, args...)
}

// startAs is start under the wrapper command.
func (dp datapath) startAs(t *testing.T, tp *topo.Topology, wrapper []string, args ...string) *pxproc.Proc {
	t.Helper()
	p := startPxrespAs(t, tp, wrapper, pxproc.DatapathArgs(string(dp), args...)...)
	p.WaitT(t, pxproc.ChoseDatapath(string(dp)), 1)
	return p
}

// progsPerIface is what the datapath attaches to each interface it serves:
// one tcx ingress program for eBPF, none for packet.
func (dp datapath) progsPerIface() int {
	if dp == ebpfDP {
		return 1
	}
	return 0
}

// attachedPrograms returns, for every interface of ns that has any, how
// many BPF programs are attached to it: tcx ingress and egress programs
// (BPF_PROG_QUERY), an XDP program, and BPF filters of a clsact qdisc. It
// asks from a thread inside ns, so only ns's interfaces are looked at.
func attachedPrograms(t *testing.T, ns *topo.NS) map[string]int {
	t.Helper()
	n := map[string]int{}
	err := ns.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				r, err := link.QueryPrograms(link.QueryOptions{Target: a.Index, Attach: at})
				if err != nil {
					return fmt.Errorf("%s: query %v: %w", a.Name, at, err)
				}
				n[a.Name] += len(r.Programs)
			}
			if a.Xdp != nil && a.Xdp.Attached {
				n[a.Name]++
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, err := netlink.FilterList(l, parent)
				if err != nil {
					continue // no clsact qdisc
				}
				for _, f := range fs {
					if _, ok := f.(*netlink.BpfFilter); ok {
						n[a.Name]++
					}
				}
			}
			if n[a.Name] == 0 {
				delete(n, a.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("programs attached in %s: %v", ns.Name, err)
	}
	return n
}

// checkAttached requires that exactly the interfaces in want have
// programs attached in ns, as many as dp attaches to each.
func checkAttached(t *testing.T, dp datapath, ns *topo.NS, want []string) {
	t.Helper()
	got := attachedPrograms(t, ns)
	for _, name := range want {
		if got[name] != dp.progsPerIface() {
			t.Errorf("%s: %d BPF programs attached, want %d", name, got[name], dp.progsPerIface())
		}
		delete(got, name)
	}
	for name, c := range got {
		t.Errorf("%s: %d BPF programs attached, want none (not a served interface)", name, c)
	}
}

// waitDetached waits until no interface of ns has a program attached,
// checking at most 100 times, 20 ms apart, and fails t if one still has.
func waitDetached(t *testing.T, ns *topo.NS) {
	t.Helper()
	var left map[string]int
	for range 100 {
		if left = attachedPrograms(t, ns); len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("BPF programs still attached in %s after pxresp stopped: %v", ns.Name, left)
}

// stopBy stops p with SIGTERM (requiring exit 0) or SIGKILL, and returns
// once it has exited.
func stopBy(t *testing.T, p *pxproc.Proc, sig string) {
	t.Helper()
	switch sig {
	case "SIGTERM":
		p.StopT(t, time.Second)
	case "SIGKILL":
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("stopBy %q", sig)
	}
}

// proxyARPOff requires kernel proxy_arp off on ifname in ns (all and the
// interface), so that silence after pxresp stopped is pxresp's.
func proxyARPOff(t *testing.T, ns *topo.NS, ifname string) {
	t.Helper()
	for _, k := range []string{"all", ifname} {
		v, err := ns.ReadSysctl(context.Background(), "net.ipv4.conf."+k+".proxy_arp")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(v) != "0" {
			t.Fatalf("premise: net.ipv4.conf.%s.proxy_arp is %s in %s, want 0", k, v, ns.Name)
		}
	}
}
