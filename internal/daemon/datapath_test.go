package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/responder"
)

func TestChooseDatapath(t *testing.T) {
	noBPF := errors.New("CAP_BPF not held")
	for _, c := range []struct {
		want      Datapath
		dryRun    bool
		supported error
		dp        Datapath
		reason    string
		err       string // a substring; "" for none
		asked     bool   // supported is called
	}{
		{Packet, false, nil, Packet, "requested", "", false},
		{Packet, false, noBPF, Packet, "requested", "", false},
		{EBPF, false, nil, EBPF, "requested", "", true},
		{EBPF, true, nil, EBPF, "requested", "", true},
		{EBPF, false, noBPF, "", "", "the eBPF datapath (--datapath ebpf) cannot run: CAP_BPF not held", true},
		{Auto, false, nil, EBPF, "auto: the kernel and the capabilities allow it", "", true},
		{Auto, false, noBPF, Packet, "auto: CAP_BPF not held", "", true},
		{Auto, true, nil, Packet, "auto: --dry-run logs each would-be reply, which the eBPF program does not", "", false},
		{"", false, noBPF, Packet, "auto: CAP_BPF not held", "", true}, // Options' zero value
		{"xdp", false, nil, "", "", `unknown datapath "xdp"`, false},
	} {
		asked := false
		dp, reason, err := chooseDatapath(c.want, c.dryRun, func() error { asked = true; return c.supported })
		if dp != c.dp || reason != c.reason || asked != c.asked {
			t.Errorf("%q with support %v: %q (%q), asked %v; want %q (%q), asked %v", c.want, c.supported, dp, reason, asked, c.dp, c.reason, c.asked)
		}
		if (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q with support %v: error %v, want %q", c.want, c.supported, err, c.err)
		}
	}
	for _, s := range []string{"auto", "packet", "ebpf"} {
		if d, err := ParseDatapath(s); err != nil || string(d) != s {
			t.Errorf("ParseDatapath(%q) = %q, %v", s, d, err)
		}
	}
	for _, s := range []string{"", "EBPF", "bpf", "packet "} {
		if d, err := ParseDatapath(s); err == nil {
			t.Errorf("ParseDatapath(%q) = %q, want an error", s, d)
		}
	}
}

// On the eBPF datapath, gateway-mode rules are served by the program and
// route-mode rules from AF_PACKET; a rename or a reload that moves an
// interface between the two reopens it on the other datapath, and every
// other change is applied in place.
func TestDaemonDatapaths(t *testing.T) {
	cfg := mustConfig(t, twoRules) // calico: gateway mode; taps: route mode
	d, packet := testDaemonWith(t, context.Background(), cfg)
	defer d.closeAll()
	ebpf := map[int]*fakeServer{}
	d.datapath = EBPF
	d.listenEBPF = func(c responder.Config) (server, error) {
		s := &fakeServer{cfg: c, mac: c.MAC, override: c.Override, policy: c.Policy, closed: make(chan struct{})}
		ebpf[c.Index] = s
		return s, nil
	}
	w := watched(t, d, cfg)
	w.Resync(&netmon.Listing{Links: []netlink.Link{nlLink(4, "calia", 1), nlLink(5, "tap0", 2)}})
	if len(ebpf) != 1 || ebpf[4] == nil || len(packet) != 1 || packet[5] == nil {
		t.Fatalf("ebpf %v, packet %v: want calia (4) on ebpf, tap0 (5) on packet", ebpf, packet)
	}
	dps := func() map[string]string {
		m := map[string]string{}
		for _, i := range d.interfaces(w.Links()) {
			if i.State == status.Attached {
				m[i.Name] = i.Datapath
			}
		}
		return m
	}
	if got := dps(); got["calia"] != "ebpf" || got["tap0"] != "packet" || len(got) != 2 {
		t.Errorf("status datapaths %v", got)
	}

	// calia renamed into the route-mode rule: off the program, onto AF_PACKET.
	calia := ebpf[4]
	w.Change(newLinkMsg(nlLink(4, "tap7", 1)))
	waitClosed(t, "a rename into a route-mode rule", calia)
	if s := packet[4]; s == nil || d.attached[4].srv != s || s.cfg.Policy != cfg.Rules[1].Policy() || d.attached[4].datapath != Packet {
		t.Fatal("tap7 is not served from AF_PACKET under the route-mode rule")
	}
	// And back: onto the program again.
	tap7 := packet[4]
	w.Change(newLinkMsg(nlLink(4, "calib", 1)))
	waitClosed(t, "a rename into a gateway-mode rule", tap7)
	if s := ebpf[4]; s == calia || d.attached[4].srv != s || s.cfg.Policy != cfg.Rules[0].Policy() {
		t.Fatal("calib is not served by the program")
	}
	// A MAC change stays in place.
	calib := ebpf[4]
	w.Change(newLinkMsg(nlLink(4, "calib", 9)))
	if d.attached[4].srv != calib || calib.applies != 1 || calib.mac.String() != link(4, "calib", 9).MAC.String() {
		t.Errorf("a MAC change: reopened, or %d calls of Apply (want 1), mac %v", calib.applies, calib.mac)
	}

	// A reload that changes what the gateway-mode rule answers: in place.
	next := mustConfig(t, `rules:
- {name: calico, interfaces: ['cali*'], gateways: [169.254.1.2]}
- {name: taps, interfaces: ['tap*'], mode: route, mac: '02:00:00:00:00:aa'}
`)
	if err := w.SetSelector(selector(next)); err != nil {
		t.Fatal(err)
	}
	if d.attached[4].srv != calib || calib.policy != next.Rules[0].Policy() || d.attached[5].srv != packet[5] {
		t.Error("a reload within gateway mode reopened a listener")
	}
	// A reload that turns the rule into route mode: onto AF_PACKET.
	route := mustConfig(t, `rules:
- {name: calico, interfaces: ['cali*'], mode: route}
- {name: taps, interfaces: ['tap*'], mode: route, mac: '02:00:00:00:00:aa'}
`)
	if err := w.SetSelector(selector(route)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "a reload into route mode", calib)
	if s := packet[4]; s == tap7 || d.attached[4].srv != s || s.cfg.Policy != route.Rules[0].Policy() {
		t.Fatal("calib is not served from AF_PACKET after the reload into route mode")
	}
	if got := dps(); got["calib"] != "packet" || got["tap0"] != "packet" {
		t.Errorf("status datapaths after the reload %v", got)
	}
	if d.attaches != 5 || d.attachErrs != 0 {
		t.Errorf("%d attaches, %d errors; want 5 and 0", d.attaches, d.attachErrs)
	}
}

// A listener of an ifindex that is still closing finishes closing before
// a new one opens on the same ifindex: the eBPF datapath's state is keyed
// by ifindex, and the old one's close clears it.
func TestAttachWaitsForClosingSameIfindex(t *testing.T) {
	d, servers := testDaemon(t, context.Background())
	defer d.closeAll()
	l := link(4, "calia", 1)
	d.handle(attachEv(l))
	old := servers[4]
	old.gate = make(chan struct{})
	d.handle(detachEv(l))
	done := make(chan struct{})
	go func() {
		d.handle(attachEv(l))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("attached while the ifindex's previous listener was still closing")
	case <-time.After(100 * time.Millisecond):
	}
	close(old.gate)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the attach did not follow the close")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.attached[4]; a == nil || a.srv == old {
		t.Error("no new listener on the ifindex")
	}
}
