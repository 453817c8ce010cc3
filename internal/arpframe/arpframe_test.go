package arpframe

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/pxresp/pxresp/internal/test/framecases"
)

const casesFile = "../../testdata/arp-frames.txt"

var (
	podMAC  = [6]byte{0x02, 0, 0x0a, 0xf4, 0, 2}
	podIP   = netip.MustParseAddr("10.244.0.2")
	gateway = netip.MustParseAddr("169.254.1.1")
	hostMAC = [6]byte{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
)

// TestEncodeRequestMatchesTestdata: the first case of the table is the
// request a pod sends for its gateway.
func TestEncodeRequestMatchesTestdata(t *testing.T) {
	want := framecases.Load(t, casesFile)[0].In
	b := bytes.Repeat([]byte{0xaa}, 60) // what was there before is overwritten
	if got := EncodeRequest(b, Broadcast, podMAC, podIP, gateway); !bytes.Equal(got, want) {
		t.Fatalf("EncodeRequest\n got %x\nwant %x", got, want)
	}
}

// TestEncodeReplyMatchesTestdata: for every request of the table that is
// answered, EncodeReply of the decoded request is the kernel's reply, byte
// for byte.
func TestEncodeReplyMatchesTestdata(t *testing.T) {
	n := 0
	for _, c := range framecases.Load(t, casesFile) {
		if c.Want != "reply" {
			continue
		}
		var f Frame
		if err := Decode(c.In, &f); err != nil || f.Op != OpRequest {
			t.Fatalf("%s: Decode = %v, op %d", c.Name, err, f.Op)
		}
		if got := EncodeReply(make([]byte, Len), &f, hostMAC); !bytes.Equal(got, c.Out) {
			t.Errorf("%s: reply\n got %x\nwant %x", c.Name, got, c.Out)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d answered cases", n)
	}
}

// TestDecodeErrors: each refusal, and a reply decoded as one.
func TestDecodeErrors(t *testing.T) {
	good := EncodeRequest(make([]byte, Len), Broadcast, podMAC, podIP, gateway)
	edit := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	for _, c := range []struct {
		name  string
		frame []byte
		err   error
		op    uint16
	}{
		{"request", good, nil, OpRequest},
		{"reply", edit(OffOp, 0, OpReply), nil, OpReply},
		{"short", good[:Len-1], ErrShort, 0},
		{"VLAN tag", edit(OffEthType, 0x81, 0x00), ErrEtherType, 0},
		{"hardware type", edit(OffHType, 0, 6), ErrHTypePType, 0},
		{"protocol type", edit(OffPType, 0x86, 0xdd), ErrHTypePType, 0},
		{"address lengths", edit(OffHLen, 6, 16), ErrLengths, 0},
		{"RARP opcode", edit(OffOp, 0, 3), ErrOpcode, 0},
	} {
		var f Frame
		err := Decode(c.frame, &f)
		if err != c.err || f.Op != c.op {
			t.Errorf("%s: Decode = %v, op %d; want %v, op %d", c.name, err, f.Op, c.err, c.op)
		}
	}
}

func TestCodecDoesNotAllocate(t *testing.T) {
	var f Frame
	b := make([]byte, Len)
	req := EncodeRequest(make([]byte, Len), Broadcast, podMAC, podIP, gateway)
	if n := testing.AllocsPerRun(100, func() {
		_ = Decode(req, &f)
		EncodeReply(b, &f, hostMAC)
		EncodeRequest(b, Broadcast, podMAC, podIP, gateway)
	}); n != 0 {
		t.Errorf("%v allocs per decode and two encodes", n)
	}
}

// FuzzDecode proves that the fixed-offset codec accepts exactly the frames
// that mdlayher/ethernet and mdlayher/arp decode as Ethernet/IPv4 ARP
// requests or replies, with the same field values.
func FuzzDecode(f *testing.F) {
	for _, c := range framecases.Load(f, casesFile) {
		f.Add(c.In)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Frame
		err := Decode(b, &r)
		ef, ap, ok := framecases.ReferenceDecode(b)
		if (err == nil) != ok {
			t.Fatalf("Decode error %v, but mdlayher/arp says ARP=%v for %x", err, ok, b)
		}
		if !ok {
			return
		}
		switch {
		case r.Op != uint16(ap.Operation):
			t.Fatalf("opcode %d vs %v", r.Op, ap.Operation)
		case !bytes.Equal(r.EthDst[:], ef.Destination), !bytes.Equal(r.EthSrc[:], ef.Source):
			t.Fatalf("Ethernet addresses differ: %x %x vs %v %v", r.EthDst, r.EthSrc, ef.Destination, ef.Source)
		case !bytes.Equal(r.SHA[:], ap.SenderHardwareAddr), !bytes.Equal(r.THA[:], ap.TargetHardwareAddr):
			t.Fatalf("ARP hardware addresses differ: %x %x vs %v %v", r.SHA, r.THA, ap.SenderHardwareAddr, ap.TargetHardwareAddr)
		case r.SPA != ap.SenderIP, r.TPA != ap.TargetIP:
			t.Fatalf("ARP IPs differ: %v %v vs %v %v", r.SPA, r.TPA, ap.SenderIP, ap.TargetIP)
		}
	})
}
