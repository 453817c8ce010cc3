// Package policy decides whether an ARP request deserves a proxy reply.
//
// It is pure: no I/O, no logging, no clocks. The same Verdict value serves
// tests, logs and metrics. The built-in refusals mirror what the Linux
// kernel's proxy_arp never answers (net/ipv4/arp.c, arp_process) and apply
// whatever targets are configured.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
)

// Delivery says how the request frame reached the interface, judged from its
// Ethernet destination address.
type Delivery uint8

const (
	// Broadcast: the frame was sent to ff:ff:ff:ff:ff:ff.
	Broadcast Delivery = iota + 1
	// Unicast: the frame was sent to the MAC address pxresp answers with.
	Unicast
	// OtherHost: the frame was sent to some other unicast or multicast MAC.
	OtherHost
)

func (d Delivery) String() string {
	switch d {
	case Broadcast:
		return "broadcast"
	case Unicast:
		return "unicast"
	case OtherHost:
		return "other-host"
	}
	return fmt.Sprintf("delivery(%d)", uint8(d))
}

// Request is one ARP request (opcode 1), as seen on one interface.
type Request struct {
	// SenderMAC is the ARP sender hardware address (who to reply to).
	SenderMAC [6]byte
	// SenderIP is the ARP sender protocol address.
	SenderIP netip.Addr
	// TargetIP is the address being resolved.
	TargetIP netip.Addr
	// Delivery is how the frame was addressed at the Ethernet layer.
	Delivery Delivery
	// TargetOnLink is true when the host routes TargetIP back out the
	// interface the request arrived on: the target lives on the
	// requester's side of the link (its own address, as far as the host
	// knows). The kernel's proxy_arp never answers those.
	TargetOnLink bool
}

// Verdict is the outcome of a decision: Reply, or a reason to ignore.
type Verdict uint8

// The verdicts. Every value but Reply is a reason to stay silent.
const (
	// Reply: answer with the interface's MAC.
	Reply Verdict = iota
	// NotForUs: the frame was addressed to another host's MAC.
	NotForUs
	// Probe: an address-conflict probe (RFC 5227), sender IP 0.0.0.0.
	Probe
	// Gratuitous: a gratuitous request or announcement, sender IP == target IP.
	Gratuitous
	// OwnAddress: the target is routed back out the requesting interface,
	// i.e. it is the requester's own address as far as the host knows.
	OwnAddress
	// BadSender: the sender MAC is zero, broadcast or multicast, or the
	// sender IP is not a usable unicast IPv4 address.
	BadSender
	// BadTarget: the target is 0.0.0.0, loopback, multicast or broadcast.
	BadTarget
	// NotTarget: the target is neither a gateway nor a configured target.
	NotTarget

	numVerdicts
)

// NumVerdicts is the number of distinct verdicts; Verdict values run from 0
// to NumVerdicts-1, so callers can keep per-verdict counters in an array.
const NumVerdicts = int(numVerdicts)

var verdictNames = [...]string{
	Reply:      "reply",
	NotForUs:   "not-for-us",
	Probe:      "probe",
	Gratuitous: "gratuitous",
	OwnAddress: "own-address",
	BadSender:  "bad-sender",
	BadTarget:  "bad-target",
	NotTarget:  "not-a-target",
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Policy holds the addresses pxresp answers for. A Policy is immutable after
// New and safe for concurrent use.
type Policy struct {
	gateways []netip.Addr
	targets  []netip.Prefix
}

// New validates and returns a Policy answering for the given gateway
// addresses and target prefixes (a single address is a /32 prefix). At
// least one of the two must be non-empty. Every gateway, and the address of
// every target prefix, must be a unicast IPv4 address: not 0.0.0.0,
// loopback, multicast or the limited broadcast address.
func New(gateways []netip.Addr, targets []netip.Prefix) (*Policy, error) {
	if len(gateways) == 0 && len(targets) == 0 {
		return nil, errors.New("no gateway and no target: nothing to answer for")
	}
	p := &Policy{}
	for _, gw := range gateways {
		if err := checkUnicast(gw); err != nil {
			return nil, fmt.Errorf("gateway %v: %w", gw, err)
		}
		p.gateways = append(p.gateways, gw)
	}
	for _, t := range targets {
		if !t.IsValid() {
			return nil, errors.New("target: invalid prefix")
		}
		t = t.Masked()
		if !t.Addr().Is4() {
			return nil, fmt.Errorf("target %v: not an IPv4 prefix", t)
		}
		if t.Bits() == 32 {
			if err := checkUnicast(t.Addr()); err != nil {
				return nil, fmt.Errorf("target %v: %w", t, err)
			}
		}
		p.targets = append(p.targets, t)
	}
	return p, nil
}

func checkUnicast(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.Is4In6() || !a.Is4():
		return errors.New("not an IPv4 address")
	case badTarget(a):
		return errors.New("not a unicast address (0.0.0.0, loopback, multicast or broadcast)")
	}
	return nil
}

// Gateways returns the gateway addresses, in configuration order.
func (p *Policy) Gateways() []netip.Addr { return append([]netip.Addr(nil), p.gateways...) }

// Targets returns the target prefixes, in configuration order.
func (p *Policy) Targets() []netip.Prefix { return append([]netip.Prefix(nil), p.targets...) }

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func badTarget(a netip.Addr) bool {
	return !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == broadcast4
}

// Decide returns the verdict for r. It never allocates.
func (p *Policy) Decide(r *Request) Verdict {
	switch {
	case r.Delivery != Broadcast && r.Delivery != Unicast:
		return NotForUs
	case r.SenderIP.IsUnspecified():
		return Probe
	case badSenderMAC(r.SenderMAC) || badTarget(r.SenderIP):
		return BadSender
	case r.SenderIP == r.TargetIP:
		return Gratuitous
	case badTarget(r.TargetIP):
		return BadTarget
	case !p.answersFor(r.TargetIP):
		return NotTarget
	case r.TargetOnLink:
		return OwnAddress
	}
	return Reply
}

func (p *Policy) answersFor(a netip.Addr) bool {
	for _, gw := range p.gateways {
		if gw == a {
			return true
		}
	}
	for _, t := range p.targets {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

func badSenderMAC(m [6]byte) bool {
	// The group bit covers broadcast and multicast.
	return m[0]&1 == 1 || m == [6]byte{}
}
