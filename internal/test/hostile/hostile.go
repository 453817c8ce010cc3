// Package hostile is the table of hostile and malformed frames a pod sends
// over a real veth to a pxresp datapath in the host namespace, and the rig
// that sends them and checks what became of each. What a hostile pod can
// put on the wire is not what reaches pxresp: the pod's kernel refuses some
// frames, the host's veth drops others, the host kernel takes VLAN tags
// off, and each datapath drops in the kernel what it never needs to see.
// Every datapath's tests run the same table (Rig.RunTable), so that they
// treat hostile frames alike.
package hostile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// Tap is an ETH_P_ALL packet socket on one interface, with PACKET_AUXDATA:
// it sees every frame that reaches the interface, before VLAN handling,
// before tc and before any ETH_P_ARP socket gets it, with the VLAN tag the
// kernel took off. The tests use it to prove that a frame pxresp did not
// count did reach the host.
type Tap struct {
	fd  int
	buf []byte
	oob []byte
}

// Tapped is one frame a Tap saw.
type Tapped struct {
	PktType uint8
	VLAN    bool // the kernel found (and took off) a VLAN tag
	TCI     uint16
	Data    []byte
}

// OpenTap opens a Tap on ifname in ns, closed when t ends.
func OpenTap(t testing.TB, ns *topo.NS, ifname string) *Tap {
	t.Helper()
	tp := &Tap{fd: -1, buf: make([]byte, 1<<16), oob: make([]byte, 256)}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		tp.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(10 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	})
	if tp.fd >= 0 {
		t.Cleanup(func() { unix.Close(tp.fd) })
	}
	if err != nil {
		t.Fatalf("tap on %s: %v", ifname, err)
	}
	return tp
}

func htons(v uint16) uint16 { return v>>8 | v<<8 }

// Next returns the next frame, or false if none arrives within 10 ms.
func (tp *Tap) Next() (Tapped, bool) {
	for {
		n, oobn, _, from, err := unix.Recvmsg(tp.fd, tp.buf, tp.oob, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Tapped{}, false
		}
		f := Tapped{Data: bytes.Clone(tp.buf[:n])}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.PktType = ll.Pkttype
		}
		msgs, _ := unix.ParseSocketControlMessage(tp.oob[:oobn])
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
				f.VLAN = aux.Status&unix.TP_STATUS_VLAN_VALID != 0
				f.TCI = aux.Vlan_tci
			}
		}
		return f, true
	}
}

// WaitFor reads frames (at most 5000, for at most 2 s) until one is
// inbound with exactly data as its bytes, and returns it.
func (tp *Tap) WaitFor(data []byte) (Tapped, bool) {
	deadline := time.Now().Add(2 * time.Second)
	for range 5000 {
		if time.Now().After(deadline) {
			break
		}
		f, ok := tp.Next()
		if ok && f.PktType != unix.PACKET_OUTGOING && bytes.Equal(f.Data, data) {
			return f, true
		}
	}
	return Tapped{}, false
}

// SawNow reads what is queued (at most 5000 frames) and says whether an
// inbound frame with bytes data is among it.
func (tp *Tap) SawNow(data []byte) bool {
	found := false
	for range 5000 {
		f, ok := tp.Next()
		if !ok {
			break
		}
		found = found || f.PktType != unix.PACKET_OUTGOING && bytes.Equal(f.Data, data)
	}
	return found
}

// ReplyTo is the reply pxresp (and the kernel) sends from mac to the
// request in the first arpframe.Len bytes of req.
func ReplyTo(t testing.TB, req []byte, mac net.HardwareAddr) []byte {
	t.Helper()
	var r arpframe.Frame
	if err := arpframe.Decode(req, &r); err != nil || r.Op != arpframe.OpRequest {
		t.Fatalf("ReplyTo %x: %v, op %d", req, err, r.Op)
	}
	return arpframe.EncodeReply(make([]byte, arpframe.Len), &r, [6]byte(mac))
}

// Fate is what becomes of a hostile frame.
type Fate int

// The fates.
const (
	Answered   Fate = iota // a valid request: counted and answered
	Malformed              // reaches pxresp, counted as malformed
	Ignored                // a request, counted as ignored with a verdict
	Filtered               // reaches the host interface, dropped in the kernel before pxresp: not counted
	Unsendable             // the pod's kernel refuses to send it
	Lost                   // dropped by the veth on its way into the host (sendto fails)
)

func (f Fate) String() string {
	return [...]string{"answered", "malformed", "ignored", "filtered", "unsendable", "lost"}[f]
}

// Case is one hostile frame and what must become of it.
type Case struct {
	Name    string
	Frame   []byte
	Fate    Fate
	Verdict policy.Verdict // for Ignored
	Errno   syscall.Errno  // for Unsendable and Lost: the error sendto returns
}

// Rig is a one-pod topology where a datapath answers for the gateway on
// the host side of the pod (kernel proxy_arp off), with a client in the
// pod and a tap on the host side. S is the datapath's counters: the rig
// keeps what they must be after each frame, and compares them in full.
type Rig[S comparable] struct {
	TP     *topo.Topology
	Pod    *topo.Pod
	Client *arptest.Client
	Tap    *Tap
	MAC    net.HardwareAddr // what replies carry
	Good   []byte           // a broadcast request for the gateway: the base of most hostile frames
	Probe  []byte           // a good request from another sender address, sent after each hostile frame
	Want   S                // the counters expected so far

	stats func() S
	add   func(S, Case) S
}

// NewRig builds the topology (one pod; tag names its namespaces, see
// topotest.New), the client and the tap, and calls start to start the
// datapath on the pod's host side, answering for the gateway with
// override as the --mac override (nil: none). stats reads the datapath's
// counters; add returns them with one frame of a case's fate added (a
// good request is a Case of fate Answered).
func NewRig[S comparable](t *testing.T, tag string, override net.HardwareAddr, start func(tp *topo.Topology, pod *topo.Pod, pol *policy.Policy) (stats func() S), add func(S, Case) S) *Rig[S] {
	t.Helper()
	tp := topotest.New(t, 1, tag)
	pod := tp.Pods[0]
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &Rig[S]{TP: tp, Pod: pod, Client: topotest.Client(t, pod), Tap: OpenTap(t, tp.Host, pod.HostIf), MAC: topo.GatewayMAC, add: add}
	h.stats = start(tp, pod, pol)
	if override != nil {
		h.MAC = override
	}
	h.Good = arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	// Its reply differs from the reply to any hostile frame (built from
	// Good), so a reply pxresp should not have sent cannot pass for it.
	h.Probe = arptest.Request(pod.MAC, netip.MustParseAddr("10.244.0.250"), topo.Gateway, arptest.Broadcast)
	return h
}

// WaitStats polls (every ms, at most 2 s) until the counters equal h.Want.
func (h *Rig[S]) WaitStats(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for h.stats() != h.Want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats\n got %+v\nwant %+v", what, h.stats(), h.Want)
		}
		time.Sleep(time.Millisecond)
	}
}

// NextReply requires that the next ARP reply the pod receives is want.
func (h *Rig[S]) NextReply(t *testing.T, what string, want []byte) {
	t.Helper()
	got, err := h.Client.NextReply(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: next reply\n got %x\nwant %x", what, got, want)
	}
}

// Run sends c's frame, checks its fate, then sends the probe and requires
// its reply. Replies are read in order and never drained, so a reply
// pxresp should not have sent shows up in place of the expected one; the
// counters are compared in full after each step.
func (h *Rig[S]) Run(t *testing.T, c Case) {
	t.Helper()
	h.Tap.SawNow(nil) // forget what the tap saw before
	err := h.Client.Send(c.Frame)
	if c.Fate == Unsendable || c.Fate == Lost {
		if !errors.Is(err, c.Errno) {
			t.Fatalf("%s: send error %v, want %v", c.Name, err, c.Errno)
		}
	} else if err != nil {
		t.Fatalf("%s: send: %v", c.Name, err)
	}
	// What the host interface received: the frame as sent, less the VLAN
	// tag the kernel took off.
	arrived, tci := c.Frame, arptest.Tag(c.Frame)
	if tci >= 0 {
		arrived = arptest.Untag(c.Frame)
	}
	switch c.Fate {
	case Answered, Malformed, Ignored, Filtered:
		f, ok := h.Tap.WaitFor(arrived)
		if !ok {
			t.Fatalf("%s: the frame never reached %s (tap)", c.Name, h.Pod.HostIf)
		}
		if f.VLAN != (tci >= 0) || tci >= 0 && int(f.TCI) != tci {
			t.Fatalf("%s: tap saw VLAN tag %v (TCI %d), want TCI %d (-1: no tag)", c.Name, f.VLAN, f.TCI, tci)
		}
	}
	h.Want = h.add(h.Want, c)
	if c.Fate != Filtered && c.Fate != Unsendable && c.Fate != Lost {
		h.WaitStats(t, c.Name)
	}
	if c.Fate == Answered {
		h.NextReply(t, c.Name, ReplyTo(t, arrived, h.MAC))
	}
	if err := h.Client.Send(h.Probe); err != nil {
		t.Fatal(err)
	}
	h.NextReply(t, "good request after "+c.Name, ReplyTo(t, h.Probe, h.MAC))
	h.Want = h.add(h.Want, Case{Fate: Answered})
	h.WaitStats(t, "good request after "+c.Name)
	if c.Fate == Lost && h.Tap.SawNow(c.Frame) {
		t.Fatalf("%s: the frame reached %s, want it dropped by the veth", c.Name, h.Pod.HostIf)
	}
	t.Logf("%-52s %-10s ok", c.Name, c.Fate)
}

// Table returns the hostile frames of h's pod and what becomes of each,
// on every datapath.
func (h *Rig[S]) Table() []Case {
	pod, good := h.Pod, h.Good
	stranger := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	bcast := arptest.Broadcast
	req := arptest.Request
	edit := arptest.Edit
	tag := arptest.VLANTag
	return []Case{
		{Name: "truncated to 41 bytes", Frame: good[:arpframe.Len-1], Fate: Malformed},
		{Name: "Ethernet header only (14 bytes)", Frame: good[:14], Fate: Malformed},
		{Name: "13 bytes, shorter than an Ethernet header", Frame: good[:13], Fate: Unsendable, Errno: unix.EINVAL},
		{Name: "wrong hardware type (IEEE 802)", Frame: edit(good, arpframe.OffHType, 0, 6), Fate: Malformed},
		{Name: "wrong protocol type (IPv6)", Frame: edit(good, arpframe.OffPType, 0x86, 0xdd), Fate: Malformed},
		{Name: "wrong hardware address length", Frame: edit(good, arpframe.OffHLen, 8), Fate: Malformed},
		{Name: "wrong protocol address length", Frame: edit(good, arpframe.OffPLen, 16), Fate: Malformed},
		{Name: "opcode 0", Frame: edit(good, arpframe.OffOp, 0, 0), Fate: Malformed},
		{Name: "opcode 3 (RARP request)", Frame: edit(good, arpframe.OffOp, 0, 3), Fate: Malformed},
		{Name: "opcode 0xffff", Frame: edit(good, arpframe.OffOp, 0xff, 0xff), Fate: Malformed},
		{Name: "ARP reply (op 2)", Frame: edit(good, arpframe.OffOp, 0, arpframe.OpReply), Fate: Filtered},
		{Name: "IPv4 EtherType carrying an ARP request", Frame: edit(good, arpframe.OffEthType, 0x08, 0x00), Fate: Filtered},
		{Name: "unicast to another host's MAC", Frame: req(pod.MAC, pod.IP, topo.Gateway, stranger), Fate: Filtered},
		{Name: "802.1Q VLAN 5, broadcast", Frame: tag(good, 0x8100, 5), Fate: Filtered},
		{Name: "802.1Q VLAN 5, unicast to our MAC", Frame: tag(req(pod.MAC, pod.IP, topo.Gateway, topo.GatewayMAC), 0x8100, 5), Fate: Filtered},
		{Name: "802.1ad (QinQ) VLAN 5, broadcast", Frame: tag(good, 0x88a8, 5), Fate: Filtered},
		{Name: "802.1Q priority tag (VLAN 0), broadcast", Frame: tag(good, 0x8100, 0), Fate: Answered},
		{Name: "IPv4 multicast destination MAC", Frame: req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), Fate: Ignored, Verdict: policy.NotForUs},
		{Name: "IPv6 multicast destination MAC", Frame: req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}), Fate: Ignored, Verdict: policy.NotForUs},
		{Name: "multicast sender MAC", Frame: req(net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}, pod.IP, topo.Gateway, bcast), Fate: Ignored, Verdict: policy.BadSender},
		{Name: "zero sender MAC", Frame: edit(good, arpframe.OffSHA, 0, 0, 0, 0, 0, 0), Fate: Ignored, Verdict: policy.BadSender},
		{Name: "broadcast sender MAC", Frame: edit(good, arpframe.OffSHA, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), Fate: Ignored, Verdict: policy.BadSender},
		{Name: "broadcast sender IP", Frame: req(pod.MAC, netip.MustParseAddr("255.255.255.255"), topo.Gateway, bcast), Fate: Ignored, Verdict: policy.BadSender},
		{Name: "multicast sender IP", Frame: req(pod.MAC, netip.MustParseAddr("224.0.0.1"), topo.Gateway, bcast), Fate: Ignored, Verdict: policy.BadSender},
		{Name: "broadcast target IP", Frame: req(pod.MAC, pod.IP, netip.MustParseAddr("255.255.255.255"), bcast), Fate: Ignored, Verdict: policy.BadTarget},
		{Name: "target MAC field set (ignored in a request)", Frame: edit(good, arpframe.OffTHA, 0x02, 1, 2, 3, 4, 5), Fate: Answered},
		{Name: "padded to 1514 bytes (a full 1500-MTU frame)", Frame: arptest.PadTo(good, 1514), Fate: Answered},
		{Name: "1515 bytes, over the pod's MTU", Frame: arptest.PadTo(good, 1515), Fate: Unsendable, Errno: unix.EMSGSIZE},
	}
}

// OverrideTable returns the frames of the table for a datapath answering
// with the override MAC h.MAC (a rig made with one): a unicast re-probe to
// the override is answered, frames for other hosts and frames tagged with
// a VLAN ID are not, except where the datapath cannot tell: tagged is the
// fate of a frame tagged with VLAN 5 and sent to the override (the packet
// datapath's socket filter runs after the kernel has taken the tag off,
// and answers it; the kernel and the eBPF program do not).
func (h *Rig[S]) OverrideTable(tagged Fate) []Case {
	pod, good := h.Pod, h.Good
	req := arptest.Request
	toOverride := req(pod.MAC, pod.IP, topo.Gateway, h.MAC)
	return []Case{
		{Name: "unicast re-probe to the --mac address", Frame: toOverride, Fate: Answered},
		{Name: "unicast to another host's MAC", Frame: req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}), Fate: Filtered},
		{Name: "802.1Q VLAN 5, broadcast", Frame: arptest.VLANTag(good, 0x8100, 5), Fate: Filtered},
		{Name: "802.1ad VLAN 5, broadcast", Frame: arptest.VLANTag(good, 0x88a8, 5), Fate: Filtered},
		{Name: "802.1Q VLAN 5, IPv4 multicast", Frame: arptest.VLANTag(req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), 0x8100, 5), Fate: Filtered},
		{Name: "802.1Q VLAN 0, broadcast", Frame: arptest.VLANTag(good, 0x8100, 0), Fate: Answered},
		{Name: "802.1Q VLAN 5, unicast to the interface's MAC", Frame: arptest.VLANTag(req(pod.MAC, pod.IP, topo.Gateway, topo.GatewayMAC), 0x8100, 5), Fate: Filtered},
		{Name: "802.1Q VLAN 5, unicast to the --mac address", Frame: arptest.VLANTag(toOverride, 0x8100, 5), Fate: tagged},
	}
}

// RunTable sends every frame of Table, each followed by a good request,
// and checks what became of it (answered, counted as malformed or with a
// verdict, dropped in the kernel before pxresp, or never sent), that every
// good request is answered, and that the counters are exact after each
// frame; then jumbo frames; then a burst of them all.
func (h *Rig[S]) RunTable(t *testing.T) {
	t.Helper()
	cases := h.Table()
	for _, c := range cases {
		h.Run(t, c)
	}
	h.jumbo(t)
	h.burst(t, cases)
}

// jumbo: with the pod's MTU raised, a frame over the host side's MTU
// passes the pod's checks and is dropped by the veth on its way into the
// host: the pod's sendto gets ENOBUFS (NET_XMIT_DROP). With both ends at
// 9000, a 9014-byte request reaches pxresp: still a valid request,
// answered (the kernel's ARP answers it too).
func (h *Rig[S]) jumbo(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pod := h.Pod
	if err := pod.NS.IP(ctx, "link", "set", pod.PodIf, "mtu", "9000"); err != nil {
		t.Fatal(err)
	}
	dropped := txDropped(t, pod)
	h.Run(t, Case{Name: "2000 bytes, over the host side's MTU", Frame: arptest.PadTo(h.Good, 2000), Fate: Lost, Errno: unix.ENOBUFS})
	if d := txDropped(t, pod) - dropped; d != 1 {
		t.Errorf("pod %s TX dropped went up by %d, want 1 (the veth's drop of the oversized frame)", pod.PodIf, d)
	}
	if err := h.TP.Host.IP(ctx, "link", "set", pod.HostIf, "mtu", "9000"); err != nil {
		t.Fatal(err)
	}
	h.Run(t, Case{Name: "9014 bytes on a 9000-MTU veth", Frame: arptest.PadTo(h.Good, 9014), Fate: Answered})
	if err := pod.NS.IP(ctx, "link", "set", pod.PodIf, "mtu", "1500"); err != nil {
		t.Fatal(err)
	}
}

// burst sends every sendable frame, then a good request, 20 times,
// without waiting in between: all good requests and the answerable frames
// are answered, and the counters are exact.
func (h *Rig[S]) burst(t *testing.T, cases []Case) {
	t.Helper()
	const rounds = 20
	replies := 0
	for range rounds {
		for _, c := range cases {
			if c.Fate == Unsendable {
				continue
			}
			if err := h.Client.Send(c.Frame); err != nil {
				t.Fatalf("burst: %s: %v", c.Name, err)
			}
			h.Want = h.add(h.Want, c)
			if c.Fate == Answered {
				replies++
			}
		}
		if err := h.Client.Send(h.Probe); err != nil {
			t.Fatal(err)
		}
		h.Want = h.add(h.Want, Case{Fate: Answered})
		replies++
	}
	for i := range replies {
		r, err := h.Client.NextReply(2 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			t.Fatalf("burst: %d replies of %d arrived (stats %+v)", i, replies, h.stats())
		}
	}
	h.WaitStats(t, "burst")
	if r, err := h.Client.NextReply(50 * time.Millisecond); err != nil || r != nil {
		t.Fatalf("burst: an extra reply %x (%v)", r, err)
	}
	t.Logf("burst of %d rounds: %d replies; counters exact: %+v", rounds, replies, h.stats())
}

// txDropped reads the TX dropped counter of the pod's eth0.
func txDropped(t *testing.T, pod *topo.Pod) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := pod.NS.Exec(ctx, "ip", "-j", "-s", "link", "show", "dev", pod.PodIf)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Stats struct {
			TX struct {
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -s link show: %q: %v", out, err)
	}
	return links[0].Stats.TX.Dropped
}
