package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/diag"
	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// fakeServer stands in for a responder.
type fakeServer struct {
	cfg      responder.Config
	mu       sync.Mutex
	mac      net.HardwareAddr
	override net.HardwareAddr
	policy   *policy.Policy
	onLink   []netip.Prefix
	applies  int // calls of Apply
	unbound  bool
	stats    responder.Stats
	closed   chan struct{}
	once     sync.Once
	// gate, if set, holds Close until it is closed: a socket slow to close.
	gate chan struct{}
}

func (f *fakeServer) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-f.closed:
	}
	return nil
}
func (f *fakeServer) Close() error {
	if f.gate != nil {
		<-f.gate
	}
	f.once.Do(func() { close(f.closed) })
	return nil
}
func (f *fakeServer) Apply(s responder.Settings) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	f.mac, f.override, f.policy, f.onLink = s.MAC, s.Override, s.Policy, s.OnLink
	return nil
}
func (f *fakeServer) Stats() responder.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}
func (f *fakeServer) Bound() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unbound
}

// waitClosed fails the test unless s is closed within 5 s (detach closes
// listeners on a goroutine of its own).
func waitClosed(t *testing.T, what string, s *fakeServer) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Errorf("%s did not close the listener", what)
	}
}

// mustConfig parses a config file's text.
func mustConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const calicoConfig = "rules:\n- {name: calico, interfaces: ['cali*'], gateways: [169.254.1.1]}\n"

func testDaemon(t *testing.T, ctx context.Context) (*daemon, map[int]*fakeServer) {
	t.Helper()
	return testDaemonWith(t, ctx, mustConfig(t, calicoConfig))
}

func testDaemonWith(t *testing.T, ctx context.Context, cfg *config.Config) (*daemon, map[int]*fakeServer) {
	t.Helper()
	d := newDaemon(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.diagnose = func(string, bool) ([]diag.Finding, error) { return nil, nil }
	servers := map[int]*fakeServer{}
	d.listen = func(c responder.Config) (server, error) {
		if c.Name == "calibroken" {
			return nil, errors.New("no such device")
		}
		s := &fakeServer{cfg: c, mac: c.MAC, override: c.Override, policy: c.Policy, closed: make(chan struct{})}
		servers[c.Index] = s
		return s, nil
	}
	return d, servers
}

func link(i int, name string, mac byte) ifwatch.Link {
	return ifwatch.Link{Index: i, Name: name, MAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, mac}, Up: true}
}

// calico is the rule of calicoConfig.
var calico = func() *config.Rule {
	c, err := config.Parse("test.yaml", []byte(calicoConfig))
	if err != nil {
		panic(err)
	}
	return c.Rules[0]
}()

func attachEv(l ifwatch.Link) event { return event{Kind: ifwatch.Attach, Link: l, Rule: calico} }
func updateEv(l ifwatch.Link) event { return event{Kind: ifwatch.Update, Link: l, Rule: calico} }
func detachEv(l ifwatch.Link) event { return event{Kind: ifwatch.Detach, Link: l, Rule: calico} }

// watched returns a Watcher that drives d under cfg's rules, as Run wires
// them; the test makes the netlink monitor's calls.
func watched(t *testing.T, d *daemon, cfg *config.Config) *ifwatch.Watcher[*config.Rule] {
	t.Helper()
	w, err := ifwatch.New(ifwatch.Config[*config.Rule]{Select: selector(cfg), Handle: d.handle,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// nlLink is a link as netlink reports it: an up Ethernet link.
func nlLink(i int, name string, mac byte) netlink.Link {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: i, Name: name, EncapType: "ether", RawFlags: unix.IFF_UP,
		HardwareAddr: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, mac}}}
}

func newLinkMsg(l netlink.Link) *netmon.Message {
	return &netmon.Message{Type: unix.RTM_NEWLINK, Link: l}
}

func TestDaemonFollowsEvents(t *testing.T) {
	d, servers := testDaemon(t, context.Background())
	d.handle(attachEv(link(4, "calia", 1)))
	d.handle(attachEv(link(4, "calia", 1))) // once per ifindex
	d.handle(attachEv(link(9, "calibroken", 1)))
	if len(servers) != 1 || len(d.attached) != 1 {
		t.Fatalf("%d servers, %d attached; want 1 and 1", len(servers), len(d.attached))
	}
	s := servers[4]
	if s.cfg.Index != 4 || s.cfg.Name != "calia" || s.cfg.Policy == nil {
		t.Errorf("listener config %+v", s.cfg)
	}

	up := link(4, "calia", 2)
	up.OnLink = []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}
	d.handle(updateEv(up))
	if s.mac.String() != up.MAC.String() || len(s.onLink) != 1 || s.policy != s.cfg.Policy || s.applies != 1 {
		t.Errorf("after update: mac %v onLink %v policy %p (%p at attach), %d calls of Apply (want 1)", s.mac, s.onLink, s.policy, s.cfg.Policy, s.applies)
	}
	// An update for an interface that failed to attach retries the attach.
	d.handle(updateEv(link(5, "calib", 1)))
	if _, ok := servers[5]; !ok {
		t.Error("update of an unattached link did not attach it")
	}

	// The interface left the namespace and came back while ifwatch was
	// resyncing: its socket is unbound, and the Update after the resync
	// makes the daemon open a new one.
	s.mu.Lock()
	s.unbound = true
	s.mu.Unlock()
	d.handle(updateEv(up))
	if d.attached[4].srv != s {
		t.Fatal("an unbound listener was reopened on a notification (the link is being deleted)")
	}
	d.handle(event{Kind: ifwatch.Update, Link: up, Rule: calico, Resync: true})
	waitClosed(t, "an update of an unbound listener", s)
	if s2 := servers[4]; s2 == s || d.attached[4] == nil || d.attached[4].srv != s2 {
		t.Fatal("an unbound listener was not reopened")
	}

	d.handle(detachEv(up))
	waitClosed(t, "detach", servers[4])
	d.handle(detachEv(up)) // unknown: ignored
	d.closeAll()
	if len(d.attached) != 0 {
		t.Errorf("%d still attached after closeAll", len(d.attached))
	}
	waitClosed(t, "closeAll", servers[5])
}

const twoRules = `rules:
- {name: calico, interfaces: ['cali*'], gateways: [169.254.1.1]}
- {name: taps, interfaces: ['tap*'], mode: route, mac: '02:00:00:00:00:aa'}
`

// Each interface is served under the first rule that selects it, as the
// watcher's selector says; a rename moves it to another rule, in place, or
// detaches it.
func TestDaemonRules(t *testing.T) {
	cfg := mustConfig(t, twoRules)
	d, servers := testDaemonWith(t, context.Background(), cfg)
	defer d.closeAll()
	w := watched(t, d, cfg)
	w.Resync(&netmon.Listing{Links: []netlink.Link{nlLink(4, "calia", 1), nlLink(5, "tap0", 2), nlLink(6, "eth0", 3)}})
	if len(servers) != 2 {
		t.Fatalf("%d listeners, want 2", len(servers))
	}
	if s := servers[4]; s.cfg.Policy != cfg.Rules[0].Policy() || s.cfg.Override != nil {
		t.Errorf("calia: policy %v override %v", s.cfg.Policy, s.cfg.Override)
	}
	if s := servers[5]; s.cfg.Policy != cfg.Rules[1].Policy() || s.cfg.Override.String() != "02:00:00:00:00:aa" || s.cfg.Router == nil {
		t.Errorf("tap0: policy %v override %v router %v", s.cfg.Policy, s.cfg.Override, s.cfg.Router)
	}
	// calia renamed to tap7: same socket, the taps rule.
	w.Change(newLinkMsg(nlLink(4, "tap7", 1)))
	if s := servers[4]; d.attached[4].srv != s || s.policy != cfg.Rules[1].Policy() || s.override.String() != "02:00:00:00:00:aa" ||
		s.mac.String() != link(4, "tap7", 1).MAC.String() || s.applies != 1 {
		t.Errorf("after rename into taps: policy %v override %v mac %v, %d calls of Apply (want 1)", s.policy, s.override, s.mac, s.applies)
	}
	// tap0 renamed out of every rule: detached.
	w.Change(newLinkMsg(nlLink(5, "other", 2)))
	waitClosed(t, "rename out of every rule", servers[5])
}

// A reload (a new selector) keeps the listeners that stay selected,
// switching their policy and answer MAC in place, closes the others and
// attaches the interfaces newly selected, before SetSelector returns.
func TestDaemonReload(t *testing.T) {
	d, servers := testDaemonWith(t, context.Background(), mustConfig(t, twoRules))
	defer d.closeAll()
	w := watched(t, d, mustConfig(t, twoRules))
	w.Resync(&netmon.Listing{Links: []netlink.Link{nlLink(4, "calia", 1), nlLink(5, "tap0", 2), nlLink(7, "vx0", 3)}})
	calia := servers[4]
	next := mustConfig(t, `rules:
- {name: calico, interfaces: ['cali*'], gateways: [169.254.1.2], mac: '02:00:00:00:00:bb'}
- {name: vx, interfaces: ['vx*'], mode: route}
`)
	if err := w.SetSelector(selector(next)); err != nil {
		t.Fatal(err)
	}
	if d.attached[4] == nil || d.attached[4].srv != calia {
		t.Fatal("a listener that stays selected was reopened")
	}
	if calia.policy != next.Rules[0].Policy() || calia.override.String() != "02:00:00:00:00:bb" || d.attached[4].rule != next.Rules[0] {
		t.Errorf("calia after reload: policy %v override %v", calia.policy, calia.override)
	}
	waitClosed(t, "reload deselecting tap0", servers[5])
	if _, ok := d.attached[5]; ok {
		t.Error("tap0 still attached")
	}
	if s, ok := servers[7]; !ok || s.cfg.Policy != next.Rules[1].Policy() {
		t.Error("vx0 not attached under the new rule")
	}
	// Notifications go on under the new rules.
	w.Change(newLinkMsg(nlLink(8, "tap1", 3)))
	w.Change(newLinkMsg(nlLink(9, "vx1", 3)))
	if _, ok := servers[8]; ok {
		t.Error("tap1 attached under the old rules")
	}
	if _, ok := servers[9]; !ok {
		t.Error("vx1 not attached")
	}
	// The same rules again, as new values: every listener gets its rule,
	// and none is reopened.
	again := mustConfig(t, `rules:
- {name: calico, interfaces: ['cali*'], gateways: [169.254.1.2], mac: '02:00:00:00:00:bb'}
- {name: vx, interfaces: ['vx*'], mode: route}
`)
	if err := w.SetSelector(selector(again)); err != nil {
		t.Fatal(err)
	}
	if d.attached[4].srv != calia || d.attached[4].rule != again.Rules[0] || calia.policy != again.Rules[0].Policy() {
		t.Error("an unchanged reload did not hand calia its new rule in place")
	}
	if len(servers) != 4 { // calia, tap0, vx0, vx1
		t.Errorf("%d listeners opened in all, want 4", len(servers))
	}
}

// snapshot sums live, closing and closed listeners, so that counters
// never go backwards when an interface goes away.
func TestDaemonSnapshot(t *testing.T) {
	d, servers := testDaemon(t, context.Background())
	defer d.closeAll()
	d.handle(attachEv(link(4, "calia", 1)))
	d.handle(attachEv(link(5, "calib", 2)))
	d.handle(attachEv(link(9, "calibroken", 2)))
	for i, s := range []*fakeServer{servers[4], servers[5]} {
		s.mu.Lock()
		s.stats.Requests, s.stats.Replies = uint64(10*(i+1)), uint64(i+1)
		s.stats.Ignored[policy.Probe] = 1
		s.mu.Unlock()
	}
	check := func(what string, attached int, attaches, detaches uint64) {
		t.Helper()
		sn := d.snapshot()
		if sn.Responders.Requests != 30 || sn.Responders.Replies != 3 || sn.Responders.Ignored[policy.Probe] != 2 ||
			sn.Attached != attached || sn.Attaches != attaches || sn.Detaches != detaches || sn.AttachErrors != 1 {
			t.Errorf("%s: %+v", what, sn)
		}
	}
	check("two attached", 2, 2, 0)
	servers[4].gate = make(chan struct{})
	d.handle(detachEv(link(4, "calia", 1)))
	check("one closing", 1, 2, 0) // counts stay while the socket closes...
	close(servers[4].gate)
	waitClosed(t, "detach", servers[4])
	deadline := time.Now().Add(5 * time.Second)
	for d.snapshot().Detaches == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	check("one closed", 1, 2, 1) // ...and after it closed
}

// Sysctl findings are logged at attach; the reverse-path one only after
// diagDelay, and only if the pod still has no route then.
func TestDaemonSysctlWarnings(t *testing.T) {
	var mu sync.Mutex
	var logBuf strings.Builder
	d, _ := testDaemon(t, context.Background())
	defer d.closeAll()
	d.log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logBuf}, nil))
	d.diagDelay = 10 * time.Millisecond
	checked := make(chan bool, 8)
	d.diagnose = func(name string, hasRoute bool) ([]diag.Finding, error) {
		checked <- hasRoute
		fs := []diag.Finding{{Check: "proxy_arp", Message: "kernel proxy_arp is on for " + name}}
		if !hasRoute {
			fs = append(fs, diag.Finding{Check: "rp_filter", Message: "strict rp_filter and no route on " + name})
		}
		return fs, nil
	}
	d.handle(attachEv(link(4, "calia", 1)))
	routed := link(5, "calib", 1)
	routed.OnLink = []netip.Prefix{netip.MustParsePrefix("10.244.0.3/32")}
	d.handle(attachEv(routed))
	for range 3 { // calia twice (at attach, and after diagDelay), calib once
		select {
		case <-checked:
		case <-time.After(5 * time.Second):
			t.Fatal("sysctls not checked")
		}
	}
	time.Sleep(20 * time.Millisecond) // the last check's logging
	mu.Lock()
	out := logBuf.String()
	mu.Unlock()
	for _, want := range []string{"kernel proxy_arp is on for calia", "kernel proxy_arp is on for calib", "strict rp_filter and no route on calia"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("log has %q %d times, want once:\n%s", want, strings.Count(out, want), out)
		}
	}
	if strings.Contains(out, "no route on calib") {
		t.Errorf("rp_filter warning for an interface with a route:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestInterfacesStatus: /status describes each link the watcher knows:
// attached with its rule, counters and sysctl problems; skipped with the
// reason (and the master's name); failed with the attach error until the
// link is detached. The sysctl problems are counted for the metric too.
func TestInterfacesStatus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, servers := testDaemon(t, ctx)
	d.diagnose = func(name string, _ bool) ([]diag.Finding, error) {
		if name == "cali1" {
			return []diag.Finding{{Check: diag.ProxyARP, Message: "cali1: proxy_arp=1"}}, nil
		}
		return nil, nil
	}
	good, broken := link(5, "cali1", 1), link(6, "calibroken", 2)
	d.handle(attachEv(good))
	d.handle(attachEv(broken))
	servers[5].mu.Lock()
	servers[5].stats = responder.Stats{Requests: 9, Replies: 7, RateLimited: 1}
	servers[5].stats.Ignored[policy.NotForUs] = 1
	servers[5].mu.Unlock()
	links := []ifwatch.LinkState{
		{Index: 1, Name: "lo", Skip: ifwatch.Loopback},
		{Index: 4, Name: "br0", Skip: ifwatch.NoRule},
		{Index: 5, Name: "cali1"},
		{Index: 6, Name: "calibroken"},
		{Index: 7, Name: "caliport", Master: 4, Skip: ifwatch.HasMaster},
		{Index: 8, Name: "caligone", Master: 99, Skip: ifwatch.HasMaster},
	}
	got := d.interfaces(links)
	want := []string{
		"lo skipped loopback  <nil> []",
		"br0 skipped no rule matches  <nil> []",
		"cali1 attached  calico &{9 7 1 1 0 0} [{proxy_arp cali1: proxy_arp=1}]",
		"calibroken failed attach failed: no such device calico <nil> []",
		"caliport skipped has a master (bridge, bond or VRF port): master br0  <nil> []",
		"caligone skipped has a master (bridge, bond or VRF port): master ifindex 99  <nil> []",
	}
	if len(got) != len(want) {
		t.Fatalf("%d interfaces, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		if s := fmt.Sprintf("%s %s %s %s %v %v", g.Name, g.State, g.Reason, g.Rule, g.Counters, g.Problems); s != want[i] {
			t.Errorf("interface %d:\n got %s\nwant %s", i, s, want[i])
		}
	}
	if sn := d.snapshot(); sn.SysctlProblems[diag.ProxyARP] != 1 || sn.SysctlProblems[diag.RPFilter] != 0 || len(sn.SysctlProblems) != len(diag.Checks) {
		t.Errorf("sysctl problems %v, want proxy_arp 1 and every check present", sn.SysctlProblems)
	}
	// Detached, the broken link is no longer failed.
	d.handle(detachEv(broken))
	if got := d.interfaces(links[3:4]); got[0].State != status.Pending {
		t.Errorf("after its detach: %+v, want pending", got[0])
	}
}
