package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/netmon"
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
	// MetricsAddr is where /metrics, /healthz and /readyz listen ("": off).
	MetricsAddr string
	DryRun      bool
	// Version is reported in the log and in pxresp_build_info.
	Version string
	// DropPrivileges drops every capability but CAP_NET_RAW once the
	// first interfaces are attached. Tests running the daemon inside their
	// own process leave it off.
	DropPrivileges bool
}

// Run runs the daemon until ctx is done. Each value received on reload
// re-reads o.ConfigPath.
func Run(ctx context.Context, o Options, log *slog.Logger, reload <-chan os.Signal) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg := o.Config
	if err := responder.CheckPermission(); err != nil {
		return err
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
		m, reg = newMetrics(o.Version, func() snapshot {
			s := d.snapshot()
			s.Resyncs = mon.Resyncs()
			return s
		})
		d.latency = m.Latency
		go func() {
			if err := serveHTTP(ctx, ln, newHTTPHandler(reg, ready)); err != nil {
				cancel(fmt.Errorf("metrics server: %w", err))
			}
		}()
	}
	log.Info("start", "version", o.Version, "config", cfg.Source, "rules", len(cfg.Rules),
		"iface", cfg.Globs(), "rate_limit", o.RateLimit, "dry_run", o.DryRun, "metrics_addr", o.MetricsAddr)
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
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				reloadConfig(o.ConfigPath, d, w, mon, m, log)
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
// current one if the new one is invalid: the route cache is opened if a
// rule now needs it, then the watcher's selector is replaced, which
// attaches, updates (a new rule) and detaches the interfaces before it
// returns.
func reloadConfig(path string, d *daemon, w *ifwatch.Watcher[*config.Rule], mon *netmon.Monitor, m *metrics, log *slog.Logger) {
	if path == "" {
		log.Warn("SIGHUP ignored: no --config file to reload")
		return
	}
	cfg, err := config.Load(path)
	if err == nil {
		err = d.router.ensure(cfg, mon, log)
	}
	if err == nil {
		err = w.SetSelector(selector(cfg))
	}
	if err != nil {
		log.Error("reload failed", "config", path, "err", err, "keeping", "the current configuration")
		if m != nil {
			m.reload(false)
		}
		return
	}
	if m != nil {
		m.reload(true)
	}
	log.Info("reloaded", "config", path, "rules", len(cfg.Rules), "iface", cfg.Globs())
}
