package responder

import (
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/policy"
)

// The per-frame path, step by step and whole. Run with
// `go test -run - -bench . -benchmem ./responder`.

var benchBcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func BenchmarkDecode(b *testing.B) {
	frame := request(podMAC, podIP, gateway, benchBcast)
	var r arpframe.Frame
	b.ReportAllocs()
	for b.Loop() {
		if err := arpframe.Decode(frame, &r); err != nil {
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
		if p.Decide(req, nil) != policy.Reply {
			b.Fatal("not a reply")
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	var r arpframe.Frame
	if err := arpframe.Decode(request(podMAC, podIP, gateway, benchBcast), &r); err != nil {
		b.Fatal(err)
	}
	var out [arpframe.Len]byte
	b.ReportAllocs()
	for b.Loop() {
		arpframe.EncodeReply(out[:], &r, [6]byte(hostMAC))
	}
}

// BenchmarkHandle is the whole per-frame path of a Responder: decode,
// classify, decide, encode and hand to the transport (a no-op here).
func BenchmarkHandle(b *testing.B) {
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(b),
		OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}}})
	frame := request(podMAC, podIP, gateway, benchBcast)
	b.ReportAllocs()
	for b.Loop() {
		r.handle(frame)
	}
	if r.Stats().Replies == 0 {
		b.Fatal("no replies")
	}
}

// BenchmarkHandleLatency is BenchmarkHandle with Config.Latency: "off" has
// no observer (and no timestamp), the others observe each reply's latency
// into an observer that does nothing, counts with atomics, or keeps a
// histogram the way prometheus.Histogram does.
func BenchmarkHandleLatency(b *testing.B) {
	for _, bc := range []struct {
		name string
		obs  Observer
	}{
		{"off", nil},
		{"nop", nopObserver{}},
		{"atomic", &atomicObserver{}},
		{"histogram", newBenchHistogram()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(b),
				OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}}, Latency: bc.obs})
			frame := request(podMAC, podIP, gateway, benchBcast)
			var rx int64
			if bc.obs != nil {
				rx = time.Now().UnixNano()
			}
			b.ReportAllocs()
			for b.Loop() {
				r.handleAt(frame, rx)
			}
			if r.Stats().Replies == 0 {
				b.Fatal("no replies")
			}
		})
	}
}

// BenchmarkHandleFakeRouter is the per-frame path in route mode, with a
// Router that answers from a map (the cost of a route cache hit is
// internal/route's; this is what the Responder adds): "reply" is a target
// routed elsewhere, "no-route" one without a route, "probe" a DAD probe,
// which costs no lookup.
func BenchmarkHandleFakeRouter(b *testing.B) {
	for _, bc := range []struct {
		name   string
		frame  []byte
		reply  bool
		lookup bool
	}{
		{"reply", request(podMAC, podIP, routeElsewhere, benchBcast), true, true},
		{"no-route", request(podMAC, podIP, routeNone, benchBcast), false, true},
		{"probe", request(podMAC, netip.IPv4Unspecified(), routeElsewhere, benchBcast), false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := newTableRouter()
			r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", Settings: Settings{MAC: hostMAC, Policy: routePolicy(b)},
				Router: tr})
			b.ReportAllocs()
			for b.Loop() {
				r.handle(bc.frame)
			}
			if (r.Stats().Replies > 0) != bc.reply || (tr.calls.Load() > 0) != bc.lookup {
				b.Fatalf("stats %+v, %d lookups", r.Stats(), tr.calls.Load())
			}
		})
	}
}

// BenchmarkHandleDryRun is the per-frame path of a dry run: "quiet" with
// info logging off, "logged" writing each would-be reply's info line (text
// handler, to io.Discard).
func BenchmarkHandleDryRun(b *testing.B) {
	for _, bc := range []struct {
		name  string
		level slog.Level
	}{{"quiet", slog.LevelWarn}, {"logged", slog.LevelInfo}} {
		b.Run(bc.name, func(b *testing.B) {
			log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: bc.level}))
			r := newResponder(nopTransport{}, Config{Index: 7, Name: "calibench", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(b)},
				Logger: log, DryRun: true})
			frame := request(podMAC, podIP, gateway, benchBcast)
			b.ReportAllocs()
			for b.Loop() {
				r.handle(frame)
			}
			if r.Stats().DryRun == 0 {
				b.Fatal("no would-be replies")
			}
		})
	}
}

type nopObserver struct{}

func (nopObserver) Observe(float64) {}

// benchHistogram observes the way prometheus.Histogram does: find the
// bucket, then atomic adds to the count, the bucket and (with a CAS loop)
// the float sum. It stands in for the real one, which the responder package
// does not import.
type benchHistogram struct {
	upper   []float64
	buckets []atomic.Uint64
	count   atomic.Uint64
	sumBits atomic.Uint64
}

func newBenchHistogram() *benchHistogram {
	// 1 µs to ~1 s, ×2 per bucket: 21 buckets, searched linearly as
	// prometheus does below 35.
	var upper []float64
	for v := 1e-6; v < 1.1; v *= 2 {
		upper = append(upper, v)
	}
	return &benchHistogram{upper: upper, buckets: make([]atomic.Uint64, len(upper)+1)}
}

func (h *benchHistogram) Observe(v float64) {
	i := 0
	for i < len(h.upper) && v > h.upper[i] {
		i++
	}
	h.count.Add(1)
	h.buckets[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}
