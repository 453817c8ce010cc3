// Command pxresp answers ARP requests for a gateway address on matching
// interfaces, in userspace, in place of the kernel's proxy_arp sysctl:
//
//	pxresp --iface 'cali*' --gw 169.254.1.1
//
// It wires the packages together: ifwatch follows the interfaces, one
// responder serves each selected one, policy decides what is answered.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], stdout, stderr)
	}
	opts, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "pxresp: %v\n", err)
		return 2
	}
	if opts.version {
		fmt.Fprintf(stdout, "pxresp %s\n", buildVersion())
		return 0
	}
	log := newLogger(stderr, opts)
	// SIGHUP reloads --config; registered first, so that it never kills
	// the daemon (its default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, opts, log, hup, true); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// checkConfig is `pxresp check-config FILE`: it validates the file and
// prints its rules, without starting anything. Exit 0 valid, 1 invalid,
// 2 bad usage.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: pxresp check-config FILE")
		return 2
	}
	c, err := config.Load(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "pxresp: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid, %d rule(s)\n", c.Source, len(c.Rules))
	for _, r := range c.Rules {
		fmt.Fprintf(stdout, "  %s (line %d): interfaces %s, %s\n", r.Name, r.Line, strings.Join(r.Interfaces, " "), describe(r))
	}
	return 0
}

// describe says what a rule answers.
func describe(r *config.Rule) string {
	var b strings.Builder
	switch {
	case len(r.Proxy) > 0:
		fmt.Fprintf(&b, "proxy entries %v (when routed out another interface)", r.Proxy)
	case r.Mode == policy.RouteMode:
		b.WriteString("route mode: addresses routed out another interface")
		if len(r.Targets) > 0 {
			fmt.Fprintf(&b, " within %v", r.Targets)
		}
	default:
		fmt.Fprintf(&b, "gateway mode: gateways %v targets %v", r.Gateways, r.Targets)
	}
	if r.MAC != nil {
		fmt.Fprintf(&b, ", answering with %v", r.MAC)
	}
	return b.String()
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newLogger(w io.Writer, opts *options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: opts.logLevel}
	if opts.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// serve runs the daemon until ctx is done. Each SIGHUP on hup reloads
// opts.configPath. With dropPrivs, once the initial interfaces are
// attached it drops every capability but CAP_NET_RAW (tests running it in
// their own process pass false).
func serve(ctx context.Context, opts *options, log *slog.Logger, hup <-chan os.Signal, dropPrivs bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg := opts.cfg
	// A larger netlink buffer makes overflows (and resyncs) rarer during
	// bursts of veth churn. Without CAP_NET_ADMIN the kernel caps it at
	// net.core.rmem_max.
	w, err := ifwatch.New(ifwatch.Config{Globs: cfg.Globs(), Logger: log, RecvBufSize: 4 << 20})
	if err != nil {
		return err
	}
	if err := responder.CheckPermission(); err != nil {
		return err
	}
	d := newDaemon(ctx, cfg, log)
	d.rateLimit = opts.rateLimit
	d.dryRun = opts.dryRun
	if err := d.router.ensure(cfg, log); err != nil {
		return err
	}
	defer d.router.close()
	ready := func() bool {
		select {
		case <-w.Ready():
			return true
		default:
			return false
		}
	}
	var m *metrics
	if opts.metricsAddr != "" {
		ln, err := net.Listen("tcp", opts.metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		var reg *prometheus.Registry
		m, reg = newMetrics(buildVersion(), func() snapshot {
			s := d.snapshot()
			s.Resyncs = w.Resyncs()
			return s
		})
		d.latency = m.Latency
		go func() {
			if err := serveHTTP(ctx, ln, newHTTPHandler(reg, ready)); err != nil {
				cancel(fmt.Errorf("metrics server: %w", err))
			}
		}()
	}
	log.Info("start", "version", buildVersion(), "config", cfg.Source, "rules", len(cfg.Rules),
		"iface", cfg.Globs(), "rate_limit", opts.rateLimit, "dry_run", opts.dryRun, "metrics_addr", opts.metricsAddr)
	for _, r := range cfg.Rules {
		log.Info("rule", "rule", r.Name, "iface", r.Interfaces, "answers", describe(r))
	}
	go func() {
		select {
		case <-w.Ready():
		case <-ctx.Done():
			return
		}
		log.Info("ready", "attached", d.snapshot().Attached)
		if dropPrivs {
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
			case <-hup:
				reloadConfig(opts.configPath, d, w, m, log)
			}
		}
	}()
	err = d.run(w)
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	if err != nil {
		return fmt.Errorf("interface watcher: %w", err)
	}
	log.Info("stopped")
	return nil
}

// reloadConfig re-reads the config file and switches to it, or keeps the
// current one if the new one is invalid.
func reloadConfig(path string, d *daemon, w *ifwatch.Watcher, m *metrics, log *slog.Logger) {
	if path == "" {
		log.Warn("SIGHUP ignored: no --config file to reload")
		return
	}
	cfg, err := config.Load(path)
	if err == nil {
		err = d.router.ensure(cfg, log)
	}
	if err != nil {
		log.Error("reload failed", "config", path, "err", err, "keeping", "the current configuration")
		if m != nil {
			m.reload(false)
		}
		return
	}
	d.reload(cfg)
	if err := w.SetGlobs(cfg.Globs()); err != nil { // cannot fail: config checked them
		log.Error("reload: interface globs refused", "err", err)
	}
	if m != nil {
		m.reload(true)
	}
	log.Info("reloaded", "config", path, "rules", len(cfg.Rules), "iface", cfg.Globs())
}
