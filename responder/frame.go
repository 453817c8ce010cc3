package responder

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Layout of an untagged Ethernet frame carrying an Ethernet/IPv4 ARP packet.
// These are the only frames pxresp reads and writes, so the codec works at
// fixed offsets and never allocates.
const (
	offEthDst  = 0
	offEthSrc  = 6
	offEthType = 12
	offHType   = 14
	offPType   = 16
	offHLen    = 18
	offPLen    = 19
	offOp      = 20
	offSHA     = 22
	offSPA     = 28
	offTHA     = 32
	offTPA     = 38

	// FrameLen is the length of an ARP frame without Ethernet padding. The
	// kernel's replies on a veth have this length too.
	FrameLen = 42

	etherTypeARP = 0x0806
	hTypeEther   = 1
	pTypeIPv4    = 0x0800
	opRequest    = 1
	opReply      = 2
)

// Reasons a frame is malformed. A frame that is a well-formed ARP packet but
// not a request (a reply, say) is not malformed: errNotRequest.
var (
	errShort      = errors.New("frame shorter than an Ethernet/IPv4 ARP packet")
	errEtherType  = errors.New("not an ARP EtherType")
	errHTypePType = errors.New("ARP hardware or protocol type is not Ethernet/IPv4")
	errLengths    = errors.New("ARP address lengths are not 6 and 4")
	errOpcode     = errors.New("unknown ARP opcode")
	errNotRequest = errors.New("ARP reply, not a request")
)

// arpRequest is the decoded content of a request frame.
type arpRequest struct {
	ethDst [6]byte
	ethSrc [6]byte
	sha    [6]byte
	spa    netip.Addr
	tha    [6]byte
	tpa    netip.Addr
}

// decodeRequest decodes an Ethernet/IPv4 ARP request. Bytes after the ARP
// packet (Ethernet padding) are ignored, as the kernel does.
func decodeRequest(b []byte, r *arpRequest) error {
	if len(b) < FrameLen {
		return errShort
	}
	if binary.BigEndian.Uint16(b[offEthType:]) != etherTypeARP {
		return errEtherType
	}
	if binary.BigEndian.Uint16(b[offHType:]) != hTypeEther || binary.BigEndian.Uint16(b[offPType:]) != pTypeIPv4 {
		return errHTypePType
	}
	if b[offHLen] != 6 || b[offPLen] != 4 {
		return errLengths
	}
	switch binary.BigEndian.Uint16(b[offOp:]) {
	case opRequest:
	case opReply:
		return errNotRequest
	default:
		return errOpcode
	}
	copy(r.ethDst[:], b[offEthDst:])
	copy(r.ethSrc[:], b[offEthSrc:])
	copy(r.sha[:], b[offSHA:])
	r.spa = netip.AddrFrom4([4]byte(b[offSPA : offSPA+4]))
	copy(r.tha[:], b[offTHA:])
	r.tpa = netip.AddrFrom4([4]byte(b[offTPA : offTPA+4]))
	return nil
}

// encodeReply writes into b (at least FrameLen bytes) the reply the kernel's
// proxy_arp sends for r (net/ipv4/arp.c: arp_send_dst(ARPOP_REPLY, ETH_P_ARP,
// sip, dev, tip, sha, dev->dev_addr, sha)): unicast to the requester's ARP
// sender address, from mac, claiming the requested address for mac.
func encodeReply(b []byte, r *arpRequest, mac [6]byte) []byte {
	b = b[:FrameLen]
	copy(b[offEthDst:], r.sha[:])
	copy(b[offEthSrc:], mac[:])
	binary.BigEndian.PutUint16(b[offEthType:], etherTypeARP)
	binary.BigEndian.PutUint16(b[offHType:], hTypeEther)
	binary.BigEndian.PutUint16(b[offPType:], pTypeIPv4)
	b[offHLen], b[offPLen] = 6, 4
	binary.BigEndian.PutUint16(b[offOp:], opReply)
	copy(b[offSHA:], mac[:])
	tpa := r.tpa.As4()
	copy(b[offSPA:], tpa[:])
	copy(b[offTHA:], r.sha[:])
	spa := r.spa.As4()
	copy(b[offTPA:], spa[:])
	return b
}
