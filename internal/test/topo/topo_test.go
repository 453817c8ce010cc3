package topo

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/privtest"
)

// ---- unit tests (no root) ----

func TestNewPrefix(t *testing.T) {
	re := regexp.MustCompile(`^pxr[0-9]+-[0-9a-f]{6}-$`)
	seen := map[string]bool{}
	for range 100 {
		p := NewPrefix("pxr")
		if !re.MatchString(p) || !validPrefix.MatchString(p) {
			t.Fatalf("NewPrefix = %q, want tag+pid+-+6 hex+-", p)
		}
		if len(p+"pod65531") > 32 {
			t.Errorf("%q: namespace names would exceed 32 characters", p)
		}
		if seen[p] {
			t.Fatalf("NewPrefix repeated %q", p)
		}
		seen[p] = true
	}
	if p := NewPrefix("a b/c;d-averyveryverylongtag"); !validPrefix.MatchString(p) || !strings.HasPrefix(p, "abcdaveryver") {
		t.Errorf("NewPrefix with a dirty tag = %q", p)
	}
}

func TestHostIfName(t *testing.T) {
	re := regexp.MustCompile(`^cali[0-9a-f]{11}$`)
	seen := map[string]int{}
	for i := range 1000 {
		n := hostIfName(i)
		if !re.MatchString(n) || len(n) != 15 {
			t.Fatalf("hostIfName(%d) = %q, want cali + 11 hex (15 chars)", i, n)
		}
		if j, dup := seen[n]; dup {
			t.Fatalf("hostIfName(%d) = hostIfName(%d) = %q", i, j, n)
		}
		seen[n] = i
	}
	if got := hostIfName(0); got != "cali2c7032f0518" { // stable across runs
		t.Errorf("hostIfName(0) = %s", got)
	}
}

func TestPodIP(t *testing.T) {
	for _, c := range []struct {
		i    int
		want string
	}{{0, "10.244.0.2"}, {1, "10.244.0.3"}, {253, "10.244.0.255"}, {254, "10.244.1.0"}, {maxPods - 1, "10.244.255.253"}} {
		if got := podIP(c.i); got.String() != c.want {
			t.Errorf("podIP(%d) = %v, want %s", c.i, got, c.want)
		}
		if !PodCIDR.Contains(podIP(c.i)) {
			t.Errorf("podIP(%d) outside %v", c.i, PodCIDR)
		}
	}
}

func TestCmdline(t *testing.T) {
	got := cmdline([]string{"ip", "netns", "exec", "x", "sh", "-c", "echo 'hi' $X"})
	want := `ip netns exec x sh -c 'echo '\''hi'\'' $X'`
	if got != want {
		t.Errorf("cmdline = %s, want %s", got, want)
	}
}

func TestRefusals(t *testing.T) {
	ns := &NS{Name: "pxr-never-created"}
	ctx := context.Background()
	for _, key := range []string{"kernel.pid_max", "vm.swappiness", "net", "net.ipv4.ip_forward x"} {
		if err := ns.Sysctl(ctx, key, "1"); err == nil || !strings.Contains(err.Error(), "only net.*") {
			t.Errorf("Sysctl(%q) = %v, want a refusal", key, err)
		}
		if v, err := ns.ReadSysctl(ctx, key); err == nil || !strings.Contains(err.Error(), "only net.*") {
			t.Errorf("ReadSysctl(%q) = %q, %v, want a refusal", key, v, err)
		}
	}
	// One bad key refuses the whole command, before anything is written.
	if err := ns.Sysctls(ctx, "net.ipv4.ip_forward=1", "kernel.pid_max=1"); err == nil || !strings.Contains(err.Error(), "kernel.pid_max") {
		t.Errorf("Sysctls with a kernel.* key = %v, want a refusal naming it", err)
	}
	if err := ns.Delete(ctx); err != nil {
		t.Errorf("Delete of a namespace that does not exist = %v, want nil", err)
	}
	if err := Cleanup(""); err == nil {
		t.Error("Cleanup(\"\") must refuse")
	}
	if err := CleanupStale(""); err == nil {
		t.Error("CleanupStale(\"\") must refuse")
	}
	for _, o := range []Options{{Pods: -1}, {Pods: maxPods + 1}, {Prefix: "bad/prefix"}, {Prefix: strings.Repeat("x", 41)}} {
		if _, err := New(ctx, o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	tp := &Topology{Host: ns}
	if err := tp.SetKernelProxyARP(ctx, "../../kernel", true, 0); err == nil {
		t.Error("SetKernelProxyARP accepted a path as interface name")
	}
	if _, err := ns.Exec(ctx); err == nil {
		t.Error("Exec without a command succeeded")
	}
}

// ---- privileged tests ----

// testTag starts the prefix of every namespace these tests make.
const testTag = "pxrt"

// newTopo builds a topology for t and removes it when t ends, checking that
// no namespace of it is left.
func newTopo(t *testing.T, pods int) *Topology {
	t.Helper()
	privtest.Require(t)
	if err := CleanupStale(testTag); err != nil {
		t.Logf("CleanupStale: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	prefix := NewPrefix(testTag)
	tp, err := New(ctx, Options{Pods: pods, Prefix: prefix})
	t.Cleanup(func() {
		if tp != nil {
			if err := tp.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
		if left, _ := List(prefix); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
			_ = Cleanup(prefix)
		}
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tp
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// jsonOf runs `ip -n NS -j args...` and decodes its output.
func jsonOf[T any](t *testing.T, ns *NS, args ...string) T {
	t.Helper()
	out, err := ns.IPOut(testCtx(t), append([]string{"-j"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("ip -n %s -j %v: %v in %q", ns.Name, args, err, out)
	}
	return v
}

type route struct {
	Dst     string   `json:"dst"`
	Gateway string   `json:"gateway"`
	Dev     string   `json:"dev"`
	Scope   string   `json:"scope"`
	Flags   []string `json:"flags"`
}

// routes returns the main-table IPv4 routes as "dst via gw dev X scope S".
func routes(t *testing.T, ns *NS) []string {
	t.Helper()
	var out []string
	for _, r := range jsonOf[[]route](t, ns, "-4", "route", "show") {
		s := r.Dst
		if r.Gateway != "" {
			s += " via " + r.Gateway
		}
		s += " dev " + r.Dev
		if r.Scope != "" {
			s += " scope " + r.Scope
		}
		out = append(out, s)
	}
	return out
}

func sysctl(t *testing.T, ns *NS, key string) string {
	t.Helper()
	v, err := ns.ReadSysctl(testCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantContains(t *testing.T, what string, have []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("%s: missing %q in %q", what, w, have)
		}
	}
}

func TestTopologyLayout(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	if len(tp.Pods) != 2 {
		t.Fatalf("%d pods, want 2", len(tp.Pods))
	}
	names, err := List(tp.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	wantContains(t, "namespaces", names, tp.Prefix+"host", tp.Prefix+"sink", tp.Prefix+"pod0", tp.Prefix+"pod1")

	// Host: cali links with the gateway MAC, /32 routes, uplink, default route.
	links := jsonOf[[]link](t, tp.Host, "link", "show")
	byName := map[string]link{}
	for _, l := range links {
		byName[l.Name] = l
	}
	var hostRoutes []string
	for i, p := range tp.Pods {
		if p.Index != i || p.IP != podIP(i) || p.HostIf != hostIfName(i) || p.PodIf != "eth0" || p.NS.Name != tp.Prefix+"pod"+strconv.Itoa(i) {
			t.Errorf("pod %d = %+v", i, p)
		}
		l, ok := byName[p.HostIf]
		if !ok {
			t.Fatalf("host has no %s: %v", p.HostIf, links)
		}
		if l.Address != "ee:ee:ee:ee:ee:ee" || !slices.Contains(l.Flags, "UP") || !slices.Contains(l.Flags, "LOWER_UP") {
			t.Errorf("host %s = %+v, want ee:ee:ee:ee:ee:ee, UP, LOWER_UP", p.HostIf, l)
		}
		hostRoutes = append(hostRoutes, p.IP.String()+" dev "+p.HostIf+" scope link")
		if got := sysctl(t, tp.Host, "net.ipv4.conf."+p.HostIf+".proxy_arp"); got != "0" {
			t.Errorf("%s proxy_arp = %s", p.HostIf, got)
		}
		if got := sysctl(t, tp.Host, "net.ipv4.conf."+p.HostIf+".forwarding"); got != "1" {
			t.Errorf("%s forwarding = %s", p.HostIf, got)
		}
		addrs := jsonOf[[]struct {
			AddrInfo []struct {
				Family    string `json:"family"`
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
			} `json:"addr_info"`
		}](t, tp.Host, "addr", "show", "dev", p.HostIf)
		for _, a := range addrs {
			for _, ai := range a.AddrInfo {
				if ai.Family == "inet" {
					t.Errorf("host %s has an IPv4 address %s", p.HostIf, ai.Local)
				}
			}
		}

		// Pod: eth0 with its /32, the gateway route then the default.
		pl := jsonOf[[]link](t, p.NS, "link", "show", "dev", "eth0")
		if len(pl) != 1 || pl[0].Address != p.MAC.String() || !slices.Contains(pl[0].Flags, "LOWER_UP") {
			t.Errorf("pod %d eth0 = %+v, want MAC %s and carrier", i, pl, p.MAC)
		}
		pa := jsonOf[[]struct {
			AddrInfo []struct {
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
			} `json:"addr_info"`
		}](t, p.NS, "-4", "addr", "show", "dev", "eth0")
		if len(pa) != 1 || len(pa[0].AddrInfo) != 1 || pa[0].AddrInfo[0].Local != p.IP.String() || pa[0].AddrInfo[0].PrefixLen != 32 {
			t.Errorf("pod %d eth0 addresses = %+v, want %s/32", i, pa, p.IP)
		}
		pr := routes(t, p.NS)
		if want := []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"}; !slices.Equal(pr, want) {
			t.Errorf("pod %d routes = %q, want %q", i, pr, want)
		}
	}
	if tp.Pods[0].MAC.String() == tp.Pods[1].MAC.String() {
		t.Errorf("pods share a MAC %s", tp.Pods[0].MAC)
	}
	hostRoutes = append(hostRoutes, "default via 198.18.0.2 dev up0", "198.18.0.0/24 dev up0 scope link")
	wantContains(t, "host routes", routes(t, tp.Host), hostRoutes...)
	wantContains(t, "sink routes", routes(t, tp.Sink), "10.244.0.0/16 via 198.18.0.1 dev eth0", "198.18.0.0/24 dev eth0 scope link")
	for key, want := range map[string]string{
		"net.ipv4.ip_forward":                                  "1",
		"net.ipv4.conf.all.forwarding":                         "1",
		"net.ipv4.conf.default.forwarding":                     "1",
		"net.ipv4.conf.up0.forwarding":                         "1",
		"net.ipv4.conf.all.proxy_arp":                          "0",
		"net.ipv4.conf.default.proxy_arp":                      "0",
		"net.ipv4.conf.all.rp_filter":                          "0",
		"net.ipv4.conf.default.rp_filter":                      "0",
		"net.ipv4.neigh." + tp.Pods[0].HostIf + ".proxy_delay": "80", // the kernel's default
	} {
		if got := sysctl(t, tp.Host, key); got != want {
			t.Errorf("host %s = %s, want %s", key, got, want)
		}
	}
}

// ping runs one bounded ping from pod p and reports whether it got a reply.
func ping(t *testing.T, p *Pod, dst string) (bool, string) {
	t.Helper()
	out, err := p.NS.Exec(testCtx(t), "ping", "-n", "-c1", "-W1", dst)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("ping: %v", err)
	}
	return err == nil, out
}

// TestKernelProxyARPReference proves the topology with the kernel as the
// reference responder: with proxy_arp on (proxy_delay 0) a pod reaches the
// host's uplink address, the sink and another pod; with it off it reaches
// nothing.
func TestKernelProxyARPReference(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	ctx := testCtx(t)
	p0, p1 := tp.Pods[0], tp.Pods[1]

	if ok, out := ping(t, p0, p1.IP.String()); ok {
		t.Fatalf("pod0 -> pod1 answered with proxy_arp off:\n%s", out)
	}
	// The unanswered request left the gateway INCOMPLETE, re-probed only
	// once a second: forget it so the next ping asks at once.
	if err := p0.NS.IP(ctx, "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, p := range tp.Pods {
		if err := tp.SetKernelProxyARP(ctx, p.HostIf, true, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := sysctl(t, tp.Host, "net.ipv4.neigh."+p0.HostIf+".proxy_delay"); got != "0" {
		t.Errorf("proxy_delay = %s, want 0", got)
	}
	for _, c := range []struct {
		from *Pod
		dst  string
	}{{p0, tp.UplinkIP.String()}, {p0, p1.IP.String()}, {p1, p0.IP.String()}, {p0, tp.SinkIP.String()}} {
		if ok, out := ping(t, c.from, c.dst); !ok {
			t.Errorf("pod%d -> %s failed with kernel proxy_arp on:\n%s", c.from.Index, c.dst, out)
		}
	}
	out, err := p0.NS.Exec(ctx, "ip", "neigh", "show", Gateway.String())
	if err != nil || !strings.Contains(out, "lladdr ee:ee:ee:ee:ee:ee") {
		t.Errorf("pod0 neighbour %s = %q (%v), want lladdr ee:ee:ee:ee:ee:ee", Gateway, out, err)
	}

	// Off again, and forget the learnt gateway: silence.
	for _, p := range tp.Pods {
		if err := tp.SetKernelProxyARP(ctx, p.HostIf, false, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := p0.NS.IP(ctx, "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if ok, out := ping(t, p0, tp.UplinkIP.String()); ok {
		t.Errorf("pod0 -> uplink answered after proxy_arp off:\n%s", out)
	}
}

func TestAddDelPod(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 1)
	ctx := testCtx(t)
	p, err := tp.AddPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Index != 1 || p.IP.String() != "10.244.0.3" || len(tp.Pods) != 2 || tp.Pods[1] != p {
		t.Fatalf("AddPod = %+v, pods %d", p, len(tp.Pods))
	}
	wantContains(t, "host routes", routes(t, tp.Host), "10.244.0.3 dev "+p.HostIf+" scope link")

	if err := tp.DelPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	if len(tp.Pods) != 1 || tp.Pods[0].Index != 0 {
		t.Errorf("pods after DelPod: %v", tp.Pods)
	}
	if names, _ := List(tp.Prefix); slices.Contains(names, p.NS.Name) {
		t.Errorf("namespace %s still there", p.NS.Name)
	}
	for _, l := range jsonOf[[]link](t, tp.Host, "link", "show") {
		if l.Name == p.HostIf {
			t.Errorf("host still has %s", p.HostIf)
		}
	}
	for _, r := range routes(t, tp.Host) {
		if strings.HasPrefix(r, "10.244.0.3 ") {
			t.Errorf("host still routes %s", r)
		}
	}
	if err := tp.DelPod(ctx, p); err == nil {
		t.Error("DelPod twice succeeded")
	}
	p2, err := tp.AddPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Index != 2 {
		t.Errorf("index after a delete = %d, want 2 (never reused)", p2.Index)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), tp.Prefix) {
		t.Errorf("ip netns list still shows %s*:\n%s", tp.Prefix, out)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNewFailureCleansUp makes New fail at its second pod (a namespace of
// that name already exists) and checks that it removed all it had made and
// left the other namespace alone.
func TestNewFailureCleansUp(t *testing.T) {
	t.Parallel()
	privtest.Require(t)
	ctx := testCtx(t)
	prefix := NewPrefix(testTag)
	blocker := prefix + "pod1"
	if _, err := run(ctx, true, "netns", "add", blocker); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Cleanup(prefix) })
	tp, err := New(ctx, Options{Pods: 3, Prefix: prefix})
	if err == nil {
		tp.Close()
		t.Fatal("New succeeded over an existing namespace")
	}
	if msg := err.Error(); !strings.Contains(msg, "ip netns add "+blocker) || !strings.Contains(msg, "exists") {
		t.Errorf("error %q should name the command and its stderr", msg)
	}
	names, err := List(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{blocker}) {
		t.Errorf("namespaces after a failed New: %v, want only %s", names, blocker)
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 1)
	p := tp.Pods[0]
	addr := net.JoinHostPort(p.IP.String(), "0")

	var ln net.Listener
	err := p.NS.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if ifi.HardwareAddr.String() != p.MAC.String() {
			t.Errorf("eth0 in Do has MAC %s, want %s", ifi.HardwareAddr, p.MAC)
		}
		ln, err = net.Listen("tcp", addr) // the pod's address exists only there
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	ln.Close()
	if l2, err := net.Listen("tcp", addr); err == nil {
		l2.Close()
		t.Errorf("listening on %s worked outside the pod: Do leaked its namespace", addr)
	}

	sentinel := errors.New("sentinel")
	if err := p.NS.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want the fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		_ = p.NS.Do(func() error { panic("boom") })
	}()
	reached := make(chan bool, 1)
	go func() {
		defer close(reached)
		_ = p.NS.Do(func() error { runtime.Goexit(); return nil })
		reached <- true
	}()
	if <-reached {
		t.Error("Do did not repeat runtime.Goexit in its caller")
	}
	if err := (&NS{Name: tp.Prefix + "nosuch"}).Do(func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}
	h, err := p.NS.Handle()
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 1)
	if err := Cleanup(tp.Prefix); err != nil {
		t.Fatal(err)
	}
	if names, _ := List(tp.Prefix); len(names) != 0 {
		t.Errorf("left after Cleanup: %v", names)
	}
	if err := tp.Close(); err != nil {
		t.Errorf("Close after Cleanup: %v", err)
	}

	// CleanupStale removes a dead process's namespaces and keeps a live one's.
	ctx := testCtx(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tag := NewPrefix("pxrst")
	stale := tag + strconv.Itoa(dead.Process.Pid) + "-x"
	live := tag + strconv.Itoa(1) + "-x" // pid 1 always runs
	for _, n := range []string{stale, live} {
		if _, err := run(ctx, true, "netns", "add", n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = Cleanup(tag) })
	if err := CleanupStale(tag); err != nil {
		t.Fatal(err)
	}
	if names, _ := List(tag); !slices.Equal(names, []string{live}) {
		t.Errorf("after CleanupStale: %v, want only %s", names, live)
	}
}
