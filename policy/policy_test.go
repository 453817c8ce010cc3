package policy

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	gw      = netip.MustParseAddr("169.254.1.1")
	podA    = netip.MustParseAddr("10.244.0.2")
	podB    = netip.MustParseAddr("10.244.0.3")
	podMAC  = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	podNet  = netip.MustParsePrefix("10.244.0.0/16")
	extra   = netip.MustParsePrefix("192.0.2.7/32")
	mustNew = func(t *testing.T, gws []netip.Addr, targets []netip.Prefix) *Policy {
		t.Helper()
		p, err := New(gws, targets)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return p
	}
)

// req is the Calico pod's first request: who-has 169.254.1.1 tell 10.244.0.2,
// on ifindex 7.
func req(mod func(*Request)) *Request {
	r := &Request{SenderMAC: podMAC, SenderIP: podA, TargetIP: gw, Delivery: Broadcast, Ifindex: 7}
	if mod != nil {
		mod(r)
	}
	return r
}

// fakeRouter answers every lookup with class and records its calls.
type fakeRouter struct {
	class    RouteClass
	calls    int
	iif      int
	src, dst netip.Addr
}

func (f *fakeRouter) Route(iif int, src, dst netip.Addr) RouteClass {
	f.calls++
	f.iif, f.src, f.dst = iif, src, dst
	return f.class
}

func TestDecide(t *testing.T) {
	p := mustNew(t, []netip.Addr{gw}, []netip.Prefix{podNet, extra})
	gwOnly := mustNew(t, []netip.Addr{gw}, nil)

	route := mustRoute(t, nil)
	proxy := mustRoute(t, []netip.Prefix{extra})
	// routed is a request whose route the Router classifies as c.
	routes := map[*Request]RouteClass{}
	routed := func(c RouteClass, mod func(*Request)) *Request {
		r := req(mod)
		routes[r] = c
		return r
	}

	tests := []struct {
		name string
		p    *Policy
		r    *Request
		want Verdict
	}{
		{"broadcast for gateway", p, req(nil), Reply},
		{"unicast re-probe for gateway", p, req(func(r *Request) { r.Delivery = Unicast }), Reply},
		{"another pod in a target prefix", p, req(func(r *Request) { r.TargetIP = podB }), Reply},
		{"single-address target", p, req(func(r *Request) { r.TargetIP = extra.Addr() }), Reply},
		{"frame for another host", p, req(func(r *Request) { r.Delivery = OtherHost }), NotForUs},
		{"zero delivery is not trusted", p, req(func(r *Request) { r.Delivery = 0 }), NotForUs},
		{"DAD probe", p, req(func(r *Request) { r.SenderIP = netip.IPv4Unspecified() }), Probe},
		{"gratuitous request", p, req(func(r *Request) { r.TargetIP = podA }), Gratuitous},
		{"gratuitous for the gateway address", p, req(func(r *Request) { r.SenderIP = gw }), Gratuitous},
		{"own address (routed back out this link)", p, req(func(r *Request) {
			r.SenderIP = netip.MustParseAddr("10.244.0.9")
			r.TargetIP = podA
			r.TargetOnLink = true
		}), OwnAddress},
		{"zero sender MAC", p, req(func(r *Request) { r.SenderMAC = [6]byte{} }), BadSender},
		{"broadcast sender MAC", p, req(func(r *Request) { r.SenderMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }), BadSender},
		{"multicast sender MAC", p, req(func(r *Request) { r.SenderMAC = [6]byte{0x01, 0x00, 0x5e, 0, 0, 1} }), BadSender},
		{"multicast sender IP", p, req(func(r *Request) { r.SenderIP = netip.MustParseAddr("224.0.0.1") }), BadSender},
		{"loopback sender IP", p, req(func(r *Request) { r.SenderIP = netip.MustParseAddr("127.0.0.1") }), BadSender},
		{"broadcast sender IP", p, req(func(r *Request) { r.SenderIP = netip.MustParseAddr("255.255.255.255") }), BadSender},
		{"missing sender IP", p, req(func(r *Request) { r.SenderIP = netip.Addr{} }), BadSender},
		{"target 0.0.0.0", p, req(func(r *Request) { r.TargetIP = netip.IPv4Unspecified() }), BadTarget},
		{"loopback target", p, req(func(r *Request) { r.TargetIP = netip.MustParseAddr("127.0.0.1") }), BadTarget},
		{"multicast target", p, req(func(r *Request) { r.TargetIP = netip.MustParseAddr("239.1.2.3") }), BadTarget},
		{"broadcast target", p, req(func(r *Request) { r.TargetIP = netip.MustParseAddr("255.255.255.255") }), BadTarget},
		{"missing target", p, req(func(r *Request) { r.TargetIP = netip.Addr{} }), BadTarget},
		{"bad targets refused even inside 0.0.0.0/0", mustNew(t, nil, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}),
			req(func(r *Request) { r.TargetIP = netip.MustParseAddr("127.0.0.1") }), BadTarget},
		{"0.0.0.0/0 answers any unicast", mustNew(t, nil, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}),
			req(func(r *Request) { r.TargetIP = netip.MustParseAddr("198.18.0.9") }), Reply},
		{"not a target", gwOnly, req(func(r *Request) { r.TargetIP = podB }), NotTarget},
		{"own address but not a target", gwOnly, req(func(r *Request) { r.TargetIP = podB; r.TargetOnLink = true }), NotTarget},
		{"second gateway", mustNew(t, []netip.Addr{gw, netip.MustParseAddr("169.254.1.2")}, nil),
			req(func(r *Request) { r.TargetIP = netip.MustParseAddr("169.254.1.2") }), Reply},
		{"gateway mode ignores the Router", gwOnly, routed(RouteNone, nil), Reply},

		{"route mode: routed out another interface", route, routed(RouteElsewhere, nil), Reply},
		{"route mode: another pod", route, routed(RouteElsewhere, func(r *Request) { r.TargetIP = podB }), Reply},
		{"route mode: routed back out the interface", route, routed(RouteBack, nil), OwnAddress},
		{"route mode: a host address", route, routed(RouteLocal, nil), LocalAddress},
		{"route mode: no route", route, routed(RouteNone, nil), NoRoute},
		{"route mode: the lookup failed", route, routed(RouteUnknown, nil), UnknownRoute},
		{"route mode ignores TargetOnLink", route, routed(RouteElsewhere, func(r *Request) { r.TargetOnLink = true }), Reply},
		{"route mode: probe before route", route, routed(RouteElsewhere, func(r *Request) { r.SenderIP = netip.IPv4Unspecified() }), Probe},
		{"route mode: gratuitous before route", route, routed(RouteElsewhere, func(r *Request) { r.TargetIP = podA }), Gratuitous},
		{"route mode: other host before route", route, routed(RouteElsewhere, func(r *Request) { r.Delivery = OtherHost }), NotForUs},
		{"route mode: bad target before route", route, routed(RouteElsewhere, func(r *Request) { r.TargetIP = netip.MustParseAddr("224.0.0.5") }), BadTarget},
		{"proxy entry: its address", proxy, routed(RouteElsewhere, func(r *Request) { r.TargetIP = extra.Addr() }), Reply},
		{"proxy entry: its address routed back", proxy, routed(RouteBack, func(r *Request) { r.TargetIP = extra.Addr() }), OwnAddress},
		{"proxy entry: another address", proxy, routed(RouteElsewhere, nil), NotTarget},
	}
	seen := make(map[Verdict]bool)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &fakeRouter{class: routes[tt.r]}
			if got := tt.p.Decide(tt.r, rt); got != tt.want {
				t.Errorf("Decide(%+v) with the route %v = %v, want %v", *tt.r, rt.class, got, tt.want)
			}
		})
		seen[tt.want] = true
	}
	if got := route.Decide(req(nil), nil); got != UnknownRoute {
		t.Errorf("route mode without a Router: %v, want %v", got, UnknownRoute)
	}
	for v := Verdict(0); int(v) < NumVerdicts; v++ {
		if !seen[v] {
			t.Errorf("no test case expects verdict %v", v)
		}
	}
}

func mustRoute(t *testing.T, targets []netip.Prefix) *Policy {
	t.Helper()
	p, err := NewRoute(targets)
	if err != nil {
		t.Fatalf("NewRoute: %v", err)
	}
	return p
}

// TestDecideLooksUpOnlyWhenNeeded: Decide asks the Router exactly once,
// with the request's interface and addresses, when its answer hangs on the
// route, and never otherwise.
func TestDecideLooksUpOnlyWhenNeeded(t *testing.T) {
	gwPol := mustNew(t, []netip.Addr{gw}, nil)
	route := mustRoute(t, nil)
	proxy := mustRoute(t, []netip.Prefix{extra})
	tests := []struct {
		name   string
		p      *Policy
		r      *Request
		lookup bool
	}{
		{"gateway mode never", gwPol, req(nil), false},
		{"route mode, plain request", route, req(nil), true},
		{"route mode, probe", route, req(func(r *Request) { r.SenderIP = netip.IPv4Unspecified() }), false},
		{"route mode, gratuitous", route, req(func(r *Request) { r.TargetIP = podA }), false},
		{"route mode, other host", route, req(func(r *Request) { r.Delivery = OtherHost }), false},
		{"route mode, bad sender", route, req(func(r *Request) { r.SenderMAC = [6]byte{} }), false},
		{"route mode, bad target", route, req(func(r *Request) { r.TargetIP = netip.MustParseAddr("224.0.0.5") }), false},
		{"proxy entry, its address", proxy, req(func(r *Request) { r.TargetIP = extra.Addr() }), true},
		{"proxy entry, another address", proxy, req(nil), false},
	}
	for _, tt := range tests {
		a, b := &fakeRouter{class: RouteElsewhere}, &fakeRouter{class: RouteNone}
		va, vb := tt.p.Decide(tt.r, a), tt.p.Decide(tt.r, b)
		want := map[bool]int{false: 0, true: 1}[tt.lookup]
		if a.calls != want || b.calls != want {
			t.Errorf("%s: %d and %d lookups, want %d", tt.name, a.calls, b.calls, want)
		}
		if tt.lookup && (a.iif != tt.r.Ifindex || a.src != tt.r.SenderIP || a.dst != tt.r.TargetIP) {
			t.Errorf("%s: Route(%d, %v, %v), want Route(%d, %v, %v)", tt.name, a.iif, a.src, a.dst, tt.r.Ifindex, tt.r.SenderIP, tt.r.TargetIP)
		}
		// Whatever the route, the verdict only differs when it was looked up.
		if !tt.lookup && va != vb {
			t.Errorf("%s: no lookup, but the verdict depends on the route: %v vs %v", tt.name, va, vb)
		}
		if tt.lookup && (va != Reply || vb != NoRoute) {
			t.Errorf("%s: verdicts %v and %v, want %v and %v", tt.name, va, vb, Reply, NoRoute)
		}
	}
}

func TestModes(t *testing.T) {
	for _, s := range []string{"gateway", "route"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("proxy"); err == nil || !strings.Contains(err.Error(), `"proxy"`) {
		t.Errorf("ParseMode(proxy) error = %v, want one naming the value", err)
	}
	if p := mustRoute(t, nil); p.Mode() != RouteMode || len(p.Targets()) != 0 {
		t.Errorf("NewRoute(nil): mode %v targets %v", p.Mode(), p.Targets())
	}
	if _, err := NewRoute([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}); err == nil {
		t.Error("NewRoute accepted a loopback proxy entry")
	}
	if p := mustNew(t, []netip.Addr{gw}, nil); p.Mode() != GatewayMode {
		t.Errorf("New: mode %v", p.Mode())
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	p := mustNew(t, []netip.Addr{gw}, []netip.Prefix{podNet})
	route := mustRoute(t, nil)
	r := req(nil)
	rt := &fakeRouter{class: RouteElsewhere}
	if n := testing.AllocsPerRun(100, func() { _ = p.Decide(r, rt) }); n != 0 {
		t.Errorf("Decide allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = route.Decide(r, rt) }); n != 0 {
		t.Errorf("Decide in route mode allocates %v times per call", n)
	}
}

func TestVerdictString(t *testing.T) {
	names := make(map[string]bool)
	for v := Verdict(0); int(v) < NumVerdicts; v++ {
		s := v.String()
		if s == "" || strings.HasPrefix(s, "verdict(") || names[s] {
			t.Errorf("verdict %d has a missing or duplicate name %q", v, s)
		}
		names[s] = true
	}
	if got := Verdict(200).String(); got != "verdict(200)" {
		t.Errorf("out-of-range verdict: %q", got)
	}
	if Reply.String() != "reply" || NotTarget.String() != "not-a-target" || OwnAddress.String() != "own-address" {
		t.Error("verdict names changed: they are part of the log and metrics interface")
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		gws     []string
		targets []string
		wantErr string
	}{
		{"gateway only", []string{"169.254.1.1"}, nil, ""},
		{"targets only", nil, []string{"10.244.0.0/16"}, ""},
		{"unmasked prefix is masked", nil, []string{"10.244.3.4/16"}, ""},
		{"nothing", nil, nil, "nothing to answer for"},
		{"gateway 0.0.0.0", []string{"0.0.0.0"}, nil, "gateway 0.0.0.0: not a unicast"},
		{"gateway loopback", []string{"127.0.0.1"}, nil, "gateway 127.0.0.1: not a unicast"},
		{"gateway multicast", []string{"224.0.0.5"}, nil, "not a unicast"},
		{"gateway broadcast", []string{"255.255.255.255"}, nil, "not a unicast"},
		{"gateway IPv6", []string{"fe80::1"}, nil, "gateway fe80::1: not an IPv4"},
		{"gateway v4-mapped", []string{"::ffff:169.254.1.1"}, nil, "not an IPv4"},
		{"target IPv6", nil, []string{"2001:db8::/32"}, "target 2001:db8::/32: not an IPv4 prefix"},
		{"target /32 loopback", nil, []string{"127.0.0.1/32"}, "target 127.0.0.1/32: not a unicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gws []netip.Addr
			for _, s := range tt.gws {
				gws = append(gws, netip.MustParseAddr(s))
			}
			var targets []netip.Prefix
			for _, s := range tt.targets {
				targets = append(targets, netip.MustParsePrefix(s))
			}
			p, err := New(gws, targets)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: unexpected error %v", err)
				}
				if len(p.Gateways()) != len(gws) || len(p.Targets()) != len(targets) {
					t.Errorf("New kept %v %v, want %v %v", p.Gateways(), p.Targets(), gws, targets)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := New(nil, []netip.Prefix{{}}); err == nil {
		t.Error("New accepted an invalid prefix")
	}
	p, _ := New(nil, []netip.Prefix{netip.MustParsePrefix("10.244.3.4/16")})
	if got := p.Targets()[0].String(); got != "10.244.0.0/16" {
		t.Errorf("target not masked: %s", got)
	}
}
