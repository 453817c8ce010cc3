package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxresp/pxresp/internal/daemon"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

func env(m map[string]string) map[string]string { return m }

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--iface", "cali*", "--iface=tap?", "--gw", "169.254.1.1", "--target", "10.244.0.0/16",
		"--target", "192.0.2.7", "--mac", "02:00:00:00:00:01", "--log-level", "debug", "--log-format", "json"}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.ifaces, " ") != "cali* tap?" || len(o.gateways) != 1 || o.gateways[0] != netip.MustParseAddr("169.254.1.1") {
		t.Errorf("ifaces %v gateways %v", o.ifaces, o.gateways)
	}
	if len(o.targets) != 2 || o.targets[1] != netip.MustParsePrefix("192.0.2.7/32") {
		t.Errorf("targets %v", o.targets)
	}
	if o.mac.String() != "02:00:00:00:00:01" || o.logLevel != slog.LevelDebug || o.logFormat != "json" {
		t.Errorf("mac %v level %v format %v", o.mac, o.logLevel, o.logFormat)
	}
}

func TestParseFlagsEnvironment(t *testing.T) {
	e := env(map[string]string{
		"PXRESP_IFACE":      "cali*,veth*",
		"PXRESP_GW":         "169.254.1.1",
		"PXRESP_LOG_LEVEL":  "warn",
		"PXRESP_LOG_FORMAT": "json",
		"PXRESP_VERSION":    "v1.2.3", // not a setting: must not turn the daemon into --version
	})
	o, err := parseFlags(nil, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.ifaces, " ") != "cali* veth*" || len(o.gateways) != 1 || o.logLevel != slog.LevelWarn || o.logFormat != "json" || o.version {
		t.Errorf("from environment: %+v", o)
	}
	// The command line wins over the environment, flag by flag.
	o, err = parseFlags([]string{"--iface", "tap*", "--log-level", "error"}, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.ifaces, " ") != "tap*" || o.logLevel != slog.LevelError || len(o.gateways) != 1 {
		t.Errorf("command line over environment: %+v", o)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	base := []string{"--iface", "cali*", "--gw", "169.254.1.1"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no iface", []string{"--gw", "169.254.1.1"}, nil, "--iface is required"},
		{"nothing to answer", []string{"--iface", "cali*"}, nil, "--gw or --target is required"},
		{"bad gw", []string{"--iface", "cali*", "--gw", "300.1.1.1"}, nil, `invalid value "300.1.1.1" for flag --gw`},
		{"IPv6 gw", []string{"--iface", "cali*", "--gw", "fe80::1"}, nil, "flag --gw: not an IPv4 address"},
		{"loopback gw", []string{"--iface", "cali*", "--gw", "127.0.0.1"}, nil, "invalid value \"127.0.0.1\" for flag --gw: not a unicast"},
		{"empty gw", []string{"--iface", "cali*", "--gw", ""}, nil, "flag --gw: empty value"},
		{"bad CIDR", append(base, "--target", "10.0.0.0/33"), nil, `invalid value "10.0.0.0/33" for flag --target`},
		{"bad target", append(base, "--target", "nope"), nil, "flag --target: not an IPv4 address or CIDR prefix"},
		{"multicast target", append(base, "--target", "224.0.0.1"), nil, "invalid value \"224.0.0.1\" for flag --target: not a unicast"},
		{"bad glob", []string{"--iface", "cali[", "--gw", "169.254.1.1"}, nil, `invalid value "cali[" for flag --iface: bad glob`},
		{"bad MAC", append(base, "--mac", "zz"), nil, `invalid value "zz" for flag --mac`},
		{"long MAC", append(base, "--mac", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"), nil, "flag --mac: not a 6-byte"},
		{"multicast MAC", append(base, "--mac", "01:00:5e:00:00:01"), nil, "flag --mac: not a unicast"},
		{"zero MAC", append(base, "--mac", "00:00:00:00:00:00"), nil, "flag --mac: not a unicast"},
		{"bad log level", append(base, "--log-level", "loud"), nil, "flag --log-level"},
		{"bad log format", append(base, "--log-format", "xml"), nil, "flag --log-format"},
		{"unknown flag", append(base, "--bogus"), nil, "unknown flag: --bogus"},
		{"single dash", []string{"-iface", "cali*", "--gw", "169.254.1.1"}, nil, "unknown flag: -iface: spell it --iface"},
		{"single dash with value", append(base, "-rate-limit=5"), nil, "unknown flag: -rate-limit: spell it --rate-limit"},
		{"unknown variable", base, map[string]string{"PXRESP_METRIC_ADDR": "127.0.0.1:9597"}, "unknown environment variable PXRESP_METRIC_ADDR"},
		{"loopback only", []string{"--iface", "lo", "--gw", "169.254.1.1"}, nil, `invalid value "lo" for flag --iface: the loopback interface has no ARP`},
		{"metrics port not a number", append(base, "--metrics-addr", ":notaport"), nil, `invalid value ":notaport" for flag --metrics-addr: port "notaport" is not a number`},
		{"metrics port too big", append(base, "--metrics-addr", "127.0.0.1:65536"), nil, `flag --metrics-addr: port "65536"`},
		{"metrics host", append(base, "--metrics-addr", "no such host:80"), nil, `flag --metrics-addr: host "no such host"`},
		{"web config without metrics", append(base, "--web.config.file", "testdata/web-config.yml"), nil, "--web.config.file needs --metrics-addr"},
		{"missing web config", append(base, "--metrics-addr", ":9597", "--web.config.file", "/nonexistent/web.yml"), nil, "--web.config.file: /nonexistent/web.yml:"},
		{"bad web config", append(base, "--metrics-addr", ":9597", "--web.config.file", "testdata/two-rules.yaml"), nil, "--web.config.file: testdata/two-rules.yaml:"},
		{"stray argument", append(base, "extra"), nil, `unexpected argument "extra"`},
		{"bad env", []string{"--iface", "cali*"}, map[string]string{"PXRESP_GW": "x"}, `invalid value "x" for PXRESP_GW (flag --gw)`},
		{"negative rate limit", append(base, "--rate-limit", "-1"), nil, `invalid value "-1" for flag --rate-limit: want a whole number`},
		{"fractional rate limit", append(base, "--rate-limit=2.5"), nil, `invalid value "2.5" for flag --rate-limit`},
		{"rate limit out of range", append(base, "--rate-limit", "99999999999999999999"), nil, "flag --rate-limit"},
		{"empty rate limit", append(base, "--rate-limit="), nil, `invalid value "" for flag --rate-limit`},
		{"bad rate limit env", base, map[string]string{"PXRESP_RATE_LIMIT": "-5"}, `invalid value "-5" for PXRESP_RATE_LIMIT (flag --rate-limit)`},
		{"bad datapath", append(base, "--datapath", "bpf"), nil, `invalid value "bpf" for flag --datapath: want auto, packet or ebpf`},
		{"empty datapath", append(base, "--datapath="), nil, `invalid value "" for flag --datapath: want auto, packet or ebpf`},
		{"datapath in capitals", append(base, "--datapath", "EBPF"), nil, `invalid value "EBPF" for flag --datapath`},
		{"bad datapath env", base, map[string]string{"PXRESP_DATAPATH": "xdp"}, `invalid value "xdp" for PXRESP_DATAPATH (flag --datapath)`},
		{"bad mode", append(base, "--mode", "proxy"), nil, `invalid value "proxy" for flag --mode: want gateway or route`},
		{"gw in route mode", append(base, "--mode", "route"), nil, "--gw cannot be used with --mode route"},
		{"config and iface", []string{"--config", "x.yaml", "--iface", "cali*", "--mac", "02:00:00:00:00:01"}, nil,
			"--config cannot be combined with --iface, --mac: put them in the file's rules"},
		{"config and env gw", []string{"--config", "x.yaml"}, map[string]string{"PXRESP_GW": "169.254.1.1"}, "--config cannot be combined with --gw"},
		{"missing config", []string{"--config", "/nonexistent/pxresp.yaml"}, nil, "config: open /nonexistent/pxresp.yaml: no such file"},
		{"bad metrics addr", append(base, "--metrics-addr", "9597"), nil, `invalid value "9597" for flag --metrics-addr: want host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, env(tt.env), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, env(tt.env), &stdout, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2 (stderr %q)", code, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), "pxresp: ") || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr %q, want one line starting with pxresp:", stderr.String())
			}
		})
	}
}

func TestParseFlagsModeAndConfig(t *testing.T) {
	o, err := parseFlags([]string{"--iface", "veth*", "--mode", "route", "--target", "192.168.0.0/16", "--dry-run", "--metrics-addr", ":9597"}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.mode != policy.RouteMode || !o.dryRun || o.metricsAddr != ":9597" || len(o.cfg.Rules) != 1 ||
		o.cfg.Rules[0].Policy().Mode() != policy.RouteMode || o.cfg.Source != "command line" {
		t.Errorf("route mode options %+v", o)
	}
	file := twoRulesFile
	o, err = parseFlags([]string{"--config", file}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.configPath != file || len(o.cfg.Rules) != 2 || o.cfg.Source != file {
		t.Errorf("config options %+v", o)
	}
	// A bad file is a usage error: exit 2, file:line: key.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n- {interfaces: [a], gateways: [1.2.3]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--config", bad}, env(nil), &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), bad+`:2: rules[0].gateways[0]: "1.2.3": not an IPv4 address`) {
		t.Errorf("bad config: code %d, stderr %q", code, stderr.String())
	}
}

// twoRulesFile holds a calico rule (gateway mode) and a taps rule (route
// mode, --mac).
const twoRulesFile = "testdata/two-rules.yaml"

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := twoRulesFile
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n- {interfaces: [a], gateways: [169.254.1.1], colour: red}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{"check-config", good}, 0, good + ": valid, 2 rule(s)\n  calico (line 2): interfaces cali*, gateway mode: gateways [169.254.1.1]", ""},
		{[]string{"check-config", good}, 0, "taps (line 3): interfaces tap*, route mode: addresses routed out another interface, answering with 02:00:00:00:00:aa", ""},
		{[]string{"check-config", bad}, 2, "", bad + ":2: rules[0].colour: unknown key"},
		{[]string{"check-config"}, 2, "", "usage: pxresp check-config FILE"},
		{[]string{"check-config", good, bad}, 2, "", "usage: pxresp check-config FILE"},
		{[]string{"check-config", "--help"}, 0, "Usage: pxresp check-config FILE", ""},
		{[]string{"check-config", "--bogus", good}, 2, "", "unknown flag: --bogus"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, env(nil), &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.errs) {
			t.Errorf("%v: code %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", tt.args, code, tt.code,
				stdout.String(), tt.stdout, stderr.String(), tt.errs)
		}
	}
}

func TestParseFlagsRateLimit(t *testing.T) {
	base := []string{"--iface", "cali*", "--gw", "169.254.1.1"}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"default", base, nil, responder.DefaultRateLimit},
		{"flag", append(base, "--rate-limit", "200"), nil, 200},
		{"zero disables", append(base, "--rate-limit=0"), nil, 0},
		{"environment", base, map[string]string{"PXRESP_RATE_LIMIT": "50"}, 50},
		{"environment zero", base, map[string]string{"PXRESP_RATE_LIMIT": "0"}, 0},
		{"flag over environment", append(base, "--rate-limit", "7"), map[string]string{"PXRESP_RATE_LIMIT": "50"}, 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, env(tt.env), nil)
			if err != nil {
				t.Fatal(err)
			}
			if o.rateLimit != tt.want {
				t.Errorf("rate limit %d, want %d", o.rateLimit, tt.want)
			}
		})
	}
	if responder.DefaultRateLimit != 1000 {
		t.Errorf("default rate limit %d: README says 1000", responder.DefaultRateLimit)
	}
}

func TestParseFlagsDatapath(t *testing.T) {
	base := []string{"--iface", "cali*", "--gw", "169.254.1.1"}
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want daemon.Datapath
	}{
		{"default", base, nil, daemon.Auto},
		{"packet", append(base, "--datapath", "packet"), nil, daemon.Packet},
		{"ebpf", append(base, "--datapath=ebpf"), nil, daemon.EBPF},
		{"auto", append(base, "--datapath", "auto"), nil, daemon.Auto},
		{"environment", base, map[string]string{"PXRESP_DATAPATH": "packet"}, daemon.Packet},
		{"flag over environment", append(base, "--datapath", "ebpf"), map[string]string{"PXRESP_DATAPATH": "packet"}, daemon.EBPF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, env(tt.env), nil)
			if err != nil {
				t.Fatal(err)
			}
			if o.datapath != tt.want {
				t.Errorf("datapath %q, want %q", o.datapath, tt.want)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, env(nil), &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "pxresp ") {
		t.Errorf("--version: code %d, stdout %q", code, stdout.String())
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"status", "--help"}, {"check-config", "--help"}} {
		stdout.Reset()
		stderr.Reset()
		if code := run(args, env(nil), &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "Usage: pxresp") || stderr.Len() > 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
}

// TestHelpConventions: --help spells every flag with two dashes and shows
// its environment variable beside it, and every variable it shows is one
// that pxresp accepts.
func TestHelpConventions(t *testing.T) {
	for _, cmd := range [][]string{{"--help"}, {"status", "--help"}} {
		var stdout, stderr bytes.Buffer
		run(cmd, env(nil), &stdout, &stderr)
		flags := 0
		for _, line := range strings.Split(stdout.String(), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || !strings.HasPrefix(f[0], "-") {
				continue
			}
			flags++
			if !strings.HasPrefix(f[0], "--") && !strings.HasPrefix(f[0], "-h") {
				t.Errorf("%v: single-dash flag in %q", cmd, line)
			}
			name := strings.TrimPrefix(f[0], "--")
			if name == "version" {
				continue
			}
			want := envName(name)
			if cmd[0] == "status" {
				want = statusEnvName(name)
			}
			if !strings.Contains(line, "[$"+want+"]") {
				t.Errorf("%v: %q does not show $%s", cmd, line, want)
			}
			// The variable is accepted: it sets nothing unknown.
			if _, err := parseFlags([]string{"--iface", "cali*", "--gw", "169.254.1.1"}, map[string]string{want: ""}, nil); err != nil {
				t.Errorf("%s is refused: %v", want, err)
			}
		}
		if flags < 3 {
			t.Errorf("%v: %d flags in\n%s", cmd, flags, stdout.String())
		}
	}
}

func TestStatusUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"status", "--addr", "127.0.0.1:9597"}, nil, `invalid value "127.0.0.1:9597" for flag --addr: want a URL`},
		{[]string{"status", "--addr", "http://127.0.0.1:notaport"}, nil, `invalid value "http://127.0.0.1:notaport" for flag --addr`},
		{[]string{"status", "--bogus"}, nil, "unknown flag: --bogus"},
		{[]string{"status", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"status"}, map[string]string{"PXRESP_STATUS_ADDR": "ftp://x"}, `invalid value "ftp://x" for flag --addr`},
		{[]string{"status", "--ca-file", "/nonexistent/ca.pem"}, nil, "--ca-file: open /nonexistent/ca.pem"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, env(tt.env), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%v: code %d, stderr %q, want exit 2 and one line with %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}
