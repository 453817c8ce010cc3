package diag

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// conf is one directory's sysctls, as text ("" leaves the file out).
type conf struct{ proxyARP, forwarding, rpFilter string }

// procSys lays out a /proc/sys with the given conf directories.
func procSys(dirs map[string]conf) fstest.MapFS {
	m := fstest.MapFS{}
	for dir, c := range dirs {
		for name, v := range map[string]string{ProxyARP: c.proxyARP, Forwarding: c.forwarding, RPFilter: c.rpFilter} {
			if v != "" {
				m["net/ipv4/conf/"+dir+"/"+name] = &fstest.MapFile{Data: []byte(v + "\n")}
			}
		}
	}
	return m
}

func checks(fs []Finding) []string {
	var s []string
	for _, f := range fs {
		s = append(s, f.Check)
	}
	return s
}

func TestCheckFS(t *testing.T) {
	good := conf{"0", "1", "0"}
	for _, c := range []struct {
		name     string
		all, dev conf
		hasRoute bool
		want     []string // checks found, in order
		// substrings of the message of each finding, in the same order
		msgs [][]string
	}{
		{name: "all good", all: good, dev: good, hasRoute: true},
		{name: "all good, no route", all: good, dev: good},
		{name: "proxy_arp on the interface", all: good, dev: conf{"1", "1", "0"}, hasRoute: true,
			want: []string{ProxyARP},
			msgs: [][]string{{"cali123: ", "net.ipv4.conf.cali123.proxy_arp=1", "net.ipv4.conf.all.proxy_arp=0", "double replies",
				"set net.ipv4.conf.cali123.proxy_arp=0 and net.ipv4.conf.all.proxy_arp=0, or stop pxresp on cali123"}}},
		{name: "proxy_arp on all only (ORed)", all: conf{"1", "1", "0"}, dev: good, hasRoute: true,
			want: []string{ProxyARP},
			msgs: [][]string{{"net.ipv4.conf.cali123.proxy_arp=0", "net.ipv4.conf.all.proxy_arp=1", "double replies"}}},
		{name: "forwarding off on the interface", all: good, dev: conf{"0", "0", "0"}, hasRoute: true,
			want: []string{Forwarding},
			msgs: [][]string{{"cali123: ", "net.ipv4.conf.cali123.forwarding=0", "will not route", "set net.ipv4.conf.cali123.forwarding=1"}}},
		{name: "forwarding off on all only (the interface's value counts)", all: conf{"0", "0", "0"}, dev: good, hasRoute: true},
		{name: "rp_filter strict on the interface, no route", all: good, dev: conf{"0", "1", "1"},
			want: []string{RPFilter},
			msgs: [][]string{{"cali123: ", "is strict", "net.ipv4.conf.cali123.rp_filter=1", "net.ipv4.conf.all.rp_filter=0", "drops the pod's packets",
				"until its /32 route exists", "ip route add POD-IP/32 dev cali123", "set net.ipv4.conf.cali123.rp_filter=0 and net.ipv4.conf.all.rp_filter=0"}}},
		{name: "rp_filter strict on the interface, route", all: good, dev: conf{"0", "1", "1"}, hasRoute: true},
		{name: "rp_filter strict on all, no route (max)", all: conf{"0", "1", "1"}, dev: good,
			want: []string{RPFilter},
			msgs: [][]string{{"is strict", "net.ipv4.conf.cali123.rp_filter=0", "net.ipv4.conf.all.rp_filter=1"}}},
		{name: "rp_filter loose on all and strict on the interface, no route (max)", all: conf{"0", "1", "2"}, dev: conf{"0", "1", "1"},
			want: []string{RPFilter},
			msgs: [][]string{{"is loose", "without an IPv4 address"}}},
		{name: "rp_filter loose on the interface, no route", all: good, dev: conf{"0", "1", "2"},
			want: []string{RPFilter},
			msgs: [][]string{{"is loose", "net.ipv4.conf.cali123.rp_filter=2", "drops the pod's packets"}}},
		{name: "rp_filter loose, route", all: conf{"0", "1", "2"}, dev: conf{"0", "1", "2"}, hasRoute: true},
		{name: "everything wrong", all: conf{"1", "0", "1"}, dev: conf{"0", "0", "0"},
			want: []string{ProxyARP, Forwarding, RPFilter}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := CheckFS(procSys(map[string]conf{"all": c.all, "cali123": c.dev, "default": good}), "cali123", c.hasRoute)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(checks(got), c.want) {
				t.Fatalf("findings %q, want checks %q", got, c.want)
			}
			for i, subs := range c.msgs {
				for _, s := range subs {
					if !strings.Contains(got[i].Message, s) {
						t.Errorf("finding %s: message %q lacks %q", got[i].Check, got[i].Message, s)
					}
				}
			}
		})
	}
}

func TestCheckFSDottedName(t *testing.T) {
	fsys := procSys(map[string]conf{"all": {"0", "1", "0"}, "eth0.100": {"1", "1", "0"}})
	got, err := CheckFS(fsys, "eth0.100", true)
	if err != nil {
		t.Fatal(err)
	}
	// sysctl(8) needs the slash form for a name with a dot.
	if len(got) != 1 || !strings.Contains(got[0].Message, "set net/ipv4/conf/eth0.100/proxy_arp=0 and net/ipv4/conf/all/proxy_arp=0") {
		t.Errorf("findings %q", got)
	}
}

func TestCheckFSErrors(t *testing.T) {
	ok := conf{"0", "1", "0"}
	for _, c := range []struct {
		name   string
		fsys   fstest.MapFS
		ifname string
		want   []string
	}{
		{"missing interface", procSys(map[string]conf{"all": ok}), "cali123",
			[]string{"interface cali123", "net/ipv4/conf/cali123 not found"}},
		{"missing all", procSys(map[string]conf{"cali123": ok}), "cali123",
			[]string{"net/ipv4/conf/all not found"}},
		{"missing file", procSys(map[string]conf{"all": ok, "cali123": {"0", "", "0"}}), "cali123",
			[]string{"interface cali123", "forwarding"}},
		{"garbage", procSys(map[string]conf{"all": ok, "cali123": {"0", "yes", "0"}}), "cali123",
			[]string{"net/ipv4/conf/cali123/forwarding", `"yes" is not a number`}},
		{"empty name", procSys(map[string]conf{"all": ok}), "", []string{`"" is not an interface name`}},
		{"path in name", procSys(map[string]conf{"all": ok}), "../all", []string{"not an interface name"}},
		{"dot dot", procSys(map[string]conf{"all": ok}), "..", []string{"not an interface name"}},
		{"too long", procSys(map[string]conf{"all": ok}), "cali0123456789ab", []string{"not an interface name"}},
		{"all", procSys(map[string]conf{"all": ok}), "all", []string{`"all" is not an interface`}},
		{"default", procSys(map[string]conf{"all": ok, "default": ok}), "default", []string{`"default" is not an interface`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := CheckFS(c.fsys, c.ifname, true)
			if err == nil {
				t.Fatalf("no error, findings %q", got)
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

// TestCheckMissingInterface reads the real /proc/sys of the test's network
// namespace, which needs no privilege.
func TestCheckMissingInterface(t *testing.T) {
	_, err := Check("nosuchif0", true)
	if err == nil || !strings.Contains(err.Error(), "interface nosuchif0: /proc/sys/net/ipv4/conf/nosuchif0 not found") {
		t.Errorf("error %v, want one naming the interface and the directory", err)
	}
	if _, err := Check("lo", true); err != nil {
		t.Errorf("lo: %v", err)
	}
}
