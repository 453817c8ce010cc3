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
	// knows). The kernel's proxy_arp never answers those. Only GatewayMode
	// policies read it; RouteMode asks the Router.
	TargetOnLink bool
	// Ifindex is the interface the request arrived on: the input interface
	// of a RouteMode policy's route lookup.
	Ifindex int
}

// Router classifies the host's route for RouteMode policies: Decide asks it
// for the route of a packet from src arriving on ifindex iif to dst.
// internal/route.Cache implements it. Route is called on the hot path, from
// every responder at once: it must be safe for concurrent use, not
// allocate on a cache hit, and never block for long.
type Router interface {
	Route(iif int, src, dst netip.Addr) RouteClass
}

// Mode is how a Policy chooses the addresses it answers for.
type Mode uint8

const (
	// GatewayMode answers the configured gateways and target prefixes.
	GatewayMode Mode = iota
	// RouteMode answers, like the kernel's proxy_arp, any target that the
	// host routes out another interface (optionally only within the
	// configured target prefixes).
	RouteMode
)

func (m Mode) String() string {
	switch m {
	case GatewayMode:
		return "gateway"
	case RouteMode:
		return "route"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "gateway" or "route".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "gateway":
		return GatewayMode, nil
	case "route":
		return RouteMode, nil
	}
	return 0, fmt.Errorf("unknown mode %q: want gateway or route", s)
}

// RouteClass classifies the host's route to a request's target, as seen
// by a packet from the requester arriving on the request's interface.
type RouteClass uint8

const (
	// RouteUnknown: the lookup failed.
	RouteUnknown RouteClass = iota
	// RouteElsewhere: a unicast route out an interface other than the
	// request's. The kernel's proxy_arp answers these.
	RouteElsewhere
	// RouteBack: a unicast route back out the request's interface: the
	// target is on the requester's side of the link.
	RouteBack
	// RouteLocal: the target is one of the host's own addresses. The
	// kernel answers those itself, proxy_arp or not.
	RouteLocal
	// RouteNone: no unicast route (none at all, or unreachable,
	// blackhole, prohibit, broadcast, multicast...).
	RouteNone
)

func (c RouteClass) String() string {
	switch c {
	case RouteUnknown:
		return "unknown"
	case RouteElsewhere:
		return "elsewhere"
	case RouteBack:
		return "back"
	case RouteLocal:
		return "local"
	case RouteNone:
		return "none"
	}
	return fmt.Sprintf("route(%d)", uint8(c))
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
	// NoRoute (route mode): the host has no unicast route to the target.
	NoRoute
	// LocalAddress (route mode): the target is one of the host's own
	// addresses, which the kernel answers itself.
	LocalAddress
	// UnknownRoute (route mode): the route could not be looked up.
	UnknownRoute

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
	NoRoute:    "no-route",

	LocalAddress: "local-address",
	UnknownRoute: "route-unknown",
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
	mode     Mode
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
	if err := p.addTargets(targets); err != nil {
		return nil, err
	}
	for _, gw := range gateways {
		if err := CheckUnicast(gw); err != nil {
			return nil, fmt.Errorf("gateway %v: %w", gw, err)
		}
		p.gateways = append(p.gateways, gw)
	}
	return p, nil
}

// NewRoute returns a RouteMode Policy. It answers a target when the host
// routes it out another interface; with targets, only targets within them
// (each validated as for New). This is the kernel's proxy_arp, and with
// single addresses its proxy entries (ip neigh add proxy ADDR dev IF).
func NewRoute(targets []netip.Prefix) (*Policy, error) {
	p := &Policy{mode: RouteMode}
	if err := p.addTargets(targets); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) addTargets(targets []netip.Prefix) error {
	for _, t := range targets {
		if err := CheckTarget(t); err != nil {
			if !t.IsValid() {
				return fmt.Errorf("target: %w", err)
			}
			return fmt.Errorf("target %v: %w", t.Masked(), err)
		}
		p.targets = append(p.targets, t.Masked())
	}
	return nil
}

// Mode returns the policy's mode.
func (p *Policy) Mode() Mode { return p.mode }

// Gateways returns the gateway addresses, in configuration order.
func (p *Policy) Gateways() []netip.Addr { return append([]netip.Addr(nil), p.gateways...) }

// Targets returns the target prefixes, in configuration order.
func (p *Policy) Targets() []netip.Prefix { return append([]netip.Prefix(nil), p.targets...) }

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func badTarget(a netip.Addr) bool {
	return !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == broadcast4
}

// Decide returns the verdict for r. A RouteMode policy asks rt for the
// route to the target, once, and only when r passes every check that does
// not depend on the route: probes, gratuitous requests and targets outside
// the policy cost no lookup. A nil rt means no route can be looked up
// (UnknownRoute). A GatewayMode policy never asks rt. Decide does not
// allocate; a lookup costs what rt.Route costs.
func (p *Policy) Decide(r *Request, rt Router) Verdict {
	if v := p.precheck(r); v != Reply {
		return v
	}
	if p.mode == GatewayMode {
		if r.TargetOnLink {
			return OwnAddress
		}
		return Reply
	}
	if rt == nil {
		return UnknownRoute
	}
	switch rt.Route(r.Ifindex, r.SenderIP, r.TargetIP) {
	case RouteElsewhere:
		return Reply
	case RouteBack:
		return OwnAddress
	case RouteLocal:
		return LocalAddress
	case RouteNone:
		return NoRoute
	}
	return UnknownRoute
}

// precheck applies the refusals that do not depend on the route.
func (p *Policy) precheck(r *Request) Verdict {
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
	}
	return Reply
}

// answersFor reports whether a is among the addresses the policy may
// answer: a gateway or within a target prefix; in RouteMode without
// targets, any address.
func (p *Policy) answersFor(a netip.Addr) bool {
	if p.mode == RouteMode && len(p.targets) == 0 {
		return true
	}
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
