// Package topotest gives privileged tests a reference topology of their
// own (internal/test/topo), removed when the test ends.
package topotest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// New gates t as a privileged test (privtest.Require), builds a topology
// with that many pods under a fresh prefix made from tag, and removes it
// when t ends. Setup errors fail t.
func New(t testing.TB, pods int, tag string) *topo.Topology {
	t.Helper()
	privtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := topo.New(ctx, topo.Options{Pods: pods, Prefix: topo.NewPrefix(tag)})
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("topology close: %v", err)
		}
	})
	return tp
}

// Client opens a raw ARP client on the pod's interface, closed when t ends.
func Client(t testing.TB, p *topo.Pod) *arptest.Client {
	t.Helper()
	c, err := arptest.Open(p.NS, p.PodIf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Ask sends frame and returns the first reply within wait, or nil.
func Ask(t testing.TB, c *arptest.Client, frame []byte, wait time.Duration) []byte {
	t.Helper()
	r, err := c.Ask(frame, wait)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Exec runs a command in ns (bounded by 15 s) and fails t if it fails.
func Exec(t testing.TB, ns *topo.NS, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return out
}

// AddNS creates the named network namespace, deleted when t ends.
func AddNS(t testing.TB, name string) *topo.NS {
	t.Helper()
	ns := &topo.NS{Name: name}
	if err := ns.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return ns
}

// Batch runs `ip -n NS -batch -` with cmds on stdin (bounded by 30 s).
func Batch(t testing.TB, ns *topo.NS, cmds []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ns.Batch(ctx, cmds); err != nil {
		t.Fatal(err)
	}
}

// TCXIngress returns the BPF programs attached to the tcx ingress of the
// interface ifname of ns, asked from a thread inside ns (so only ns's
// interfaces can be named). Errors fail t.
func TCXIngress(t testing.TB, ns *topo.NS, ifname string) []link.AttachedProgram {
	t.Helper()
	var res *link.QueryResult
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		res, err = link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: ebpf.AttachTCXIngress})
		return err
	})
	if err != nil {
		t.Fatalf("tcx ingress programs on %s in %s: %v", ifname, ns.Name, err)
	}
	return res.Programs
}
