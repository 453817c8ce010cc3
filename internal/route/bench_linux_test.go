package route

import (
	"math"
	"testing"

	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/policy"
)

// BenchmarkRoute measures Cache.Route on the reference topology's host
// namespace (privileged): a hit, hits from all CPUs at once, a miss (one
// netlink RTM_GETROUTE round trip: the cache is emptied before each call),
// and a miss through the fallback (forwarding off: the input lookup, the
// interface's netconf and addresses, and two output lookups). Run with
//
//	sudo go test -run '^$' -bench BenchmarkRoute -benchmem ./internal/route
func BenchmarkRoute(b *testing.B) {
	privtest.Require(b)
	n := newNode(b)
	c := n.newCache(b, Config{MissRate: math.MaxInt32})
	want := func(b *testing.B, got policy.RouteClass) {
		if got != policy.RouteElsewhere {
			b.Fatalf("Route = %v, want elsewhere", got)
		}
	}
	b.Run("hit", func(b *testing.B) {
		want(b, c.Route(n.pod0, pod0IP, gwIP))
		b.ReportAllocs()
		for b.Loop() {
			c.Route(n.pod0, pod0IP, gwIP)
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		want(b, c.Route(n.pod0, pod0IP, gwIP))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Route(n.pod0, pod0IP, gwIP)
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		m := c.Stats().Misses
		b.ReportAllocs()
		for b.Loop() {
			c.invalidate(true)
			c.Route(n.pod0, pod0IP, gwIP)
		}
		if got := c.Stats().Misses - m; got < uint64(b.N) {
			b.Fatalf("%d misses for %d calls", got, b.N)
		}
	})
	b.Run("miss-fallback", func(b *testing.B) {
		n.sysctl(b, "net.ipv4.conf."+n.tp.Pods[0].HostIf+".forwarding", "0")
		defer n.sysctl(b, "net.ipv4.conf."+n.tp.Pods[0].HostIf+".forwarding", "1")
		c.invalidate(true)
		want(b, c.Route(n.pod0, pod0IP, gwIP))
		f := c.Stats().Fallbacks
		b.ReportAllocs()
		for b.Loop() {
			c.invalidate(true)
			c.Route(n.pod0, pod0IP, gwIP)
		}
		if got := c.Stats().Fallbacks - f; got < uint64(b.N) {
			b.Fatalf("%d fallbacks for %d calls", got, b.N)
		}
	})
}
