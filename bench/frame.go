package main

import (
	"net/netip"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// gatewayMAC is the MAC of every cali interface (topo.GatewayMAC): the
// destination of a pod's unicast re-probe.
var gatewayMAC = [6]byte(topo.GatewayMAC)

// arpRequest builds the request a pod's kernel sends (arpframe.EncodeRequest):
// who-has tpa tell spa, from src, Ethernet destination dst (broadcast for a
// first request, the gateway's MAC for a unicast re-probe). The bench sends
// it unpadded: a veth carries 42-byte frames.
func arpRequest(dst, src [6]byte, spa, tpa netip.Addr) (b [arpframe.Len]byte) {
	arpframe.EncodeRequest(b[:], dst, src, spa, tpa)
	return b
}

// replyMatcher recognises the reply to our requests: an ARP reply claiming
// the gateway address, addressed (Ethernet and ARP target) to us.
type replyMatcher struct {
	gw, ip netip.Addr
	mac    [6]byte
}

func newReplyMatcher(gw netip.Addr, mac [6]byte, ip netip.Addr) replyMatcher {
	return replyMatcher{gw: gw, mac: mac, ip: ip}
}

// match reports whether b is such a reply. It does not allocate.
func (m *replyMatcher) match(b []byte) bool {
	var f arpframe.Frame
	return arpframe.Decode(b, &f) == nil && f.Op == arpframe.OpReply &&
		f.EthDst == m.mac && f.SPA == m.gw && f.THA == m.mac && f.TPA == m.ip
}
