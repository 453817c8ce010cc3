// Command soak runs the pxresp binary for a long time under mixed ARP
// traffic and interface churn, on the reference topology (internal/test/topo) in
// network namespaces of its own, and checks that pxresp's RSS, threads and
// fds stay flat. As root:
//
//	go build -o bin/pxsoak ./bench/soak
//	./bin/pxsoak --pxresp ./bin/pxresp --duration 10m
//
// It exits 1 if pxresp is not flat, missed a reply, or lost a ping;
// bench/README.md says what runs and how the verdict is reached.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

type config struct {
	pxresp   string
	duration time.Duration
	warmup   int
	pods     int
	pingers  int
	rate     int
	cycle    time.Duration
	burst    int
	probe    int
}

func main() {
	var c config
	flag.StringVar(&c.pxresp, "pxresp", "./bin/pxresp", "the pxresp binary to soak")
	flag.DurationVar(&c.duration, "duration", 10*time.Minute, "measured run time (after the warm-up)")
	flag.IntVar(&c.warmup, "warmup", 3, "churn cycles before the measured run (RSS grows for the first ~20 s)")
	flag.IntVar(&c.pods, "pods", 8, "pods sending requests")
	flag.IntVar(&c.pingers, "pingers", 2, "pods that also ping the host (kernel ARP re-probes)")
	flag.IntVar(&c.rate, "rate", 20, "requests per second per pod")
	flag.DurationVar(&c.cycle, "cycle", 10*time.Second, "churn cycle and sampling period")
	flag.IntVar(&c.burst, "burst", 50, "veths created and deleted per cycle")
	flag.IntVar(&c.probe, "probe", 3, "new veths per cycle that get requests")
	flag.Parse()
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "soak: must run as root (network namespaces, raw sockets)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	ok, err := run(ctx, c, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func (c config) check() error {
	switch {
	case c.duration < c.cycle:
		return fmt.Errorf("--duration %v is shorter than a --cycle (%v)", c.duration, c.cycle)
	case c.cycle < time.Second:
		return errors.New("--cycle must be at least 1s")
	case c.pods < 1 || c.pods > 200:
		return errors.New("--pods must be 1..200")
	case c.pingers < 0 || c.pingers > c.pods:
		return errors.New("--pingers must be 0..--pods")
	case c.rate < 1 || c.rate > 1000:
		return errors.New("--rate must be 1..1000")
	case c.burst < 1 || c.burst > 2000:
		return errors.New("--burst must be 1..2000")
	case c.probe < 0 || c.probe > c.burst:
		return errors.New("--probe must be 0..--burst")
	case c.warmup < 0:
		return errors.New("--warmup must be >= 0")
	}
	if _, err := os.Stat(c.pxresp); err != nil {
		return fmt.Errorf("--pxresp: %w (build it with make build)", err)
	}
	return nil
}

// run builds everything, soaks, prints, tears down. ok is the verdict.
func run(ctx context.Context, c config, out io.Writer) (ok bool, err error) {
	_ = topo.CleanupStale("pxsoak")
	prefix := topo.NewPrefix("pxsoak")
	defer func() {
		if cerr := topo.Cleanup(prefix); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	setup, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tp, err := topo.New(setup, topo.Options{Pods: c.pods, Prefix: prefix})
	if err != nil {
		return false, err
	}
	defer tp.Close()
	churnNS := &topo.NS{Name: prefix + "churn"}
	if err := churnNS.Create(setup); err != nil {
		return false, err
	}
	for _, pod := range tp.Pods[:c.pingers] {
		for _, kv := range [][2]string{{"base_reachable_time_ms", "200"}, {"delay_first_probe_time", "0"}} {
			if err := pod.NS.Sysctl(setup, "net.ipv4.neigh."+pod.PodIf+"."+kv[0], kv[1]); err != nil {
				return false, err
			}
		}
	}

	px, err := pxproc.Start(tp.Host, pxproc.Options{Bin: c.pxresp, Args: []string{"--iface", "cali*", "--gw", topo.Gateway.String()}})
	if err != nil {
		return false, err
	}
	defer func() { _ = px.Kill() }() // if stop did not end it
	if err := waitAttached(ctx, px, c.pods, 10*time.Second); err != nil {
		return false, err
	}
	// `ip netns exec` execs pxresp in place: the pid is pxresp's own.
	if err := px.WaitExec(time.Second); err != nil {
		return false, err
	}

	total := time.Duration(c.warmup)*c.cycle + c.duration
	fmt.Fprintf(out, "soak: pxresp pid %d; %d pods at %d requests/s each (%d also ping), %d veths created and deleted every %v; %d warm-up cycles, then %v\n",
		px.Pid(), c.pods, c.rate, c.pingers, c.burst, c.cycle, c.warmup, c.duration)

	// Traffic for the whole run.
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	var wg sync.WaitGroup
	var st podStats
	for _, pod := range tp.Pods {
		cl, err := arptest.Open(pod.NS, pod.PodIf)
		if err != nil {
			return false, err
		}
		defer cl.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			podTraffic(trafficCtx, cl, pod, c.rate, total+time.Minute, &st)
		}()
	}
	pings := make([]*pinger, c.pingers)
	for i, pod := range tp.Pods[:c.pingers] {
		if pings[i], err = startPing(pod, tp.UplinkIP, total+time.Minute); err != nil {
			return false, err
		}
		defer pings[i].stop()
	}

	ch := &churner{host: tp.Host, ns: churnNS, burst: c.burst, probe: c.probe}
	var samples []Sample
	var start time.Time
	fmt.Fprintf(out, "%8s %6s %6s %9s %5s %8s %8s %8s %10s %9s %7s %8s %8s\n",
		"time", "cycle", "phase", "attached", "fds", "sockets", "threads", "rss_kB", "requests", "replies", "missed", "churned", "resyncs")
	// Quiet samples at 0, cycle, ..., duration: measuredCycles cycles.
	measuredCycles := int(c.duration / c.cycle)
	tick := time.NewTicker(c.cycle)
	defer tick.Stop()
	for cycle := -c.warmup; ; cycle++ {
		if cycle == 0 {
			start = time.Now()
		}
		measured := cycle >= 0
		sample := func(phase Phase, attached int) error {
			if err := waitAttached(ctx, px, attached, 30*time.Second); err != nil {
				return err
			}
			s, err := readProc(px.Pid())
			if err != nil {
				return err
			}
			s.Cycle, s.Phase, s.Attached = cycle, phase, attached
			if measured {
				s.At = time.Since(start)
				samples = append(samples, s)
			}
			fmt.Fprintf(out, "%8s %6d %6s %9d %5d %8d %8d %8d %10d %9d %7d %8d %8d\n",
				clock(time.Since(start), measured), cycle, phase, attached, s.FDs, s.Sockets, s.Threads, s.RSSKB,
				st.asked.Load()+st.ignored.Load(), st.replied.Load(), st.missed.Load(), ch.created, px.Count(resyncLine))
			return nil
		}
		if err := sample(Quiet, c.pods); err != nil {
			return false, err
		}
		if cycle == measuredCycles {
			break
		}
		if err := ch.create(ctx); err != nil {
			return false, err
		}
		if err := sample(Burst, c.pods+c.burst); err != nil {
			return false, err
		}
		ch.ask(ctx)
		if err := ch.deleteAll(ctx); err != nil {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
		}
	}
	stopTraffic()
	wg.Wait()
	for _, p := range pings {
		p.stop()
	}
	stopErr := stop(px)

	// Summary.
	expect, replied, missed, ignored := st.asked.Load(), st.replied.Load(), st.missed.Load(), st.ignored.Load()
	sent := expect + ignored
	v := Judge(samples, DefaultLimits)
	fmt.Fprintf(out, "\nrequests from the pods: %d (%d expecting a reply: %d answered, %d missed; %d of the ignored kinds; %d send errors)\n",
		sent, expect, replied, missed, ignored, st.errs.Load())
	fmt.Fprintf(out, "churn: %d veths created and deleted; %d new veths asked, %d answered, slowest first answer %v\n",
		ch.created, ch.asked, ch.answered, ch.slowest.Round(time.Millisecond))
	fmt.Fprintf(out, "pxresp: %d attach and %d detach lines, %d netlink resyncs, %d warnings, %d errors; stop: %v\n",
		px.Count(attachLine), px.Count(detachLine), px.Count(resyncLine), px.Count(warnLine), px.Count(errorLine), errOrOK(stopErr))
	for _, l := range firstProblems(px) {
		fmt.Fprintf(out, "  %s\n", l)
	}
	pingOK := true
	for i, p := range pings {
		fmt.Fprintf(out, "ping from %s (kernel ARP re-probes every ~100-300 ms): %s\n", tp.Pods[i].NS.Name, p.summary())
		pingOK = pingOK && p.ok()
	}
	fmt.Fprintf(out, "RSS: first-third mean %.0f kB, last-third mean %.0f kB; threads: first-third max %d, last-third max %d; fds by attached count: %v (%d quiet, %d burst samples)\n",
		v.RSSFirstKB, v.RSSLastKB, v.ThreadsFirst, v.ThreadsLast, v.FDsByAttached, v.QuietSamples, v.BurstSamples)
	ok = v.Flat && missed == 0 && ch.answered == ch.asked && pingOK && stopErr == nil
	switch {
	case ok:
		fmt.Fprintln(out, "verdict: FLAT (and every expected reply came, no ping lost)")
	case !v.Flat:
		fmt.Fprintf(out, "verdict: NOT FLAT: %s\n", strings.Join(v.Reasons, "; "))
	default:
		fmt.Fprintln(out, "verdict: flat, but replies or pings were lost, or pxresp did not stop cleanly (see above)")
	}
	if !ok {
		fmt.Fprintf(out, "last pxresp log lines:\n%s\n", px.Tail(50))
	}
	return ok, nil
}

func errOrOK(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// clock formats d as m:ss, or "warmup" before the measured run.
func clock(d time.Duration, measured bool) string {
	if !measured {
		return "warmup"
	}
	s := int(d.Round(time.Second) / time.Second)
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// readProc reads fds, sockets, threads and RSS of pid.
func readProc(pid int) (Sample, error) {
	s, err := procstat.Snap(pid)
	if err != nil {
		return Sample{}, err
	}
	return Sample{FDs: s.FDs, Sockets: s.Sockets, Threads: s.Threads, RSSKB: s.RSSKB}, nil
}

// waitAttached waits until pxresp's log says exactly n interfaces are
// attached.
func waitAttached(ctx context.Context, px *pxproc.Proc, n int, timeout time.Duration) error {
	err := px.WaitUntil(ctx, timeout, func() bool { return px.NumAttached("") == n })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("pxresp has %d interfaces attached, want %d: %w; last lines:\n%s", px.NumAttached(""), n, err, px.Tail(50))
	}
	return err
}

// stop sends SIGTERM and waits (at most 5 s) for exit 0.
func stop(px *pxproc.Proc) error {
	code, _, err := px.Stop(5 * time.Second)
	if err == nil && code != 0 {
		err = fmt.Errorf("pxresp exit code %d after SIGTERM", code)
	}
	return err
}

// The lines of pxresp's log that the soak counts.
var (
	attachLine = pxproc.Has("msg=attach")
	detachLine = pxproc.Has("msg=detach")
	resyncLine = pxproc.Contains("netlink subscription lost")
	warnLine   = pxproc.Has("level=WARN")
	errorLine  = pxproc.Has("level=ERROR")
)

// firstProblems returns the first (at most 10) warning and error lines.
func firstProblems(px *pxproc.Proc) []string {
	var ls []string
	for _, l := range px.Lines() {
		if (warnLine.Matches(l) || errorLine.Matches(l)) && len(ls) < 10 {
			ls = append(ls, l.Text)
		}
	}
	return ls
}

// podStats counts the pods' requests.
type podStats struct {
	asked, replied, missed, ignored, errs atomic.Int64
}

// podTraffic sends rate requests per second from pod until ctx is done (or
// limit passes): of every five, a broadcast and two unicast requests for the
// gateway, each waiting up to a second for its reply, then a gratuitous
// and a not-a-target one, sent without waiting.
func podTraffic(ctx context.Context, c *arptest.Client, pod *topo.Pod, rate int, limit time.Duration, st *podStats) {
	reqs := [][]byte{
		arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast),
		arptest.Request(pod.MAC, pod.IP, topo.Gateway, topo.GatewayMAC),
		arptest.Request(pod.MAC, pod.IP, topo.Gateway, topo.GatewayMAC),
		arptest.Request(pod.MAC, pod.IP, pod.IP, arptest.Broadcast),
		arptest.Request(pod.MAC, pod.IP, netip.MustParseAddr("192.0.2.1"), arptest.Broadcast),
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(limit)
	for i := 0; time.Now().Before(end); i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		req := reqs[i%len(reqs)]
		if i%len(reqs) >= 3 {
			if err := c.Send(req); err != nil {
				st.errs.Add(1)
			}
			st.ignored.Add(1)
			continue
		}
		r, err := c.Ask(req, time.Second)
		st.asked.Add(1)
		switch {
		case err != nil:
			st.errs.Add(1)
			st.missed.Add(1)
		case r == nil:
			st.missed.Add(1)
		default:
			st.replied.Add(1)
		}
	}
}

// churner creates and deletes bursts of veths: host side cali* in the
// host namespace, pod side in ns.
type churner struct {
	host, ns     *topo.NS
	burst, probe int

	next                     int // index of the next veth
	live                     []int
	created, asked, answered int
	slowest                  time.Duration
}

func (c *churner) name(i int) string { return fmt.Sprintf("calisk%05d", i%100000) }
func (c *churner) peer(i int) string { return fmt.Sprintf("sk%05d", i%100000) }

func (c *churner) create(ctx context.Context) error {
	var host, pods []string
	c.live = c.live[:0]
	for range c.burst {
		i := c.next
		c.next++
		c.live = append(c.live, i)
		host = append(host,
			fmt.Sprintf("link add %s type veth peer name %s netns %s", c.name(i), c.peer(i), c.ns.Name),
			"link set "+c.name(i)+" up")
		pods = append(pods, "link set "+c.peer(i)+" up")
	}
	if err := c.host.Batch(ctx, host); err != nil {
		return err
	}
	c.created += c.burst
	return c.ns.Batch(ctx, pods)
}

// ask sends requests on c.probe of the live veths until each answers (at
// most 5 s each).
func (c *churner) ask(ctx context.Context) {
	for _, i := range c.live[:c.probe] {
		c.asked++
		d, ok := firstReply(ctx, c.ns, c.peer(i), 5*time.Second)
		if ok {
			c.answered++
			c.slowest = max(c.slowest, d)
		}
	}
}

// deleteAll deletes the live veths in one kernel batch.
func (c *churner) deleteAll(ctx context.Context) error {
	var host []string
	for _, i := range c.live {
		host = append(host, "link set "+c.name(i)+" group 4242")
	}
	c.live = c.live[:0]
	return c.host.Batch(ctx, append(host, "link del group 4242"))
}

// firstReply asks for the gateway on ifname in ns until a reply comes.
func firstReply(ctx context.Context, ns *topo.NS, ifname string, limit time.Duration) (time.Duration, bool) {
	cl, err := arptest.Open(ns, ifname)
	if err != nil {
		return 0, false
	}
	defer cl.Close()
	var mac net.HardwareAddr
	_ = ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	if mac == nil {
		return 0, false
	}
	req := arptest.Request(mac, netip.MustParseAddr("10.244.200.1"), topo.Gateway, arptest.Broadcast)
	start := time.Now()
	for i := 0; i < 1000 && time.Since(start) < limit && ctx.Err() == nil; i++ {
		if r, err := cl.Ask(req, 20*time.Millisecond); err == nil && r != nil {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// pinger is a ping from a pod to the host, stopped with SIGINT so that it
// prints its summary.
type pinger struct {
	cmd  *exec.Cmd
	out  strings.Builder
	done chan error
	once sync.Once
	sent int
	recv int
	err  error
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func startPing(pod *topo.Pod, to netip.Addr, limit time.Duration) (*pinger, error) {
	p := &pinger{done: make(chan error, 1)}
	p.cmd = exec.Command("ip", "netns", "exec", pod.NS.Name, "ping", "-q", "-n", "-i", "0.1", "-W", "1",
		"-w", strconv.Itoa(int(limit/time.Second)), to.String())
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

func (p *pinger) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case p.err = <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			p.err = <-p.done
		}
		if m := pingSummary.FindStringSubmatch(p.out.String()); m != nil {
			p.sent, _ = strconv.Atoi(m[1])
			p.recv, _ = strconv.Atoi(m[2])
		} else {
			p.err = errors.Join(p.err, fmt.Errorf("no summary in ping's output %q", p.out.String()))
		}
	})
}

// ok: no ping lost, but the one in flight when SIGINT came.
func (p *pinger) ok() bool { return p.sent > 0 && p.sent-p.recv <= 1 }

func (p *pinger) summary() string {
	s := fmt.Sprintf("%d transmitted, %d received", p.sent, p.recv)
	if p.err != nil && p.sent == 0 {
		s += fmt.Sprintf(" (%v)", p.err)
	}
	return s
}
