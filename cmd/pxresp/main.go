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
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/pxresp/pxresp/ifwatch"
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, opts, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
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

// serve runs the daemon until ctx is done.
func serve(ctx context.Context, opts *options, log *slog.Logger) error {
	pol, err := policy.New(opts.gateways, opts.targets)
	if err != nil {
		return err
	}
	// A larger netlink buffer makes overflows (and resyncs) rarer during
	// bursts of veth churn. Without CAP_NET_ADMIN the kernel caps it at
	// net.core.rmem_max.
	w, err := ifwatch.New(ifwatch.Config{Globs: opts.ifaces, Logger: log, RecvBufSize: 4 << 20})
	if err != nil {
		return err
	}
	if err := responder.CheckPermission(); err != nil {
		return err
	}
	log.Info("start", "version", buildVersion(), "iface", opts.ifaces, "gw", opts.gateways,
		"target", opts.targets, "mac", opts.mac.String(), "rate_limit", opts.rateLimit)
	d := newDaemon(ctx, pol, opts.mac, log)
	d.rateLimit = opts.rateLimit
	if err := d.run(w); err != nil {
		return fmt.Errorf("interface watcher: %w", err)
	}
	log.Info("stopped")
	return nil
}
