package netmon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// parse decodes a batch of notifications. Control messages (NLMSG_NOOP,
// NLMSG_DONE) are skipped; an error message or one that cannot be decoded
// is an error: the batch cannot be trusted.
func parse(data []byte) ([]Message, error) {
	raw, err := syscall.ParseNetlinkMessage(data)
	if err != nil {
		return nil, fmt.Errorf("parse netlink messages: %w", err)
	}
	msgs := make([]Message, 0, len(raw))
	for _, r := range raw {
		switch r.Header.Type {
		case unix.NLMSG_NOOP, unix.NLMSG_DONE:
			continue
		case unix.NLMSG_ERROR:
			return nil, errors.New("netlink error message on the subscription socket")
		}
		msg, err := decode(r.Header, r.Data)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", MsgType(r.Header.Type), err)
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// decode decodes one message of the subscribed groups.
func decode(h syscall.NlMsghdr, data []byte) (Message, error) {
	msg := Message{Type: h.Type, Flags: h.Flags}
	switch h.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		if len(data) < unix.SizeofIfInfomsg {
			return Message{}, fmt.Errorf("%d bytes, shorter than ifinfomsg", len(data))
		}
		hdr := unix.NlMsghdr(h)
		l, err := netlink.LinkDeserialize(&hdr, data)
		if err != nil {
			return Message{}, err
		}
		msg.Family, msg.Link = data[0], l
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		r, err := decodeRoute(data)
		if err != nil {
			return Message{}, err
		}
		msg.Family, msg.Route = uint8(r.Family), &r
	}
	return msg, nil
}

// decodeRoute decodes the body of a route message.
func decodeRoute(data []byte) (Route, error) {
	if len(data) < unix.SizeofRtMsg {
		return Route{}, fmt.Errorf("%d bytes, shorter than rtmsg", len(data))
	}
	m := nl.DeserializeRtMsg(data)
	attrs, err := nl.ParseRouteAttr(data[unix.SizeofRtMsg:])
	if err != nil {
		return Route{}, err
	}
	r := Route{
		Family: int(m.Family),
		Table:  int(m.Table),
		Type:   int(m.Type),
		Flags:  m.Flags,
		Tos:    int(m.Tos),
	}
	var dst []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_DST:
			dst = a.Value
		case unix.RTA_TABLE, unix.RTA_PRIORITY, unix.RTA_OIF:
			if len(a.Value) != 4 {
				return Route{}, fmt.Errorf("attribute %d: %d bytes, want 4", a.Attr.Type, len(a.Value))
			}
			v := int(binary.NativeEndian.Uint32(a.Value))
			switch a.Attr.Type {
			case unix.RTA_TABLE:
				r.Table = v
			case unix.RTA_PRIORITY:
				r.Priority = v
			case unix.RTA_OIF:
				r.OIF = v
			}
		}
	}
	var addr netip.Addr
	switch {
	case dst != nil:
		var ok bool
		if addr, ok = netip.AddrFromSlice(dst); !ok {
			return Route{}, fmt.Errorf("RTA_DST of %d bytes", len(dst))
		}
	case m.Family == unix.AF_INET:
		addr = netip.IPv4Unspecified()
	case m.Family == unix.AF_INET6:
		addr = netip.IPv6Unspecified()
	default:
		return r, nil // no destination to speak of
	}
	p, err := addr.Prefix(int(m.Dst_len))
	if err != nil {
		return Route{}, fmt.Errorf("destination %v/%d: %w", addr, m.Dst_len, err)
	}
	r.Dst = p
	return r, nil
}

// debugAttrs describes msg for a debug log.
func debugAttrs(msg *Message) []any {
	attrs := []any{"type", MsgType(msg.Type), "flags", msg.Flags, "family", msg.Family}
	if l := msg.Link; l != nil {
		a := l.Attrs()
		attrs = append(attrs, "index", a.Index, "name", a.Name, "mac", a.HardwareAddr,
			"rawflags", a.RawFlags, "encap", a.EncapType, "master", a.MasterIndex)
	}
	if r := msg.Route; r != nil {
		attrs = append(attrs, "table", r.Table, "rtype", r.Type, "dst", r.Dst, "oif", r.OIF, "priority", r.Priority)
	}
	return attrs
}

// MsgType names an rtnetlink message type of the subscribed groups, for
// logs.
func MsgType(t uint16) string {
	switch t {
	case unix.RTM_NEWLINK:
		return "newlink"
	case unix.RTM_DELLINK:
		return "dellink"
	case unix.RTM_NEWADDR:
		return "newaddr"
	case unix.RTM_DELADDR:
		return "deladdr"
	case unix.RTM_NEWROUTE:
		return "newroute"
	case unix.RTM_DELROUTE:
		return "delroute"
	case unix.RTM_NEWRULE:
		return "newrule"
	case unix.RTM_DELRULE:
		return "delrule"
	case unix.RTM_NEWNETCONF:
		return "newnetconf"
	case unix.RTM_DELNETCONF:
		return "delnetconf"
	case unix.RTM_NEWNEXTHOP:
		return "newnexthop"
	case unix.RTM_DELNEXTHOP:
		return "delnexthop"
	}
	return fmt.Sprintf("type(%d)", t)
}
