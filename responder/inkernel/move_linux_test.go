package inkernel

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/responder"
)

// TestNetnsMove: an interface that leaves the namespace is no longer bound
// (its tcx link goes with it); after Close nothing is left on it. A
// Program serves one namespace: Attach in another is refused.
func TestNetnsMove(t *testing.T) {
	tp := topotest.New(t, 2, "pxik")
	ctx := context.Background()
	pod := tp.Pods[0]
	p := load(t)
	i := attachTo(t, p, tp, pod, nil)
	if !i.Bound() {
		t.Fatal("not bound after Attach")
	}
	other := topotest.AddNS(t, tp.Prefix+"away")
	if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, "netns", other.Name); err != nil {
		t.Fatal(err)
	}
	if i.Bound() {
		t.Error("still bound after the interface left the namespace")
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if progs := topotest.TCXIngress(t, other, pod.HostIf); len(progs) != 0 {
		t.Errorf("%d programs on %s in the other namespace after Close", len(progs), pod.HostIf)
	}
	topotest.Exec(t, other, "ip", "link", "add", "ik0", "type", "veth", "peer", "name", "ik1")
	err := other.Do(func() error {
		ifi, err := net.InterfaceByName("ik0")
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Attach(responder.Config{Index: ifi.Index, Name: ifi.Name, Settings: responder.Settings{MAC: ifi.HardwareAddr, Policy: gatewayPolicy(t)}})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("Attach in another namespace = %v, want a refusal naming the namespace", err)
	}
}
