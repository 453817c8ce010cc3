package policy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckUnicast(t *testing.T) {
	for _, c := range []struct {
		addr netip.Addr
		want string // a part of the error; "" for none
	}{
		{netip.MustParseAddr("169.254.1.1"), ""},
		{netip.MustParseAddr("10.244.0.2"), ""},
		{netip.Addr{}, "invalid address"},
		{netip.MustParseAddr("fe80::1"), "not an IPv4 address"},
		{netip.MustParseAddr("::ffff:10.0.0.1"), "not an IPv4 address"},
		{netip.MustParseAddr("0.0.0.0"), "not a unicast address"},
		{netip.MustParseAddr("127.0.0.1"), "not a unicast address"},
		{netip.MustParseAddr("224.0.0.1"), "not a unicast address"},
		{netip.MustParseAddr("255.255.255.255"), "not a unicast address"},
	} {
		checkErr(t, "CheckUnicast("+c.addr.String()+")", CheckUnicast(c.addr), c.want)
	}
}

func TestCheckTarget(t *testing.T) {
	for _, c := range []struct {
		prefix netip.Prefix
		want   string
	}{
		{netip.MustParsePrefix("10.244.0.0/16"), ""},
		{netip.MustParsePrefix("10.244.3.4/16"), ""}, // unmasked is fine
		{netip.MustParsePrefix("0.0.0.0/0"), ""},
		{netip.MustParsePrefix("10.244.0.2/32"), ""},
		{netip.Prefix{}, "invalid prefix"},
		{netip.MustParsePrefix("2001:db8::/32"), "not an IPv4 prefix"},
		{netip.MustParsePrefix("224.0.0.1/32"), "not a unicast address"},
		{netip.MustParsePrefix("127.0.0.1/32"), "not a unicast address"},
	} {
		checkErr(t, "CheckTarget("+c.prefix.String()+")", CheckTarget(c.prefix), c.want)
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
