package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/pflag"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/daemon"
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
	webConfig   string // --web.config.file: TLS and basic auth for metricsAddr
	dryRun      bool
	datapath    daemon.Datapath
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

func (l listFlag) Type() string { return "list" }

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
// PXRESP_LOG_LEVEL, --web.config.file PXRESP_WEB_CONFIG_FILE.
func envName(flagName string) string {
	return "PXRESP_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// usageHead is the top of --help.
const usageHead = `Usage: pxresp --iface GLOB --gw ADDR [flags]
       pxresp --config FILE [flags]
       pxresp check-config FILE
       pxresp status [--addr URL]

Answers ARP requests for a gateway on matching interfaces, in place of the
kernel's proxy_arp. Every flag can also be set with the environment variable
shown beside it (comma-separated for repeatable flags); the command line wins.
An unknown PXRESP_* variable is an error.

Flags:
`

// newFlagSet returns a flag set that reports errors instead of printing
// them, and prints each flag's environment variable beside it in --help.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	return fs
}

// withEnv appends each flag's environment variable to its help text.
func withEnv(fs *pflag.FlagSet, skip ...string) {
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(skip, f.Name) {
			f.Usage += " [$" + envName(f.Name) + "]"
		}
	})
}

// parseError turns pflag's parse error into a usage error, a bad value in
// the words the rest of pxresp uses; --help is returned as pflag.ErrHelp.
func parseError(fs *pflag.FlagSet, err error) error {
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	if ne, ok := errors.AsType[*pflag.NotExistError](err); ok {
		// -iface: a long flag spelt with one dash, as Go's flag package
		// allows.
		name, _, _ := strings.Cut(strings.TrimPrefix(ne.GetSpecifiedShortnames(), "-"), "=")
		if fs.Lookup(name) != nil {
			return usagef("unknown flag: -%s: spell it --%s", name, name)
		}
	}
	if iv, ok := errors.AsType[*pflag.InvalidValueError](err); ok {
		return usagef("invalid value %q for flag --%s: %v", iv.GetValue(), iv.GetFlag().Name, iv.Unwrap())
	}
	return &usageError{err.Error()}
}

// parseFlags parses args, falling back to PXRESP_* environment variables
// (env) for every flag not given on the command line. --help writes the
// usage to usage and returns pflag.ErrHelp.
func parseFlags(args []string, env map[string]string, usage io.Writer) (*options, error) {
	var (
		o                              options
		ifaces, gws, targets           []string
		mac, logLevel, logFormat, mode string
	)
	fs := newFlagSet("pxresp")
	fs.Var(listFlag{&ifaces, config.CheckGlob}, "iface", "interface name `glob` to serve, e.g. 'cali*' (repeatable; required)")
	fs.Var(listFlag{&gws, checkAddr}, "gw", "gateway IPv4 `address` to answer for, e.g. 169.254.1.1 (repeatable)")
	fs.Var(listFlag{&targets, checkPrefix}, "target", "further IPv4 `address or CIDR` to answer for (repeatable)")
	fs.StringVar(&mac, "mac", "", "answer with this `MAC` instead of the interface's own")
	fs.StringVar(&mode, "mode", "gateway", "`mode`: gateway answers --gw and --target; route answers, like the kernel's proxy_arp, every address the host routes out another interface (--target limits it)")
	fs.StringVar(&o.configPath, "config", "", "read the rules from this YAML `file` instead of --iface, --gw, --target, --mac and --mode; reloaded on SIGHUP and when the file changes")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz and /status on this `host:port` (off unless set)")
	fs.StringVar(&o.webConfig, "web.config.file", "", "TLS and basic auth for --metrics-addr: a Prometheus exporter-toolkit web config `file`")
	fs.BoolVar(&o.dryRun, "dry-run", false, "decide, log and count what would be answered, but send nothing")
	fs.StringVar(&logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "log `format`: text or json")
	o.rateLimit = responder.DefaultRateLimit
	fs.Var((*rateFlag)(&o.rateLimit), "rate-limit", "at most `N` replies per second on each interface; 0 for no limit")
	o.datapath = daemon.Auto
	fs.Var((*datapathFlag)(&o.datapath), "datapath", "`datapath`: ebpf answers from a tc program in the kernel (loading it needs CAP_BPF and CAP_NET_ADMIN), packet from an AF_PACKET socket; auto is ebpf where it can run, packet elsewhere")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	withEnv(fs, "version")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(usage, usageHead+fs.FlagUsages())
		}
		return nil, parseError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if err := checkEnviron(fs, env); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	if err := setFromEnv(fs, env, envName); err != nil {
		return nil, err
	}
	if o.version {
		return &o, nil
	}

	if o.configPath != "" {
		var given []string
		for _, f := range []string{"iface", "gw", "target", "mac", "mode"} {
			if set[f] || env[envName(f)] != "" {
				given = append(given, "--"+f)
			}
		}
		if len(given) > 0 {
			return nil, usagef("--config cannot be combined with %s: put them in the file's rules", strings.Join(given, ", "))
		}
	} else if len(ifaces) == 0 {
		return nil, usagef("--iface is required: a glob of the interfaces to serve, such as 'cali*' (or --config FILE)")
	}
	if slices.Contains(ifaces, "lo") {
		return nil, usagef("invalid value \"lo\" for flag --iface: the loopback interface has no ARP; name the pods' interfaces, such as 'cali*'")
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
		if err := checkHostPort(o.metricsAddr); err != nil {
			return nil, usagef("invalid value %q for flag --metrics-addr: %v", o.metricsAddr, err)
		}
	}
	if o.webConfig != "" {
		if o.metricsAddr == "" {
			return nil, usagef("--web.config.file needs --metrics-addr: it secures that listener")
		}
		if err := web.Validate(o.webConfig); err != nil {
			return nil, usagef("--web.config.file: %s: %s", o.webConfig, oneLine(err))
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

// setFromEnv sets each flag of fs not given on the command line from its
// environment variable (name(flag)), if set.
func setFromEnv(fs *pflag.FlagSet, env map[string]string, name func(string) string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "version" {
			return // an action, not a setting: PXRESP_VERSION is left alone
		}
		v := env[name(f.Name)]
		if f.Changed || v == "" || err != nil {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usagef("invalid value %q for %s (flag --%s): %v", v, name(f.Name), f.Name, e)
		}
	})
	return err
}

// checkEnviron refuses a PXRESP_* variable that sets no flag of fs nor of
// pxresp status: a typo such as PXRESP_METRIC_ADDR would otherwise be
// silently ignored.
func checkEnviron(fs *pflag.FlagSet, env map[string]string) error {
	known := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { known[envName(f.Name)] = true })
	sfs := newFlagSet("status")
	new(statusFlags).define(sfs)
	sfs.VisitAll(func(f *pflag.Flag) { known[statusEnvName(f.Name)] = true })
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if strings.HasPrefix(k, "PXRESP_") && !known[k] {
			return usagef("unknown environment variable %s: no flag reads it (see pxresp --help)", k)
		}
	}
	return nil
}

// checkHostPort accepts a listen address: an optional host (an IP address
// or a name) and a port number.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, such as 127.0.0.1:9597")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return fmt.Errorf("host %q is neither an IP address nor a host name", host)
		}
	}
	return nil
}

// oneLine joins the lines of err's message.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// rateFlag is --rate-limit: a whole number of replies per second, 0 or more.
type rateFlag int

func (r *rateFlag) String() string { return strconv.Itoa(int(*r)) }

func (r *rateFlag) Type() string { return "int" }

func (r *rateFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return errors.New("want a whole number of replies per second, 0 for no limit")
	}
	*r = rateFlag(n)
	return nil
}

// datapathFlag is --datapath: auto, packet or ebpf.
type datapathFlag daemon.Datapath

func (d *datapathFlag) String() string { return string(*d) }

func (d *datapathFlag) Type() string { return "string" }

func (d *datapathFlag) Set(s string) error {
	v, err := daemon.ParseDatapath(s)
	if err != nil {
		return err
	}
	*d = datapathFlag(v)
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
