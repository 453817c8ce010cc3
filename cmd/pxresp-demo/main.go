// Command pxresp-demo shows pxresp at work on a Calico-style node built
// from network namespaces (internal/test/topo), and tears it all down again.
//
// It builds a host with two pods (kernel proxy_arp off everywhere), shows
// that a pod reaches nothing without pxresp, starts pxresp in the host
// namespace, pings pod to pod and pod to host, checks the pod's neighbour
// entry and arping, adds and deletes a third pod while pxresp runs, stops
// pxresp with SIGTERM and removes every namespace, also when interrupted
// (Ctrl-C, SIGTERM). Every packet stays inside the demo's namespaces.
//
// With --scenario NAME it runs one of the scenarios instead
// (internal/test/scenario: pod-pod, pod-host, snat, broken-l2, broken-l2-proxy,
// cross-node): it prints the scenario's traffic path, builds it, shows the
// traffic fail without an ARP answerer, starts pxresp where the scenario
// needs it, shows the traffic go through and the proxied MAC in the
// neighbour entries, stops pxresp and removes everything. "node", the
// default, is the demo above; --scenario list lists them all.
//
// Usage (as root; --scenario list needs no root):
//
//	pxresp-demo [--pxresp ./bin/pxresp] [--prefix NAME] [--scenario NAME|list]
//
// It exits 0 when every step passed, 1 when one failed, 2 on bad usage or
// setup, 130 when interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/arping"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scenario"
	"github.com/pxresp/pxresp/internal/test/topo"
)

var version = "dev"

// nodeScenario is the default demo: the reference node (docs/topology.md).
const nodeScenario = "node"

const (
	stepTimeout  = 10 * time.Second // any one command
	attachWait   = 5 * time.Second  // pxresp attaching or detaching an interface
	stopWait     = 5 * time.Second  // pxresp exiting after SIGTERM
	exitFailed   = 1
	exitUsage    = 2
	exitSignaled = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout)
	stop()
	os.Exit(code)
}

// demo holds the transcript's state.
type demo struct {
	mu     sync.Mutex // serialises output: pxresp's log lines arrive concurrently
	out    io.Writer
	n      int // steps begun
	passed int
	failed int
}

func (d *demo) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

// step starts a numbered step.
func (d *demo) step(title string) {
	d.n++
	d.printf("\n== %d. %s\n", d.n, title)
}

// cmd prints a command line as the user would type it.
func (d *demo) cmd(line string) { d.printf("$ %s\n", line) }

// show prints output lines, indented.
func (d *demo) show(lines []string) {
	for _, l := range lines {
		d.printf("    %s\n", l)
	}
}

// verdict records and prints the outcome of a check.
func (d *demo) verdict(ok bool, format string, args ...any) bool {
	mark := "✔"
	if ok {
		d.passed++
	} else {
		d.failed++
		mark = "✘"
	}
	d.printf("%s %s\n", mark, fmt.Sprintf(format, args...))
	return ok
}

func run(ctx context.Context, args []string, out io.Writer) int {
	fs := flag.NewFlagSet("pxresp-demo", flag.ContinueOnError)
	fs.SetOutput(out)
	bin := fs.String("pxresp", "./bin/pxresp", "path of the pxresp binary")
	prefix := fs.String("prefix", "", "namespace name prefix (default: pxrdemo + pid + random)")
	scen := fs.String("scenario", nodeScenario, "scenario to run: "+strings.Join(append([]string{nodeScenario}, scenario.Names()...), ", ")+"; list prints them")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "pxresp-demo: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	var sc *scenario.Scenario
	switch *scen {
	case "list":
		listScenarios(out)
		return 0
	case nodeScenario:
	default:
		var ok bool
		if sc, ok = scenario.Lookup(*scen); !ok {
			fmt.Fprintf(out, "pxresp-demo: invalid value %q for flag --scenario: want one of %s (or list)\n",
				*scen, strings.Join(append([]string{nodeScenario}, scenario.Names()...), ", "))
			return exitUsage
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(out, "pxresp-demo: must run as root: it creates network namespaces (try: sudo make demo)")
		return exitUsage
	}
	pxresp, err := filepath.Abs(*bin)
	if err == nil {
		_, err = exec.LookPath(pxresp) // exists and is executable
	}
	if err != nil {
		fmt.Fprintf(out, "pxresp-demo: pxresp binary %s: %v (run `make build` or pass --pxresp)\n", *bin, err)
		return exitUsage
	}
	if *prefix == "" {
		*prefix = topo.NewPrefix("pxrdemo")
	}
	_ = topo.CleanupStale("pxrdemo") // what killed demos left behind

	d := &demo{out: out}
	start := time.Now()
	d.printf("pxresp demo %s: scenario %s, namespaces %s*, pxresp %s\n", version, *scen, *prefix, pxresp)

	// Last-resort cleanup: whatever remains under our prefix.
	defer func() {
		if err := topo.Cleanup(*prefix); err != nil {
			d.printf("cleanup by prefix %s: %v\n", *prefix, err)
		}
	}()
	if sc != nil {
		err = scenarioSteps(ctx, d, sc, pxresp, *prefix)
	} else {
		err = steps(ctx, d, pxresp, *prefix)
	}
	code := 0
	switch {
	case ctx.Err() != nil:
		d.printf("\ninterrupted: stopped pxresp and removed the namespaces\n")
		code = exitSignaled
	case err != nil:
		d.printf("\nsetup failed: %v\n", err)
		code = exitUsage
	case d.failed > 0:
		code = exitFailed
	}
	d.printf("\nsummary: %d passed, %d failed, in %.1fs\n", d.passed, d.failed, time.Since(start).Seconds())
	return code
}

// steps runs the demo. It returns an error only when it cannot go on; failed
// checks are counted in d.
func steps(ctx context.Context, d *demo, pxresp, prefix string) (err error) {
	d.step("Build the node: host, sink and 2 pods; kernel proxy_arp off everywhere")
	t0 := time.Now()
	tp, err := topo.New(ctx, topo.Options{Pods: 2, Prefix: prefix})
	if err != nil {
		d.verdict(false, "topology: %v", err)
		return err
	}
	defer func() {
		d.step("Tear down")
		cerr := tp.Close()
		left, lerr := topo.List(prefix)
		if err := errors.Join(cerr, lerr); err != nil {
			d.verdict(false, "teardown: %v", err)
		} else {
			d.verdict(len(left) == 0, "namespaces removed (%d left)", len(left))
		}
	}()
	d.printf("    host %s: up0 %s/24, default via %s (sink %s)\n", tp.Host.Name, tp.UplinkIP, tp.SinkIP, tp.Sink.Name)
	for _, p := range tp.Pods {
		d.printf("    pod%d %s: eth0 %s/32 mac %s  <->  host %s ee:ee:ee:ee:ee:ee\n", p.Index, p.NS.Name, p.IP, p.MAC, p.HostIf)
	}
	d.verdict(true, "topology built in %v", time.Since(t0).Round(time.Millisecond))
	p0, p1 := tp.Pods[0], tp.Pods[1]

	d.step("Without pxresp, pod0 cannot reach pod1: nobody answers ARP for " + topo.Gateway.String())
	ok, _ := d.exec(ctx, p0.NS, pingFilter, "ping", "-n", "-c1", "-W1", p1.IP.String())
	d.verdict(!ok, "no reply, as expected")
	// The unanswered request leaves the gateway INCOMPLETE, re-probed once a
	// second; forget it so the next ping asks at once.
	d.cmd("ip -n " + p0.NS.Name + " neigh flush dev eth0")
	if err := p0.NS.IP(ctx, "neigh", "flush", "dev", "eth0"); err != nil {
		d.verdict(false, "%v", err)
	}
	if ctx.Err() != nil {
		return nil
	}

	d.step("Start pxresp in the host namespace")
	px, err := startPxresp(d, "pxresp", tp.Host, pxresp, "--iface", "cali*", "--gw", topo.Gateway.String(), "--log-level", "info")
	if err != nil {
		d.verdict(false, "%v", err)
		return nil
	}
	defer func() {
		if !px.Alive() { // it died early; the step below reported that
			return
		}
		d.step("Stop pxresp with SIGTERM")
		stopPxresp(d, px)
	}()
	for _, p := range tp.Pods {
		_, err := px.Wait(ctx, attached(p.HostIf), 1, attachWait)
		d.verdict(err == nil, "pxresp attached %s%s", p.HostIf, orTimeout(err))
	}
	if !px.Alive() {
		d.verdict(false, "pxresp exited early with code %d", px.ExitCode())
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}

	d.step("Pings through pxresp's answers")
	for _, c := range []struct {
		from     *topo.Pod
		dst, why string
	}{
		{p0, p1.IP.String(), "pod0 -> pod1"},
		{p0, tp.UplinkIP.String(), "pod0 -> host uplink"},
		{p1, p0.IP.String(), "pod1 -> pod0"},
	} {
		ok, _ := d.exec(ctx, c.from.NS, pingFilter, "ping", "-n", "-c3", "-i0.2", "-W1", c.dst)
		d.verdict(ok, "%s answered", c.why)
	}

	d.step("The pod's neighbour entry for the gateway")
	ok, outp := d.exec(ctx, p0.NS, nil, "ip", "neigh", "show", topo.Gateway.String())
	d.verdict(ok && strings.Contains(outp, "lladdr ee:ee:ee:ee:ee:ee"), "%s is at ee:ee:ee:ee:ee:ee", topo.Gateway)

	d.step("arping the gateway from pod1")
	argv, err := arping.Args("eth0", topo.Gateway, 2, 2*time.Second)
	if err != nil {
		return err
	}
	ok, outp = d.exec(ctx, p1.NS, nil, argv...)
	d.verdict(ok && repliedWith(arping.Replies(outp), topo.GatewayMAC), "arping got replies from ee:ee:ee:ee:ee:ee")
	if ctx.Err() != nil {
		return nil
	}

	d.step("Add a third pod while pxresp runs (its link watcher must pick it up)")
	p2, err := tp.AddPod(ctx)
	if err != nil {
		d.verdict(false, "add pod: %v", err)
		return nil
	}
	d.printf("    pod%d %s: eth0 %s/32  <->  host %s\n", p2.Index, p2.NS.Name, p2.IP, p2.HostIf)
	_, err = px.Wait(ctx, attached(p2.HostIf), 1, attachWait)
	d.verdict(err == nil, "pxresp attached %s%s", p2.HostIf, orTimeout(err))
	ok, _ = d.exec(ctx, p2.NS, pingFilter, "ping", "-n", "-c3", "-i0.2", "-W1", p0.IP.String())
	d.verdict(ok, "pod2 -> pod0 answered")

	d.step("Delete the third pod")
	d.cmd("ip -n " + tp.Host.Name + " link del " + p2.HostIf + "; ip netns del " + p2.NS.Name)
	if err := tp.DelPod(ctx, p2); err != nil {
		d.verdict(false, "delete pod: %v", err)
	} else {
		_, err := px.Wait(ctx, pxproc.Has("msg=detach", "iface="+p2.HostIf), 1, attachWait)
		d.verdict(err == nil, "pxresp detached %s%s", p2.HostIf, orTimeout(err))
	}
	return nil
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// attached matches pxresp's log line for attaching ifname.
func attached(ifname string) pxproc.Match { return pxproc.Has("msg=attach", "iface="+ifname) }

func orTimeout(err error) string {
	if err != nil {
		return fmt.Sprintf(" (no log line within %v)", attachWait)
	}
	return ""
}

// exec runs a command in ns, prints it and its trimmed output, and reports
// whether it exited 0. filter picks the output lines worth showing; nil
// shows them all (at most 8).
func (d *demo) exec(ctx context.Context, ns *topo.NS, filter func(string) bool, args ...string) (bool, string) {
	d.cmd("ip netns exec " + ns.Name + " " + strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	out, err := ns.Exec(ctx, args...)
	d.show(trim(out, filter, 8))
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		d.printf("    %v\n", err)
	}
	return err == nil, out
}

// pingFilter keeps ping's summary lines.
func pingFilter(l string) bool {
	return strings.Contains(l, "transmitted") || strings.HasPrefix(l, "rtt ")
}

// trim returns the non-empty lines of out that filter keeps (all when
// filter is nil, or when it keeps none), at most max, the last ones.
func trim(out string, filter func(string) bool, max int) []string {
	var all, kept []string
	for l := range strings.Lines(out) {
		l = strings.TrimRight(l, "\r\n ")
		if l == "" {
			continue
		}
		all = append(all, l)
		if filter != nil && filter(l) {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		kept = all
	}
	if len(kept) > max {
		kept = kept[len(kept)-max:]
	}
	return kept
}

// startPxresp starts `ip netns exec NS bin args...` (pxproc.Start: its own
// process group, so that a Ctrl-C on the terminal reaches the demo, which
// then stops pxresp itself) and streams its output, prefixed, into the
// transcript. label names it in the transcript's log lines.
func startPxresp(d *demo, label string, ns *topo.NS, bin string, args ...string) (*pxproc.Proc, error) {
	d.cmd("ip netns exec " + ns.Name + " " + bin + " " + quoteArgs(args))
	p, err := pxproc.Start(ns, pxproc.Options{Bin: bin, Args: args, OnLine: func(l pxproc.Line) {
		d.printf("    │ %s: %s\n", label, l.Text)
	}})
	if err != nil {
		return nil, err
	}
	d.printf("    pxresp started, pid %d\n", p.Pid())
	return p, nil
}

// stopPxresp stops pxresp with SIGTERM (pxproc.Proc.Stop: SIGKILL after
// stopWait) and records the verdict: exit code 0.
func stopPxresp(d *demo, p *pxproc.Proc) {
	code, took, err := p.Stop(stopWait)
	d.verdict(err == nil && code == 0, "pxresp (pid %d) exited with code %d after %v%s", p.Pid(), code, took.Round(time.Millisecond), errOrEmpty(err))
}

// quoteArgs renders args for the transcript, quoting glob characters.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if strings.ContainsAny(a, "*?[] ") {
			q[i] = "'" + a + "'"
		}
	}
	return strings.Join(q, " ")
}

// repliedWith reports whether there are replies and all carry mac.
func repliedWith(rs []arping.Reply, mac net.HardwareAddr) bool {
	for _, r := range rs {
		if r.MAC.String() != mac.String() {
			return false
		}
	}
	return len(rs) > 0
}
