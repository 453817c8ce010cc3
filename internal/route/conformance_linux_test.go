package route

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// TestConformanceWithKernel holds route mode to the kernel: random
// requests from several client interfaces, for targets across every kind
// of route, go once to the kernel's proxy_arp and once to pxresp in route
// mode, and the replies must be identical, byte for byte and in number
// (the kernel answers the host's own addresses in both runs; pxresp must
// not answer them too).
//
// The host namespace ("h"), with every other namespace a veth away:
//
//	c0  client 10.244.0.2/32, pod-style: 169.254.1.1 dev eth0, default via it;
//	    host: 10.244.0.2/32 dev c0 scope link, c0 MAC ee:ee:ee:ee:ee:ee
//	c1  client 10.244.0.3/32, the same; host also routes 10.60.5.0/24 dev c1
//	c2  client 10.1.2.10/24, default via 10.1.2.1; host 10.1.2.1/24 on c2,
//	    and 10.90.0.0/24 via 10.1.2.20 dev c2 (back out a client link)
//	c3  client 10.1.3.10/24, default via 10.1.3.1 (like the snat scenario: no one owns .1);
//	    host: 10.1.3.10/32 dev c3 scope link, no address on c3
//	up1 198.18.1.1/24 to sink s1 (.2); 10.50.0.0/24 via 198.18.1.2
//	up2 198.18.2.1/24 to sink s2 (.2); 10.60.0.0/16 via 198.18.2.2
//	lo  10.80.0.1/32; also 10.91.0.0/24 dev c0; blackhole 10.70.0.0/24,
//	    unreachable 10.71.0.0/24, prohibit 10.72.0.0/24
//
// It runs three variants: these routes; with a default route via up1; and,
// with the default route, forwarding off on c1, strict rp_filter on c3 and
// loose rp_filter on c0 without their /32 routes back (the state after a
// link flap), and loose rp_filter on c2 (which passes). In the last, the
// only differences allowed are the documented fallback, on c0, c1 and c3:
// pxresp answers, and the kernel does not, exactly the requests whose
// target the host routes out another interface.
//
// The seed is logged; PXRESP_ROUTE_SEED=N repeats a run.
func TestConformanceWithKernel(t *testing.T) {
	privtest.Require(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PXRESP_ROUTE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PXRESP_ROUTE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (PXRESP_ROUTE_SEED=%d repeats this run)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	n := buildConfNet(t)
	reqs := n.requests(rng, 300)
	t.Logf("%d requests from %d clients", len(reqs), len(n.clients))

	// One Cache through every variant: the changes between them must
	// invalidate it.
	h, err := n.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cache, err := New(Config{Namespace: &h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()

	compare := func(t *testing.T, allowFallback map[int]bool) {
		kernel := n.kernelRun(t, reqs)
		px1, st := n.pxrespRun(t, reqs, cache)
		px2, _ := n.pxrespRun(t, reqs, cache) // warm cache: hits
		t.Logf("pxresp verdicts: %s; cache %+v", verdicts(st), cache.Stats())
		var diffs []confReq
		for _, r := range reqs {
			k := r.key()
			if !framesEqual(px1[k], px2[k]) {
				t.Errorf("%s: pxresp answered differently with a warm cache:\n cold %x\n warm %x", n.describe(r), px1[k], px2[k])
			}
			if framesEqual(kernel[k], px1[k]) {
				continue
			}
			if allowFallback[r.client] && len(kernel[k]) == 0 && len(px1[k]) == 1 {
				diffs = append(diffs, r)
				continue
			}
			t.Errorf("%s:\n kernel %d replies %x\n pxresp %d replies %x", n.describe(r), len(kernel[k]), kernel[k], len(px1[k]), px1[k])
		}
		for _, m := range []map[reqKey][][]byte{kernel, px1, px2} {
			for k := range m {
				if !slices.ContainsFunc(reqs, func(r confReq) bool { return r.key() == k }) {
					t.Errorf("a reply nobody asked for: client %d, target %v: %x", k.client, k.target, m[k])
				}
			}
		}
		answered := 0
		for _, r := range reqs {
			if len(kernel[r.key()]) > 0 {
				answered++
			}
		}
		t.Logf("kernel answered %d of %d requests; %d documented fallback differences", answered, len(reqs), len(diffs))
		if len(allowFallback) == 0 {
			// Every class occurred: the comparison covered them all.
			for _, v := range []policy.Verdict{policy.Reply, policy.NoRoute, policy.LocalAddress, policy.OwnAddress} {
				if v != policy.Reply && st.Ignored[v] == 0 || v == policy.Reply && st.Replies == 0 {
					t.Errorf("no request had verdict %v: the requests do not cover every class", v)
				}
			}
			return
		}
		// The fallback: on those interfaces pxresp answers, besides what
		// the kernel still answers itself (the host's own addresses),
		// exactly the targets the host routes out another interface.
		for _, r := range reqs {
			if !allowFallback[r.client] {
				continue
			}
			c := n.clients[r.client]
			elsewhere := r.target != c.ip && n.outputElsewhere(t, r.target, c.ifindex)
			want := len(kernel[r.key()])
			if elsewhere {
				want++
			}
			if got := len(px1[r.key()]); got != want {
				t.Errorf("%s: %d replies with pxresp, want %d (kernel %d; output route leaves elsewhere: %v)",
					n.describe(r), got, want, len(kernel[r.key()]), elsewhere)
			}
		}
		if len(diffs) == 0 || cache.Stats().Fallbacks == 0 {
			t.Errorf("the variant made no difference (%d diffs, %+v): it does not exercise the fallback", len(diffs), cache.Stats())
		}
	}

	t.Run("routes", func(t *testing.T) { compare(t, nil) })
	t.Run("default route", func(t *testing.T) {
		n.ip(t, n.host, "route", "add", "default", "via", "198.18.1.2", "dev", "up1")
		compare(t, nil)
		n.ip(t, n.host, "route", "del", "default")
	})
	t.Run("forwarding off and rp_filter", func(t *testing.T) {
		// With a default route, so that loose rp_filter finds a route back
		// to the sender, though not through its interface.
		c0, c1, c2, c3 := n.clients[0], n.clients[1], n.clients[2], n.clients[3]
		n.ip(t, n.host, "route", "add", "default", "via", "198.18.1.2", "dev", "up1")
		n.sysctl(t, "net.ipv4.conf."+c1.hostIf+".forwarding", "0")
		// Strict and loose rp_filter on interfaces without an address,
		// whose /32 route back a link flap has flushed: the kernel is
		// silent on both.
		n.sysctl(t, "net.ipv4.conf."+c3.hostIf+".rp_filter", "1")
		n.ip(t, n.host, "route", "del", c3.ip.String()+"/32", "dev", c3.hostIf)
		n.sysctl(t, "net.ipv4.conf."+c0.hostIf+".rp_filter", "2")
		n.ip(t, n.host, "route", "del", c0.ip.String()+"/32", "dev", c0.hostIf)
		// Loose rp_filter on an interface with an address and a route
		// back: it passes, and pxresp must answer exactly as the kernel.
		n.sysctl(t, "net.ipv4.conf."+c2.hostIf+".rp_filter", "2")
		compare(t, map[int]bool{0: true, 1: true, 3: true})
	})
	if s := cache.Stats(); s.Errors != 0 || s.Limited != 0 || s.Hits == 0 {
		t.Errorf("cache stats %+v: want hits, and no errors or limited lookups", s)
	}
}

type confClient struct {
	idx     int
	ns      *topo.NS
	hostIf  string
	ifindex int
	hostMAC net.HardwareAddr
	ip      netip.Addr
	mac     net.HardwareAddr
	arp     *arptest.Client
}

type confNet struct {
	host    *topo.NS
	clients []*confClient
}

type confReq struct {
	client  int
	target  netip.Addr
	unicast bool // sent to the host interface's MAC, not broadcast
}

type reqKey struct {
	client int
	target netip.Addr
}

func (r confReq) key() reqKey { return reqKey{r.client, r.target} }

func (n *confNet) describe(r confReq) string {
	c := n.clients[r.client]
	d := "broadcast"
	if r.unicast {
		d = "unicast"
	}
	return fmt.Sprintf("%s who-has %v tell %v (%s)", c.hostIf, r.target, c.ip, d)
}

func (n *confNet) ip(t testing.TB, ns *topo.NS, args ...string) {
	t.Helper()
	if err := ns.IP(context.Background(), args...); err != nil {
		t.Fatal(err)
	}
}

func (n *confNet) sysctl(t testing.TB, key, value string) {
	t.Helper()
	if err := n.host.Sysctl(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
}

const confTag = "pxrconf"

func buildConfNet(t *testing.T) *confNet {
	t.Helper()
	if err := topo.CleanupStale(confTag); err != nil {
		t.Logf("cleanup of stale namespaces: %v", err)
	}
	prefix := topo.NewPrefix(confTag)
	t.Cleanup(func() {
		if err := topo.Cleanup(prefix); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	newNS := func(name string) *topo.NS {
		ns := &topo.NS{Name: prefix + name}
		if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
		}
		// No IPv6: nothing but the test's own frames on the links.
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := ns.Sysctl(context.Background(), k, "1"); err != nil {
				t.Fatal(err)
			}
		}
		return ns
	}
	n := &confNet{host: newNS("h")}
	h := n.host
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.forwarding", "1"}, {"net.ipv4.conf.default.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.all.proxy_arp", "0"}, {"net.ipv4.conf.default.proxy_arp", "0"},
	} {
		n.sysctl(t, kv[0], kv[1])
	}
	n.ip(t, h, "link", "set", "lo", "up")

	// veth links a host interface to eth0 in ns, both up.
	veth := func(hostIf string, ns *topo.NS) {
		n.ip(t, h, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
		n.ip(t, ns, "link", "set", "lo", "up")
		n.ip(t, ns, "link", "set", "eth0", "up")
		n.ip(t, h, "link", "set", hostIf, "up")
	}
	for i, s := range []string{"s1", "s2"} {
		ns := newNS(s)
		up := "up" + strconv.Itoa(i+1)
		veth(up, ns)
		n.ip(t, h, "addr", "add", fmt.Sprintf("198.18.%d.1/24", i+1), "dev", up)
		n.ip(t, ns, "addr", "add", fmt.Sprintf("198.18.%d.2/24", i+1), "dev", "eth0")
	}
	for i, cidr := range []string{"10.244.0.2/32", "10.244.0.3/32", "10.1.2.10/24", "10.1.3.10/24"} {
		c := &confClient{idx: i, ns: newNS("c" + strconv.Itoa(i)), hostIf: "c" + strconv.Itoa(i)}
		c.ip = netip.MustParsePrefix(cidr).Addr()
		veth(c.hostIf, c.ns)
		n.ip(t, c.ns, "addr", "add", cidr, "dev", "eth0")
		switch i {
		case 0, 1:
			n.ip(t, h, "link", "set", c.hostIf, "address", topo.GatewayMAC.String())
			n.ip(t, c.ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
			n.ip(t, c.ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		case 2:
			n.ip(t, h, "addr", "add", "10.1.2.1/24", "dev", c.hostIf)
			n.ip(t, c.ns, "route", "add", "default", "via", "10.1.2.1")
		case 3:
			n.ip(t, c.ns, "route", "add", "default", "via", "10.1.3.1")
		}
		n.clients = append(n.clients, c)
	}
	for _, c := range n.clients {
		waitLowerUp(t, h, c.hostIf)
		waitLowerUp(t, c.ns, "eth0")
		if c.idx != 2 {
			n.ip(t, h, "route", "add", c.ip.String()+"/32", "dev", c.hostIf, "scope", "link")
		}
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName(c.hostIf)
			if err == nil {
				c.ifindex, c.hostMAC = ifi.Index, ifi.HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := c.ns.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err == nil {
				c.mac = ifi.HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		a, err := arptest.Open(c.ns, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		c.arp = a
	}
	waitLowerUp(t, h, "up1")
	waitLowerUp(t, h, "up2")
	for _, args := range [][]string{
		{"route", "add", "10.50.0.0/24", "via", "198.18.1.2", "dev", "up1"},
		{"route", "add", "10.60.0.0/16", "via", "198.18.2.2", "dev", "up2"},
		{"route", "add", "10.60.5.0/24", "dev", "c1"},
		{"route", "add", "blackhole", "10.70.0.0/24"},
		{"route", "add", "unreachable", "10.71.0.0/24"},
		{"route", "add", "prohibit", "10.72.0.0/24"},
		{"addr", "add", "10.80.0.1/32", "dev", "lo"},
		{"route", "add", "10.90.0.0/24", "via", "10.1.2.20", "dev", "c2"},
		{"route", "add", "10.91.0.0/24", "dev", "c0", "scope", "link"},
	} {
		n.ip(t, h, args...)
	}
	return n
}

// waitLowerUp polls (every 5 ms, at most 3 s) until ifname in ns has carrier.
func waitLowerUp(t *testing.T, ns *topo.NS, ifname string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, err := ns.Exec(context.Background(), "ip", "-j", "link", "show", "dev", ifname)
		if err != nil {
			t.Fatal(err)
		}
		var ls []struct {
			Flags []string `json:"flags"`
		}
		if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
			t.Fatalf("ip -j link show dev %s in %s: %q (%v)", ifname, ns.Name, out, err)
		}
		if slices.Contains(ls[0].Flags, "LOWER_UP") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s: no carrier after 3s (flags %v)", ifname, ns.Name, ls[0].Flags)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requests draws the requests: first one from each client for a target of
// each kind (so every kind is covered), then random ones, at most max in
// all, each (client, target) once.
func (n *confNet) requests(rng *rand.Rand, limit int) []confReq {
	in := func(cidr string) func() netip.Addr {
		p := netip.MustParsePrefix(cidr)
		return func() netip.Addr {
			b := p.Addr().As4()
			host := rng.Uint32() & (1<<(32-p.Bits()) - 1)
			v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
			return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
	}
	one := func(a string) func() netip.Addr {
		addr := netip.MustParseAddr(a)
		return func() netip.Addr { return addr }
	}
	kinds := []func() netip.Addr{
		in("10.50.0.0/24"), in("10.60.0.0/16"), in("10.60.5.0/24"),
		in("10.70.0.0/24"), in("10.71.0.0/24"), in("10.72.0.0/24"),
		one("10.80.0.1"), one("198.18.1.1"), one("198.18.2.1"), one("10.1.2.1"),
		one("198.18.1.2"), one("198.18.2.2"), in("198.18.1.0/24"), in("198.18.2.0/24"),
		one("198.18.1.255"), one("10.1.2.255"), in("10.1.2.0/24"), in("10.1.3.0/24"), one("10.1.3.10"),
		one("10.244.0.2"), one("10.244.0.3"), in("10.244.0.0/24"),
		in("10.90.0.0/24"), in("10.91.0.0/24"), in("10.99.0.0/16"), one("169.254.1.1"),
	}
	seen := map[reqKey]bool{}
	var reqs []confReq
	add := func(client int, kind func() netip.Addr) {
		r := confReq{client: client, target: kind(), unicast: rng.IntN(5) == 0}
		if !seen[r.key()] && len(reqs) < limit {
			seen[r.key()] = true
			reqs = append(reqs, r)
		}
	}
	for c := range n.clients {
		for _, k := range kinds {
			add(c, k)
		}
	}
	for tries := 0; len(reqs) < limit && tries < 10*limit; tries++ {
		add(rng.IntN(len(n.clients)), kinds[rng.IntN(len(kinds))])
	}
	rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	return reqs
}

// send sends every request, collects the replies each client gets until
// 300 ms after the last one (the kernel answers in microseconds, pxresp in
// a netlink round trip), and returns them by request.
func (n *confNet) send(t *testing.T, reqs []confReq) map[reqKey][][]byte {
	t.Helper()
	got := map[reqKey][][]byte{}
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range n.clients {
		c.arp.Drain()
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				f, err := c.arp.NextReply(20 * time.Millisecond)
				if err != nil {
					t.Errorf("read on %s: %v", c.hostIf, err)
					return
				}
				if f == nil {
					continue
				}
				var rf arpframe.Frame
				if err := arpframe.Decode(f, &rf); err != nil {
					t.Errorf("reply on %s: %v", c.hostIf, err)
					return
				}
				target := rf.SPA // the ARP sender IP of the reply
				mu.Lock()
				got[reqKey{c.idx, target}] = append(got[reqKey{c.idx, target}], f)
				mu.Unlock()
			}
		})
	}
	for _, r := range reqs {
		c := n.clients[r.client]
		dst := arptest.Broadcast
		if r.unicast {
			dst = c.hostMAC
		}
		if err := c.arp.Send(arptest.Request(c.mac, c.ip, r.target, dst)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	return got
}

// kernelRun asks with the kernel's proxy_arp on (proxy_delay 0) on every
// client interface.
func (n *confNet) kernelRun(t *testing.T, reqs []confReq) map[reqKey][][]byte {
	t.Helper()
	for _, c := range n.clients {
		n.sysctl(t, "net.ipv4.conf."+c.hostIf+".proxy_arp", "1")
		n.sysctl(t, "net.ipv4.neigh."+c.hostIf+".proxy_delay", "0")
	}
	got := n.send(t, reqs)
	for _, c := range n.clients {
		n.sysctl(t, "net.ipv4.conf."+c.hostIf+".proxy_arp", "0")
	}
	return got
}

// pxrespRun asks with the kernel's proxy_arp off and a route-mode Responder
// on every client interface; it returns the replies and the Responders'
// summed stats.
func (n *confNet) pxrespRun(t *testing.T, reqs []confReq, cache *Cache) (map[reqKey][][]byte, responder.Stats) {
	t.Helper()
	pol, err := policy.NewRoute(nil)
	if err != nil {
		t.Fatal(err)
	}
	var rs []*responder.Responder
	var wg sync.WaitGroup
	for _, c := range n.clients {
		var r *responder.Responder
		if err := n.host.Do(func() error {
			var err error
			r, err = responder.Listen(responder.Config{Index: c.ifindex, Name: c.hostIf, Settings: responder.Settings{MAC: c.hostMAC, Policy: pol},
				Router: cache, Logger: testLogger(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		wg.Go(func() {
			if err := r.Serve(context.Background()); err != nil {
				t.Errorf("Serve on %s: %v", c.hostIf, err)
			}
		})
	}
	got := n.send(t, reqs)
	var sum responder.Stats
	for _, r := range rs {
		sum.Add(r.Stats())
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if sum.Requests != uint64(len(reqs)) || sum.RateLimited != 0 || sum.SendErrors != 0 || sum.Ignored[policy.UnknownRoute] != 0 {
		t.Errorf("responder stats %+v: want %d requests, none rate limited, failed or with an unknown route", sum, len(reqs))
	}
	return got, sum
}

// outputElsewhere says whether the host's output route to dst is a unicast
// route leaving through another interface than iif.
func (n *confNet) outputElsewhere(t *testing.T, dst netip.Addr, iif int) bool {
	t.Helper()
	h, err := n.host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	rs, err := nh.RouteGet(dst.AsSlice())
	if err != nil || len(rs) == 0 {
		return false
	}
	return rs[0].Type == unix.RTN_UNICAST && rs[0].LinkIndex != iif
}

func framesEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, bytes.Compare)
	slices.SortFunc(b, bytes.Compare)
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func verdicts(s responder.Stats) string {
	parts := []string{fmt.Sprintf("reply=%d", s.Replies)}
	for v, c := range s.Ignored {
		if c > 0 {
			parts = append(parts, fmt.Sprintf("%v=%d", policy.Verdict(v), c))
		}
	}
	return strings.Join(parts, " ")
}
