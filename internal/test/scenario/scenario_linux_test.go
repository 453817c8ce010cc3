package scenario

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// Every scenario end to end, four times over on one topology:
//
//   - none: kernel proxy_arp off and no pxresp: every ping fails (nothing
//     answers the first hop's ARP request);
//   - kernel: the kernel's proxy_arp (or its proxy entries) answers, as the
//     reference: every ping, neighbour entry and check passes, which shows
//     that the topology is right;
//   - pxresp: kernel proxy_arp off again (checked), the built pxresp in its
//     place: everything passes again, and pxresp exits 0 on SIGTERM. It
//     runs once per datapath (pxresp/packet, pxresp/ebpf), checked the same
//     way (on eBPF, route-mode rules are still served by AF_PACKET).
//
// The neighbour tables are flushed between the runs, so each starts with a
// fresh ARP exchange.

// tag starts the namespace names of this package's tests (topo.NewPrefix).
const tag = "pxrsc"

func TestMain(m *testing.M) { pxproc.Main(m) }

func TestScenarios(t *testing.T) {
	for _, sc := range All() {
		t.Run(sc.Name, func(t *testing.T) { runScenario(t, sc) })
	}
}

// TestSNATWithNft runs the snat scenario's reference with nft in place of
// iptables, when both are installed (iptables is the one TestScenarios
// uses when it exists).
func TestSNATWithNft(t *testing.T) {
	privtest.Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed (package nftables); TestScenarios/snat covers iptables")
	}
	firewallTool = "nft"
	t.Cleanup(func() { firewallTool = "" })
	sc, _ := Lookup("snat")
	in := build(t, sc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := in.Kernel(ctx, true); err != nil {
		t.Fatal(err)
	}
	expectTraffic(ctx, t, in)
}

// build builds sc under a fresh prefix and removes it when t ends.
func build(t *testing.T, sc *Scenario) *Instance {
	t.Helper()
	privtest.Require(t)
	_ = topo.CleanupStale(tag)
	prefix := topo.NewPrefix(tag)
	t.Cleanup(func() {
		if left, err := topo.List(prefix); err != nil || len(left) > 0 {
			t.Errorf("namespaces left: %v %v", left, err)
			_ = topo.Cleanup(prefix)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := sc.Build(ctx, prefix)
	if errors.Is(err, ErrNoFirewall) && !privtest.Required() {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	for _, l := range in.Layout {
		t.Log(l)
	}
	return in
}

func runScenario(t *testing.T, sc *Scenario) {
	in := build(t, sc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	flush := func(t *testing.T) {
		t.Helper()
		if err := in.FlushNeigh(ctx); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("none", func(t *testing.T) {
		defer flush(t)
		if err := in.KernelOff(ctx); err != nil {
			t.Fatalf("kernel proxy ARP is not off: %v", err)
		}
		for _, p := range in.Pings {
			if ok, out := p.Run(ctx, false); ok {
				t.Errorf("%s: a reply without any ARP answerer:\n%s", p.What, out)
			}
		}
	})

	t.Run("kernel", func(t *testing.T) {
		defer flush(t)
		if err := in.Kernel(ctx, true); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := in.Kernel(ctx, false); err != nil {
				t.Fatal(err)
			}
		}()
		expectTraffic(ctx, t, in)
	})

	t.Run("pxresp", func(t *testing.T) {
		for _, dp := range pxproc.Datapaths {
			t.Run(dp, func(t *testing.T) {
				defer flush(t)
				runPxresp(ctx, t, in, dp)
			})
		}
	})
}

// runPxresp checks the scenario with pxresp on datapath dp as its answerers
// (kernel proxy ARP off), and stops them (exit 0 on SIGTERM).
func runPxresp(ctx context.Context, t *testing.T, in *Instance, dp string) {
	if err := in.KernelOff(ctx); err != nil {
		t.Fatalf("kernel proxy ARP is not off: %v", err)
	}
	dir := t.TempDir()
	var procs []*pxproc.Proc
	defer func() {
		for _, p := range procs {
			if p.Alive() { // else already reported
				p.StopT(t, 5*time.Second)
			}
		}
	}()
	for _, a := range in.Answerers {
		cfg, err := a.WriteConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		args := pxproc.DatapathArgs(dp, a.PxrespArgs(cfg)...)
		p := pxproc.StartT(t, a.NS, pxproc.Options{Args: args})
		procs = append(procs, p)
		t.Logf("%s: pxresp %s (pid %d)", a.NS.Name, strings.Join(args, " "), p.Pid())
		if _, err := p.Wait(ctx, pxproc.ChoseDatapath(dp), 1, 10*time.Second); err != nil {
			t.Fatalf("pxresp in %s did not choose the %s datapath: %v", a.NS.Name, dp, err)
		}
		for _, ifname := range a.Attach {
			if _, err := p.Wait(ctx, pxproc.Has("msg=attach", "iface="+ifname), 1, 10*time.Second); err != nil {
				hint := ""
				if !p.Alive() && p.Count(pxproc.Contains("flag provided but not defined")) > 0 {
					hint = " (this pxresp lacks a flag the scenario uses: --mode or --config)"
				}
				t.Fatalf("pxresp in %s did not attach %s: %v%s", a.NS.Name, ifname, err, hint)
			}
		}
	}
	expectTraffic(ctx, t, in)
	for _, p := range procs {
		if !p.Alive() {
			t.Errorf("pxresp (pid %d) exited during the run with code %d", p.Pid(), p.ExitCode())
		}
	}
}

// expectTraffic checks, with an answerer in place, that every ping gets
// replies, every neighbour entry holds the proxied MAC, and every further
// check passes.
func expectTraffic(ctx context.Context, t *testing.T, in *Instance) {
	t.Helper()
	for _, p := range in.Pings {
		if ok, out := p.Run(ctx, true); !ok {
			t.Errorf("%s: no reply:\n%s", p.What, out)
		}
	}
	for _, nb := range in.Neighs {
		if text, err := nb.Check(ctx); err != nil {
			t.Errorf("%s: %v", nb.What, err)
		} else {
			t.Logf("%s: %s", nb.What, text)
		}
	}
	for _, c := range in.Checks {
		if d, err := c.Run(ctx); err != nil {
			t.Errorf("%s: %v (%s)", c.What, err, d)
		} else {
			t.Logf("%s: %s", c.What, d)
		}
	}
}
