package scenario

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/policy"
)

func TestRegistry(t *testing.T) {
	want := []string{"pod-pod", "pod-host", "snat", "broken-l2", "broken-l2-proxy", "cross-node"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for _, s := range All() {
		got, ok := Lookup(s.Name)
		if !ok || got != s {
			t.Errorf("Lookup(%q) = %v, %v", s.Name, got, ok)
		}
		if s.build == nil || s.Title == "" {
			t.Errorf("%s: incomplete: %+v", s.Name, s)
		}
		// The text gives the path and what pxresp answers where.
		for _, w := range []string{"pxresp", "who-has", "Path"} {
			if !strings.Contains(s.Text, w) && s.Name != "broken-l2-proxy" {
				t.Errorf("%s: text lacks %q", s.Name, w)
			}
		}
		for i, l := range strings.Split(s.Text, "\n") {
			if len([]rune(l)) > 90 {
				t.Errorf("%s: text line %d is %d characters long: %q", s.Name, i+1, len([]rune(l)), l)
			}
		}
	}
	if _, ok := Lookup("node"); ok {
		t.Error(`Lookup("node"): the demo's default is not a scenario here`)
	}
}

// The proxy-entry scenario's config file is what internal/config accepts,
// with the entries the kernel reference uses.
func TestProxyConfig(t *testing.T) {
	cfg, err := config.Parse("broken-l2-proxy.yaml", []byte(proxyConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netip.Addr{"vethA": l2B.Addr(), "vethB": l2A.Addr()}
	if len(cfg.Rules) != len(want) {
		t.Fatalf("%d rules, want %d", len(cfg.Rules), len(want))
	}
	for _, r := range cfg.Rules {
		if len(r.Interfaces) != 1 || len(r.Proxy) != 1 || r.Mode != policy.RouteMode {
			t.Errorf("rule %s: %+v", r.Name, r)
			continue
		}
		if w := want[r.Interfaces[0]]; r.Proxy[0] != w {
			t.Errorf("rule %s: proxy %v on %s, want %v", r.Name, r.Proxy, r.Interfaces[0], w)
		}
	}
}

func TestParseCounter(t *testing.T) {
	ipt := `Chain POSTROUTING (policy ACCEPT 3 packets, 252 bytes)
    pkts      bytes target     prot opt in     out     source               destination
       2      168 MASQUERADE  0    --  *      *       198.19.1.0/24        0.0.0.0/0
`
	if n, err := parseCounter("iptables", ipt); err != nil || n != 2 {
		t.Errorf("iptables: %d, %v", n, err)
	}
	nft := `table ip pxresp_snat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 198.19.1.0/24 counter packets 5 bytes 420 masquerade
	}
}
`
	if n, err := parseCounter("nft", nft); err != nil || n != 5 {
		t.Errorf("nft: %d, %v", n, err)
	}
	if _, err := parseCounter("iptables", "Chain POSTROUTING\n pkts bytes target\n"); err == nil {
		t.Error("iptables without the rule: no error")
	}
	if _, err := parseCounter("nft", "table ip x {}"); err == nil {
		t.Error("nft without the rule: no error")
	}
}

func TestPxrespArgs(t *testing.T) {
	a := &Answerer{Args: []string{"--mode", "route"}}
	if got := a.PxrespArgs(""); !slices.Equal(got, []string{"--mode", "route"}) {
		t.Errorf("no config: %q", got)
	}
	if got := a.PxrespArgs("/tmp/x.yaml"); !slices.Equal(got, []string{"--mode", "route", "--config", "/tmp/x.yaml"}) {
		t.Errorf("config: %q", got)
	}
	if !slices.Equal(a.Args, []string{"--mode", "route"}) {
		t.Errorf("PxrespArgs changed Args: %q", a.Args)
	}
	if p, err := a.WriteConfig(t.TempDir()); p != "" || err != nil {
		t.Errorf("WriteConfig without config = %q, %v", p, err)
	}
}

func TestPingArgs(t *testing.T) {
	a := netip.MustParseAddr("10.244.0.3")
	if got := strings.Join(PingArgs(a, true), " "); got != "ping -n -c3 -i0.2 -W2 10.244.0.3" {
		t.Errorf("want reply: %s", got)
	}
	if got := strings.Join(PingArgs(a, false), " "); got != "ping -n -c1 -W1 10.244.0.3" {
		t.Errorf("want none: %s", got)
	}
}
