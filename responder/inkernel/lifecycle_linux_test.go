package inkernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pxresp/pxresp/internal/ratelimit"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/hostile"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// waitStats polls i's counters (every ms, at most 2 s) until cond holds.
func waitStats(t *testing.T, i *Iface, what string, cond func(responder.Stats) bool) responder.Stats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := i.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: stats %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRateLimitInKernel floods the gateway with requests: the program
// answers the burst and then the rate, and drops and counts the rest; every
// request is counted once, and the pod gets exactly the replies counted.
// The bound on replies is the limit over the whole time the flood took.
func TestRateLimitInKernel(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	i := attachTo(t, load(t), tp, pod, func(c *responder.Config) { c.RateLimit = responder.DefaultRateLimit })
	rate, burst := responder.DefaultRateLimit, ratelimit.DefaultBurst(responder.DefaultRateLimit)
	const n = 5000
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	reply := hostile.ReplyTo(t, req, topo.GatewayMAC)
	// The replies are read while the flood goes on: the client's socket
	// holds a few hundred.
	received, wrong := make(chan uint64, 1), make(chan []byte, 1)
	go func() {
		got := uint64(0)
		for range n {
			r, err := cl.NextReply(500 * time.Millisecond)
			if err != nil || r == nil {
				break
			}
			if !bytes.Equal(r, reply) {
				select {
				case wrong <- r:
				default:
				}
			}
			got++
		}
		received <- got
	}()
	start := time.Now()
	for range n {
		if err := cl.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	st := waitStats(t, i, "every request to be counted", func(s responder.Stats) bool { return s.Requests == n })
	elapsed := time.Since(start)
	most := uint64(burst) + uint64(math.Ceil(elapsed.Seconds()*float64(rate))) + 1
	t.Logf("%d requests in %v: %d replies (at most %d allowed), %d rate limited", n, elapsed, st.Replies, most, st.RateLimited)
	switch {
	case st.Replies+st.RateLimited != n:
		t.Errorf("stats %+v: replies and rate-limited requests do not add up to %d", st, n)
	case st.Replies < uint64(burst) || st.Replies > most:
		t.Errorf("%d replies, want between the burst (%d) and %d", st.Replies, burst, most)
	case elapsed.Seconds()*float64(rate)+float64(burst) < n && st.RateLimited == 0:
		t.Errorf("nothing rate limited: stats %+v", st)
	}
	if got := <-received; got != st.Replies {
		t.Errorf("the pod got %d replies, the program counted %d", got, st.Replies)
	}
	select {
	case r := <-wrong:
		t.Errorf("reply %x, want %x", r, reply)
	default:
	}
}

// TestStormerLimitedAlone floods the gateway from the pod's MAC while a
// second sender on the same interface asks once every 10 ms, well within
// the limit: the flooder is moved to a bucket of its own once the
// interface's refuses it, so the second sender is answered every time, and
// the flooder still gets replies.
func TestStormerLimitedAlone(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	flood := topotest.Client(t, pod)
	watch := topotest.Client(t, pod)
	i := attachTo(t, load(t), tp, pod, func(c *responder.Config) { c.RateLimit = responder.DefaultRateLimit })
	other := net.HardwareAddr{0x02, 0, 0, 0, 0x5e, 0x01}
	otherIP := netip.MustParseAddr("10.244.77.7")
	const asks = 30
	stormReq := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	otherReq := arptest.Request(other, otherIP, topo.Gateway, arptest.Broadcast)

	// The flood runs until the other sender is done (bounded by a count).
	done := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	flooded := make(chan result, 1)
	go func() {
		n := 0
		for ; n < 2_000_000; n++ {
			select {
			case <-done:
				flooded <- result{n, nil}
				return
			default:
			}
			if err := flood.Send(stormReq); err != nil {
				flooded <- result{n, err}
				return
			}
		}
		flooded <- result{n, nil}
	}()
	// Once the flood has gone over the limit, the other sender asks.
	waitStats(t, i, "the flood to be rate limited", func(s responder.Stats) bool { return s.RateLimited > 0 })
	answered := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for range asks {
		<-tick.C
		if err := watch.Send(otherReq); err != nil {
			t.Fatal(err)
		}
		if r, err := watch.NextReplyTo(other, 10*time.Millisecond); err == nil && r != nil {
			answered++
		}
	}
	close(done)
	res := <-flooded
	if res.err != nil {
		t.Fatalf("flood: send %d: %v", res.n, res.err)
	}
	n := res.n
	// A reply still on its way when the wait ended is counted by the program.
	st := i.Stats()
	t.Logf("flood: %d requests sent; other sender: %d of %d answered within 10 ms; stats %+v", n, answered, asks, st)
	if answered < asks {
		// Late replies are not lost ones: count the program's replies to
		// the other sender instead of trusting the 10 ms wait alone.
		for {
			r, err := watch.NextReplyTo(other, 200*time.Millisecond)
			if err != nil || r == nil {
				break
			}
			answered++
		}
	}
	if answered != asks {
		t.Errorf("the other sender got %d replies to %d requests during the storm, want all", answered, asks)
	}
	if st.Replies <= uint64(asks) || st.RateLimited == 0 {
		t.Errorf("stats %+v: want the flooder answered within its limit and refused beyond it", st)
	}
}

// TestDryRunPassesOn: a dry run counts the reply it would send and passes
// the request on, so that the kernel's proxy_arp, when it is on, answers.
func TestDryRunPassesOn(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	ctx := context.Background()
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	i := attachTo(t, load(t), tp, pod, func(c *responder.Config) { c.DryRun = true })
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	if got := topotest.Ask(t, cl, req, silence); got != nil {
		t.Fatalf("a dry run answered %x", got)
	}
	waitStats(t, i, "the would-be reply", func(s responder.Stats) bool { return s.DryRun == 1 })
	if err := tp.SetKernelProxyARP(ctx, pod.HostIf, true, 0); err != nil {
		t.Fatal(err)
	}
	if got := topotest.Ask(t, cl, req, time.Second); !bytes.Equal(got, hostile.ReplyTo(t, req, topo.GatewayMAC)) {
		t.Fatalf("the kernel's reply behind a dry run: %x", got)
	}
	want := responder.Stats{Requests: 2, DryRun: 2}
	if st := waitStats(t, i, "the second would-be reply", func(s responder.Stats) bool { return s.DryRun == 2 }); st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
}

// linkID returns the ID of i's tcx link.
func linkID(t *testing.T, i *Iface) link.ID {
	t.Helper()
	info, err := i.link.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// TestApplyInPlace changes what an attached interface answers: the
// gateway, the interface's MAC, an override MAC set and cleared. The next
// request is answered with the new settings, the link stays the same, and
// refused settings change nothing.
func TestApplyInPlace(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	ctx := context.Background()
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	i := attachTo(t, load(t), tp, pod, nil)
	id := linkID(t, i)
	gw2 := netip.MustParseAddr("169.254.1.2")
	ask := func(target netip.Addr, dst net.HardwareAddr) []byte {
		return arptest.Request(pod.MAC, pod.IP, target, dst)
	}
	var want responder.Stats
	answered := func(what string, req []byte, mac net.HardwareAddr) {
		t.Helper()
		if got := topotest.Ask(t, cl, req, time.Second); !bytes.Equal(got, hostile.ReplyTo(t, req, mac)) {
			t.Fatalf("%s: reply %x, want %x", what, got, hostile.ReplyTo(t, req, mac))
		}
		want.Requests++
		want.Replies++
		waitStats(t, i, what, func(s responder.Stats) bool { return s == want })
	}
	silent := func(what string, req []byte, v policy.Verdict, counted bool) {
		t.Helper()
		if got := topotest.Ask(t, cl, req, silence); got != nil {
			t.Fatalf("%s: reply %x, want none", what, got)
		}
		if counted {
			want.Requests++
			want.Ignored[v]++
		}
		waitStats(t, i, what, func(s responder.Stats) bool { return s == want })
	}
	settings := responder.Settings{MAC: topo.GatewayMAC, Policy: gatewayPolicy(t)}
	apply := func(edit func(*responder.Settings)) {
		t.Helper()
		edit(&settings)
		if err := i.Apply(settings); err != nil {
			t.Fatal(err)
		}
	}
	answered("the gateway", ask(topo.Gateway, arptest.Broadcast), topo.GatewayMAC)

	pol2, err := policy.New([]netip.Addr{gw2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	apply(func(s *responder.Settings) { s.Policy = pol2 })
	silent("the old gateway", ask(topo.Gateway, arptest.Broadcast), policy.NotTarget, true)
	answered("the new gateway", ask(gw2, arptest.Broadcast), topo.GatewayMAC)

	newMAC := net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 7}
	if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, "address", newMAC.String()); err != nil {
		t.Fatal(err)
	}
	apply(func(s *responder.Settings) { s.MAC = newMAC })
	if !bytes.Equal(i.MAC(), newMAC) {
		t.Errorf("MAC() = %v, want %v", i.MAC(), newMAC)
	}
	answered("broadcast after a MAC change", ask(gw2, arptest.Broadcast), newMAC)
	answered("unicast to the new MAC", ask(gw2, newMAC), newMAC)
	silent("unicast to the old MAC", ask(gw2, topo.GatewayMAC), 0, false)

	override := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	apply(func(s *responder.Settings) { s.Override = override })
	answered("broadcast with an override", ask(gw2, arptest.Broadcast), override)
	answered("unicast to the override", ask(gw2, override), override)
	answered("unicast to the interface's MAC with an override", ask(gw2, newMAC), override)
	apply(func(s *responder.Settings) { s.Override = nil })
	silent("unicast to the cleared override", ask(gw2, override), 0, false)
	answered("broadcast with the override cleared", ask(gw2, arptest.Broadcast), newMAC)

	route, err := policy.NewRoute(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := i.Apply(responder.Settings{MAC: newMAC, Policy: route}); !errors.Is(err, ErrRouteMode) {
		t.Errorf("Apply with a route-mode policy = %v, want ErrRouteMode", err)
	}
	if err := i.Apply(responder.Settings{MAC: net.HardwareAddr{1, 2, 3}, Policy: pol2}); err == nil || !strings.Contains(err.Error(), pod.HostIf) {
		t.Errorf("Apply with a 3-byte MAC = %v, want an error naming the interface", err)
	}
	if err := i.Apply(responder.Settings{MAC: newMAC, Override: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, Policy: pol2}); err == nil {
		t.Error("Apply accepted a multicast override")
	}
	answered("the new gateway after refused settings", ask(gw2, arptest.Broadcast), newMAC)

	if got := linkID(t, i); got != id || !i.Bound() {
		t.Errorf("link %d (bound %v) after Apply, want link %d still attached", got, i.Bound(), id)
	}
	if progs := topotest.TCXIngress(t, tp.Host, pod.HostIf); len(progs) != 1 {
		t.Errorf("%d programs on %s, want 1", len(progs), pod.HostIf)
	}
}

// entries returns the map entries the program holds for ifindex.
func entries(t *testing.T, p *Program, ifindex int) []string {
	t.Helper()
	var found []string
	m := &p.objs.pxrespMaps
	for _, hm := range []*ebpf.Map{m.Ifaces, m.Limits, m.Stats} {
		for _, k := range keys[uint32](t, hm) {
			if k == uint32(ifindex) {
				found = append(found, fmt.Sprintf("%v[%d]", hm, k))
			}
		}
	}
	for _, trie := range []*ebpf.Map{m.Targets, m.Onlink} {
		for _, k := range keys[pxrespAddrKey](t, trie) {
			if k.Ifindex == uint32(ifindex) {
				found = append(found, fmt.Sprintf("%v[%v]", trie, keyPrefix(k)))
			}
		}
	}
	return found
}

// keys returns the keys of m (at most 100000).
func keys[K any](t *testing.T, m *ebpf.Map) []K {
	t.Helper()
	var all []K
	var prev any // nil: the first key
	for range 100000 {
		var k K
		err := m.NextKey(prev, &k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return all
		}
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, k)
		prev = &all[len(all)-1]
	}
	t.Fatalf("%v: more than 100000 keys", m)
	return nil
}

// TestCloseDetaches: after Close the interface is not answered, its link
// is gone from the interface and its map entries from the maps, and its
// counters are the final ones; another interface goes on. A cancelled
// Serve closes its Iface; Program.Close closes those still open.
func TestCloseDetaches(t *testing.T) {
	tp := topotest.New(t, 2, "pxik")
	p := load(t)
	pods := tp.Pods
	clients := []*arptest.Client{topotest.Client(t, pods[0]), topotest.Client(t, pods[1])}
	reqs := [][]byte{
		arptest.Request(pods[0].MAC, pods[0].IP, topo.Gateway, arptest.Broadcast),
		arptest.Request(pods[1].MAC, pods[1].IP, topo.Gateway, arptest.Broadcast),
	}
	onLink := func(pod *topo.Pod) func(*responder.Config) {
		return func(c *responder.Config) {
			c.OnLink = []netip.Prefix{netip.PrefixFrom(pod.IP, 32)}
			c.RateLimit = responder.DefaultRateLimit
		}
	}
	ifaces := []*Iface{attachTo(t, p, tp, pods[0], onLink(pods[0])), attachTo(t, p, tp, pods[1], onLink(pods[1]))}
	served := make(chan error, 1)
	go func() { served <- ifaces[0].Serve(context.Background()) }()
	for k := range 2 {
		if topotest.Ask(t, clients[k], reqs[k], time.Second) == nil {
			t.Fatalf("pod %d not answered", k)
		}
		if n := len(entries(t, p, ifaces[k].index)); n != 5 {
			t.Fatalf("%d map entries for pod %d, want 5: %v", n, k, entries(t, p, ifaces[k].index))
		}
	}
	if err := ifaces[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s of Close")
	}
	if got := topotest.Ask(t, clients[0], reqs[0], silence); got != nil {
		t.Errorf("answered %x after Close", got)
	}
	if e := entries(t, p, ifaces[0].index); len(e) != 0 {
		t.Errorf("map entries left after Close: %v", e)
	}
	if progs := topotest.TCXIngress(t, tp.Host, pods[0].HostIf); len(progs) != 0 {
		t.Errorf("%d programs left on %s after Close", len(progs), pods[0].HostIf)
	}
	if st := ifaces[0].Stats(); st.Requests != 1 || st.Replies != 1 {
		t.Errorf("final stats %+v, want the 1 request answered", st)
	}
	if ifaces[0].Bound() {
		t.Error("Bound() after Close")
	}
	if err := ifaces[0].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := ifaces[0].Apply(responder.Settings{MAC: topo.GatewayMAC, Policy: gatewayPolicy(t)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Apply after Close = %v, want net.ErrClosed", err)
	}
	if topotest.Ask(t, clients[1], reqs[1], time.Second) == nil {
		t.Fatal("the other pod is not answered after the first interface's Close")
	}

	// A cancelled Serve closes.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { served <- ifaces[1].Serve(ctx) }()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if got := topotest.Ask(t, clients[1], reqs[1], silence); got != nil || ifaces[1].Bound() {
		t.Errorf("answered %x (bound %v) after Serve's context was cancelled", got, ifaces[1].Bound())
	}

	// Program.Close closes what is still attached.
	i := attachTo(t, p, tp, pods[0], nil)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := topotest.Ask(t, clients[0], reqs[0], silence); got != nil || i.Bound() {
		t.Errorf("answered %x (bound %v) after Program.Close", got, i.Bound())
	}
	if progs := topotest.TCXIngress(t, tp.Host, pods[0].HostIf); len(progs) != 0 {
		t.Errorf("%d programs left on %s after Program.Close", len(progs), pods[0].HostIf)
	}
}

// TestBoundAfterDelete: Bound turns false when the interface is deleted,
// and Close still succeeds.
func TestBoundAfterDelete(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	p := load(t)
	i := attachTo(t, p, tp, pod, nil)
	if !i.Bound() {
		t.Fatal("not bound after Attach")
	}
	if err := tp.DelPod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for i.Bound() {
		if time.Now().After(deadline) {
			t.Fatal("still bound 2s after the interface was deleted")
		}
		time.Sleep(time.Millisecond)
	}
	if err := i.Close(); err != nil {
		t.Errorf("Close after the interface was deleted: %v", err)
	}
	if e := entries(t, p, i.index); len(e) != 0 {
		t.Errorf("map entries left: %v", e)
	}
}

// bpfFDs counts the test process's eBPF file descriptors: programs, maps
// and links.
func bpfFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "anon_inode:bpf") {
			n++
		}
	}
	return n
}

// TestNoFDLeak: 100 attach/close cycles leave no program, map or link fd
// behind, and neither does Program.Close.
func TestNoFDLeak(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	before := bpfFDs(t)
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	loaded := bpfFDs(t)
	ifi := hostIf(t, tp, pod)
	err = tp.Host.Do(func() error {
		for n := range 100 {
			i, err := p.Attach(responder.Config{Index: ifi.Index, Name: ifi.Name, RateLimit: responder.DefaultRateLimit,
				Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t), OnLink: []netip.Prefix{netip.PrefixFrom(pod.IP, 32)}}})
			if err != nil {
				return fmt.Errorf("cycle %d: %w", n, err)
			}
			if err := i.Close(); err != nil {
				return fmt.Errorf("cycle %d: %w", n, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := bpfFDs(t); n != loaded {
		t.Errorf("%d eBPF fds after 100 attach/close cycles, %d after Load", n, loaded)
	}
	if e := entries(t, p, ifi.Index); len(e) != 0 {
		t.Errorf("map entries left: %v", e)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := bpfFDs(t); n != before {
		t.Errorf("%d eBPF fds after Program.Close, %d before Load", n, before)
	}
	t.Logf("eBPF fds: %d before Load, %d loaded, %d after", before, loaded, bpfFDs(t))
}

// TestAttachRefusals: what Attach refuses, it refuses with a clear error
// and leaves no map entry and no link behind.
func TestAttachRefusals(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	p := load(t)
	route, err := policy.NewRoute(nil)
	if err != nil {
		t.Fatal(err)
	}
	const missing = 1 << 20 // no interface of the test's namespace has it
	ifi := hostIf(t, tp, pod)
	err = tp.Host.Do(func() error {
		cfg := func(edit func(*responder.Config)) responder.Config {
			c := responder.Config{Index: ifi.Index, Name: ifi.Name, Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t)}}
			edit(&c)
			return c
		}
		for _, c := range []struct {
			what string
			cfg  responder.Config
			want string
		}{
			{"route mode", cfg(func(c *responder.Config) { c.Policy = route }), ErrRouteMode.Error()},
			{"no policy", cfg(func(c *responder.Config) { c.Policy = nil }), "no policy"},
			{"a 3-byte MAC", cfg(func(c *responder.Config) { c.MAC = c.MAC[:3] }), "not a 6-byte Ethernet address"},
			{"a multicast override", cfg(func(c *responder.Config) { c.Override = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }), "override MAC"},
			{"ifindex 0", cfg(func(c *responder.Config) { c.Index = 0 }), "invalid ifindex"},
			{"a missing interface", cfg(func(c *responder.Config) { c.Index, c.Name = missing, "missing0" }), "missing0"},
		} {
			i, err := p.Attach(c.cfg)
			switch {
			case err == nil:
				i.Close()
				t.Errorf("%s: Attach succeeded", c.what)
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("%s: Attach = %v, want an error containing %q", c.what, err, c.want)
			default:
				t.Logf("%s: %v", c.what, err)
			}
			if e := entries(t, p, c.cfg.Index); len(e) != 0 {
				t.Errorf("%s: map entries left: %v", c.what, e)
			}
		}
		i, err := p.Attach(cfg(func(*responder.Config) {}))
		if err != nil {
			return err
		}
		defer i.Close()
		if _, err := p.Attach(cfg(func(*responder.Config) {})); err == nil || !strings.Contains(err.Error(), "attached already") {
			t.Errorf("a second Attach to %s = %v, want a refusal", ifi.Name, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if progs := topotest.TCXIngress(t, tp.Host, pod.HostIf); len(progs) != 0 {
		t.Errorf("%d programs left on %s", len(progs), pod.HostIf)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	err = tp.Host.Do(func() error {
		_, err := p.Attach(responder.Config{Index: ifi.Index, Name: ifi.Name, Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t)}})
		return err
	})
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("Attach after Program.Close = %v, want net.ErrClosed", err)
	}
}

// TestConcurrentUse: Apply, Stats, MAC and Bound from several goroutines
// while the pod asks, then Close racing with them (go test -race); every
// request is answered, with one of the two MACs, and nothing fails.
func TestConcurrentUse(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	i := attachTo(t, load(t), tp, pod, nil)
	override := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	replies := [][]byte{hostile.ReplyTo(t, req, topo.GatewayMAC), hostile.ReplyTo(t, req, override)}
	pol := gatewayPolicy(t)
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			var err error
			for n := 0; err == nil; n++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				switch g {
				case 0:
					s := responder.Settings{MAC: topo.GatewayMAC, Policy: pol}
					if n%2 == 0 {
						s.Override = override
					}
					if err = i.Apply(s); errors.Is(err, net.ErrClosed) {
						err = nil
					}
				case 1:
					_ = i.Stats()
				case 2:
					_ = i.MAC()
				case 3:
					_ = i.Bound()
				}
			}
			errs <- err
		}()
	}
	for range 50 {
		got := topotest.Ask(t, cl, req, time.Second)
		if !bytes.Equal(got, replies[0]) && !bytes.Equal(got, replies[1]) {
			t.Fatalf("reply %x while the settings change", got)
		}
	}
	if err := i.Close(); err != nil {
		t.Error(err)
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if st := i.Stats(); st.Replies != 50 {
		t.Errorf("final stats %+v, want 50 replies", st)
	}
}
