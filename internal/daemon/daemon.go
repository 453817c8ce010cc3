package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/diag"
	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/route"
	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// daemon keeps one responder per attached interface, driven by ifwatch
// events, each serving the rule the event carries: the watcher's selector
// (the configuration's first-match rules) is the one judge of selection.
// handle runs on the netlink monitor's goroutine, and on the reload's
// during a selector change; snapshot on the metrics scraper's: mu
// serialises them.
type daemon struct {
	ctx context.Context
	log *slog.Logger
	// datapath is what runs: Packet or EBPF. On EBPF, gateway-mode rules
	// are served by listenEBPF, route-mode rules by listen (ruleDatapath).
	datapath   Datapath
	listen     func(responder.Config) (server, error)
	listenEBPF func(responder.Config) (server, error)
	// rateLimit is each responder's limit in replies per second (0: none);
	// newDaemon sets responder.DefaultRateLimit.
	rateLimit int
	dryRun    bool
	latency   responder.Observer // nil: no latency histogram
	router    routerRef          // for route-mode rules
	// diagnose reads the sysctls that matter for an interface; replaced
	// in tests. diagDelay is how long after an attach the reverse-path
	// check waits for the pod's route, which CNI adds after the veth.
	diagnose  func(ifname string, hasRoute bool) ([]diag.Finding, error)
	diagDelay time.Duration

	mu       sync.Mutex
	attached map[int]*attachment
	// failed holds the selected links whose listener could not be
	// opened, by ifindex, until they are attached or detached.
	failed map[int]failure
	// closingSet holds detached listeners whose sockets are being closed:
	// they still count frames, so snapshot still sums them.
	closingSet map[*attachment]struct{}
	retired    responder.Stats // the final counts of closed listeners
	attaches   uint64
	detaches   uint64
	attachErrs uint64

	wg      sync.WaitGroup
	closing chan struct{} // a semaphore bounding the sockets closed at once
}

// server is what the daemon needs of a *responder.Responder.
type server interface {
	Serve(context.Context) error
	Close() error
	Apply(responder.Settings) error
	Stats() responder.Stats
	Bound() bool
}

type attachment struct {
	srv      server
	datapath Datapath
	link     ifwatch.Link
	rule     *config.Rule
	done     chan struct{} // closed when Serve returned
	closed   chan struct{} // closed when Close returned (after a detach)
	// problems are the sysctl findings on the link, under daemon.mu.
	problems []diag.Finding
}

// failure is a selected link whose listener could not be opened.
type failure struct {
	link ifwatch.Link
	rule *config.Rule
	err  error
}

// event is what the watcher reports: a link and the rule that serves it.
type event = ifwatch.Event[*config.Rule]

func newDaemon(ctx context.Context, log *slog.Logger) *daemon {
	return &daemon{
		ctx: ctx, log: log, rateLimit: responder.DefaultRateLimit, datapath: Packet,
		listen:     func(c responder.Config) (server, error) { return responder.Listen(c) },
		diagnose:   diag.Check,
		diagDelay:  3 * time.Second,
		attached:   make(map[int]*attachment),
		failed:     make(map[int]failure),
		closingSet: make(map[*attachment]struct{}),
		closing:    make(chan struct{}, maxClosing),
	}
}

// handle applies one watcher event: attach under its rule, apply a
// changed link or rule to the listener in place, or detach.
func (d *daemon) handle(ev event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := ev.Link
	switch ev.Kind {
	case ifwatch.Attach:
		d.attach(l, ev.Rule)
	case ifwatch.Update:
		a, ok := d.attached[l.Index]
		if !ok {
			d.attach(l, ev.Rule)
			return
		}
		if ev.Resync && !a.srv.Bound() {
			// The interface left the namespace and came back unseen
			// (ifwatch resynced): its socket is unbound for good. Only
			// a listing can hide that; outside one, an unbound socket
			// means the link is being deleted, and a Detach follows.
			d.log.Warn("listener lost its interface; reopening", "iface", l.Name, "ifindex", l.Index)
			d.detach(a.link)
			d.attach(l, ev.Rule)
			return
		}
		if dp := ruleDatapath(d.datapath, ev.Rule); dp != a.datapath {
			// A rename or a reload moved the interface between a
			// gateway-mode and a route-mode rule, which the eBPF
			// datapath serves apart.
			d.log.Info("datapath changed", "iface", l.Name, "ifindex", l.Index, "rule", ev.Rule.Name,
				"mode", ev.Rule.Mode.String(), "from", a.datapath, "to", dp)
			d.detach(a.link)
			d.attach(l, ev.Rule)
			return
		}
		if l.MAC.String() != a.link.MAC.String() {
			d.log.Info("mac changed", "iface", l.Name, "ifindex", l.Index, "mac", l.MAC.String())
		}
		if l.Name != a.link.Name || l.Up != a.link.Up {
			d.log.Info("link changed", "iface", l.Name, "ifindex", l.Index, "up", l.Up)
		}
		a.link = l
		if len(l.OnLink) > 0 {
			// The pod's route is there: reverse-path filtering passes.
			a.problems = slices.DeleteFunc(a.problems, func(f diag.Finding) bool { return f.Check == diag.RPFilter })
		}
		// One call with every setting: the listener works out what
		// changed (a rename into another rule, a reload, a new MAC...).
		d.apply(a, ev.Rule)
	case ifwatch.Detach:
		delete(d.failed, l.Index)
		d.detach(l)
	}
}

// attach opens a listener for l under rule r, on the rule's datapath.
func (d *daemon) attach(l ifwatch.Link, r *config.Rule) {
	if _, ok := d.attached[l.Index]; ok {
		return
	}
	// A listener of the same ifindex still closing (the link left and
	// came back, or changed datapath) finishes first: closing one clears
	// what it set up for the ifindex.
	for c := range d.closingSet {
		if c.link.Index == l.Index {
			<-c.closed
		}
	}
	dp := ruleDatapath(d.datapath, r)
	listen := d.listen
	if dp == EBPF {
		listen = d.listenEBPF
	}
	srv, err := listen(responder.Config{
		Index: l.Index, Name: l.Name, Settings: settings(l, r), Logger: d.log, RateLimit: d.rateLimit,
		Router: &d.router, DryRun: d.dryRun, Latency: d.latency,
	})
	if err != nil {
		// The link may already be gone again; ifwatch will say so.
		d.attachErrs++
		d.failed[l.Index] = failure{link: l, rule: r, err: err}
		d.log.Error("attach failed", "iface", l.Name, "ifindex", l.Index, "rule", r.Name, "datapath", dp, "err", err)
		return
	}
	delete(d.failed, l.Index)
	a := &attachment{srv: srv, datapath: dp, link: l, rule: r, done: make(chan struct{}), closed: make(chan struct{})}
	d.attached[l.Index] = a
	d.attaches++
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(a.done)
		if err := srv.Serve(d.ctx); err != nil {
			d.log.Error("listener failed", "iface", l.Name, "ifindex", l.Index, "err", err)
		}
	}()
	d.log.Info("attach", "iface", l.Name, "ifindex", l.Index, "mac", l.MAC.String(), "up", l.Up,
		"rule", r.Name, "mode", r.Mode.String(), "datapath", dp)
	d.checkSysctls(a)
}

// settings are what a listener on l answers with under rule r.
func settings(l ifwatch.Link, r *config.Rule) responder.Settings {
	return responder.Settings{MAC: l.MAC, Override: r.MAC, Policy: r.Policy(), OnLink: l.OnLink}
}

// apply makes a serve rule r on its link a.link, in place: the listener
// keeps its socket, and changes what differs.
func (d *daemon) apply(a *attachment, r *config.Rule) {
	if err := a.srv.Apply(settings(a.link, r)); err != nil {
		// config validated the rule and the listener the link, so only
		// the socket can fail: the link is going away, and a Detach
		// follows.
		d.log.Error("updating the listener failed", "iface", a.link.Name, "ifindex", a.link.Index, "mac", r.MAC.String(), "err", err)
	}
	if a.rule.Name != r.Name || a.rule.Mode != r.Mode {
		d.log.Info("rule changed", "iface", a.link.Name, "ifindex", a.link.Index, "rule", r.Name, "mode", r.Mode.String())
	}
	a.rule = r
}

// maxClosing bounds how many sockets are closed at once. Each close blocks
// its thread in the kernel, and the Go runtime keeps every thread it ever
// started for a blocking call: unbounded, a burst of 100 deletions leaves
// pxresp with ~70 idle threads for good.
const maxClosing = 4

// detach closes the interface's listener. Closing an AF_PACKET socket
// waits for an RCU grace period (~10 ms), so it happens on a goroutine of
// its own: the watcher goes on with the next event, and a burst of deletions
// does not hold up new interfaces. closeAll waits for these goroutines.
func (d *daemon) detach(l ifwatch.Link) {
	a, ok := d.attached[l.Index]
	if !ok {
		return
	}
	delete(d.attached, l.Index)
	d.closingSet[a] = struct{}{}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.closing <- struct{}{}
		_ = a.srv.Close()
		<-d.closing
		close(a.closed)
		<-a.done
		st := a.srv.Stats()
		d.mu.Lock()
		delete(d.closingSet, a)
		d.retired.Add(st)
		d.detaches++
		d.mu.Unlock()
		d.log.Info("detach", "iface", l.Name, "ifindex", l.Index, "mac", a.link.MAC.String(), "datapath", a.datapath,
			"requests", st.Requests, "replies", st.Replies, "rate_limited", st.RateLimited)
	}()
}

// checkSysctls warns, once per attach, about sysctls that undo or double
// pxresp's work on a's interface. A reverse-path problem is reported only
// if it remains diagDelay later: the CNI adds the pod's route after the
// veth appears.
func (d *daemon) checkSysctls(a *attachment) {
	warn := func(fs []diag.Finding, check func(string) bool) {
		for _, f := range fs {
			if check(f.Check) {
				d.log.Warn("sysctl", "iface", a.link.Name, "check", f.Check, "problem", f.Message)
			}
		}
	}
	isRP := func(f diag.Finding) bool { return f.Check == diag.RPFilter }
	fs, err := d.diagnose(a.link.Name, len(a.link.OnLink) > 0)
	if err != nil {
		d.log.Debug("sysctl check failed", "iface", a.link.Name, "err", err)
		return
	}
	warn(fs, func(c string) bool { return c != diag.RPFilter })
	a.problems = slices.DeleteFunc(slices.Clone(fs), isRP)
	if !slices.ContainsFunc(fs, isRP) {
		return
	}
	time.AfterFunc(d.diagDelay, func() {
		d.mu.Lock()
		still := d.attached[a.link.Index] == a
		name, hasRoute := a.link.Name, len(a.link.OnLink) > 0
		d.mu.Unlock()
		if !still || hasRoute || d.ctx.Err() != nil {
			return
		}
		if fs, err := d.diagnose(name, false); err == nil {
			warn(fs, func(c string) bool { return c == diag.RPFilter })
			d.mu.Lock()
			a.problems = append(a.problems, slices.DeleteFunc(fs, func(f diag.Finding) bool { return !isRP(f) })...)
			d.mu.Unlock()
		}
	})
}

// snapshot returns the daemon's counters for a metrics scrape: every
// listener's, live, closing or closed, so that they never go backwards.
func (d *daemon) snapshot() snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := snapshot{Responders: d.retired, Attached: len(d.attached),
		Attaches: d.attaches, Detaches: d.detaches, AttachErrors: d.attachErrs,
		SysctlProblems: make(map[string]int, len(diag.Checks))}
	for _, c := range diag.Checks {
		s.SysctlProblems[c] = 0
	}
	for _, a := range d.attached {
		s.Responders.Add(a.srv.Stats())
		for _, f := range a.problems {
			s.SysctlProblems[f.Check]++
		}
	}
	for a := range d.closingSet {
		s.Responders.Add(a.srv.Stats())
	}
	if c := d.router.cache(); c != nil {
		st := c.Stats()
		s.Route = &st
	}
	return s
}

// routerRef is every responder's Router: the route cache, created when a
// rule first needs route mode (at start or at a reload) and kept until
// exit. Until then it answers RouteUnknown, which no gateway-mode rule
// asks for.
type routerRef struct {
	p  atomic.Pointer[route.Cache]
	mu sync.Mutex // serialises ensure and close
}

func (r *routerRef) Route(iif int, src, dst netip.Addr) policy.RouteClass {
	if c := r.p.Load(); c != nil {
		return c.Route(iif, src, dst)
	}
	return policy.RouteUnknown
}

func (r *routerRef) cache() *route.Cache { return r.p.Load() }

// ensure opens the route cache, a consumer of mon, if cfg has a route-mode
// rule and it is not open yet.
func (r *routerRef) ensure(cfg *config.Config, mon *netmon.Monitor, log *slog.Logger) error {
	if !cfg.HasMode(policy.RouteMode) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p.Load() != nil {
		return nil
	}
	c, err := route.New(route.Config{Monitor: mon, Logger: log})
	if err != nil {
		return fmt.Errorf("route mode: %w", err)
	}
	r.p.Store(c)
	return nil
}

func (r *routerRef) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.p.Swap(nil); c != nil {
		_ = c.Close()
	}
}

// run follows mon, whose consumers drive the daemon, until the daemon's
// context is done, then closes every listener and waits for them to end.
func (d *daemon) run(mon *netmon.Monitor) error {
	err := mon.Run(d.ctx)
	d.closeAll()
	return err
}

// closeAll detaches every interface and waits for all listeners to end.
func (d *daemon) closeAll() {
	d.mu.Lock()
	for _, a := range d.attached {
		d.detach(a.link)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// interfaces describes every link the watcher knows (links, in ifindex
// order) for /status: skipped and why, or attached with its rule,
// counters and sysctl problems, or failed with the error.
func (d *daemon) interfaces(links []ifwatch.LinkState) []status.Interface {
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Index] = l.Name
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]status.Interface, 0, len(links))
	for _, l := range links {
		i := status.Interface{Name: l.Name, Index: l.Index}
		a, attached := d.attached[l.Index]
		f, failed := d.failed[l.Index]
		switch {
		case l.Skip != ifwatch.Selected:
			i.State, i.Reason = status.Skipped, l.Skip.String()
			if l.Skip == ifwatch.HasMaster {
				i.Reason = fmt.Sprintf("%s: master %s", i.Reason, masterName(names, l.Master))
			}
		case attached:
			i.State, i.Rule, i.Datapath = status.Attached, a.rule.Name, string(a.datapath)
			st := a.srv.Stats()
			c := &status.Counters{Requests: st.Requests, Replies: st.Replies, RateLimited: st.RateLimited,
				DryRun: st.DryRun, SendErrors: st.SendErrors}
			for _, n := range st.Ignored {
				c.Ignored += n
			}
			i.Counters = c
			for _, p := range a.problems {
				i.Problems = append(i.Problems, status.Problem{Check: p.Check, Message: p.Message})
			}
		case failed:
			i.State, i.Rule, i.Reason = status.Failed, f.rule.Name, "attach failed: "+f.err.Error()
		default:
			i.State = status.Pending
		}
		out = append(out, i)
	}
	return out
}

func masterName(names map[int]string, index int) string {
	if n, ok := names[index]; ok {
		return n
	}
	return fmt.Sprintf("ifindex %d", index)
}

// attachedNames returns the names of the attached interfaces, sorted.
func (d *daemon) attachedNames() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	for _, a := range d.attached {
		names = append(names, a.link.Name)
	}
	slices.Sort(names)
	return names
}
