package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scenario"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// listScenarios prints `--scenario list`.
func listScenarios(out io.Writer) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "%s\t%s\n", nodeScenario, "the reference node: two pods, a third added and deleted while pxresp runs (default)")
	for _, s := range scenario.All() {
		fmt.Fprintf(w, "%s\t%s\n", s.Name, s.Title)
	}
	w.Flush()
	fmt.Fprintln(out, "\nRun one as root: make demo SCENARIO=NAME (or pxresp-demo --scenario NAME).")
}

// scenarioSteps runs a scenario: build it, show that the traffic fails
// without an ARP answerer, start pxresp, show the traffic path work and the
// proxied MAC, stop pxresp, tear down. It returns an error only when it
// cannot go on; failed checks are counted in d.
func scenarioSteps(ctx context.Context, d *demo, sc *scenario.Scenario, pxresp, prefix string) error {
	d.printf("\n%s: %s\n", sc.Name, sc.Title)
	d.show(strings.Split(sc.Text, "\n"))

	d.step("Build the topology; kernel proxy_arp off everywhere")
	t0 := time.Now()
	in, err := sc.Build(ctx, prefix)
	if err != nil {
		d.verdict(false, "build: %v", err)
		return err
	}
	defer func() {
		d.step("Tear down")
		cerr := in.Close()
		left, lerr := topo.List(prefix)
		if err := errors.Join(cerr, lerr); err != nil {
			d.verdict(false, "teardown: %v", err)
		} else {
			d.verdict(len(left) == 0, "namespaces removed (%d left)", len(left))
		}
	}()
	d.show(in.Layout)
	d.verdict(true, "built in %v", time.Since(t0).Round(time.Millisecond))

	d.step("Without an ARP answerer the traffic fails: nobody answers the first hop's ARP request")
	for _, p := range in.Pings {
		ok, _ := d.exec(ctx, p.From, pingFilter, scenario.PingArgs(p.To, false)...)
		if ctx.Err() != nil { // interrupted: no verdict
			return nil
		}
		d.verdict(!ok, "%s: no reply, as expected", p.What)
	}
	// The unanswered requests leave INCOMPLETE entries, re-probed once a
	// second; forget them so the next ping asks at once.
	d.cmd("ip neigh flush all   # in every namespace of the scenario")
	if err := in.FlushNeigh(ctx); err != nil {
		d.verdict(false, "%v", err)
	}
	if ctx.Err() != nil {
		return nil
	}

	d.step("Start pxresp")
	dir, err := os.MkdirTemp("", "pxresp-demo")
	if err != nil {
		d.verdict(false, "%v", err)
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*pxproc.Proc
	defer func() {
		var running []*pxproc.Proc
		for _, p := range procs {
			if p.Alive() { // one that died early was reported then
				running = append(running, p)
			}
		}
		if len(running) == 0 {
			return
		}
		d.step("Stop pxresp with SIGTERM")
		for _, p := range running {
			stopPxresp(d, p)
		}
	}()
	for _, a := range in.Answerers {
		cfg, err := a.WriteConfig(dir)
		if err != nil {
			d.verdict(false, "config file: %v", err)
			return nil
		}
		if cfg != "" {
			d.printf("    %s:\n", cfg)
			d.show(strings.Split(strings.TrimRight(a.Config, "\n"), "\n"))
		}
		label := "pxresp"
		if len(in.Answerers) > 1 {
			label += "@" + strings.TrimPrefix(a.NS.Name, prefix)
		}
		px, err := startPxresp(d, label, a.NS, pxresp, a.PxrespArgs(cfg)...)
		if err != nil {
			d.verdict(false, "%v", err)
			return nil
		}
		procs = append(procs, px)
		for _, ifname := range a.Attach {
			_, err := px.Wait(ctx, attached(ifname), 1, attachWait)
			if err != nil && !px.Alive() {
				d.verdict(false, "pxresp exited with code %d before attaching %s", px.ExitCode(), ifname)
				return nil
			}
			d.verdict(err == nil, "pxresp in %s attached %s%s", a.NS.Name, ifname, orTimeout(err))
		}
		if ctx.Err() != nil {
			return nil
		}
	}

	d.step("The traffic goes through pxresp's answers")
	for _, p := range in.Pings {
		ok, _ := d.exec(ctx, p.From, pingFilter, scenario.PingArgs(p.To, true)...)
		if ctx.Err() != nil {
			return nil
		}
		d.verdict(ok, "%s answered", p.What)
	}

	d.step("The neighbour entries hold the proxied MAC")
	for _, nb := range in.Neighs {
		d.cmd(nb.Cmd())
		text, err := nb.Check(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if text != "" {
			d.show([]string{text})
		}
		d.verdict(err == nil, "%s: %s is at %s%s", nb.What, nb.Addr, nb.MAC, errOrEmpty(err))
	}

	if len(in.Checks) > 0 {
		d.step("Further checks")
		for _, c := range in.Checks {
			if c.Cmd != "" {
				d.cmd(c.Cmd)
			}
			detail, err := c.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if detail != "" {
				d.show([]string{detail})
			}
			d.verdict(err == nil, "%s%s", c.What, errOrEmpty(err))
		}
	}
	for _, p := range procs {
		if !p.Alive() {
			d.verdict(false, "pxresp (pid %d) exited during the demo with code %d", p.Pid(), p.ExitCode())
		}
	}
	return nil
}
