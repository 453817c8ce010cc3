package policy

import (
	"errors"
	"net"
	"net/netip"
)

// The checks of pxresp's values, each in one place: every other package
// calls these. Their errors give the reason only, on one line, so that the
// caller names the value once, in its own words (a flag, a file:line: key,
// an interface).

// CheckUnicast accepts what may be a gateway or a single target: a unicast
// IPv4 address, that is not 0.0.0.0, loopback, multicast or the limited
// broadcast address. An IPv4-mapped IPv6 address is not IPv4.
func CheckUnicast(a netip.Addr) error {
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

// CheckTarget accepts a target prefix: an IPv4 prefix, which for a single
// address (a /32) must pass CheckUnicast. The prefix need not be masked.
func CheckTarget(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case !p.Addr().Is4():
		return errors.New("not an IPv4 prefix")
	case p.Bits() == 32:
		return CheckUnicast(p.Addr())
	}
	return nil
}

// CheckMAC accepts a MAC that pxresp may answer with (an override, --mac,
// a rule's mac): 6 bytes, unicast and not all zeros.
//
// The check lives in policy because it is the rule the policy already
// applies to the MAC of every request's sender (BadSender): the address a
// reply claims must be one that pxresp itself would accept from a
// requester, so the two cannot drift apart.
func CheckMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return errors.New("not a 6-byte Ethernet address")
	}
	if badSenderMAC([6]byte(mac)) {
		if mac[0]&1 == 1 {
			return errors.New("not a unicast address (multicast or broadcast)")
		}
		return errors.New("not a unicast address (all zeros)")
	}
	return nil
}
