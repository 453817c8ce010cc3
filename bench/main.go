// Command bench measures pxresp against the kernel's proxy_arp in the
// reference topology of docs/topology.md, built in network namespaces of
// its own (internal/test/topo): see README.md. Run it as root, from the
// repository root, with `make bench` (or `go run ./bench --quick`).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// Responders.
const (
	K0 = "K0" // kernel proxy_arp, proxy_delay=0
	Kd = "Kd" // kernel proxy_arp, default proxy_delay
	P  = "P"  // pxresp, --datapath packet
	E  = "E"  // pxresp, --datapath ebpf
)

// datapaths is the --datapath each pxresp responder runs with.
var datapaths = map[string]string{P: "packet", E: "ebpf"}

// isPx reports whether resp is pxresp (P or E) rather than the kernel.
func isPx(resp string) bool { return datapaths[resp] != "" }

// prefixTag starts the name of every namespace the bench makes.
const prefixTag = "pxb"

var allSections = []string{"latency", "flood", "storm", "attach", "idle", "burst", "scale"}

type options struct {
	Config
	bin      string
	out      string
	deadline time.Duration
	samples  bool
	png      bool
	timeout  time.Duration
	floodDur time.Duration
	idleDur  time.Duration
	period   time.Duration
	sections map[string]bool
}

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.bin, "pxresp", "bin/pxresp", "pxresp `binary` to run (built by make build)")
	fs.StringVar(&o.out, "out", "bench/results", "`directory` for DATE.md, DATE.json and DATE.svg")
	fs.BoolVar(&o.Quick, "quick", false, "smoke run: few samples, short floods, 100 interfaces instead of 1000 (about 1 min)")
	fs.StringVar(&o.Sections, "sections", strings.Join(allSections, ","), "comma-separated `list` of sections to run: "+strings.Join(allSections, ","))
	fs.DurationVar(&o.deadline, "deadline", 9*time.Minute, "stop measuring after this long and report what was measured")
	fs.BoolVar(&o.samples, "json-samples", true, "write every round-trip sample to the JSON file")
	fs.BoolVar(&o.png, "png", false, "also write the plot as DATE.png")
	fs.IntVar(&o.Rounds, "rounds", 10, "alternating latency rounds (each: K0, Kd, P, E in rotating order)")
	fs.IntVar(&o.Samples, "samples", 3000, "round trips per round, per responder, request kind and pinning")
	fs.IntVar(&o.KdSamples, "kd-samples", 20, "Kd broadcast round trips per pinning mode over the whole run (each ~0.4 s)")
	fs.DurationVar(&o.timeout, "timeout", 200*time.Millisecond, "reply timeout (Kd broadcast: 2 s)")
	fs.IntVar(&o.FloodRounds, "flood-rounds", 3, "alternating flood rounds")
	fs.DurationVar(&o.floodDur, "flood-dur", 2*time.Second, "duration of each flood")
	fs.Float64Var(&o.FloodRate, "flood-rate", 100000, "fixed flood rate, requests/s")
	fs.Int64Var(&o.FloodMax, "flood-max", 5_000_000, "most requests one flood sends")
	fs.DurationVar(&o.idleDur, "idle-dur", 10*time.Second, "idle measurement duration")
	fs.IntVar(&o.IdleIfaces, "idle-ifaces", 100, "attached interfaces during the idle measurement")
	fs.IntVar(&o.StormRounds, "storm-rounds", 1, "alternating storm rounds (K0, P, E)")
	fs.IntVar(&o.StormPods, "storm-pods", 10, "pods storming at once in the many-pod storm")
	fs.IntVar(&o.StormProbes, "storm-probes", 1000, "the observing pod's requests per storm (one every 2 ms)")
	fs.IntVar(&o.AttachReps, "attach-reps", 20, "attach-latency repetitions")
	fs.DurationVar(&o.period, "attach-period", 100*time.Microsecond, "request period of the attach-latency client")
	fs.IntVar(&o.Burst, "burst", 1000, "interfaces created in one burst (and spread over by the scale rounds)")
	fs.IntVar(&o.ScaleSample, "scale-sample", 50, "interfaces of the burst the scale rounds measure on")
	fs.IntVar(&o.ScaleRounds, "scale-rounds", 3, "alternating scale rounds (K0, P, E)")
	fs.IntVar(&o.ScaleSamples, "scale-samples", 3000, "round trips per scale round and pinning, spread over the sampled interfaces")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("rounds", func() { o.Rounds = 2 })
		def("samples", func() { o.Samples = 300 })
		def("kd-samples", func() { o.KdSamples = 2 })
		def("flood-rounds", func() { o.FloodRounds = 1 })
		def("flood-dur", func() { o.floodDur = 300 * time.Millisecond })
		def("idle-dur", func() { o.idleDur = 2 * time.Second })
		def("idle-ifaces", func() { o.IdleIfaces = 20 })
		def("attach-reps", func() { o.AttachReps = 5 })
		def("storm-probes", func() { o.StormProbes = 300 })
		def("burst", func() { o.Burst = 100 })
		def("scale-sample", func() { o.ScaleSample = 10 })
		def("scale-rounds", func() { o.ScaleRounds = 1 })
		def("scale-samples", func() { o.ScaleSamples = 300 })
		def("deadline", func() { o.deadline = 3 * time.Minute })
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(o.Sections, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allSections, s) {
			return nil, fmt.Errorf("--sections: unknown section %q (have %s)", s, strings.Join(allSections, ","))
		}
		o.sections[s] = true
	}
	switch {
	case o.Rounds < 1 || o.Samples < 1 || o.KdSamples < 0 || o.FloodRounds < 0:
		return nil, errors.New("--rounds and --samples must be >= 1; --kd-samples and --flood-rounds >= 0")
	case o.Burst < 1 || o.Burst > 4000 || o.IdleIfaces < 1 || o.IdleIfaces > 4000:
		return nil, errors.New("--burst and --idle-ifaces must be 1..4000")
	case o.ScaleSample < 1 || o.ScaleSample > o.Burst:
		return nil, errors.New("--scale-sample must be 1..--burst")
	case o.FloodRate <= 0 || o.FloodMax < 1 || o.floodDur <= 0 || o.floodDur > time.Minute:
		return nil, errors.New("--flood-rate, --flood-max must be > 0 and --flood-dur 0..1m")
	case o.StormRounds < 0 || o.StormPods < 1 || o.StormPods > 100 || o.StormProbes < 1 || o.StormProbes > 100000:
		return nil, errors.New("--storm-rounds must be >= 0, --storm-pods 1..100 and --storm-probes 1..100000")
	case o.AttachReps < 1 || o.AttachReps > 1000 || o.period < 10*time.Microsecond:
		return nil, errors.New("--attach-reps must be 1..1000 and --attach-period >= 10µs")
	case o.idleDur <= 0 || o.idleDur > 5*time.Minute || o.timeout <= 0 || o.timeout > 10*time.Second:
		return nil, errors.New("--idle-dur must be 0..5m and --timeout 0..10s")
	}
	o.Timeout, o.FloodDur, o.IdleDur, o.AttachPeriod = o.timeout.String(), o.floodDur.String(), o.idleDur.String(), o.period.String()
	var keep []string
	for _, s := range allSections {
		if o.sections[s] {
			keep = append(keep, s)
		}
	}
	o.Sections = strings.Join(keep, ",")
	return o, nil
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	os.Exit(run(o))
}

// env is the state of a run.
type env struct {
	o      *options
	bin    string
	prefix string
	t      *topo.Topology
	pod    *topo.Pod
	podS   *rawSock
	far    *topo.NS // the extra namespace holding the far ends of many veths
	res    *Results
	px     *pxproc.Proc // the running pxresp, if any
	start  time.Time
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(o *options) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces, veths, raw sockets)")
		return 1
	}
	bin, err := filepath.Abs(o.bin)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: pxresp binary: %v (run `make build` first)\n", err)
		return 1
	}
	// Namespaces left by a bench that was killed (SIGKILL skips cleanup).
	if err := topo.CleanupStale(prefixTag); err != nil {
		logf("removing stale namespaces: %v", err)
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, o.deadline)
	defer cancel()

	e := &env{o: o, bin: bin, prefix: topo.NewPrefix(prefixTag), start: time.Now()}
	e.res = &Results{
		Date:    e.start.Format("2006-01-02T150405"),
		Started: e.start.Format(time.RFC3339),
		Config:  o.Config,
	}
	if o.Quick {
		e.res.Date += "-quick"
	}
	// Every exit path from here removes what the bench made: pxresp first
	// (by its PID), then the namespaces.
	defer e.cleanup()

	logf("namespaces %s*, pxresp %s", e.prefix, bin)
	e.res.Machine = describeMachine(ctx, bin)
	tctx, tcancel := context.WithTimeout(ctx, time.Minute)
	e.t, err = topo.New(tctx, topo.Options{Pods: 1, Prefix: e.prefix})
	tcancel()
	if err != nil {
		logf("topology: %v", err)
		return 1
	}
	e.pod = e.t.Pods[0]
	// The pod's cali interface still has the value it got at creation: the
	// kernel's default (net.ipv4.neigh.default exists only in the root
	// namespace).
	if e.res.Machine.ProxyDelay, err = e.sysctlInt(ctx, "net.ipv4.neigh."+e.pod.HostIf+".proxy_delay"); err != nil {
		logf("reading the default proxy_delay: %v", err)
		return 1
	}
	if e.podS, err = openRawSock(e.pod.NS, e.pod.PodIf, e.pod.IP); err != nil {
		logf("%v", err)
		return 1
	}
	sections := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"latency", e.runLatency},
		{"flood", e.runFlood},
		{"storm", e.runStorm},
		{"attach", e.runAttach},
		{"idle", e.runIdle},
		{"burst", e.runBurst},
		{"scale", e.runScale},
	}
	for _, s := range sections {
		if !o.sections[s.name] {
			continue
		}
		if ctx.Err() != nil {
			e.res.Errors = append(e.res.Errors, fmt.Sprintf("%s: not run (%v)", s.name, context.Cause(ctx)))
			continue
		}
		logf("section %s", s.name)
		t0 := time.Now()
		err := s.fn(ctx)
		// Whatever happened, no pxresp survives a section.
		if serr := e.stopPx(); serr != nil {
			err = errors.Join(err, serr)
		}
		if err != nil {
			logf("section %s: %v", s.name, err)
			e.res.Errors = append(e.res.Errors, fmt.Sprintf("%s: %v", s.name, err))
			if errors.Is(err, errDoubleReply) {
				break // the harness is wrong: stop measuring
			}
		}
		logf("section %s done in %v", s.name, time.Since(t0).Round(time.Millisecond))
	}
	e.res.DurationSec = time.Since(e.start).Seconds()
	e.res.Notes = notes(e.res)
	if err := e.write(); err != nil {
		logf("writing results: %v", err)
		return 1
	}
	if sigCtx.Err() != nil {
		return 130
	}
	if len(e.res.Errors) > 0 {
		return 1
	}
	return 0
}

// cleanup stops pxresp and removes every namespace with the run's prefix.
func (e *env) cleanup() {
	if err := e.stopPx(); err != nil {
		logf("stopping pxresp: %v", err)
	}
	e.podS.close()
	if e.t != nil {
		if err := e.t.Close(); err != nil {
			logf("closing topology: %v", err)
		}
	}
	if err := topo.Cleanup(e.prefix); err != nil {
		logf("cleanup %s*: %v", e.prefix, err)
	}
	if left, _ := topo.List(e.prefix); len(left) > 0 {
		logf("namespaces still present: %v", left)
	}
}

// startPx starts pxresp (e.px) as responder resp (P or E) with its reply
// limit off (see startPxresp), unless one runs.
func (e *env) startPx(resp string, pinned bool, level string) (*pxproc.Proc, error) {
	return e.startPxArgs(resp, pinned, "--iface", "cali*", "--gw", topo.Gateway.String(), "--rate-limit", "0", "--log-level", level)
}

// startPxArgs starts pxresp (e.px) as responder resp (P or E: its
// --datapath) with the command line args, unless one runs.
func (e *env) startPxArgs(resp string, pinned bool, args ...string) (*pxproc.Proc, error) {
	if e.px != nil && e.px.Alive() {
		return nil, errors.New("internal: a pxresp is already running")
	}
	if !isPx(resp) {
		return nil, fmt.Errorf("internal: %s is not pxresp", resp)
	}
	p, err := startPxresp(e.bin, e.t.Host, pinned, pxproc.DatapathArgs(datapaths[resp], args...)...)
	if err != nil {
		return nil, err
	}
	e.px = p
	return p, nil
}

// stopPx stops the pxresp the bench started, if any.
func (e *env) stopPx() error {
	if e.px == nil {
		return nil
	}
	_, _, err := e.px.Stop(5 * time.Second)
	if err == nil {
		e.px = nil
	}
	return err
}

// sysctlInt reads an integer sysctl in the host namespace.
func (e *env) sysctlInt(ctx context.Context, key string) (int, error) {
	out, err := e.t.Host.Exec(ctx, "sysctl", "-n", key)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// setKernel turns the kernel's proxy_arp on (with proxyDelay) or off on the
// host interfaces ifs, in one sysctl command.
func (e *env) setKernel(ctx context.Context, ifs []string, on bool, proxyDelay int) error {
	var kvs []string
	for _, i := range ifs {
		if on {
			kvs = append(kvs, "net.ipv4.neigh."+i+".proxy_delay="+strconv.Itoa(proxyDelay), "net.ipv4.conf."+i+".proxy_arp=1")
		} else {
			kvs = append(kvs, "net.ipv4.conf."+i+".proxy_arp=0")
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	_, err := e.t.Host.Exec(cctx, append([]string{"sysctl", "-qw"}, kvs...)...)
	return err
}

// kernelSilent checks that proxy_arp is 0 on all and on every interface of
// kernelOn turns the kernel's proxy_arp on for resp (K0: proxy_delay 0,
// Kd: the default proxy_delay, which it returns) on ifs and checks that it
// answers c. off turns it off again; on an error it is already off.
func (e *env) kernelOn(ctx context.Context, resp string, ifs []string, c *rawSock) (delay int, off func() error, err error) {
	if resp == Kd {
		delay = e.res.Machine.ProxyDelay
	}
	if err := e.setKernel(ctx, ifs, true, delay); err != nil {
		return 0, nil, err
	}
	off = func() error { return e.setKernel(ctx, ifs, false, 0) }
	if _, err := probe(ctx, c, unicastReq, 100*time.Millisecond, 3*time.Second); err != nil {
		return 0, nil, errors.Join(fmt.Errorf("kernel proxy_arp not answering: %w", err), off())
	}
	return delay, off, nil
}

// ifs, before pxresp is started there.
func (e *env) kernelSilent(ctx context.Context, ifs []string) error {
	keys := []string{"net.ipv4.conf.all.proxy_arp"}
	for _, i := range ifs {
		keys = append(keys, "net.ipv4.conf."+i+".proxy_arp")
	}
	out, err := e.t.Host.Exec(ctx, append([]string{"sysctl", "-n"}, keys...)...)
	if err != nil {
		return err
	}
	for i, v := range strings.Fields(out) {
		if v != "0" {
			return fmt.Errorf("%s = %s: the kernel would answer too", keys[min(i, len(keys)-1)], v)
		}
	}
	return nil
}

// farNS creates (once) the extra namespace holding the far ends of the
// many-interface tests: veth ends without addresses, IPv6 off.
func (e *env) farNS(ctx context.Context) (*topo.NS, error) {
	if e.far != nil {
		return e.far, nil
	}
	ns := &topo.NS{Name: e.prefix + "far"}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, "ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", ns.Name, err, out)
	}
	e.far = ns // removed by topo.Cleanup(prefix)
	// No IPv6 on the many veths (router solicitations, MLD, DAD): it is not
	// ARP, pxresp's filter never sees it, and it is only noise here.
	for _, n := range []*topo.NS{ns, e.t.Host} {
		if err := n.Sysctl(ctx, "net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			return nil, err
		}
	}
	if err := ns.Sysctl(ctx, "net.ipv6.conf.all.disable_ipv6", "1"); err != nil {
		return nil, err
	}
	if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// write prints the report and writes DATE.md, DATE.json and DATE.svg.
func (e *env) write() error {
	md := renderMarkdown(e.res)
	fmt.Print(md)
	if err := os.MkdirAll(e.o.out, 0o755); err != nil {
		return err
	}
	base := filepath.Join(e.o.out, e.res.Date)
	var errs []error
	if err := plotCDF(e.res, base+".svg", e.o.png); err != nil {
		errs = append(errs, fmt.Errorf("plot: %w", err))
	}
	if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
		errs = append(errs, err)
	}
	if !e.o.samples {
		for _, s := range e.res.Latency {
			s.Samples = nil
		}
	}
	// Compact: with every sample, an indented file would be several MB.
	j, err := json.Marshal(e.res)
	if err != nil {
		errs = append(errs, err)
	} else if err := os.WriteFile(base+".json", j, 0o644); err != nil {
		errs = append(errs, err)
	}
	logf("wrote %s.{md,json,svg} (run took %v)", base, time.Since(e.start).Round(time.Second))
	return errors.Join(errs...)
}

// describeMachine fills Machine.
func describeMachine(ctx context.Context, bin string) Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), PxrespBin: bin, CLKTck: procstat.TicksPerSecond}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			m.NProc = n
		}
	}
	if out, err := exec.CommandContext(ctx, "go", "version", bin).Output(); err == nil {
		if _, v, ok := strings.Cut(strings.TrimSpace(string(out)), ": "); ok {
			m.PxrespGo = v
		}
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for _, l := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
