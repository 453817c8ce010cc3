package arping

import (
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// TestInstalledArping runs the installed arping from the sink namespace of
// a reference topology against the host's uplink address, which the host's
// kernel answers: Args must suit the implementation and Replies must read
// its output.
func TestInstalledArping(t *testing.T) {
	privtest.Require(t)
	impl, err := Detect()
	if err != nil {
		if privtest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	tp := topotest.New(t, 0, "arping")
	link := topotest.Exec(t, tp.Host, "ip", "-br", "link", "show", "up0")
	fields := strings.Fields(link)
	if len(fields) < 3 {
		t.Fatalf("ip -br link show up0: %q", link)
	}
	upMAC := fields[2]

	args, err := Args("eth0", tp.UplinkIP, 2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out := topotest.Exec(t, tp.Sink, args...)
	rs := Replies(out)
	if len(rs) != 2 {
		t.Fatalf("%v: %d replies, want 2:\n%s", impl, len(rs), out)
	}
	for _, r := range rs {
		if r.IP != tp.UplinkIP || r.MAC.String() != upMAC {
			t.Errorf("%v: reply %v is-at %v, want %v is-at %s", impl, r.IP, r.MAC, tp.UplinkIP, upMAC)
		}
	}
}
