package responder

import (
	"bytes"
	"net"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/pxresp/pxresp/internal/test/framecases"
)

func addSeeds(f *testing.F) {
	for _, c := range loadFrameCases(f) {
		f.Add(c.In)
	}
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
		_, req, ok := framecases.ReferenceDecode(b)
		if !ok || req.Operation != arp.OperationRequest {
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
