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
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/daemon"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], environ(os.Environ()), os.Stdout, os.Stderr))
}

// environ turns os.Environ's list into a map.
func environ(kvs []string) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// run is main without the process: it returns the exit code, 2 for bad
// input (one line on stderr naming the flag or file).
func run(args []string, env map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "status":
			return statusCmd(args[1:], env, stdout, stderr)
		}
	}
	opts, err := parseFlags(args, env, stdout)
	if errors.Is(err, pflag.ErrHelp) {
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
	err = daemon.Run(ctx, daemon.Options{
		Config: opts.cfg, ConfigPath: opts.configPath, RateLimit: opts.rateLimit,
		MetricsAddr: opts.metricsAddr, WebConfigFile: opts.webConfig,
		DryRun: opts.dryRun, Datapath: opts.datapath, Version: buildVersion(), DropPrivileges: true,
	}, log, hup)
	if err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

const checkConfigUsage = `Usage: pxresp check-config FILE

Validates the YAML rules file FILE and prints its rules, without starting
anything. Exit status: 0 valid, 2 invalid or bad usage.
`

// checkConfig is `pxresp check-config FILE`: it validates the file and
// prints its rules, without starting anything. Exit 0 valid, 2 invalid or
// bad usage, as --config.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("pxresp check-config")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, checkConfigUsage)
			return 0
		}
		fmt.Fprintf(stderr, "pxresp check-config: %v\n", parseError(fs, err))
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "pxresp check-config: want one FILE: usage: pxresp check-config FILE")
		return 2
	}
	c, err := config.Load(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "pxresp: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: valid, %d rule(s)\n", c.Source, len(c.Rules))
	for _, r := range c.Rules {
		fmt.Fprintf(stdout, "  %s (line %d): interfaces %s, %s\n", r.Name, r.Line, strings.Join(r.Interfaces, " "), r.Describe())
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
