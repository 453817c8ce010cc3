package netmon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// describe renders a Message for comparisons.
func describe(m *Message) string {
	s := fmt.Sprintf("%s flags=%#x family=%d", MsgType(m.Type), m.Flags, m.Family)
	if l := m.Link; l != nil {
		a := l.Attrs()
		s += fmt.Sprintf(" link{%d %s %s flags=%#x encap=%s master=%d}", a.Index, a.Name, a.HardwareAddr, a.RawFlags, a.EncapType, a.MasterIndex)
	}
	if r := m.Route; r != nil {
		s += " " + describeRoute(*r)
	}
	return s
}

func describeRoute(r Route) string {
	return fmt.Sprintf("route{family=%d table=%d type=%d flags=%#x tos=%d prio=%d dst=%v oif=%d}",
		r.Family, r.Table, r.Type, r.Flags, r.Tos, r.Priority, r.Dst, r.OIF)
}

func TestParse(t *testing.T) {
	caliA := rawLink{index: 5, name: "caliA", mac: "ee:ee:ee:ee:ee:ee", flags: unix.IFF_UP | unix.IFF_BROADCAST}
	cases := []struct {
		name    string
		data    []byte
		want    []string
		wantErr string
	}{
		{name: "new link", data: linkMsg(unix.RTM_NEWLINK, caliA),
			want: []string{"newlink flags=0x0 family=0 link{5 caliA ee:ee:ee:ee:ee:ee flags=0x3 encap=ether master=0}"}},
		{name: "deleted link", data: linkMsg(unix.RTM_DELLINK, rawLink{index: 6, name: "caliB"}),
			want: []string{"dellink flags=0x0 family=0 link{6 caliB  flags=0x0 encap=ether master=0}"}},
		{name: "bridge port, loopback", data: slices.Concat(
			linkMsg(unix.RTM_NEWLINK, rawLink{family: unix.AF_BRIDGE, index: 7, name: "caliC", master: 9}),
			linkMsg(unix.RTM_NEWLINK, rawLink{index: 1, name: "lo", flags: unix.IFF_LOOPBACK, arphrd: unix.ARPHRD_LOOPBACK})),
			want: []string{
				"newlink flags=0x0 family=7 link{7 caliC  flags=0x0 encap=ether master=9}",
				"newlink flags=0x0 family=0 link{1 lo  flags=0x8 encap=loopback master=0}",
			}},
		{name: "route", data: routeMsg(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE,
			rawRoute{dst: "10.244.0.2/32", priority: 100, oif: 5, tos: 4}),
			want: []string{"newroute flags=0x500 family=2 route{family=2 table=254 type=1 flags=0x0 tos=4 prio=100 dst=10.244.0.2/32 oif=5}"}},
		{name: "default route, cloned, big table", data: slices.Concat(
			routeMsg(unix.RTM_DELROUTE, 0, rawRoute{oif: 2}),
			routeMsg(unix.RTM_NEWROUTE, 0, rawRoute{dst: "10.0.0.1/32", flags: unix.RTM_F_CLONED, oif: 3}),
			routeMsg(unix.RTM_NEWROUTE, 0, rawRoute{dst: "10.1.0.0/16", table: 1000, typ: unix.RTN_BLACKHOLE})),
			want: []string{
				"delroute flags=0x0 family=2 route{family=2 table=254 type=1 flags=0x0 tos=0 prio=0 dst=0.0.0.0/0 oif=2}",
				"newroute flags=0x0 family=2 route{family=2 table=254 type=1 flags=0x200 tos=0 prio=0 dst=10.0.0.1/32 oif=3}",
				"newroute flags=0x0 family=2 route{family=2 table=1000 type=6 flags=0x0 tos=0 prio=0 dst=10.1.0.0/16 oif=0}",
			}},
		{name: "ipv6 route", data: routeMsg(unix.RTM_NEWROUTE, 0, rawRoute{family: unix.AF_INET6, dst: "fd00::/64", oif: 5}),
			want: []string{"newroute flags=0x0 family=10 route{family=10 table=254 type=1 flags=0x0 tos=0 prio=0 dst=fd00::/64 oif=5}"}},
		{name: "other groups: type only", data: slices.Concat(
			otherMsg(unix.RTM_NEWADDR, unix.SizeofIfAddrmsg), otherMsg(unix.RTM_DELRULE, 12),
			otherMsg(unix.RTM_NEWNETCONF, 4), otherMsg(unix.RTM_NEWNEXTHOP, 8), otherMsg(unix.NLMSG_NOOP, 0)),
			want: []string{"newaddr flags=0x0 family=0", "delrule flags=0x0 family=0", "newnetconf flags=0x0 family=0",
				"newnexthop flags=0x0 family=0"}},
		{name: "short link", data: nlmsg(unix.RTM_NEWLINK, 0, make([]byte, 8)), wantErr: "decode newlink: 8 bytes, shorter than ifinfomsg"},
		{name: "short route", data: nlmsg(unix.RTM_DELROUTE, 0, make([]byte, 8)), wantErr: "decode delroute: 8 bytes, shorter than rtmsg"},
		{name: "bad route attribute", data: nlmsg(unix.RTM_NEWROUTE, 0,
			append(rawRoute{}.body(), nl4(unix.RTA_OIF, []byte{1, 2})...)), wantErr: "decode newroute: attribute 4: 2 bytes, want 4"},
		{name: "bad prefix length", data: func() []byte {
			b := routeMsg(unix.RTM_NEWROUTE, 0, rawRoute{dst: "10.0.0.0/8"})
			b[unix.NLMSG_HDRLEN+1] = 40 // rtm_dst_len
			return b
		}(), wantErr: "decode newroute: destination 10.0.0.0/40"},
		{name: "error message", data: nlmsg(unix.NLMSG_ERROR, 0, make([]byte, 20)), wantErr: "netlink error message"},
		{name: "truncated batch", data: linkMsg(unix.RTM_NEWLINK, caliA)[:20], wantErr: "parse netlink messages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := parse(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parse = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range msgs {
				got = append(got, describe(&msgs[i]))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parse:\n got  %q\n want %q", got, tc.want)
			}
		})
	}
}

// nl4 is a raw route attribute.
func nl4(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 8)
	b[0], b[2] = byte(4+len(v)), byte(typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestMsgType(t *testing.T) {
	for typ, want := range map[uint16]string{
		unix.RTM_NEWLINK: "newlink", unix.RTM_DELROUTE: "delroute", unix.RTM_NEWADDR: "newaddr",
		unix.RTM_DELNEXTHOP: "delnexthop", unix.RTM_NEWNETCONF: "newnetconf", 999: "type(999)",
	} {
		if got := MsgType(typ); got != want {
			t.Errorf("MsgType(%d) = %q, want %q", typ, got, want)
		}
	}
}

func TestDecodeRouteWithoutDestination(t *testing.T) {
	// A family without a notion of destination keeps Dst invalid.
	b := rawRoute{family: unix.AF_UNSPEC}.body()
	b[0] = unix.AF_UNSPEC
	r, err := decodeRoute(b)
	if err != nil || r.Dst.IsValid() {
		t.Errorf("decodeRoute = %s, %v; want no destination", describeRoute(r), err)
	}
	if r, err := decodeRoute(rawRoute{dst: "10.1.2.0/24"}.body()); err != nil || r.Dst != netip.MustParsePrefix("10.1.2.0/24") {
		t.Errorf("decodeRoute = %s, %v", describeRoute(r), err)
	}
}
