package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/responder"
)

// Options are what the command line decides.
type Options struct {
	// Config holds the rules: from ConfigPath, or the command line's one.
	Config *config.Config
	// ConfigPath is the file that a reload reads again ("" : no reload).
	ConfigPath string
	// RateLimit is each interface's replies per second (0: no limit).
	RateLimit int
	// MetricsAddr is where /metrics, /healthz, /readyz and /status listen
	// ("": off).
	MetricsAddr string
	// WebConfigFile is an exporter-toolkit web config file securing
	// MetricsAddr with TLS and basic auth ("": plain HTTP).
	WebConfigFile string
	DryRun        bool
	// Datapath is --datapath: Auto (the zero value ""), Packet or EBPF.
	Datapath Datapath
	// Version is reported in the log and in pxresp_build_info.
	Version string
	// DropPrivileges drops every capability but CAP_NET_RAW once the
	// first interfaces are attached (dropPrivileges). Tests running the
	// daemon inside their own process leave it off.
	DropPrivileges bool
}

// Run runs the daemon until ctx is done. Each value received on reload
// re-reads o.ConfigPath, and so does a change of the file's content
// (followFile).
func Run(ctx context.Context, o Options, log *slog.Logger, reload <-chan os.Signal) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg := o.Config
	var cur atomic.Pointer[config.Config] // the configuration serving now
	cur.Store(cfg)
	// Both datapaths need CAP_NET_RAW: route-mode rules are served from
	// AF_PACKET on the eBPF datapath too, and a reload can add one.
	if err := responder.CheckPermission(); err != nil {
		return err
	}
	dp, why, err := chooseDatapath(o.Datapath, o.DryRun, ebpfSupported)
	if err != nil {
		return err
	}
	var listenEBPF func(responder.Config) (server, error)
	if dp == EBPF {
		var closeEBPF func() error
		listenEBPF, closeEBPF, err = openEBPF()
		if err != nil {
			if o.Datapath == EBPF {
				return fmt.Errorf("the eBPF datapath (--datapath ebpf): %w", err)
			}
			dp, why = Packet, "auto: "+err.Error()
		} else {
			// Deferred first, so run last: after every interface's
			// listener is closed (d.run).
			defer func() {
				if err := closeEBPF(); err != nil {
					log.Error("closing the eBPF program", "err", err)
				}
			}()
		}
	}
	// One netlink subscription for the process. A larger buffer makes
	// overflows (and resyncs) rarer during bursts of veth churn. Without
	// CAP_NET_ADMIN the kernel caps it at net.core.rmem_max.
	mon, err := netmon.New(netmon.Config{Logger: log, RecvBufSize: 4 << 20})
	if err != nil {
		return err
	}
	defer mon.Close()
	d := newDaemon(ctx, log)
	d.rateLimit = o.RateLimit
	d.dryRun = o.DryRun
	d.datapath, d.listenEBPF = dp, listenEBPF
	// The route cache registers first: it is invalidated before the
	// watcher's events for the same notification are handled.
	if err := d.router.ensure(cfg, mon, log); err != nil {
		return err
	}
	defer d.router.close()
	w, err := ifwatch.New(ifwatch.Config[*config.Rule]{Select: selector(cfg), Handle: d.handle, Logger: log})
	if err != nil {
		return err
	}
	mon.Register(w)
	ready := func() bool {
		select {
		case <-w.Ready():
			return true
		default:
			return false
		}
	}
	var m *metrics
	if o.MetricsAddr != "" {
		ln, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		var reg *prometheus.Registry
		m, reg = newMetrics(about{Version: o.Version, Datapath: dp, DatapathReason: why}, func() snapshot {
			s := d.snapshot()
			s.Resyncs = mon.Resyncs()
			s.Skipped = make(map[ifwatch.Skip]int)
			for _, l := range w.Links() {
				if l.Skip != ifwatch.Selected {
					s.Skipped[l.Skip]++
				}
			}
			return s
		})
		d.latency = m.Latency
		stat := func() *status.Status {
			c := cur.Load()
			st := &status.Status{Version: o.Version, Config: c.Source, Datapath: string(dp), DatapathReason: why,
				Ready: ready(), Interfaces: d.interfaces(w.Links())}
			for _, r := range c.Rules {
				st.Rules = append(st.Rules, status.Rule{Name: r.Name, Interfaces: r.Interfaces, Answers: r.Describe()})
			}
			return st
		}
		go func() {
			if err := serveHTTP(ctx, ln, newHTTPHandler(reg, ready, stat), o.WebConfigFile, log); err != nil {
				cancel(fmt.Errorf("metrics server: %w", err))
			}
		}()
	}
	log.Info("start", "version", o.Version, "config", cfg.Source, "rules", len(cfg.Rules),
		"iface", cfg.Globs(), "rate_limit", o.RateLimit, "dry_run", o.DryRun, "metrics_addr", o.MetricsAddr)
	log.Info("datapath", "datapath", dp, "reason", why)
	for _, r := range cfg.Rules {
		log.Info("rule", "rule", r.Name, "iface", r.Interfaces, "answers", r.Describe())
	}
	go func() {
		select {
		case <-w.Ready():
		case <-ctx.Done():
			return
		}
		log.Info("ready", "attached", d.snapshot().Attached)
		if o.DropPrivileges {
			if err := dropPrivileges(log); err != nil {
				cancel(fmt.Errorf("dropping privileges: %w", err))
			}
		}
	}()
	var changed <-chan struct{} // nil without a file: never ready
	seen := &seenContent{last: digest(o.ConfigPath)}
	if o.ConfigPath != "" {
		if changed, err = followFile(ctx, o.ConfigPath, followDebounce, seen, log); err != nil {
			return fmt.Errorf("following %s: %w", o.ConfigPath, err)
		}
	}
	go func() {
		for {
			var why string
			select {
			case <-ctx.Done():
				return
			case <-reload:
				why = "SIGHUP"
				seen.update(digest(o.ConfigPath))
			case <-changed:
				why = "file changed"
			}
			if c := reloadConfig(o.ConfigPath, why, cur.Load(), d, w, mon, m, log); c != nil {
				cur.Store(c)
			}
		}
	}()
	err = d.run(mon)
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if err != nil {
		return fmt.Errorf("netlink monitor: %w", err)
	}
	log.Info("stopped")
	return nil
}

// selector serves each interface under the first rule of cfg that selects
// it: the watcher's selector.
func selector(cfg *config.Config) func(name string) (*config.Rule, bool) {
	return func(name string) (*config.Rule, bool) {
		r := cfg.Match(name)
		return r, r != nil
	}
}

// reloadConfig re-reads the config file and switches to it, or keeps the
// current one (old) if the new one is invalid: the route cache is opened
// if a rule now needs it, then the watcher's selector is replaced, which
// attaches, updates (a new rule) and detaches the interfaces before it
// returns. It returns the new configuration, nil if it kept old, and logs
// what changed: rules by name, interfaces attached and detached.
func reloadConfig(path, why string, old *config.Config, d *daemon, w *ifwatch.Watcher[*config.Rule], mon *netmon.Monitor, m *metrics, log *slog.Logger) *config.Config {
	if path == "" {
		log.Warn("SIGHUP ignored: no --config file to reload")
		return nil
	}
	before := d.attachedNames()
	cfg, err := config.Load(path)
	if err == nil {
		err = d.router.ensure(cfg, mon, log)
	}
	if err == nil {
		err = w.SetSelector(selector(cfg))
	}
	if err != nil {
		log.Error("reload failed", "config", path, "trigger", why, "err", err, "keeping", "the current configuration")
		if m != nil {
			m.reload(false)
		}
		return nil
	}
	if m != nil {
		m.reload(true)
	}
	added, removed, changed := diffRules(old, cfg)
	attached, detached := diffNames(before, d.attachedNames())
	log.Info("reloaded", "config", path, "trigger", why, "rules", len(cfg.Rules),
		"rules_added", added, "rules_removed", removed, "rules_changed", changed,
		"attached", attached, "detached", detached)
	for _, r := range cfg.Rules {
		if slices.Contains(added, r.Name) || slices.Contains(changed, r.Name) {
			log.Info("rule", "rule", r.Name, "iface", r.Interfaces, "answers", r.Describe())
		}
	}
	return cfg
}

// diffRules compares two configurations' rules by name: those only in
// next, only in prev, and in both but different (interfaces, mode, what
// they answer, MAC, or position, which decides the first match).
func diffRules(prev, next *config.Config) (added, removed, changed []string) {
	index := func(c *config.Config) map[string]int {
		m := make(map[string]int, len(c.Rules))
		for i, r := range c.Rules {
			m[r.Name] = i
		}
		return m
	}
	pi, ni := index(prev), index(next)
	for i, r := range next.Rules {
		j, ok := pi[r.Name]
		switch {
		case !ok:
			added = append(added, r.Name)
		case ruleKey(prev.Rules[j]) != ruleKey(r) || i != j:
			changed = append(changed, r.Name)
		}
	}
	for _, r := range prev.Rules {
		if _, ok := ni[r.Name]; !ok {
			removed = append(removed, r.Name)
		}
	}
	return added, removed, changed
}

// ruleKey is what makes a rule what it is, for diffRules.
func ruleKey(r *config.Rule) string {
	return strings.Join(r.Interfaces, " ") + "|" + r.Mode.String() + "|" + r.Describe() + "|" + r.MAC.String()
}

// diffNames returns the names in next but not prev, and in prev but not
// next; both are sorted.
func diffNames(prev, next []string) (in, out []string) {
	only := func(a, b []string) []string {
		set := make(map[string]bool, len(b))
		for _, n := range b {
			set[n] = true
		}
		var d []string
		for _, n := range a {
			if !set[n] {
				d = append(d, n)
			}
		}
		return d
	}
	return only(next, prev), only(prev, next)
}
