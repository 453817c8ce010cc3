package ifwatch

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

func newLink(l link) netlink.LinkUpdate {
	return netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l.build()}
}

func delLink(l link) netlink.LinkUpdate {
	return netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: l.build()}
}

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// route returns an IPv4 unicast main-table route to cidr out index.
func route(index int, cidr string) netlink.Route {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	return netlink.Route{
		LinkIndex: index,
		Dst:       dst,
		Family:    unix.AF_INET,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
		Scope:     netlink.SCOPE_LINK,
	}
}

func newRoute(r netlink.Route) netlink.RouteUpdate {
	return netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, NlFlags: unix.NLM_F_CREATE | unix.NLM_F_EXCL, Route: r}
}

func replaceRoute(r netlink.Route) netlink.RouteUpdate {
	return netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, NlFlags: unix.NLM_F_CREATE | unix.NLM_F_REPLACE, Route: r}
}

func delRoute(r netlink.Route) netlink.RouteUpdate {
	return netlink.RouteUpdate{Type: unix.RTM_DELROUTE, Route: r}
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

func attach(l Link) Event { return Event{Kind: Attach, Link: l} }
func update(l Link) Event { return Event{Kind: Update, Link: l} }
func detach(l Link) Event { return Event{Kind: Detach, Link: l} }

func fmtEvent(e Event) string {
	return fmt.Sprintf("%v{%d %q %v up=%v onlink=%v}", e.Kind, e.Link.Index, e.Link.Name, e.Link.MAC, e.Link.Up, e.Link.OnLink)
}

func eventsString(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmtEvent(e))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func TestResyncFlag(t *testing.T) {
	s := newState([]string{"cali*"})
	a := link{index: 5, name: "caliA"}
	for _, ev := range s.reconcile([]netlink.Link{a.build()}, nil) {
		if !ev.Resync {
			t.Errorf("event from a listing without Resync: %+v", ev)
		}
	}
	for _, ev := range apply(s, newLink(link{index: 5, name: "caliA", down: true})) {
		if ev.Resync {
			t.Errorf("event from a notification with Resync: %+v", ev)
		}
	}
}

func checkEvents(t *testing.T, what string, got, want []Event) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Kind == want[i].Kind && got[i].Link.equal(want[i].Link)
	}
	if !ok {
		t.Errorf("%s:\n got  %s\n want %s", what, eventsString(got), eventsString(want))
	}
}

// apply feeds one netlink.LinkUpdate or netlink.RouteUpdate to s.
func apply(s *state, in any) []Event {
	switch u := in.(type) {
	case netlink.LinkUpdate:
		return s.applyLink(u)
	case netlink.RouteUpdate:
		return s.applyRoute(u)
	}
	panic(fmt.Sprintf("apply: %T", in))
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
			s := newState(c.globs)
			var want []Event
			if c.want {
				want = []Event{attach(c.link.want())}
			}
			checkEvents(t, "NEWLINK", s.applyLink(newLink(c.link)), want)
		})
	}
}

func TestMatch(t *testing.T) {
	globs := []string{"cali*", "tap[0-9]"}
	for name, want := range map[string]bool{
		"cali": true, "caliABC": true, "tap3": true, "tap10": false, "eth0": false, "xcali": false, "": false,
	} {
		if got := Match(globs, name); got != want {
			t.Errorf("Match(%q, %q) = %v, want %v", globs, name, got, want)
		}
	}
	if Match([]string{"cali["}, "cali[") {
		t.Error("a malformed glob must match nothing")
	}
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
	multipath.MultiPath = []*netlink.NexthopInfo{{LinkIndex: 5}, {LinkIndex: 6}}
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
	def := route(5, "0.0.0.0/0")
	def.Dst = nil

	type step struct {
		in   any
		want []Event
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"attach once per ifindex", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(a), nil},
			{newLink(aRunning), nil}, // flags outside Link
			{newLink(b), []Event{attach(b.want())}},
		}},
		{"non-matching link ignored", []step{
			{newLink(other), nil},
			{delLink(other), nil},
		}},
		{"rename within, out of and into the glob", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aRenamed), []Event{update(aRenamed.want())}},
			{newLink(aOut), []Event{detach(aRenamed.want())}},
			{newLink(aOut), nil},
			{newLink(a), []Event{attach(a.want())}},
		}},
		{"MAC change", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aMAC), []Event{update(aMAC.want())}},
		}},
		{"down and up", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aDown), []Event{update(aDown.want())}},
			{newLink(aDown), nil},
			{newLink(a), []Event{update(a.want())}},
		}},
		{"delete, unknown delete", []step{
			{newLink(a), []Event{attach(a.want())}},
			{delLink(b), nil},
			{delLink(a), []Event{detach(a.want())}},
			{delLink(a), nil},
		}},
		{"NOARP and master detach, clearing them attaches", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aNoARP), []Event{detach(a.want())}},
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aEnslaved), []Event{detach(a.want())}},
			{newLink(a), []Event{attach(a.want())}},
		}},
		{"bridge port notifications ignored", []step{
			{newLink(a), []Event{attach(a.want())}},
			{func() netlink.LinkUpdate { u := delLink(a); u.Family = unix.AF_BRIDGE; return u }(), nil},
			{func() netlink.LinkUpdate { u := newLink(aEnslaved); u.Family = unix.AF_BRIDGE; return u }(), nil},
		}},
		{"route add and delete", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newRoute(r1), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newRoute(r1), nil},
			{newRoute(r3), []Event{update(withOnLink(a.want(), "10.244.0.2/32", "10.244.1.0/24"))}},
			{newRoute(r2), []Event{update(withOnLink(a.want(), "10.244.0.0/26", "10.244.0.2/32", "10.244.1.0/24"))}},
			{delRoute(r3), []Event{update(withOnLink(a.want(), "10.244.0.0/26", "10.244.0.2/32"))}},
			{delRoute(r2), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{delRoute(r1), []Event{update(a.want())}},
			{delRoute(r1), nil},
		}},
		{"same destination twice", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newRoute(r1), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newRoute(r1metric), nil},
			{delRoute(r1), nil},
			{delRoute(r1metric), []Event{update(a.want())}},
		}},
		{"routes before attach", []step{
			{newRoute(r1), nil},
			{newRoute(def), nil},
			{newLink(a), []Event{attach(withOnLink(a.want(), "0.0.0.0/0", "10.244.0.2/32"))}},
		}},
		{"routes kept while detached", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(aOut), []Event{detach(a.want())}},
			{newRoute(r1), nil},
			{newLink(a), []Event{attach(withOnLink(a.want(), "10.244.0.2/32"))}},
		}},
		{"replace moves a route to another link", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newLink(b), []Event{attach(b.want())}},
			{newRoute(r1), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{replaceRoute(r1b), []Event{update(a.want()), update(withOnLink(b.want(), "10.244.0.2/32"))}},
			{replaceRoute(r1b), nil},
		}},
		{"down flushes routes", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newRoute(r1), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newLink(aDown), []Event{update(aDown.want())}},
			{newLink(a), []Event{update(a.want())}},
		}},
		{"link created down keeps routes seen first", []step{
			{newRoute(r1), nil},
			{newLink(aDown), []Event{attach(withOnLink(aDown.want(), "10.244.0.2/32"))}},
		}},
		{"delete forgets routes", []step{
			{newLink(a), []Event{attach(a.want())}},
			{newRoute(r1), []Event{update(withOnLink(a.want(), "10.244.0.2/32"))}},
			{delLink(a), []Event{detach(withOnLink(a.want(), "10.244.0.2/32"))}},
			{newLink(a), []Event{attach(a.want())}},
		}},
		{"ignored routes", []step{
			{newLink(a), []Event{attach(a.want())}},
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
			s := newState([]string{"cali*"})
			for i, st := range c.steps {
				checkEvents(t, fmt.Sprintf("step %d", i), apply(s, st.in), st.want)
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

	s := newState([]string{"cali*"})
	checkEvents(t, "initial", s.reconcile(
		[]netlink.Link{a.build(), b.build(), c.build(), e.build()},
		[]netlink.Route{route(6, "10.244.0.6/32")},
	), []Event{attach(a.want()), attach(withOnLink(b.want(), "10.244.0.6/32")), attach(c.want())})

	// During a gap: b was deleted, a changed MAC, c left the glob, d
	// appeared, and a gained a route.
	checkEvents(t, "after gap", s.reconcile(
		[]netlink.Link{aMAC.build(), cOut.build(), d.build(), e.build()},
		[]netlink.Route{route(5, "10.244.0.5/32")},
	), []Event{
		detach(withOnLink(b.want(), "10.244.0.6/32")),
		update(withOnLink(aMAC.want(), "10.244.0.5/32")),
		detach(c.want()),
		attach(d.want()),
	})

	// Nothing changed, yet every attached link gets an Update: the caller
	// re-checks what a gap may have broken unseen (a move out and back).
	checkEvents(t, "same again", s.reconcile(
		[]netlink.Link{aMAC.build(), cOut.build(), d.build(), e.build()},
		[]netlink.Route{route(5, "10.244.0.5/32")},
	), []Event{
		update(withOnLink(aMAC.want(), "10.244.0.5/32")),
		update(d.want()),
	})

	// A route the listing no longer shows is forgotten.
	checkEvents(t, "route gone", s.reconcile(
		[]netlink.Link{aMAC.build(), d.build()},
		nil,
	), []Event{update(aMAC.want()), update(d.want())})
}

func TestEventsDoNotAliasState(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	s := newState([]string{"cali*"})
	l := a.build()
	evs := s.applyLink(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l})
	l.Attrs().HardwareAddr[0] = 0xff // the notification's buffer is reused
	evs[0].Link.MAC[1] = 0xff
	evs = s.applyRoute(newRoute(route(5, "10.244.0.2/32")))
	evs[0].Link.OnLink[0] = netip.MustParsePrefix("10.0.0.0/8")
	evs[0].Link.MAC[2] = 0xff

	checkEvents(t, "unchanged link", s.applyLink(newLink(a)), nil)
	checkEvents(t, "detach", s.applyLink(delLink(a)), []Event{detach(withOnLink(a.want(), "10.244.0.2/32"))})
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Attach: "attach", Update: "update", Detach: "detach", 0: "kind(0)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}
