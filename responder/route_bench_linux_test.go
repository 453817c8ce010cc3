package responder

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pxresp/pxresp/internal/route"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// BenchmarkHandleMode is the steady-state cost of one request in each mode:
// a broadcast who-has 169.254.1.1 from a pod, answered, through the whole
// per-frame path with a no-op transport (as BenchmarkHandle). gateway
// decides from the configured gateway; route asks a real route.Cache, warm,
// on the host namespace of the reference topology (internal/test/topo), where
// 169.254.1.1 leaves by the default route through the uplink. route needs
// root (privtest): it is skipped without it, unless PXRESP_PRIVILEGED=1.
func BenchmarkHandleMode(b *testing.B) {
	b.Run("gateway", BenchmarkHandle)
	b.Run("route", func(b *testing.B) {
		privtest.Require(b)
		tp := topotest.New(b, 1, "pxrrbench")
		pod := tp.Pods[0]
		var ifi *net.Interface
		if err := tp.Host.Do(func() error {
			var err error
			ifi, err = net.InterfaceByName(pod.HostIf)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		h, err := tp.Host.Handle()
		if err != nil {
			b.Fatal(err)
		}
		cache, err := route.New(route.Config{Namespace: &h})
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
		defer cache.Close()
		pol, err := policy.NewRoute(nil)
		if err != nil {
			b.Fatal(err)
		}
		r := newResponder(nopTransport{}, Config{Index: ifi.Index, Name: pod.HostIf, Settings: Settings{MAC: topo.GatewayMAC, Policy: pol,
			OnLink: []netip.Prefix{netip.PrefixFrom(pod.IP, 32)}},
			Router: cache})
		frame := request(pod.MAC, pod.IP, gateway, benchBcast)
		r.handle(frame) // the one miss: the cache is warm from here on
		if st := r.Stats(); st.Replies != 1 {
			b.Fatalf("route mode does not answer the gateway: %+v, cache %+v", st, cache.Stats())
		}
		before := cache.Stats()
		b.ReportAllocs()
		for b.Loop() {
			r.handle(frame)
		}
		after := cache.Stats()
		if st := r.Stats(); st.Replies != uint64(b.N)+1 {
			b.Fatalf("%d replies for %d requests: %+v, cache %+v", st.Replies, b.N+1, st, after)
		}
		// A netlink notification (none is expected) would cost a miss.
		b.ReportMetric(float64(after.Misses-before.Misses), "misses")
	})
}
