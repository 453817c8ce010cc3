package netmon

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Raw rtnetlink messages, as the kernel sends them, for the fake source.

// nlmsg prefixes body with a netlink header.
func nlmsg(typ, flags uint16, body []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body)+4)
	binary.NativeEndian.PutUint32(b[0:4], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	b = append(b, body...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// rawLink describes a link message.
type rawLink struct {
	family uint8 // unix.AF_UNSPEC, or AF_BRIDGE for a bridge port
	index  int32
	name   string
	mac    string
	flags  uint32 // IFF_*
	arphrd uint16 // 0 = ARPHRD_ETHER
	master uint32
}

func (l rawLink) body() []byte {
	typ := l.arphrd
	if typ == 0 {
		typ = unix.ARPHRD_ETHER
	}
	msg := nl.IfInfomsg{IfInfomsg: unix.IfInfomsg{Family: l.family, Type: typ, Index: l.index, Flags: l.flags}}
	b := msg.Serialize()
	b = append(b, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(l.name)).Serialize()...)
	if l.mac != "" {
		mac, err := net.ParseMAC(l.mac)
		if err != nil {
			panic(err)
		}
		b = append(b, nl.NewRtAttr(unix.IFLA_ADDRESS, mac).Serialize()...)
	}
	if l.master != 0 {
		b = append(b, nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(l.master)).Serialize()...)
	}
	return b
}

func linkMsg(typ uint16, l rawLink) []byte { return nlmsg(typ, 0, l.body()) }

// rawRoute describes a route message; table > 255 goes in RTA_TABLE only.
type rawRoute struct {
	family   uint8 // 0 = AF_INET
	dst      string
	table    uint32 // 0 = main
	typ      uint8  // 0 = RTN_UNICAST
	flags    uint32
	tos      uint8
	priority uint32
	oif      uint32
}

func (r rawRoute) body() []byte {
	family, table, typ := r.family, r.table, r.typ
	if family == 0 {
		family = unix.AF_INET
	}
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	if typ == 0 {
		typ = unix.RTN_UNICAST
	}
	m := nl.RtMsg{RtMsg: unix.RtMsg{Family: family, Type: typ, Flags: r.flags, Tos: r.tos, Table: unix.RT_TABLE_COMPAT}}
	if table < 256 {
		m.Table = uint8(table)
	}
	var attrs []byte
	if r.dst != "" {
		p := netip.MustParsePrefix(r.dst)
		m.Dst_len = uint8(p.Bits())
		attrs = append(attrs, nl.NewRtAttr(unix.RTA_DST, p.Addr().AsSlice()).Serialize()...)
	}
	attrs = append(attrs, nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(table)).Serialize()...)
	if r.priority != 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.RTA_PRIORITY, nl.Uint32Attr(r.priority)).Serialize()...)
	}
	if r.oif != 0 {
		attrs = append(attrs, nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(r.oif)).Serialize()...)
	}
	return append(m.Serialize(), attrs...)
}

func routeMsg(typ, flags uint16, r rawRoute) []byte { return nlmsg(typ, flags, r.body()) }

// otherMsg is a message of another type with a body of n zero bytes (an
// address, rule, nexthop or netconf message: only its type matters).
func otherMsg(typ uint16, n int) []byte { return nlmsg(typ, 0, make([]byte, n)) }
