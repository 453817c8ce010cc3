package ifwatch

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
)

// link describes a synthetic link; build turns it into a netlink.Link.
type link struct {
	index  int
	name   string
	mac    string
	down   bool
	raw    uint32 // extra IFF_* flags
	encap  string // "" = "ether"
	master int
}

func (l link) build() netlink.Link {
	raw := l.raw
	var flags net.Flags
	if !l.down {
		raw |= unix.IFF_UP
		flags |= net.FlagUp
	}
	encap := l.encap
	if encap == "" {
		encap = "ether"
	}
	mac := l.mac
	if mac == "" {
		mac = fmt.Sprintf("02:00:00:00:00:%02x", l.index)
	}
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{
		Index:        l.index,
		Name:         l.name,
		HardwareAddr: mustMAC(mac),
		Flags:        flags,
		RawFlags:     raw,
		EncapType:    encap,
		MasterIndex:  l.master,
	}}
}

// want returns the Link a Watcher reports for l (without OnLink).
func (l link) want() Link {
	return Link{Index: l.index, Name: l.name, MAC: l.build().Attrs().HardwareAddr, Up: !l.down}
}

func newLink(l link) *netmon.Message {
	return &netmon.Message{Type: unix.RTM_NEWLINK, Link: l.build()}
}

func delLink(l link) *netmon.Message {
	return &netmon.Message{Type: unix.RTM_DELLINK, Link: l.build()}
}

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// route returns an IPv4 unicast main-table route to cidr out index.
func route(index int, cidr string) netmon.Route {
	return netmon.Route{
		Family: unix.AF_INET,
		Table:  unix.RT_TABLE_MAIN,
		Type:   unix.RTN_UNICAST,
		Dst:    netip.MustParsePrefix(cidr),
		OIF:    index,
	}
}

func routeMsg(typ, flags uint16, r netmon.Route) *netmon.Message {
	return &netmon.Message{Type: typ, Flags: flags, Family: uint8(r.Family), Route: &r}
}

func newRoute(r netmon.Route) *netmon.Message {
	return routeMsg(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, r)
}

func replaceRoute(r netmon.Route) *netmon.Message {
	return routeMsg(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, r)
}

func delRoute(r netmon.Route) *netmon.Message { return routeMsg(unix.RTM_DELROUTE, 0, r) }

// globs returns a selector that serves a name under the first of gs that
// matches it (path.Match), the rule being the glob itself.
func globs(gs ...string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, g := range gs {
			if ok, _ := path.Match(g, name); ok {
				return g, true
			}
		}
		return "", false
	}
}

// listing returns a netmon.Listing of links and routes.
func listing(links []link, routes ...netmon.Route) *netmon.Listing {
	l := &netmon.Listing{Routes: routes}
	for _, x := range links {
		l.Links = append(l.Links, x.build())
	}
	return l
}

func prefixes(s ...string) []netip.Prefix {
	var p []netip.Prefix
	for _, x := range s {
		p = append(p, netip.MustParsePrefix(x))
	}
	return p
}

func withOnLink(l Link, p ...string) Link {
	l.OnLink = prefixes(p...)
	return l
}

// Events under the rule "cali*", the tests' usual selector; ruled
// changes the rule.
func attach(l Link) Event[string] { return Event[string]{Kind: Attach, Link: l, Rule: "cali*"} }
func update(l Link) Event[string] { return Event[string]{Kind: Update, Link: l, Rule: "cali*"} }
func detach(l Link) Event[string] { return Event[string]{Kind: Detach, Link: l, Rule: "cali*"} }

func ruled(e Event[string], rule string) Event[string] {
	e.Rule = rule
	return e
}

func fmtEvent(e Event[string]) string {
	return fmt.Sprintf("%v{%d %q %v up=%v onlink=%v rule=%q}", e.Kind, e.Link.Index, e.Link.Name, e.Link.MAC, e.Link.Up, e.Link.OnLink, e.Rule)
}

func eventsString(evs []Event[string]) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmtEvent(e))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func TestResyncFlag(t *testing.T) {
	s := newState(globs("cali*"))
	a := link{index: 5, name: "caliA"}
	for _, ev := range s.reconcile(listing([]link{a})) {
		if !ev.Resync {
			t.Errorf("event from a listing without Resync: %+v", ev)
		}
	}
	for _, ev := range s.apply(newLink(link{index: 5, name: "caliA", down: true})) {
		if ev.Resync {
			t.Errorf("event from a notification with Resync: %+v", ev)
		}
	}
	for _, ev := range s.reselect(globs("caliA")) {
		if ev.Resync {
			t.Errorf("event from a selector change with Resync: %+v", ev)
		}
	}
}

func checkEvents(t *testing.T, what string, got, want []Event[string]) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Kind == want[i].Kind && got[i].Link.equal(want[i].Link) && got[i].Rule == want[i].Rule
	}
	if !ok {
		t.Errorf("%s:\n got  %s\n want %s", what, eventsString(got), eventsString(want))
	}
}

func TestSelection(t *testing.T) {
	cases := []struct {
		name  string
		globs []string
		link  link
		want  bool
	}{
		{"glob match", []string{"cali*"}, link{index: 2, name: "cali12ab"}, true},
		{"no match", []string{"cali*"}, link{index: 2, name: "eth0"}, false},
		{"second glob", []string{"cali*", "tap?"}, link{index: 2, name: "tap0"}, true},
		{"character class", []string{"cali[AB]"}, link{index: 2, name: "caliC"}, false},
		{"down link is attached", []string{"cali*"}, link{index: 2, name: "caliA", down: true}, true},
		{"loopback", []string{"*"}, link{index: 1, name: "lo", raw: unix.IFF_LOOPBACK, encap: "loopback"}, false},
		{"loopback flag alone", []string{"*"}, link{index: 1, name: "lo", raw: unix.IFF_LOOPBACK}, false},
		{"NOARP", []string{"cali*"}, link{index: 2, name: "caliA", raw: unix.IFF_NOARP}, false},
		{"bridge-enslaved", []string{"cali*"}, link{index: 2, name: "caliA", master: 9}, false},
		{"non-ether", []string{"cali*"}, link{index: 2, name: "caliA", encap: "none"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sel := globs(c.globs...)
			s := newState(sel)
			var want []Event[string]
			if c.want {
				rule, _ := sel(c.link.name)
				want = []Event[string]{ruled(attach(c.link.want()), rule)}
			}
			checkEvents(t, "NEWLINK", s.apply(newLink(c.link)), want)
		})
	}
}

// The selector is the one judge of selection: its rule goes with every
// event, and a rename that changes the rule is an Update.
func TestSelectorRules(t *testing.T) {
	s := newState(globs("caliA*", "cali*", "tap[0-9]"))
	a := link{index: 5, name: "caliA1"}
	aB := link{index: 5, name: "caliB1"}
	tap := link{index: 6, name: "tap3"}
	tapOut := link{index: 6, name: "tap10"}
	checkEvents(t, "first rule", s.apply(newLink(a)), []Event[string]{ruled(attach(a.want()), "caliA*")})
	checkEvents(t, "rename to the second rule", s.apply(newLink(aB)), []Event[string]{ruled(update(aB.want()), "cali*")})
	checkEvents(t, "third rule", s.apply(newLink(tap)), []Event[string]{ruled(attach(tap.want()), "tap[0-9]")})
	checkEvents(t, "rename out of every rule", s.apply(newLink(tapOut)), []Event[string]{ruled(detach(tap.want()), "tap[0-9]")})
	checkEvents(t, "a selector that serves nothing", s.reselect(func(string) (string, bool) { return "", false }),
		[]Event[string]{detach(aB.want())})
	checkEvents(t, "nothing attached", s.apply(newLink(a)), nil)
}

func TestStateSequences(t *testing.T) {
	a := link{index: 5, name: "caliA", mac: "ee:ee:ee:ee:ee:ee"}
	b := link{index: 6, name: "caliB"}
	other := link{index: 7, name: "eth0"}
	aDown := a
	aDown.down = true
	aMAC := a
	aMAC.mac = "02:aa:bb:cc:dd:ee"
	aRenamed := a
	aRenamed.name = "caliA2"
	aOut := a
	aOut.name = "xA"
	aRunning := a
	aRunning.raw = unix.IFF_RUNNING | unix.IFF_LOWER_UP
	aNoARP := a
	aNoARP.raw = unix.IFF_NOARP
	aEnslaved := a
	aEnslaved.master = 9

	r1 := route(5, "10.244.0.2/32")
	r1metric := r1
	r1metric.Priority = 100
	r2 := route(5, "10.244.0.0/26")
	r3 := route(5, "10.244.1.0/24")
	r1b := route(6, "10.244.0.2/32")
	multipath := route(0, "10.0.0.0/8")
	v6 := route(5, "fd00::/64")
	v6.Family = unix.AF_INET6
	local := route(5, "10.244.0.9/32")
	local.Table = unix.RT_TABLE_LOCAL
	local.Type = unix.RTN_LOCAL
	otherTable := route(5, "10.244.0.9/32")
	otherTable.Table = 100
	blackhole := route(0, "10.244.0.9/32")
	blackhole.Type = unix.RTN_BLACKHOLE
	cloned := route(5, "10.244.0.9/32")
	cloned.Flags = unix.RTM_F_CLONED
	def := route(5, "0.0.0.0/0") // the default route: no RTA_DST

	type step struct {
		in   *netmon.Message
		want []Event[string]
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"attach once per ifindex", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(a), nil},
			{newLink(aRunning), nil}, // flags outside Link
			{newLink(b), []Event[string]{attach(b.want())}},
		}},
		{"non-matching link ignored", []step{
			{newLink(other), nil},
			{delLink(other), nil},
		}},
		{"rename within, out of and into the glob", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aRenamed), []Event[string]{update(aRenamed.want())}},
			{newLink(aOut), []Event[string]{detach(aRenamed.want())}},
			{newLink(aOut), nil},
			{newLink(a), []Event[string]{attach(a.want())}},
		}},
		{"MAC change", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aMAC), []Event[string]{update(aMAC.want())}},
		}},
		{"down and up", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aDown), []Event[string]{update(aDown.want())}},
			{newLink(aDown), nil},
			{newLink(a), []Event[string]{update(a.want())}},
		}},
		{"delete, unknown delete", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{delLink(b), nil},
			{delLink(a), []Event[string]{detach(a.want())}},
			{delLink(a), nil},
		}},
		{"NOARP and master detach, clearing them attaches", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aNoARP), []Event[string]{detach(a.want())}},
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aEnslaved), []Event[string]{detach(a.want())}},
			{newLink(a), []Event[string]{attach(a.want())}},
		}},
		{"bridge port notifications ignored", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{func() *netmon.Message { u := delLink(a); u.Family = unix.AF_BRIDGE; return u }(), nil},
			{func() *netmon.Message { u := newLink(aEnslaved); u.Family = unix.AF_BRIDGE; return u }(), nil},
		}},
		{"route add and delete", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newRoute(r1), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newRoute(r1), nil},
			{newRoute(r3), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32", "10.244.1.0/24"))}},
			{newRoute(r2), []Event[string]{update(withOnLink(a.want(), "10.244.0.0/26", "10.244.0.2/32", "10.244.1.0/24"))}},
			{delRoute(r3), []Event[string]{update(withOnLink(a.want(), "10.244.0.0/26", "10.244.0.2/32"))}},
			{delRoute(r2), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{delRoute(r1), []Event[string]{update(a.want())}},
			{delRoute(r1), nil},
		}},
		{"same destination twice", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newRoute(r1), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newRoute(r1metric), nil},
			{delRoute(r1), nil},
			{delRoute(r1metric), []Event[string]{update(a.want())}},
		}},
		{"routes before attach", []step{
			{newRoute(r1), nil},
			{newRoute(def), nil},
			{newLink(a), []Event[string]{attach(withOnLink(a.want(), "0.0.0.0/0", "10.244.0.2/32"))}},
		}},
		{"routes kept while detached", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(aOut), []Event[string]{detach(a.want())}},
			{newRoute(r1), nil},
			{newLink(a), []Event[string]{attach(withOnLink(a.want(), "10.244.0.2/32"))}},
		}},
		{"replace moves a route to another link", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newLink(b), []Event[string]{attach(b.want())}},
			{newRoute(r1), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{replaceRoute(r1b), []Event[string]{update(a.want()), update(withOnLink(b.want(), "10.244.0.2/32"))}},
			{replaceRoute(r1b), nil},
		}},
		{"down flushes routes", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newRoute(r1), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newLink(aDown), []Event[string]{update(aDown.want())}},
			{newLink(a), []Event[string]{update(a.want())}},
		}},
		{"link created down keeps routes seen first", []step{
			{newRoute(r1), nil},
			{newLink(aDown), []Event[string]{attach(withOnLink(aDown.want(), "10.244.0.2/32"))}},
		}},
		{"delete forgets routes", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newRoute(r1), []Event[string]{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{delLink(a), []Event[string]{detach(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newLink(a), []Event[string]{attach(a.want())}},
		}},
		{"ignored routes", []step{
			{newLink(a), []Event[string]{attach(a.want())}},
			{newRoute(multipath), nil},
			{newRoute(v6), nil},
			{newRoute(local), nil},
			{newRoute(otherTable), nil},
			{newRoute(blackhole), nil},
			{newRoute(cloned), nil},
			{newRoute(route(other.index, "10.9.0.0/16")), nil},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newState(globs("cali*"))
			for i, st := range c.steps {
				checkEvents(t, fmt.Sprintf("step %d", i), s.apply(st.in), st.want)
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "caliB"}
	c := link{index: 7, name: "caliC"}
	d := link{index: 8, name: "caliD"}
	e := link{index: 9, name: "eth0"}
	aMAC := a
	aMAC.mac = "02:aa:bb:cc:dd:ee"
	cOut := c
	cOut.name = "xC"

	s := newState(globs("cali*"))
	checkEvents(t, "initial", s.reconcile(&netmon.Listing{
		Links:  []netlink.Link{a.build(), b.build(), c.build(), e.build()},
		Routes: []netmon.Route{route(6, "10.244.0.6/32")},
	}), []Event[string]{attach(a.want()), attach(withOnLink(b.want(), "10.244.0.6/32")), attach(c.want())})

	// During a gap: b was deleted, a changed MAC, c left the glob, d
	// appeared, and a gained a route.
	checkEvents(t, "after gap", s.reconcile(&netmon.Listing{
		Links:  []netlink.Link{aMAC.build(), cOut.build(), d.build(), e.build()},
		Routes: []netmon.Route{route(5, "10.244.0.5/32")},
	}), []Event[string]{
		detach(withOnLink(b.want(), "10.244.0.6/32")),
		update(withOnLink(aMAC.want(), "10.244.0.5/32")),
		detach(c.want()),
		attach(d.want()),
	})

	// Nothing changed, yet every attached link gets an Update: the caller
	// re-checks what a gap may have broken unseen (a move out and back).
	checkEvents(t, "same again", s.reconcile(&netmon.Listing{
		Links:  []netlink.Link{aMAC.build(), cOut.build(), d.build(), e.build()},
		Routes: []netmon.Route{route(5, "10.244.0.5/32")},
	}), []Event[string]{
		update(withOnLink(aMAC.want(), "10.244.0.5/32")),
		update(d.want()),
	})

	// A route the listing no longer shows is forgotten.
	checkEvents(t, "route gone", s.reconcile(&netmon.Listing{
		Links: []netlink.Link{aMAC.build(), d.build()},
	}), []Event[string]{update(aMAC.want()), update(d.want())})
}

func TestEventsDoNotAliasState(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	s := newState(globs("cali*"))
	l := a.build()
	evs := s.apply(&netmon.Message{Type: unix.RTM_NEWLINK, Link: l})
	l.Attrs().HardwareAddr[0] = 0xff // the notification's buffer is reused
	evs[0].Link.MAC[1] = 0xff
	evs = s.apply(newRoute(route(5, "10.244.0.2/32")))
	evs[0].Link.OnLink[0] = netip.MustParsePrefix("10.0.0.0/8")
	evs[0].Link.MAC[2] = 0xff

	checkEvents(t, "unchanged link", s.apply(newLink(a)), nil)
	checkEvents(t, "detach", s.apply(delLink(a)), []Event[string]{detach(withOnLink(a.want(), "10.244.0.2/32"))})
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Attach: "attach", Update: "update", Detach: "detach", 0: "kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// reselect re-evaluates every known link under a new selector, without a
// listing, keeping routes; deleted links stay forgotten.
func TestReselect(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "tap1"}
	c := link{index: 7, name: "caliC"}
	eth := link{index: 8, name: "eth0"}
	noarp := link{index: 9, name: "caliN", raw: unix.IFF_NOARP}
	gone := link{index: 10, name: "caliG"}
	aOn := withOnLink(a.want(), "10.244.0.5/32")
	bOn := withOnLink(b.want(), "10.0.0.6/32")
	cases := []struct {
		name string
		sel  func(string) (string, bool)
		want []Event[string]
	}{
		{"same rules: nothing", globs("cali*"), nil},
		{"new rules", globs("caliA", "tap*"), []Event[string]{
			ruled(update(aOn), "caliA"), ruled(attach(bOn), "tap*"), detach(c.want()),
		}},
		{"built-in exclusions stay", globs("*"), []Event[string]{
			ruled(update(aOn), "*"), ruled(attach(bOn), "*"), ruled(update(c.want()), "*"), ruled(attach(eth.want()), "*"),
		}},
		{"nothing served", globs(), []Event[string]{detach(aOn), detach(c.want())}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newState(globs("cali*"))
			checkEvents(t, "listing", s.reconcile(listing([]link{a, b, c, eth, noarp, gone},
				route(5, "10.244.0.5/32"), route(6, "10.0.0.6/32"))),
				[]Event[string]{attach(aOn), attach(c.want()), attach(gone.want())})
			checkEvents(t, "delete", s.apply(delLink(gone)), []Event[string]{detach(gone.want())})
			checkEvents(t, "reselect", s.reselect(tc.sel), tc.want)
			checkEvents(t, "reselect again", s.reselect(tc.sel), nil)
		})
	}
}

// TestSkipNotes: every link that is not selected is noted with its reason,
// once per change of reason or name, however many notifications repeat it.
func TestSkipNotes(t *testing.T) {
	steps := []struct {
		msg  *netmon.Message
		want string // the notes it causes, "name:reason" joined by " "
	}{
		{newLink(link{index: 2, name: "eth0"}), "eth0:no rule matches"},
		{newLink(link{index: 2, name: "eth0"}), ""}, // the same again: no note
		{newLink(link{index: 1, name: "lo", raw: unix.IFF_LOOPBACK, encap: "loopback"}), "lo:loopback"},
		{newLink(link{index: 3, name: "cali1", master: 9}), "cali1:has a master (bridge, bond or VRF port)"},
		{newLink(link{index: 3, name: "cali1", master: 9, down: true}), ""},
		{newLink(link{index: 4, name: "cali2", raw: unix.IFF_NOARP}), "cali2:NOARP"},
		{newLink(link{index: 5, name: "cali3", encap: "none"}), "cali3:not Ethernet"},
		{newLink(link{index: 6, name: "cali4"}), ""},                                                         // selected: the attach says so
		{newLink(link{index: 3, name: "cali1"}), ""},                                                         // out of the bridge: selected
		{newLink(link{index: 3, name: "cali1", master: 9}), "cali1:has a master (bridge, bond or VRF port)"}, // back in
		{newLink(link{index: 2, name: "eth1"}), "eth1:no rule matches"},                                      // renamed
		{delLink(link{index: 2, name: "eth1"}), ""},
		{newLink(link{index: 2, name: "eth1"}), "eth1:no rule matches"}, // a new link with the old index
	}
	s := newState(globs("cali*"))
	for i, st := range steps {
		s.apply(st.msg)
		var got []string
		for _, n := range s.takeNotes() {
			got = append(got, n.Name+":"+n.Skip.String())
		}
		if g := strings.Join(got, " "); g != st.want {
			t.Errorf("step %d: notes %q, want %q", i, g, st.want)
		}
	}
	var all []string
	for _, l := range s.linkStates() {
		all = append(all, fmt.Sprintf("%d:%s:%v", l.Index, l.Name, l.Skip))
	}
	want := "1:lo:loopback 2:eth1:no rule matches 3:cali1:has a master (bridge, bond or VRF port) 4:cali2:NOARP 5:cali3:not Ethernet 6:cali4:selected"
	if g := strings.Join(all, " "); g != want {
		t.Errorf("links:\n%s\nwant\n%s", g, want)
	}
}
