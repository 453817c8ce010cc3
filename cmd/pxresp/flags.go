package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// options is the validated command line.
type options struct {
	// The single rule of the command line (without --config).
	ifaces   []string
	gateways []netip.Addr
	targets  []netip.Prefix
	mac      net.HardwareAddr
	mode     policy.Mode

	configPath string         // --config; SIGHUP reloads it
	cfg        *config.Config // the rules: from --config, or the rule above

	logLevel    slog.Level
	logFormat   string
	rateLimit   int // replies per second per interface; 0: no limit
	metricsAddr string
	dryRun      bool
	version     bool
}

// usageError is bad input: the message names the flag, and the exit code is 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// listFlag is a repeatable flag; each value may also hold a comma-separated
// list, which is how the PXRESP_* environment variables carry several.
type listFlag struct {
	vals  *[]string
	check func(string) error
}

func (l listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			return errors.New("empty value")
		}
		if err := l.check(v); err != nil {
			return err
		}
		*l.vals = append(*l.vals, v)
	}
	return nil
}

// envName is the environment variable that sets a flag: --log-level reads
// PXRESP_LOG_LEVEL.
func envName(flagName string) string {
	return "PXRESP_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, falling back to PXRESP_* environment variables
// (read with getenv) for every flag not given on the command line.
func parseFlags(args []string, getenv func(string) string, usage io.Writer) (*options, error) {
	var (
		o                              options
		ifaces, gws, targets           []string
		mac, logLevel, logFormat, mode string
	)
	fs := flag.NewFlagSet("pxresp", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(listFlag{&ifaces, config.CheckGlob}, "iface", "interface name `glob` to serve, e.g. 'cali*' (repeatable; required)")
	fs.Var(listFlag{&gws, checkAddr}, "gw", "gateway IPv4 `address` to answer for, e.g. 169.254.1.1 (repeatable)")
	fs.Var(listFlag{&targets, checkPrefix}, "target", "further IPv4 `address or CIDR` to answer for (repeatable)")
	fs.StringVar(&mac, "mac", "", "answer with this `MAC` instead of the interface's own")
	fs.StringVar(&mode, "mode", "gateway", "`mode`: gateway answers --gw and --target; route answers, like the kernel's\nproxy_arp, every address the host routes out another interface (--target limits it)")
	fs.StringVar(&o.configPath, "config", "", "read the rules from this YAML `file` instead of --iface, --gw, --target,\n--mac and --mode; SIGHUP reloads it (see `pxresp check-config FILE`)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this `host:port` (off unless set)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "decide, log and count what would be answered, but send nothing")
	fs.StringVar(&logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "log `format`: text or json")
	o.rateLimit = responder.DefaultRateLimit
	fs.Var((*rateFlag)(&o.rateLimit), "rate-limit", "at most `N` replies per second on each interface; 0 for no limit")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	// The flag package calls Usage on every parse error; pxresp prints a
	// one-line error instead, and the usage text only for --help.
	fs.Usage = func() {}
	printUsage := func() {
		fmt.Fprintf(usage, "Usage: pxresp --iface GLOB --gw ADDR [flags]\n"+
			"       pxresp --config FILE [flags]\n"+
			"       pxresp check-config FILE\n\n"+
			"Answers ARP requests for a gateway on matching interfaces, in place of the\n"+
			"kernel's proxy_arp. Every flag can also be set with its PXRESP_* variable\n"+
			"(comma-separated for repeatable flags); the command line wins.\n\n")
		fs.SetOutput(usage)
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage()
			return nil, err
		}
		return nil, usagef("%s", strings.Replace(err.Error(), "flag -", "flag --", 1))
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // an action, not a setting: PXRESP_VERSION is left alone
		}
		v := getenv(envName(f.Name))
		if set[f.Name] || v == "" || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("invalid value %q for %s (flag --%s): %v", v, envName(f.Name), f.Name, err)
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if o.version {
		return &o, nil
	}

	if o.configPath != "" {
		var given []string
		for _, f := range []string{"iface", "gw", "target", "mac", "mode"} {
			if set[f] || getenv(envName(f)) != "" {
				given = append(given, "--"+f)
			}
		}
		if len(given) > 0 {
			return nil, usagef("--config cannot be combined with %s: put them in the file's rules", strings.Join(given, ", "))
		}
	} else if len(ifaces) == 0 {
		return nil, usagef("--iface is required: a glob of the interfaces to serve, such as 'cali*' (or --config FILE)")
	}
	m, err := policy.ParseMode(mode)
	if err != nil {
		return nil, usagef("invalid value %q for flag --mode: want gateway or route", mode)
	}
	o.mode = m
	switch {
	case o.configPath != "":
	case m == policy.GatewayMode && len(gws) == 0 && len(targets) == 0:
		return nil, usagef("--gw or --target is required: nothing to answer for")
	case m == policy.RouteMode && len(gws) > 0:
		return nil, usagef("--gw cannot be used with --mode route: route mode answers every address routed out another interface; use --target to limit it")
	}
	o.ifaces = ifaces
	for _, s := range gws {
		o.gateways = append(o.gateways, netip.MustParseAddr(s)) // checked by checkAddr
	}
	for _, s := range targets {
		p, _ := config.ParsePrefix(s) // checked by checkPrefix
		o.targets = append(o.targets, p)
	}
	if mac != "" {
		m, err := net.ParseMAC(mac)
		if err == nil {
			err = policy.CheckMAC(m)
		}
		if err != nil {
			return nil, usagef("invalid value %q for flag --mac: %v", mac, err)
		}
		o.mac = m
	}
	if err := o.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, usagef("invalid value %q for flag --log-level: want debug, info, warn or error", logLevel)
	}
	switch logFormat {
	case "text", "json":
		o.logFormat = logFormat
	default:
		return nil, usagef("invalid value %q for flag --log-format: want text or json", logFormat)
	}
	if o.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return nil, usagef("invalid value %q for flag --metrics-addr: want host:port, such as 127.0.0.1:9597", o.metricsAddr)
		}
	}
	if o.configPath != "" {
		// A bad file is bad input like a bad flag: exit 2, file:line: key.
		if o.cfg, err = config.Load(o.configPath); err != nil {
			return nil, &usageError{err.Error()}
		}
		return &o, nil
	}
	o.cfg, err = config.New("command line", &config.Rule{Interfaces: o.ifaces, Mode: o.mode,
		Gateways: o.gateways, Targets: o.targets, MAC: o.mac})
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	return &o, nil
}

// rateFlag is --rate-limit: a whole number of replies per second, 0 or more.
type rateFlag int

func (r *rateFlag) String() string { return strconv.Itoa(int(*r)) }

func (r *rateFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return errors.New("want a whole number of replies per second, 0 for no limit")
	}
	*r = rateFlag(n)
	return nil
}

// checkAddr accepts a gateway (config.ParseAddr).
func checkAddr(s string) error {
	_, err := config.ParseAddr(s)
	return err
}

// checkPrefix accepts a target (config.ParsePrefix).
func checkPrefix(s string) error {
	_, err := config.ParsePrefix(s)
	return err
}
