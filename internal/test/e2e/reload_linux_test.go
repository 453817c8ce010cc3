package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scrape"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// Configuration files, reloads and dry runs, end to end: the built binary
// in a reference topology, with kernel proxy_arp off, answering raw ARP
// requests sent from the pods.

// configFile is a --config file a test rewrites between reloads.
type configFile string

func newConfigFile(t *testing.T, text string) configFile {
	t.Helper()
	c := configFile(filepath.Join(t.TempDir(), "pxresp.yaml"))
	c.write(t, text)
	return c
}

// write replaces the file atomically, as an operator's tooling should.
func (c configFile) write(t *testing.T, text string) {
	t.Helper()
	tmp := string(c) + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, string(c)); err != nil {
		t.Fatal(err)
	}
}

func hup(t *testing.T, p *pxproc.Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

func gatewayRule(gw string) string {
	return fmt.Sprintf("rules:\n- name: calico\n  interfaces: ['cali*']\n  gateways: [%s]\n  targets: [192.0.2.7]\n", gw)
}

var (
	gw1    = netip.MustParseAddr("169.254.1.1")
	gw2    = netip.MustParseAddr("169.254.1.2")
	steady = netip.MustParseAddr("192.0.2.7") // answered by every config
)

// startWithConfig builds a topology with that many pods and starts pxresp
// on dp with a --config file that answers gw1, until it is ready.
func startWithConfig(t *testing.T, dp datapath, pods int) (*topo.Topology, configFile, *pxproc.Proc) {
	t.Helper()
	tp := newTopo(t, pods)
	cfg := newConfigFile(t, gatewayRule(gw1.String()))
	p := dp.start(t, tp, "--config", string(cfg))
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	return tp, cfg, p
}

// answered says whether pod's request for target gets a reply within wait.
func answered(t *testing.T, c *arptest.Client, pod *topo.Pod, target netip.Addr, wait time.Duration) bool {
	t.Helper()
	return topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, target, arptest.Broadcast), wait) != nil
}

// TestReloadChangesGateway: SIGHUP switches the gateway from 169.254.1.1 to
// 169.254.1.2, twenty times, while a pod keeps resolving an address both
// configurations answer: not one of its requests goes unanswered, and the
// listeners are never reopened.
func TestReloadChangesGateway(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp, cfg, p := startWithConfig(t, dp, 2)
		a := tp.Pods[0]
		p.WaitT(t, pxproc.Has("msg=attach"), 2)
		fds := snapshot(t, p).FDs

		ca := topotest.Client(t, a)
		if !answered(t, ca, a, gw1, time.Second) || answered(t, ca, a, gw2, 100*time.Millisecond) {
			t.Fatal("before the reload: want 169.254.1.1 answered and 169.254.1.2 not")
		}

		// The pod resolves the steady address in a loop on a second socket
		// while the main goroutine reloads.
		cs := topotest.Client(t, a)
		stop := make(chan struct{})
		var (
			wg             sync.WaitGroup
			asked, missing int
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(20 * time.Second)
			for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := cs.Ask(arptest.Request(a.MAC, a.IP, steady, arptest.Broadcast), 500*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				asked++
				if r == nil {
					missing++
				}
			}
		}()
		const reloads = 20
		for i := 1; i <= reloads; i++ {
			gw := "169.254.1.2"
			if i%2 == 0 {
				gw = "169.254.1.1"
			}
			if i == reloads {
				gw = "169.254.1.2"
			}
			cfg.write(t, gatewayRule(gw))
			hup(t, p)
			p.WaitT(t, pxproc.Has("msg=reloaded"), i)
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("%d requests for the steady address during %d reloads, %d unanswered", asked, reloads, missing)
		if asked < reloads || missing != 0 {
			t.Errorf("%d of %d requests unanswered during reloads (want 0 of at least %d)", missing, asked, reloads)
		}
		// A new socket: ca's queue holds the replies to the steady
		// loop, which a loaded machine may not have drained in time.
		ca = topotest.Client(t, a)
		if !answered(t, ca, a, gw2, time.Second) || answered(t, ca, a, gw1, 100*time.Millisecond) {
			t.Error("after the reloads: want 169.254.1.2 answered and 169.254.1.1 not")
		}
		if n := p.Count(pxproc.Has("msg=attach")); n != 2 {
			t.Errorf("%d attaches, want the 2 from the start: reloads reopened listeners", n)
		}
		if got := snapshot(t, p).FDs; got != fds {
			t.Errorf("%d fds after reloads, %d before", got, fds)
		}
		p.StopT(t, time.Second)
	})
}

// TestReloadRefusesBadConfig: an invalid file is refused with its line and
// key, and the running configuration keeps serving; a fixed file is then
// taken.
func TestReloadRefusesBadConfig(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp, cfg, p := startWithConfig(t, dp, 1)
		a := tp.Pods[0]
		ca := topotest.Client(t, a)

		for i, bad := range []string{
			"rules:\n- name: calico\n  interfaces: ['cali*']\n  gateway: [169.254.1.2]\n",
			"rules:\n- name: calico\n  interfaces: ['cali*']\n  gateways: [169.254.1.300]\n",
			"rules: [\n",
		} {
			cfg.write(t, bad)
			hup(t, p)
			p.WaitT(t, pxproc.Contains(`msg="reload failed"`, string(cfg)+":"), i+1)
			if !answered(t, ca, a, gw1, time.Second) {
				t.Fatalf("bad config %d: the old configuration stopped answering", i)
			}
		}
		for _, want := range []string{"4: rules[0].gateway: unknown key", `4: rules[0].gateways[0]: \"169.254.1.300\": not an IPv4 address`} {
			if p.Count(pxproc.Contains(`msg="reload failed"`, want)) != 1 {
				t.Errorf("no reload failure naming %q:\n%s", want, p.Log())
			}
		}
		// The file is removed: refused too.
		if err := os.Remove(string(cfg)); err != nil {
			t.Fatal(err)
		}
		hup(t, p)
		p.WaitT(t, pxproc.Contains(`msg="reload failed"`, "no such file"), 1)
		if !answered(t, ca, a, gw1, time.Second) {
			t.Fatal("missing config file: the old configuration stopped answering")
		}

		cfg.write(t, gatewayRule("169.254.1.2"))
		hup(t, p)
		p.WaitT(t, pxproc.Has("msg=reloaded"), 1)
		if !answered(t, ca, a, gw2, time.Second) {
			t.Error("a good config after bad ones was not taken")
		}
		p.StopT(t, time.Second)
	})
}

// TestReloadChangesSelection: a reload that narrows the interface globs
// detaches the interfaces it drops and keeps the others' listeners; one
// that widens them again attaches the dropped ones.
func TestReloadChangesSelection(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp, cfg, p := startWithConfig(t, dp, 2)
		a, b := tp.Pods[0], tp.Pods[1]
		p.WaitT(t, pxproc.Has("msg=attach"), 2)
		ca, cb := topotest.Client(t, a), topotest.Client(t, b)

		// Only a's interface, under a rule that answers with another MAC.
		cfg.write(t, fmt.Sprintf("rules:\n- name: only-a\n  interfaces: [%s]\n  gateways: [169.254.1.1]\n  mac: 02:00:00:00:00:aa\n", a.HostIf))
		hup(t, p)
		p.WaitT(t, pxproc.Has("msg=reloaded"), 1)
		p.WaitT(t, pxproc.Has("msg=detach", "iface="+b.HostIf), 1)
		r := topotest.Ask(t, ca, arptest.Request(a.MAC, a.IP, gw1, arptest.Broadcast), time.Second)
		if r == nil || replyMAC(r).String() != "02:00:00:00:00:aa" {
			t.Errorf("pod a after narrowing: reply %x, want one with MAC 02:00:00:00:00:aa", r)
		}
		if answered(t, cb, b, gw1, 200*time.Millisecond) {
			t.Error("pod b answered after its interface was deselected")
		}
		if n := p.Count(pxproc.Has("msg=attach")); n != 2 {
			t.Errorf("%d attaches after narrowing, want 2 (a kept its listener)", n)
		}

		cfg.write(t, gatewayRule("169.254.1.1"))
		hup(t, p)
		p.WaitT(t, pxproc.Has("msg=reloaded"), 2)
		p.WaitT(t, pxproc.Has("msg=attach", "iface="+b.HostIf), 2)
		if !answered(t, cb, b, gw1, time.Second) {
			t.Error("pod b not answered after its interface was selected again")
		}
		r = topotest.Ask(t, ca, arptest.Request(a.MAC, a.IP, gw1, arptest.Broadcast), time.Second)
		if r == nil || replyMAC(r).String() != topo.GatewayMAC.String() {
			t.Errorf("pod a after widening: reply %x, want the interface's MAC", r)
		}
		p.StopT(t, time.Second)
	})
}

// TestSIGHUPWithoutConfig: without --config, SIGHUP is logged and ignored;
// it must not kill the daemon (its default action).
func TestSIGHUPWithoutConfig(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=ready"), 1)
		hup(t, p)
		p.WaitT(t, pxproc.Contains("SIGHUP ignored"), 1)
		if !answered(t, topotest.Client(t, tp.Pods[0]), tp.Pods[0], gw1, time.Second) {
			t.Error("not answering after SIGHUP")
		}
		p.StopT(t, time.Second)
	})
}

// TestDryRun: --dry-run decides and counts what it would answer and sends
// nothing, so the pod stays unanswered. The packet datapath also logs each
// would-be reply; the eBPF one decides in the kernel and only counts.
func TestDryRun(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		a := tp.Pods[0]
		addr := freeLoopbackAddr(t, tp.Host)
		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1", "--dry-run", "--metrics-addr", addr)
		p.WaitT(t, pxproc.Has("msg=ready"), 1)
		ca := topotest.Client(t, a)
		if answered(t, ca, a, gw1, 300*time.Millisecond) {
			t.Fatal("a dry run answered")
		}
		if answered(t, ca, a, netip.MustParseAddr("192.0.2.1"), 100*time.Millisecond) {
			t.Fatal("a dry run answered a non-target")
		}
		want := counters{
			"pxresp_requests_total":        2,
			"pxresp_replies_total":         0,
			"pxresp_dry_run_replies_total": 1,
			scrape.Series("pxresp_requests_ignored_total", "verdict", policy.NotTarget.String()): 1,
		}
		e, _ := waitMetrics(t, nsHTTPClient(tp.Host), "http://"+addr+"/metrics", func(e scrape.Exposition) bool { return len(want.diff(e)) == 0 })
		for _, d := range want.diff(e) {
			t.Error(d)
		}
		if dp == packetDP {
			p.WaitT(t, pxproc.Contains("would reply", "target=169.254.1.1"), 1)
			// Ignored requests are not logged as would-be replies.
			if n := p.Count(pxproc.Contains("would reply")); n != 1 {
				t.Errorf("%d would-reply lines, want 1:\n%s", n, p.Log())
			}
		}
		p.StopT(t, time.Second)
	})
}

// TestCheckConfigBinary: the check-config subcommand of the real binary;
// a bad file exits 2, as under --config.
func TestCheckConfigBinary(t *testing.T) {
	cfg := newConfigFile(t, gatewayRule("169.254.1.1"))
	out, err := execCommand(pxproc.Bin(t), "check-config", string(cfg))
	if err != nil || !strings.Contains(out, "valid, 1 rule(s)") {
		t.Errorf("good file: %v\n%s", err, out)
	}
	cfg.write(t, "rules:\n- {interfaces: [a], gateways: [169.254.1.1], mode: bridge}\n")
	out, err = execCommand(pxproc.Bin(t), "check-config", string(cfg))
	if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 ||
		!strings.Contains(out, string(cfg)+`:2: rules[0].mode: unknown mode "bridge"`) {
		t.Errorf("bad file: %v\n%s", err, out)
	}
}

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestSysctlWarnings: at attach, pxresp reads the interface's sysctls and
// warns once about each that works against it, with the fix: kernel
// proxy_arp on (double replies), forwarding off, and strict rp_filter with
// no route to the pod (checked after diagDelay, as the CNI adds the route
// after the veth). An interface with none of these gets no warning.
func TestSysctlWarnings(t *testing.T) {
	tp := newTopo(t, 2)
	a, b := tp.Pods[0], tp.Pods[1]
	ctx := context.Background()
	if err := tp.SetKernelProxyARP(ctx, a.HostIf, true, -1); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{
		{"net.ipv4.conf." + a.HostIf + ".forwarding", "0"},
		{"net.ipv4.conf." + a.HostIf + ".rp_filter", "1"},
	} {
		if err := tp.Host.Sysctl(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.Host.IP(ctx, "route", "del", a.IP.String()+"/32", "dev", a.HostIf); err != nil {
		t.Fatal(err)
	}
	p := startPxresp(t, tp, "--iface", "cali*", "--gw", "169.254.1.1")
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	for _, check := range []string{"check=proxy_arp", "check=forwarding", "check=rp_filter"} {
		p.WaitT(t, pxproc.Has("msg=sysctl", "iface="+a.HostIf, check), 1)
	}
	p.WaitT(t, pxproc.Contains("msg=sysctl", "net.ipv4.conf."+a.HostIf+".proxy_arp=0"), 1)
	time.Sleep(100 * time.Millisecond)
	if n := p.Count(pxproc.Has("msg=sysctl")); n != 3 {
		t.Errorf("%d sysctl warnings, want 3 (once per problem, none for %s):\n%s", n, b.HostIf, p.Log())
	}
	p.StopT(t, time.Second)
}
