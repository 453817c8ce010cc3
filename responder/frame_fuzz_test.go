package responder

import (
	"bytes"
	"net"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// referenceDecode decodes b with mdlayher/ethernet and mdlayher/arp and says
// whether it is an untagged Ethernet/IPv4 ARP request.
func referenceDecode(b []byte) (*ethernet.Frame, *arp.Packet, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeARP || f.VLAN != nil || f.ServiceVLAN != nil {
		return nil, nil, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil, nil, false
	}
	ok := p.HardwareType == hTypeEther && p.ProtocolType == pTypeIPv4 &&
		p.HardwareAddrLength == 6 && p.IPLength == 4 && p.Operation == arp.OperationRequest
	return &f, &p, ok
}

func addSeeds(f *testing.F) {
	for _, c := range loadFrameCases(f) {
		f.Add(c.in)
	}
}

// FuzzDecode proves that the fixed-offset codec accepts exactly the frames
// that mdlayher/ethernet and mdlayher/arp decode as Ethernet/IPv4 ARP
// requests, with the same field values.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r arpRequest
		err := decodeRequest(b, &r)
		ef, ap, ok := referenceDecode(b)
		if (err == nil) != ok {
			t.Fatalf("decodeRequest error %v, but mdlayher/arp says request=%v for %x", err, ok, b)
		}
		if !ok {
			return
		}
		switch {
		case !bytes.Equal(r.ethDst[:], ef.Destination), !bytes.Equal(r.ethSrc[:], ef.Source):
			t.Fatalf("Ethernet addresses differ: %x %x vs %v %v", r.ethDst, r.ethSrc, ef.Destination, ef.Source)
		case !bytes.Equal(r.sha[:], ap.SenderHardwareAddr), !bytes.Equal(r.tha[:], ap.TargetHardwareAddr):
			t.Fatalf("ARP hardware addresses differ: %x %x vs %v %v", r.sha, r.tha, ap.SenderHardwareAddr, ap.TargetHardwareAddr)
		case r.spa != ap.SenderIP, r.tpa != ap.TargetIP:
			t.Fatalf("ARP IPs differ: %v %v vs %v %v", r.spa, r.tpa, ap.SenderIP, ap.TargetIP)
		}
	})
}

// FuzzReply drives the whole request→reply path: nothing panics, and every
// reply sent parses as an ARP reply with the addresses swapped the way the
// kernel's proxy_arp swaps them.
func FuzzReply(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ft := newFake()
		r := newTestResponder(t, ft)
		r.handle(b)
		sent := ft.takeSent()
		if len(sent) == 0 {
			return
		}
		if len(sent) > 1 {
			t.Fatalf("%d replies to one frame", len(sent))
		}
		_, req, ok := referenceDecode(b)
		if !ok {
			t.Fatalf("replied to a frame that is not an ARP request: %x", b)
		}
		var rf ethernet.Frame
		if err := rf.UnmarshalBinary(sent[0]); err != nil {
			t.Fatal(err)
		}
		var rp arp.Packet
		if err := rp.UnmarshalBinary(rf.Payload); err != nil {
			t.Fatal(err)
		}
		mac := net.HardwareAddr(hostMAC)
		switch {
		case rp.Operation != arp.OperationReply:
			t.Fatalf("op %v, want reply", rp.Operation)
		case !bytes.Equal(rf.Destination, req.SenderHardwareAddr), !bytes.Equal(rf.Source, mac):
			t.Fatalf("Ethernet %v -> %v, want %v -> %v", rf.Source, rf.Destination, mac, req.SenderHardwareAddr)
		case !bytes.Equal(rp.SenderHardwareAddr, mac), rp.SenderIP != req.TargetIP:
			t.Fatalf("ARP sender (%v, %v), want (%v, %v)", rp.SenderHardwareAddr, rp.SenderIP, mac, req.TargetIP)
		case !bytes.Equal(rp.TargetHardwareAddr, req.SenderHardwareAddr), rp.TargetIP != req.SenderIP:
			t.Fatalf("ARP target (%v, %v), want (%v, %v)", rp.TargetHardwareAddr, rp.TargetIP, req.SenderHardwareAddr, req.SenderIP)
		case rp.SenderIP != gateway:
			t.Fatalf("answered for %v, which the policy does not cover", rp.SenderIP)
		}
	})
}
