// Package arpframe is pxresp's codec of ARP frames: untagged Ethernet
// carrying an Ethernet/IPv4 ARP packet, the only frames pxresp reads and
// writes. The responder, the test client and the benchmark all use it.
//
// It works at fixed offsets (exported, for BPF filters and for tests that
// corrupt one field) and never allocates: Decode fills a caller's Frame,
// the encoders write into a caller's buffer of at least Len bytes.
package arpframe

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Offsets of the fields in a frame.
const (
	OffEthDst  = 0  // Ethernet destination
	OffEthSrc  = 6  // Ethernet source
	OffEthType = 12 // EtherType
	OffHType   = 14 // ARP hardware type
	OffPType   = 16 // ARP protocol type
	OffHLen    = 18 // hardware address length
	OffPLen    = 19 // protocol address length
	OffOp      = 20 // opcode
	OffSHA     = 22 // sender hardware address
	OffSPA     = 28 // sender protocol (IPv4) address
	OffTHA     = 32 // target hardware address
	OffTPA     = 38 // target protocol (IPv4) address

	// Len is the length of a frame without Ethernet padding. The kernel's
	// replies on a veth have this length too.
	Len = 42
)

// Field values.
const (
	EtherTypeARP = 0x0806
	HTypeEther   = 1
	PTypeIPv4    = 0x0800
	OpRequest    = 1
	OpReply      = 2
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Reasons Decode refuses a frame.
var (
	ErrShort      = errors.New("frame shorter than an Ethernet/IPv4 ARP packet")
	ErrEtherType  = errors.New("not an ARP EtherType")
	ErrHTypePType = errors.New("ARP hardware or protocol type is not Ethernet/IPv4")
	ErrLengths    = errors.New("ARP address lengths are not 6 and 4")
	ErrOpcode     = errors.New("ARP opcode is neither request nor reply")
)

// Frame is a decoded frame.
type Frame struct {
	EthDst, EthSrc [6]byte
	Op             uint16 // OpRequest or OpReply
	SHA            [6]byte
	SPA            netip.Addr
	THA            [6]byte
	TPA            netip.Addr
}

// Decode decodes an Ethernet/IPv4 ARP request or reply into f. Bytes after
// the ARP packet (Ethernet padding) are ignored, as the kernel does. On
// error f is left as it was.
func Decode(b []byte, f *Frame) error {
	if len(b) < Len {
		return ErrShort
	}
	if binary.BigEndian.Uint16(b[OffEthType:]) != EtherTypeARP {
		return ErrEtherType
	}
	if binary.BigEndian.Uint16(b[OffHType:]) != HTypeEther || binary.BigEndian.Uint16(b[OffPType:]) != PTypeIPv4 {
		return ErrHTypePType
	}
	if b[OffHLen] != 6 || b[OffPLen] != 4 {
		return ErrLengths
	}
	op := binary.BigEndian.Uint16(b[OffOp:])
	if op != OpRequest && op != OpReply {
		return ErrOpcode
	}
	f.Op = op
	f.EthDst = [6]byte(b[OffEthDst:])
	f.EthSrc = [6]byte(b[OffEthSrc:])
	f.SHA = [6]byte(b[OffSHA:])
	f.SPA = netip.AddrFrom4([4]byte(b[OffSPA:]))
	f.THA = [6]byte(b[OffTHA:])
	f.TPA = netip.AddrFrom4([4]byte(b[OffTPA:]))
	return nil
}

// EncodeRequest writes into b (at least Len bytes) the request a Linux host
// sends, "who-has tpa tell spa", from sha to the Ethernet destination dst
// (Broadcast for a first request, the owner's MAC for a re-probe), with a
// zero target hardware address, and returns b[:Len]. spa and tpa must be
// IPv4 addresses.
func EncodeRequest(b []byte, dst, sha [6]byte, spa, tpa netip.Addr) []byte {
	b = header(b, &dst, &sha, OpRequest)
	copy(b[OffSHA:], sha[:])
	putAddr(b[OffSPA:], spa)
	clear(b[OffTHA : OffTHA+6])
	putAddr(b[OffTPA:], tpa)
	return b
}

// EncodeReply writes into b (at least Len bytes) the reply the kernel's
// proxy_arp sends for req (arp_send_dst(ARPOP_REPLY, ETH_P_ARP, sip, dev,
// tip, sha, dev->dev_addr, sha)): unicast to the requester's ARP sender
// address, from mac, claiming the requested address for mac. It returns
// b[:Len].
func EncodeReply(b []byte, req *Frame, mac [6]byte) []byte {
	b = header(b, &req.SHA, &mac, OpReply)
	copy(b[OffSHA:], mac[:])
	putAddr(b[OffSPA:], req.TPA)
	copy(b[OffTHA:], req.SHA[:])
	putAddr(b[OffTPA:], req.SPA)
	return b
}

// header writes the Ethernet header and the fixed ARP fields.
func header(b []byte, dst, src *[6]byte, op uint16) []byte {
	b = b[:Len]
	copy(b[OffEthDst:], dst[:])
	copy(b[OffEthSrc:], src[:])
	binary.BigEndian.PutUint16(b[OffEthType:], EtherTypeARP)
	binary.BigEndian.PutUint16(b[OffHType:], HTypeEther)
	binary.BigEndian.PutUint16(b[OffPType:], PTypeIPv4)
	b[OffHLen], b[OffPLen] = 6, 4
	binary.BigEndian.PutUint16(b[OffOp:], op)
	return b
}

func putAddr(b []byte, a netip.Addr) {
	a4 := a.As4()
	copy(b, a4[:])
}
