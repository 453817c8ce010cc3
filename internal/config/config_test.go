package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pxresp/pxresp/policy"
)

const good = `# two rules
rules:
  - name: calico
    interfaces: ["cali*"]
    gateways: [169.254.1.1]
    targets: [10.244.0.0/16, 192.0.2.7]
    mac: ee:ee:ee:ee:ee:ee
  - interfaces: [tap*, vxlan0]
    mode: route
    targets: 198.18.0.0/15
  - name: lan
    interfaces: veth-a
    proxy: [192.168.77.20]
`

func TestParse(t *testing.T) {
	c, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != 3 || c.Source != "good.yaml" {
		t.Fatalf("rules %d, source %q", len(c.Rules), c.Source)
	}
	calico, route, lan := c.Rules[0], c.Rules[1], c.Rules[2]
	if calico.Name != "calico" || calico.Line != 3 || calico.MAC.String() != "ee:ee:ee:ee:ee:ee" ||
		calico.Policy().Mode() != policy.GatewayMode || len(calico.Policy().Targets()) != 2 {
		t.Errorf("calico rule: %+v", calico)
	}
	if route.Name != "rule 2" || route.Mode != policy.RouteMode || route.MAC != nil ||
		route.Policy().Targets()[0] != netip.MustParsePrefix("198.18.0.0/15") {
		t.Errorf("route rule: %+v", route)
	}
	if lan.Mode != policy.RouteMode || lan.Policy().Mode() != policy.RouteMode ||
		lan.Policy().Targets()[0] != netip.MustParsePrefix("192.168.77.20/32") {
		t.Errorf("proxy rule: %+v", lan)
	}
	if got := strings.Join(c.Globs(), " "); got != "cali* tap* vxlan0 veth-a" {
		t.Errorf("Globs = %q", got)
	}
	for name, want := range map[string]*Rule{"cali0": calico, "tap3": route, "vxlan0": route, "veth-a": lan, "veth-b": nil, "eth0": nil} {
		if got := c.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if !c.HasMode(policy.RouteMode) || !c.HasMode(policy.GatewayMode) {
		t.Error("HasMode")
	}
}

// Overlapping globs are allowed; the first rule wins.
func TestFirstMatchWins(t *testing.T) {
	c, err := Parse("f", []byte("rules:\n- {interfaces: ['cali*'], gateways: [169.254.1.1]}\n- {interfaces: ['*0'], mode: route}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Match("cali0") != c.Rules[0] || c.Match("eth0") != c.Rules[1] {
		t.Error("first match does not win")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "", "f: empty file"},
		{"not a mapping", "- a\n", "f:1: want a mapping"},
		{"bad yaml", "rules:\n  - interfaces: a: b\n", "f:2: invalid YAML: mapping values are not allowed"},
		{"unknown top key", "rule:\n  - {}\n", "f:1: rule: unknown key; want one of rules"},
		{"no rules", "rules: []\n", "f:1: rules: no rules"},
		{"rules not a list", "rules: 3\n", "f:1: rules: want a list"},
		{"rule not a mapping", "rules:\n  - cali*\n", "f:2: rules[0]: want a mapping"},
		{"unknown rule key", "rules:\n  - interfaces: [a]\n    gateway: 169.254.1.1\n", "f:3: rules[0].gateway: unknown key; want one of name, interfaces"},
		{"duplicate key", "rules:\n  - interfaces: [a]\n    gateways: [169.254.1.1]\n    gateways: [169.254.1.2]\n", "f:4: rules[0].gateways: given twice (first at line 3)"},
		{"no interfaces", "rules:\n  - gateways: [169.254.1.1]\n", "f:2: rules[0].interfaces: required"},
		{"bad glob", "rules:\n  - interfaces: [\"cali[\"]\n    gateways: [169.254.1.1]\n", `f:2: rules[0].interfaces[0]: "cali[": bad glob`},
		{"empty interfaces", "rules:\n  - interfaces: []\n    gateways: [169.254.1.1]\n", "f:2: rules[0].interfaces: empty list"},
		{"null gateways", "rules:\n  - interfaces: [a]\n    gateways:\n", "f:3: rules[0].gateways: want a list"},
		{"bad gateway", "rules:\n  - interfaces: [a]\n    gateways:\n      - 169.254.1.1\n      - 169.254.1.300\n", `f:5: rules[0].gateways[1]: "169.254.1.300": not an IPv4 address`},
		{"ipv6 gateway", "rules:\n  - interfaces: [a]\n    gateways: ['fe80::1']\n", `f:3: rules[0].gateways[0]: "fe80::1": not an IPv4 address`},
		{"loopback gateway", "rules:\n  - interfaces: [a]\n    gateways: [127.0.0.1]\n", `f:3: rules[0].gateways[0]: "127.0.0.1": not a unicast address`},
		{"duplicate gateway", "rules:\n  - interfaces: [a]\n    gateways: [169.254.1.1, 169.254.1.1]\n", "f:3: rules[0].gateways[1]: 169.254.1.1 is listed twice"},
		{"bad target", "rules:\n  - interfaces: [a]\n    targets: [10.0.0.0/33]\n", `f:3: rules[0].targets[0]: "10.0.0.0/33": not an IPv4`},
		{"bad mode", "rules:\n  - interfaces: [a]\n    mode: proxy\n", `f:3: rules[0].mode: unknown mode "proxy"`},
		{"bad mac", "rules:\n  - interfaces: [a]\n    gateways: [169.254.1.1]\n    mac: ff:ff:ff:ff:ff:ff\n", `f:4: rules[0].mac: "ff:ff:ff:ff:ff:ff": not a unicast address (multicast or broadcast)`},
		{"nothing to answer", "rules:\n  - interfaces: [a]\n", "f:2: rules[0].gateways: gateway mode needs gateways or targets"},
		{"gateways in route mode", "rules:\n  - interfaces: [a]\n    mode: route\n    gateways: [169.254.1.1]\n", "f:4: rules[0].gateways: not used in route mode"},
		{"proxy and targets", "rules:\n  - interfaces: [a]\n    proxy: [10.0.0.1]\n    targets: [10.0.0.2]\n", "f:3: rules[0].proxy: proxy entries cannot be combined"},
		{"proxy in gateway mode", "rules:\n  - interfaces: [a]\n    mode: gateway\n    proxy: [10.0.0.1]\n", "f:4: rules[0].proxy: proxy entries are answered the way route mode"},
		{"name not a scalar", "rules:\n  - interfaces: [a]\n    name: [x]\n    gateways: [169.254.1.1]\n", "f:3: rules[0].name: want a value"},
		{"duplicate name", "rules:\n  - {name: x, interfaces: [a], gateways: [169.254.1.1]}\n  - {name: x, interfaces: [b], gateways: [169.254.1.1]}\n",
			`f:3: rules[1].name: "x" is already the name of an earlier rule (line 2)`},
		{"same glob twice", "rules:\n  - {interfaces: ['cali*'], gateways: [169.254.1.1]}\n  - {interfaces: ['cali*'], mode: route}\n",
			`f:3: rules[1].interfaces[0]: "cali*" is already served by rule "rule 1" (line 2)`},
		{"shadowed name", "rules:\n  - {interfaces: ['cali*'], gateways: [169.254.1.1]}\n  - {interfaces: [cali0], mode: route}\n",
			`f:3: rules[1].interfaces[0]: "cali0" is already served by rule "rule 1"`},
		{"glob twice in a rule", "rules:\n  - {interfaces: [a, a], gateways: [169.254.1.1]}\n", `f:2: rules[0].interfaces[1]: "a" is listed twice`},
		{"two documents", "rules:\n  - {interfaces: [a], gateways: [169.254.1.1]}\n---\nrules: []\n", "f:3: more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("f", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", c.Rules)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error\n got  %q\n want %q...", err, tt.want)
			}
		})
	}
}

// Inputs near the bounds are refused quickly, with the key.
func TestParseBounds(t *testing.T) {
	var many strings.Builder
	many.WriteString("rules:\n")
	for i := range maxRules + 1 {
		fmt.Fprintf(&many, "- {interfaces: [if%d], gateways: [169.254.1.1]}\n", i)
	}
	var globs strings.Builder
	globs.WriteString("rules:\n")
	for i := range 5 {
		fmt.Fprintf(&globs, "- interfaces: [")
		for j := range 250 {
			fmt.Fprintf(&globs, "r%dif%d,", i, j)
		}
		fmt.Fprintf(&globs, "x%d]\n  gateways: [169.254.1.1]\n", i)
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"too many rules", many.String(), fmt.Sprintf("rules[%d]: more than %d rules", maxRules, maxRules)},
		{"too many globs", globs.String(), "rules[4].interfaces: more than 1024 interface globs in all"},
		{"too many values", "rules:\n- interfaces: [a]\n  targets: [" + strings.Repeat("10.0.0.1,", maxItems) + "10.0.0.2]\n",
			"rules[0].targets: more than 1024 values"},
	} {
		_, err := Parse("f", []byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestParseTooLarge(t *testing.T) {
	_, err := Parse("big", make([]byte, maxSize+1))
	if err == nil || !strings.Contains(err.Error(), "big: file is") {
		t.Errorf("err = %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pxresp.yaml")
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p); err != nil || c.Source != p {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNew(t *testing.T) {
	gw := netip.MustParseAddr("169.254.1.1")
	c, err := New("command line", &Rule{Interfaces: []string{"cali*"}, Gateways: []netip.Addr{gw}})
	if err != nil || c.Rules[0].Policy() == nil || c.Rules[0].Name != "rule 1" {
		t.Fatalf("New: %v", err)
	}
	_, err = New("command line", &Rule{Interfaces: []string{"cali*"}, Mode: policy.RouteMode, Gateways: []netip.Addr{gw}})
	if err == nil || !strings.Contains(err.Error(), "command line: rule 1: gateways: not used in route mode") {
		t.Errorf("route mode with gateways: %v", err)
	}
}

// TestNewNamesBadValues: a rule built in code (the command line's) is
// checked by the same checks as a file's, and the error names the value.
func TestNewNamesBadValues(t *testing.T) {
	gw := netip.MustParseAddr("169.254.1.1")
	for _, c := range []struct {
		rule *Rule
		want string
	}{
		{&Rule{Interfaces: []string{"cali["}, Gateways: []netip.Addr{gw}}, `command line: rule 1: interfaces[0]: "cali[": bad glob`},
		{&Rule{Interfaces: []string{"cali*", ""}, Gateways: []netip.Addr{gw}}, `command line: rule 1: interfaces[1]: "": empty glob`},
		{&Rule{Interfaces: []string{"cali*"}, Gateways: []netip.Addr{gw}, MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}},
			`command line: rule 1: mac: "01:00:5e:00:00:01": not a unicast address`},
		{&Rule{Interfaces: []string{"cali*"}, Gateways: []netip.Addr{gw, netip.MustParseAddr("127.0.0.1")}},
			`command line: rule 1: gateways[1]: "127.0.0.1": not a unicast address`},
		{&Rule{Interfaces: []string{"cali*"}, Targets: []netip.Prefix{netip.MustParsePrefix("::1/128")}},
			`command line: rule 1: targets[0]: "::1/128": not an IPv4 prefix`},
	} {
		if _, err := New("command line", c.rule); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want %q", c.rule, err, c.want)
		}
	}
}

func TestCheckGlob(t *testing.T) {
	for g, want := range map[string]string{"cali*": "", "veth-a": "", "cali[0-9]": "", "": "empty glob", "cali[": "bad glob: syntax error in pattern", `cali\`: "bad glob"} {
		err := CheckGlob(g)
		if want == "" && err != nil || want != "" && (err == nil || !strings.HasPrefix(err.Error(), want)) {
			t.Errorf("CheckGlob(%q) = %v, want %q", g, err, want)
		}
	}
}

// The examples shipped with the project parse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("rules:\n- {interfaces: [a], proxy: 10.0.0.1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz", data)
		if err == nil && len(c.Rules) == 0 {
			t.Fatal("accepted a config without rules")
		}
		if err == nil {
			for _, r := range c.Rules {
				if r.Policy() == nil {
					t.Fatal("rule without policy")
				}
			}
		}
	})
}
