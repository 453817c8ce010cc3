package policy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestCheckAddresses: the address classes of gateways and targets.
func TestCheckAddresses(t *testing.T) {
	addr, prefix := netip.MustParseAddr, netip.MustParsePrefix
	for _, c := range []struct {
		what string
		err  error
		want string // a part of the error; "" for none
	}{
		{"gateway", CheckUnicast(addr("169.254.1.1")), ""},
		{"pod", CheckUnicast(addr("10.244.0.2")), ""},
		{"zero Addr", CheckUnicast(netip.Addr{}), "invalid address"},
		{"IPv6", CheckUnicast(addr("fe80::1")), "not an IPv4 address"},
		{"IPv4-mapped", CheckUnicast(addr("::ffff:10.0.0.1")), "not an IPv4 address"},
		{"0.0.0.0", CheckUnicast(addr("0.0.0.0")), "not a unicast address"},
		{"loopback", CheckUnicast(addr("127.0.0.1")), "not a unicast address"},
		{"multicast", CheckUnicast(addr("224.0.0.1")), "not a unicast address"},
		{"broadcast", CheckUnicast(addr("255.255.255.255")), "not a unicast address"},
		{"target prefix", CheckTarget(prefix("10.244.0.0/16")), ""},
		{"unmasked target prefix", CheckTarget(prefix("10.244.3.4/16")), ""},
		{"everything", CheckTarget(prefix("0.0.0.0/0")), ""},
		{"target address", CheckTarget(prefix("10.244.0.2/32")), ""},
		{"zero Prefix", CheckTarget(netip.Prefix{}), "invalid prefix"},
		{"IPv6 prefix", CheckTarget(prefix("2001:db8::/32")), "not an IPv4 prefix"},
		{"multicast target address", CheckTarget(prefix("224.0.0.1/32")), "not a unicast address"},
		{"loopback target address", CheckTarget(prefix("127.0.0.1/32")), "not a unicast address"},
	} {
		checkErr(t, c.what, c.err, c.want)
	}
}

func TestCheckMAC(t *testing.T) {
	for _, c := range []struct {
		mac  net.HardwareAddr
		want string
	}{
		{net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, ""},
		{net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, ""},
		{nil, "not a 6-byte Ethernet address"},
		{net.HardwareAddr{0x02, 0, 0, 0, 1}, "not a 6-byte Ethernet address"},
		{net.HardwareAddr{0x02, 0, 0, 0, 0, 0, 0, 1}, "not a 6-byte Ethernet address"},
		{net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}, "not a unicast address (multicast or broadcast)"},
		{net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "not a unicast address (multicast or broadcast)"},
		{net.HardwareAddr{0, 0, 0, 0, 0, 0}, "not a unicast address (all zeros)"},
	} {
		err := CheckMAC(c.mac)
		checkErr(t, "CheckMAC("+c.mac.String()+")", err, c.want)
		// The same rule as a request's sender MAC (BadSender).
		if len(c.mac) == 6 && (err == nil) == badSenderMAC([6]byte(c.mac)) {
			t.Errorf("CheckMAC(%v) = %v, but badSenderMAC says %v", c.mac, err, badSenderMAC([6]byte(c.mac)))
		}
	}
}

// checkErr fails unless err contains want ("" meaning no error), on one
// line.
func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s = %v, want nil", what, err)
	case want == "":
	case err == nil || !strings.Contains(err.Error(), want):
		t.Errorf("%s = %v, want an error with %q", what, err, want)
	case strings.Contains(err.Error(), "\n"):
		t.Errorf("%s = %q: more than one line", what, err)
	}
}
