package main

import (
	"net/netip"
	"testing"

	"github.com/pxresp/pxresp/internal/arpframe"
)

func TestARPRequestAndMatcher(t *testing.T) {
	pod := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	podIP := netip.MustParseAddr("10.244.0.2")
	gw := netip.MustParseAddr("169.254.1.1")
	req := arpRequest(arpframe.Broadcast, pod, podIP, gw)
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1,
		0x02, 0, 0, 0, 0, 0x01, 10, 244, 0, 2,
		0, 0, 0, 0, 0, 0, 169, 254, 1, 1,
	}
	if string(req[:]) != string(want) {
		t.Fatalf("request\n got %x\nwant %x", req, want)
	}
	if u := arpRequest(gatewayMAC, pod, podIP, gw); [6]byte(u[:6]) != gatewayMAC {
		t.Errorf("unicast request to %x", u[:6])
	}

	// The kernel's reply to it.
	reply := []byte{
		0x02, 0, 0, 0, 0, 0x01, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 2,
		0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 169, 254, 1, 1,
		0x02, 0, 0, 0, 0, 0x01, 10, 244, 0, 2,
	}
	m := newReplyMatcher(gw, pod, podIP)
	if !m.match(reply) {
		t.Error("reply not matched")
	}
	if !m.match(append(reply, make([]byte, 18)...)) {
		t.Error("padded reply not matched")
	}
	if m.match(req[:]) {
		t.Error("request matched as a reply")
	}
	if m.match(reply[:41]) {
		t.Error("short frame matched")
	}
	for _, off := range []int{0, 13, 21, 29, 37, 41} { // eth dst, ethertype, op, SPA, THA, TPA
		bad := append([]byte(nil), reply...)
		bad[off] ^= 0x40
		if m.match(bad) {
			t.Errorf("reply with byte %d changed matched", off)
		}
	}
	if n := testing.AllocsPerRun(100, func() { m.match(reply) }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
}
