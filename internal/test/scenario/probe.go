package scenario

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// probeWait bounds the wait for a reply to a probe. Answers come within
// microseconds (kernel) or a few hundred (pxresp); silence is waited out.
const probeWait = 500 * time.Millisecond

// arpProbe is a check that sends "who-has target tell sender" as a raw
// broadcast frame from ifname in ns and expects a reply from want (sender
// MAC, and sender IP target), or, with want nil, no reply within probeWait.
func arpProbe(ns *topo.NS, ifname string, sender, target netip.Addr, want net.HardwareAddr, why string) Check {
	what := fmt.Sprintf("who-has %s (%s) gets ", target, why)
	if want == nil {
		what += "no answer"
	} else {
		what += "an answer from " + want.String()
	}
	return Check{
		What: what,
		Run: func(ctx context.Context) (string, error) {
			mac, err := ns.LinkMAC(ctx, ifname)
			if err != nil {
				return "", err
			}
			c, err := arptest.Open(ns, ifname)
			if err != nil {
				return "", err
			}
			defer c.Close()
			req := arptest.Request(mac, sender, target, arptest.Broadcast)
			reply, err := c.Ask(req, probeWait)
			if err != nil {
				return "", err
			}
			d := fmt.Sprintf("raw request from %s %s: who-has %s tell %s: ", ns.Name, ifname, target, sender)
			if reply == nil {
				d += fmt.Sprintf("no reply within %v", probeWait)
				if want != nil {
					return d, fmt.Errorf("no reply, want one from %s", want)
				}
				return d, nil
			}
			var f arpframe.Frame
			if err := arpframe.Decode(reply, &f); err != nil {
				return "", err
			}
			from, ip := net.HardwareAddr(f.SHA[:]), f.SPA
			d += fmt.Sprintf("%s is-at %s", ip, from)
			switch {
			case want == nil:
				return d, fmt.Errorf("answered, want no reply")
			case !bytes.Equal(from, want) || ip != target:
				return d, fmt.Errorf("reply %s is-at %s, want %s is-at %s", ip, from, target, want)
			}
			return d, nil
		},
	}
}
