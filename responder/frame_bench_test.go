package responder

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pxresp/pxresp/policy"
)

// The per-frame path, step by step and whole. Run with
// `go test -run - -bench . -benchmem ./responder`.

var benchBcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func BenchmarkDecode(b *testing.B) {
	frame := request(podMAC, podIP, gateway, benchBcast)
	var r arpRequest
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRequest(frame, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	p, err := policy.New([]netip.Addr{gateway}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	if err != nil {
		b.Fatal(err)
	}
	req := &policy.Request{SenderMAC: [6]byte(podMAC), SenderIP: podIP, TargetIP: gateway, Delivery: policy.Broadcast}
	b.ReportAllocs()
	for b.Loop() {
		if p.Decide(req) != policy.Reply {
			b.Fatal("not a reply")
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	var r arpRequest
	if err := decodeRequest(request(podMAC, podIP, gateway, benchBcast), &r); err != nil {
		b.Fatal(err)
	}
	var out [FrameLen]byte
	b.ReportAllocs()
	for b.Loop() {
		encodeReply(out[:], &r, [6]byte(hostMAC))
	}
}

// BenchmarkHandle is the whole per-frame path of a Responder: decode,
// classify, decide, encode and hand to the transport (a no-op here).
func BenchmarkHandle(b *testing.B) {
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", MAC: hostMAC, Policy: gwPolicy(b),
		OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}})
	frame := request(podMAC, podIP, gateway, benchBcast)
	b.ReportAllocs()
	for b.Loop() {
		r.handle(frame)
	}
	if r.Stats().Replies == 0 {
		b.Fatal("no replies")
	}
}
