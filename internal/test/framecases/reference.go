package framecases

import (
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// ReferenceDecode decodes b with mdlayher/ethernet and mdlayher/arp, the
// reference the fuzz targets hold the fixed-offset codec to, and says
// whether it is an untagged Ethernet/IPv4 ARP request or reply.
func ReferenceDecode(b []byte) (*ethernet.Frame, *arp.Packet, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeARP || f.VLAN != nil || f.ServiceVLAN != nil {
		return nil, nil, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil, nil, false
	}
	ok := p.HardwareType == 1 && p.ProtocolType == uint16(ethernet.EtherTypeIPv4) &&
		p.HardwareAddrLength == 6 && p.IPLength == 4 &&
		(p.Operation == arp.OperationRequest || p.Operation == arp.OperationReply)
	return &f, &p, ok
}
