package inkernel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/framecases"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// The program run on frames through BPF_PROG_TEST_RUN, from a thread in a
// namespace of the test's own, on an interface of that namespace: the
// program's decisions without the wire.

// The program's return values, as the kernel reports them.
const (
	retNext     = ^uint32(0) // TCX_NEXT (-1)
	retShot     = 2          // TC_ACT_SHOT
	retRedirect = 7          // TC_ACT_REDIRECT
)

// outcome is what becomes of one frame.
type outcome struct {
	ret   uint32          // the program's verdict: retNext, retShot or retRedirect
	reply []byte          // the frame sent back, for retRedirect
	stats responder.Stats // what it adds to the counters
}

func (o outcome) String() string {
	s := map[uint32]string{retNext: "next", retShot: "drop", retRedirect: "redirect"}[o.ret]
	if s == "" {
		s = fmt.Sprintf("ret %d", int32(o.ret))
	}
	st := o.stats
	for _, c := range []struct {
		name string
		n    uint64
	}{{"requests", st.Requests}, {"replies", st.Replies}, {"malformed", st.Malformed}, {"send-errors", st.SendErrors},
		{"rate-limited", st.RateLimited}, {"dry-run", st.DryRun}} {
		if c.n != 0 {
			s += fmt.Sprintf(" %s=%d", c.name, c.n)
		}
	}
	for v, n := range st.Ignored {
		if n != 0 {
			s += fmt.Sprintf(" %v=%d", policy.Verdict(v), n)
		}
	}
	if o.reply != nil {
		s += fmt.Sprintf(" reply %x", o.reply)
	}
	return s
}

func (o outcome) equal(p outcome) bool {
	return o.ret == p.ret && bytes.Equal(o.reply, p.reply) && o.stats == p.stats
}

// model is what the packet datapath does with frame arriving on an
// interface with settings s (a gateway-mode policy, no rate limit, no dry
// run): the packet socket is bound to ETH_P_ARP and its filter drops
// frames for other hosts' unicast MACs and well-formed replies, unread;
// then the responder decodes (malformed), decides (a verdict) and replies.
// What the program does not answer goes on (TCX_NEXT).
func model(frame []byte, s *responder.Settings) outcome {
	next := outcome{ret: retNext}
	if len(frame) < arpframe.OffEthType+2 || binary.BigEndian.Uint16(frame[arpframe.OffEthType:]) != arpframe.EtherTypeARP {
		return next
	}
	mac, answer := [6]byte(s.MAC), [6]byte(s.MAC)
	if len(s.Override) > 0 {
		answer = [6]byte(s.Override)
	}
	dst := [6]byte(frame[arpframe.OffEthDst:])
	var d policy.Delivery
	switch dst {
	case arpframe.Broadcast:
		d = policy.Broadcast
	case mac, answer:
		d = policy.Unicast
	default:
		if dst[0]&1 == 0 {
			return next // PACKET_OTHERHOST: the socket filter drops it
		}
		d = policy.OtherHost
	}
	var f arpframe.Frame
	if err := arpframe.Decode(frame, &f); err != nil {
		next.stats.Malformed = 1
		return next
	}
	if f.Op != arpframe.OpRequest {
		return next
	}
	req := policy.Request{SenderMAC: f.SHA, SenderIP: f.SPA, TargetIP: f.TPA, Delivery: d,
		TargetOnLink: slices.ContainsFunc(s.OnLink, func(p netip.Prefix) bool { return p.Contains(f.TPA) })}
	next.stats.Requests = 1
	if v := s.Policy.Decide(&req, nil); v != policy.Reply {
		next.stats.Ignored[v] = 1
		return next
	}
	next.stats.Replies = 1
	return outcome{ret: retRedirect, stats: next.stats, reply: arpframe.EncodeReply(make([]byte, arpframe.Len), &f, answer)}
}

// skbContext is the start of struct __sk_buff, up to ifindex, the one
// field the test sets: the interface the frame arrives on.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VLANPresent, VLANTCI, VLANProto, Priority, IngressIfindex uint32
	Ifindex                                                                                               uint32
}

// runner runs the program on frames for one interface it made in a
// namespace of its own, with a goroutine locked in that namespace.
type runner struct {
	p     *Program
	iface *Iface
	index int
	mac   net.HardwareAddr
	do    func(func()) // runs a function in the namespace
}

// newRunner loads the program, makes a namespace with a veth whose MAC is
// topo.GatewayMAC, and fills the maps for it with s, (MAC: the veth's).
// Everything goes when t ends.
func newRunner(t testing.TB, s responder.Settings) *runner {
	t.Helper()
	privtest.Require(t)
	ns := topotest.AddNS(t, topo.NewPrefix("pxikrun")+"ns")
	topotest.Exec(t, ns, "ip", "link", "add", "tr0", "address", topo.GatewayMAC.String(), "type", "veth", "peer", "name", "tr1")
	r := &runner{p: load(t), do: inNS(t, ns)}
	var err error
	r.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("tr0"); err != nil {
			return
		}
		r.index, r.mac = ifi.Index, ifi.HardwareAddr
		s.MAC = ifi.HardwareAddr
		r.p.mu.Lock()
		defer r.p.mu.Unlock()
		r.iface, err = r.p.add(&responder.Config{Index: ifi.Index, Name: ifi.Name, Settings: s})
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs the program once on frame and returns what became of it.
func (r *runner) run(t testing.TB, frame []byte) outcome {
	t.Helper()
	before := r.iface.Stats()
	opts := ebpf.RunOptions{
		Data:    frame,
		DataOut: make([]byte, len(frame)+256),
		Context: skbContext{Ifindex: uint32(r.index)},
	}
	var ret uint32
	var err error
	r.do(func() { ret, err = r.p.objs.Pxresp.Run(&opts) })
	if err != nil {
		t.Fatalf("test run on %x: %v", frame, err)
	}
	o := outcome{ret: ret, stats: delta(r.iface.Stats(), before)}
	switch {
	case ret == retRedirect:
		o.reply = opts.DataOut
	case !bytes.Equal(opts.DataOut, frame):
		t.Fatalf("ret %d changed the frame it passes on:\n in %x\nout %x", int32(ret), frame, opts.DataOut)
	}
	return o
}

// delta returns the counters of a less those of b.
func delta(a, b responder.Stats) responder.Stats {
	d := responder.Stats{
		Requests:    a.Requests - b.Requests,
		Replies:     a.Replies - b.Replies,
		Malformed:   a.Malformed - b.Malformed,
		SendErrors:  a.SendErrors - b.SendErrors,
		RateLimited: a.RateLimited - b.RateLimited,
		DryRun:      a.DryRun - b.DryRun,
	}
	for v := range d.Ignored {
		d.Ignored[v] = a.Ignored[v] - b.Ignored[v]
	}
	return d
}

// TestVerdictNumbers: the program's verdicts are policy's.
func TestVerdictNumbers(t *testing.T) {
	c := map[policy.Verdict]pxrespVerdict{
		policy.Reply:        pxrespVerdictVERDICT_REPLY,
		policy.NotForUs:     pxrespVerdictVERDICT_NOT_FOR_US,
		policy.Probe:        pxrespVerdictVERDICT_PROBE,
		policy.Gratuitous:   pxrespVerdictVERDICT_GRATUITOUS,
		policy.OwnAddress:   pxrespVerdictVERDICT_OWN_ADDRESS,
		policy.BadSender:    pxrespVerdictVERDICT_BAD_SENDER,
		policy.BadTarget:    pxrespVerdictVERDICT_BAD_TARGET,
		policy.NotTarget:    pxrespVerdictVERDICT_NOT_TARGET,
		policy.NoRoute:      pxrespVerdictVERDICT_NO_ROUTE,
		policy.LocalAddress: pxrespVerdictVERDICT_LOCAL_ADDRESS,
		policy.UnknownRoute: pxrespVerdictVERDICT_UNKNOWN_ROUTE,
	}
	if len(c) != policy.NumVerdicts || int(pxrespVerdictNUM_VERDICTS) != policy.NumVerdicts {
		t.Fatalf("%d verdicts in Go, %d in C, %d compared", policy.NumVerdicts, pxrespVerdictNUM_VERDICTS, len(c))
	}
	for g, cv := range c {
		if uint32(g) != uint32(cv) {
			t.Errorf("verdict %v is %d in Go, %d in C", g, g, cv)
		}
	}
	if n := len(pxrespCounters{}.Ignored); n != policy.NumVerdicts {
		t.Errorf("the C counters have %d verdicts, Go %d", n, policy.NumVerdicts)
	}
}

// tableOutcome is what the shared table (testdata/arp-frames.txt) says
// the packet datapath does with c's frame once it is on the wire: its
// Want, except for the frames the packet socket never reads (another
// EtherType: a tag still in the frame, IPv4, RARP; another host's unicast
// MAC: the socket filter's drop), which go on uncounted.
func tableOutcome(t *testing.T, c framecases.Case) outcome {
	t.Helper()
	next := outcome{ret: retNext}
	in := c.In
	if binary.BigEndian.Uint16(in[arpframe.OffEthType:]) != arpframe.EtherTypeARP || in[0]&1 == 0 && [6]byte(in) != [6]byte(topo.GatewayMAC) {
		return next
	}
	switch c.Want {
	case "reply":
		return outcome{ret: retRedirect, reply: c.Out, stats: responder.Stats{Requests: 1, Replies: 1}}
	case "malformed":
		next.stats.Malformed = 1
	case "nothing":
	default:
		v := verdictByName(t, c.Want)
		next.stats.Requests = 1
		next.stats.Ignored[v] = 1
	}
	return next
}

func verdictByName(t testing.TB, name string) policy.Verdict {
	for v := range policy.Verdict(policy.NumVerdicts) {
		if v.String() == name {
			return v
		}
	}
	t.Fatalf("testdata: unknown verdict %q", name)
	return 0
}

// TestFramesTable runs the program on every frame of the shared table,
// with the table's setup (the gateway 169.254.1.1 on an interface whose
// MAC is ee:ee:ee:ee:ee:ee), and requires what the packet datapath does:
// the same reply, byte for byte, or the same counter. The model of the
// packet datapath that the fuzz target holds the program to gives the
// same answers.
func TestFramesTable(t *testing.T) {
	r := newRunner(t, responder.Settings{Policy: gatewayPolicy(t)})
	s := responder.Settings{MAC: r.mac, Policy: gatewayPolicy(t)}
	ran := 0
	for _, c := range framecases.Load(t, "../../testdata/arp-frames.txt") {
		if len(c.In) < arpframe.OffEthType+2 {
			// BPF_PROG_TEST_RUN needs an Ethernet header, and no
			// interface delivers less.
			t.Logf("%-70s not run: %d bytes", c.Name, len(c.In))
			continue
		}
		want := tableOutcome(t, c)
		if m := model(c.In, &s); !m.equal(want) {
			t.Errorf("%s: the model of the packet datapath says\n %v\nthe table\n %v", c.Name, m, want)
		}
		got := r.run(t, c.In)
		if !got.equal(want) {
			t.Errorf("%s:\n got %v\nwant %v", c.Name, got, want)
			continue
		}
		ran++
		t.Logf("%-70s %v", c.Name, got)
	}
	if ran < 40 {
		t.Errorf("only %d frames of the table ran", ran)
	}
}

// FuzzProgram is differential: a request built from random fields, a
// random gateway-mode policy, on-link prefix and override MAC; the
// program must do what the model of the packet datapath does (policy.Decide
// and arpframe), byte for byte and counter for counter.
func FuzzProgram(f *testing.F) {
	// Seeds: the gateway asked by broadcast, by unicast to the interface
	// and to the override, a probe, a gratuitous request, an own address,
	// a target prefix, a bad sender.
	const gw, pod, other = 0xa9fe0101, 0x0af40002, 0x0af40003
	mac := [6]byte(topo.GatewayMAC)
	f.Add(arpframe.Broadcast[:], []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(gw), uint16(1), uint32(gw), uint32(0x0a000000), uint8(8), uint32(pod), uint8(32), false, uint8(0))
	f.Add(mac[:], []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(gw), uint16(1), uint32(gw), uint32(0), uint8(0), uint32(0), uint8(0), false, uint8(0))
	f.Add([]byte{2, 0xaa, 0, 0, 0, 1}, []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(gw), uint16(1), uint32(gw), uint32(0), uint8(0), uint32(0), uint8(0), true, uint8(0))
	f.Add(arpframe.Broadcast[:], []byte{2, 0, 10, 244, 0, 2}, uint32(0), uint32(gw), uint16(1), uint32(gw), uint32(0), uint8(0), uint32(0), uint8(0), false, uint8(0))
	f.Add(arpframe.Broadcast[:], []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(pod), uint16(1), uint32(gw), uint32(0), uint8(0), uint32(0), uint8(0), false, uint8(0))
	f.Add(arpframe.Broadcast[:], []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(other), uint16(1), uint32(gw), uint32(0x0af40000), uint8(16), uint32(other), uint8(32), false, uint8(0))
	f.Add(arpframe.Broadcast[:], []byte{2, 0, 10, 244, 0, 2}, uint32(pod), uint32(other), uint16(1), uint32(gw), uint32(0x0af40000), uint8(16), uint32(0), uint8(0), false, uint8(18))
	f.Add([]byte{1, 0, 0x5e, 0, 0, 1}, []byte{1, 0, 0x5e, 0, 0, 1}, uint32(0xe0000001), uint32(gw), uint16(1), uint32(gw), uint32(0), uint8(0), uint32(0), uint8(0), false, uint8(0))

	r := newRunner(f, responder.Settings{Policy: gatewayPolicy(f)})
	override := net.HardwareAddr{2, 0xaa, 0, 0, 0, 1}
	f.Fuzz(func(t *testing.T, dst, sha []byte, spa, tpa uint32, op uint16, gateway, target uint32, targetBits uint8, onLink uint32, onLinkBits uint8, withOverride bool, pad uint8) {
		if len(dst) != 6 || len(sha) != 6 {
			return
		}
		pol, err := policy.New([]netip.Addr{addr4(gateway)}, []netip.Prefix{netip.PrefixFrom(addr4(target), int(targetBits%33))})
		if err != nil {
			return // not a policy pxresp accepts
		}
		s := responder.Settings{MAC: r.mac, Policy: pol}
		if onLinkBits > 0 {
			s.OnLink = []netip.Prefix{netip.PrefixFrom(addr4(onLink), int(onLinkBits%33)).Masked()}
		}
		if withOverride {
			s.Override = override
		}
		if err := r.iface.Apply(s); err != nil {
			t.Fatal(err)
		}
		frame := arpframe.EncodeRequest(make([]byte, arpframe.Len), [6]byte(dst), [6]byte(sha), addr4(spa), addr4(tpa))
		binary.BigEndian.PutUint16(frame[arpframe.OffOp:], op)
		frame = append(frame, make([]byte, pad)...)
		want, got := model(frame, &s), r.run(t, frame)
		if !got.equal(want) {
			t.Fatalf("frame %x, settings %+v:\n got %v\nwant %v", frame, s, got, want)
		}
	})
}

func addr4(a uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b)
}

// BenchmarkProgram: the program's cost per frame in the kernel
// (BPF_PROG_TEST_RUN, repeated b.N times in one call): an IPv4 frame, what
// it adds to every frame of a pod's traffic, and a request it ignores.
func BenchmarkProgram(b *testing.B) {
	r := newRunner(b, responder.Settings{Policy: gatewayPolicy(b)})
	pod := [6]byte{2, 0, 10, 244, 0, 2}
	podIP, other := netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("10.244.0.3")
	ipv4 := arpframe.EncodeRequest(make([]byte, arpframe.Len), arpframe.Broadcast, pod, podIP, topo.Gateway)
	binary.BigEndian.PutUint16(ipv4[arpframe.OffEthType:], 0x0800)
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"ipv4", arptest.PadTo(ipv4, 60)},
		{"ignored", arpframe.EncodeRequest(make([]byte, arpframe.Len), arpframe.Broadcast, pod, podIP, other)},
	} {
		b.Run(c.name, func(b *testing.B) {
			opts := ebpf.RunOptions{Data: c.frame, Context: skbContext{Ifindex: uint32(r.index)}, Repeat: uint32(b.N)}
			var err error
			b.ResetTimer()
			r.do(func() { _, err = r.p.objs.Pxresp.Run(&opts) })
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
