package arping

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Outputs of the two implementations asking for 169.254.1.1 on eth0, as
// they print them.
const (
	habetsOut = `ARPING 169.254.1.1
60 bytes from ee:ee:ee:ee:ee:ee (169.254.1.1): index=0 time=41.718 usec
60 bytes from ee:ee:ee:ee:ee:ee (169.254.1.1): index=1 time=38.920 usec

--- 169.254.1.1 statistics ---
2 packets transmitted, 2 packets received,   0% unanswered (0 extra)
rtt min/avg/max/std-dev = 0.039/0.040/0.042/0.001 ms
`
	iputilsOut = `ARPING 169.254.1.1 from 10.244.0.2 eth0
Unicast reply from 169.254.1.1 [EE:EE:EE:EE:EE:EE]  0.611ms
Unicast reply from 169.254.1.1 [EE:EE:EE:EE:EE:EE]  0.052ms
Sent 2 probes (1 broadcast(s))
Received 2 response(s)
`
)

func TestReplies(t *testing.T) {
	gw := netip.MustParseAddr("169.254.1.1")
	for name, out := range map[string]string{"habets": habetsOut, "iputils": iputilsOut} {
		rs := Replies(out)
		if len(rs) != 2 {
			t.Fatalf("%s: %d replies, want 2: %+v", name, len(rs), rs)
		}
		for _, r := range rs {
			if r.IP != gw || r.MAC.String() != "ee:ee:ee:ee:ee:ee" {
				t.Errorf("%s: reply %v %v, want %v ee:ee:ee:ee:ee:ee", name, r.IP, r.MAC, gw)
			}
		}
	}
	if rs := Replies("ARPING 10.0.0.1\nTimeout\nSent 2 probes\nReceived 0 response(s)\n"); len(rs) != 0 {
		t.Errorf("no replies expected, got %+v", rs)
	}
}

func TestClassify(t *testing.T) {
	for out, want := range map[string]Impl{
		"arping from iputils 20221126\nlibcap: yes, IDN: yes\n":                                                       IPutils,
		"arping: option requires an argument -- 'V'\nARPing 2.23, by Thomas Habets <thomas@habets.se>\nusage: arping": Habets,
	} {
		if got, err := Classify(out); err != nil || got != want {
			t.Errorf("Classify(%q) = %v, %v; want %v", out, got, err, want)
		}
	}
	if _, err := Classify("busybox arping\n"); err == nil || !strings.Contains(err.Error(), "iputils-arping") {
		t.Errorf("unknown arping: err = %v, want one naming the packages", err)
	}
}

func TestArgsFor(t *testing.T) {
	gw := netip.MustParseAddr("169.254.1.1")
	for impl, flag := range map[Impl]string{Habets: "-i", IPutils: "-I"} {
		got := ArgsFor(impl, "eth0", gw, 2, 1500*time.Millisecond)
		want := []string{"arping", "-c", "2", "-w", "2", flag, "eth0", "169.254.1.1"}
		if !slices.Equal(got, want) {
			t.Errorf("%v: %q, want %q", impl, got, want)
		}
	}
}
