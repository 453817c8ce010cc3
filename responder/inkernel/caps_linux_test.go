package inkernel

import (
	"bytes"
	"net"
	"testing"
	"time"

	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/hostile"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/responder"
)

// withEffective runs fn with exactly caps in the process's effective set,
// on every thread (libcap's psx), and restores the set it found.
// Goroutines of the test keep running meanwhile: the tests that call it
// run alone.
func withEffective(t *testing.T, caps []cap.Value, fn func()) {
	t.Helper()
	orig, err := cap.GetProc().Dup()
	if err != nil {
		t.Fatal(err)
	}
	set, err := orig.Dup()
	if err != nil {
		t.Fatal(err)
	}
	if err := set.ClearFlag(cap.Effective); err != nil {
		t.Fatal(err)
	}
	if err := set.SetFlag(cap.Effective, true, caps...); err != nil {
		t.Fatal(err)
	}
	if err := set.SetProc(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := orig.SetProc(); err != nil {
			t.Fatalf("restoring the capabilities: %v", err)
		}
	}()
	fn()
}

// TestLoadCapabilities: Load and Supported need CAP_BPF and CAP_NET_ADMIN,
// and nothing else (not CAP_PERFMON, without which the verifier refuses
// some pointer arithmetic, nor CAP_SYS_ADMIN); Supported names the one
// missing.
func TestLoadCapabilities(t *testing.T) {
	privtest.Require(t)
	// Supported's tcx probe, in a namespace of the test's own.
	in := inNS(t, topotest.AddNS(t, topo.NewPrefix("pxikcap")+"ns"))
	supported := func() (err error) {
		in(func() { err = Supported() })
		return err
	}
	if err := supported(); err != nil {
		t.Fatalf("Supported() = %v as root", err)
	}
	withEffective(t, []cap.Value{cap.BPF, cap.NET_ADMIN}, func() {
		if err := supported(); err != nil {
			t.Errorf("with CAP_BPF and CAP_NET_ADMIN only: Supported() = %v", err)
		}
		p, err := Load()
		if err != nil {
			t.Fatalf("with CAP_BPF and CAP_NET_ADMIN only: Load: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	})
	for _, c := range []struct {
		have    cap.Value
		missing string
	}{{cap.BPF, "CAP_NET_ADMIN not held"}, {cap.NET_ADMIN, "CAP_BPF not held"}} {
		withEffective(t, []cap.Value{c.have}, func() {
			if err := supported(); err == nil || err.Error() != c.missing {
				t.Errorf("with %v only: Supported() = %v, want %q", c.have, err, c.missing)
			}
			p, err := Load()
			if err == nil {
				p.Close()
				t.Errorf("with %v only: Load succeeded", c.have)
			} else {
				t.Logf("with %v only: Load: %v", c.have, err)
			}
		})
	}
}

// TestServingCapabilities: once the program is loaded, serving needs no
// capability at all: attaching it to a new interface (a tcx link made
// from the loaded program's fd), Apply, Stats, Bound and Close, with an
// empty effective set, and the new interface is answered. The kernel checks
// CAP_BPF and CAP_NET_ADMIN when the program and the maps are created;
// serving uses their file descriptors.
func TestServingCapabilities(t *testing.T) {
	tp := topotest.New(t, 1, "pxikcap")
	pod := tp.Pods[0]
	p := load(t)
	cl := topotest.Client(t, pod)
	in := inNS(t, tp.Host) // entered while the test may
	ifi := hostIf(t, tp, pod)
	var err error
	override := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	withEffective(t, nil, func() {
		var i *Iface
		in(func() {
			i, err = p.Attach(responder.Config{Index: ifi.Index, Name: ifi.Name, Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t)}})
		})
		if err != nil {
			t.Fatalf("Attach without capabilities: %v", err)
		}
		if got := topotest.Ask(t, cl, req, time.Second); !bytes.Equal(got, hostile.ReplyTo(t, req, topo.GatewayMAC)) {
			t.Errorf("reply %x after Attach without capabilities", got)
		}
		if err := i.Apply(responder.Settings{MAC: ifi.HardwareAddr, Override: override, Policy: gatewayPolicy(t)}); err != nil {
			t.Fatalf("Apply without capabilities: %v", err)
		}
		if got := topotest.Ask(t, cl, req, time.Second); !bytes.Equal(got, hostile.ReplyTo(t, req, override)) {
			t.Errorf("reply %x after Apply without capabilities", got)
		}
		if st := i.Stats(); st.Replies != 2 {
			t.Errorf("stats without capabilities: %+v", st)
		}
		if !i.Bound() {
			t.Error("Bound() = false without capabilities")
		}
		if err := i.Close(); err != nil {
			t.Fatalf("Close without capabilities: %v", err)
		}
		if got := topotest.Ask(t, cl, req, silence); got != nil {
			t.Errorf("reply %x after Close", got)
		}
	})
}
