package main

import (
	"encoding/binary"
	"net/netip"
)

// The client's ARP frames: untagged Ethernet + Ethernet/IPv4 ARP, no
// padding (a veth carries 42-byte frames; the kernel's replies have that
// length too).
const (
	frameLen     = 42
	etherTypeARP = 0x0806
	opRequest    = 1
	opReply      = 2

	offEthDst  = 0
	offEthSrc  = 6
	offEthType = 12
	offOp      = 20
	offSHA     = 22
	offSPA     = 28
	offTHA     = 32
	offTPA     = 38
)

var (
	broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// gatewayMAC is the MAC of every cali interface (topo.GatewayMAC): the
	// destination of a pod's unicast re-probe.
	gatewayMAC = [6]byte{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// arpRequest builds the request a pod's kernel sends: who-has tpa tell spa,
// from src, Ethernet destination dst (broadcast for a first request, the
// gateway's MAC for a unicast re-probe); THA is zero, as Linux sends it.
func arpRequest(dst, src [6]byte, spa, tpa netip.Addr) [frameLen]byte {
	var b [frameLen]byte
	copy(b[offEthDst:], dst[:])
	copy(b[offEthSrc:], src[:])
	binary.BigEndian.PutUint16(b[offEthType:], etherTypeARP)
	binary.BigEndian.PutUint16(b[14:], 1)      // HTYPE Ethernet
	binary.BigEndian.PutUint16(b[16:], 0x0800) // PTYPE IPv4
	b[18], b[19] = 6, 4
	binary.BigEndian.PutUint16(b[offOp:], opRequest)
	copy(b[offSHA:], src[:])
	s, t := spa.As4(), tpa.As4()
	copy(b[offSPA:], s[:])
	copy(b[offTPA:], t[:])
	return b
}

// replyMatcher recognises the reply to our requests: an ARP reply claiming
// the gateway address, addressed (Ethernet and ARP target) to us.
type replyMatcher struct {
	gw  [4]byte
	mac [6]byte
	ip  [4]byte
}

func newReplyMatcher(gw netip.Addr, mac [6]byte, ip netip.Addr) replyMatcher {
	return replyMatcher{gw: gw.As4(), mac: mac, ip: ip.As4()}
}

// match reports whether b is such a reply. It does not allocate.
func (m *replyMatcher) match(b []byte) bool {
	if len(b) < frameLen {
		return false
	}
	return binary.BigEndian.Uint16(b[offEthType:]) == etherTypeARP &&
		binary.BigEndian.Uint16(b[offOp:]) == opReply &&
		[6]byte(b[offEthDst:offEthDst+6]) == m.mac &&
		[4]byte(b[offSPA:offSPA+4]) == m.gw &&
		[6]byte(b[offTHA:offTHA+6]) == m.mac &&
		[4]byte(b[offTPA:offTPA+4]) == m.ip
}
