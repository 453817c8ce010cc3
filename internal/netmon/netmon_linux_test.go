package netmon_test

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/internal/test/netmontest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// Privileged tests: each runs a netmon.Monitor on a network namespace of its own
// (topotest.AddNS under a fresh prefix), changes things only inside it and
// deletes it on every exit path.

// newNS creates a namespace for t.
func newNS(t *testing.T) *topo.NS {
	t.Helper()
	privtest.Require(t)
	return topotest.AddNS(t, topo.NewPrefix("pxnm")+"ns")
}

// recorder is a netmon.Consumer that keeps every call, described, for a test
// to wait on; while gate is set, every call first waits for it to close.
type recorder struct {
	mu     sync.Mutex
	calls  []string
	cursor int
	notify chan struct{}
	gate   chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) Resync(l *netmon.Listing) {
	var names []string
	for _, x := range l.Links {
		names = append(names, x.Attrs().Name)
	}
	var dsts []string
	for _, x := range l.Routes {
		dsts = append(dsts, fmt.Sprintf("%v@%d", x.Dst, x.OIF))
	}
	slices.Sort(names)
	slices.Sort(dsts)
	r.add(fmt.Sprintf("resync links=%s routes=%s", strings.Join(names, ","), strings.Join(dsts, ",")))
}

func (r *recorder) Change(m *netmon.Message) {
	s := "change " + netmon.MsgType(m.Type)
	if m.Link != nil {
		s += " " + m.Link.Attrs().Name
	}
	if m.Route != nil {
		s += fmt.Sprintf(" %v@%d table=%d", m.Route.Dst, m.Route.OIF, m.Route.Table)
	}
	r.add(s)
}

func (r *recorder) Lost(reason string) { r.add("lost " + reason) }

// waitFor returns the first call after the previous match that contains
// every one of subs; it fails the test after 5 s.
func (r *recorder) waitFor(t *testing.T, subs ...string) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		for i := r.cursor; i < len(r.calls); i++ {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(r.calls[i], s)
			}
			if ok {
				r.cursor = i + 1
				c := r.calls[i]
				r.mu.Unlock()
				return c
			}
		}
		seen := slices.Clone(r.calls[r.cursor:])
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out waiting for a call with %q; calls since the last match: %q", subs, seen)
		}
	}
}

func monitorOn(t *testing.T, ns *topo.NS, cfg netmon.Config) *netmon.Monitor {
	t.Helper()
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close() // the netmon.Monitor keeps its own duplicate
	cfg.Namespace = &h
	return netmontest.New(t, cfg)
}

// Every group is delivered, links and routes decoded.
func TestKernelNotifications(t *testing.T) {
	ns := newNS(t)
	topotest.Batch(t, ns, []string{
		"link set lo up", // a blackhole nexthop needs it
		"link add caliA type veth peer name peerA",
		"link set caliA up",
		"link set peerA up",
		"route add 10.244.0.2/32 dev caliA",
	})
	runtime.GC()
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	m := monitorOn(t, ns, netmon.Config{})
	rec := newRecorder()
	m.Register(rec)
	stop := netmontest.Run(t, m)
	rec.waitFor(t, "resync links=caliA,lo,peerA routes=10.244.0.2/32@")

	for _, step := range []struct {
		cmd  string
		want []string
	}{
		{"link add caliB type veth peer name peerB", []string{"change newlink caliB"}},
		{"addr add 198.18.0.1/24 dev caliB", []string{"change newaddr"}},
		{"link set caliB up", []string{"change newlink caliB"}},
		{"route add 10.244.0.3/32 dev caliB metric 7", []string{"change newroute 10.244.0.3/32@", "table=254"}},
		{"route add 10.9.0.0/16 dev caliB table 1000", []string{"change newroute 10.9.0.0/16@", "table=1000"}},
		{"rule add from 10.244.0.3 lookup 1000 priority 100", []string{"change newrule"}},
		{"rule del priority 100", []string{"change delrule"}},
		{"nexthop add id 7 blackhole", []string{"change newnexthop"}},
		{"route del 10.244.0.2/32 dev caliA", []string{"change delroute 10.244.0.2/32@"}},
		{"link del caliA", []string{"change dellink caliA"}},
	} {
		topotest.Batch(t, ns, []string{step.cmd})
		rec.waitFor(t, step.want...)
	}
	topotest.Exec(t, ns, "sysctl", "-qw", "net.ipv4.conf.caliB.forwarding=1")
	rec.waitFor(t, "change newnetconf")
	if n := m.Resyncs(); n != 0 {
		t.Errorf("Resyncs = %d, want 0", n)
	}
	stop()
	leakcheck.WaitGoroutines(t, gs)
	m.Close()
	if n := leakcheck.FDs(t); n != fds {
		t.Errorf("%d fds after Run and Close, %d before", n, fds)
	}
}

// A subscription that overflows is reported Lost with ENOBUFS, then the
// listing shows what the lost notifications said.
func TestKernelOverflow(t *testing.T) {
	ns := newNS(t)
	m := monitorOn(t, ns, netmon.Config{RecvBufSize: 1, RecvBufForce: true})
	rec := newRecorder()
	m.Register(rec)
	netmontest.Run(t, m)
	rec.waitFor(t, "resync links=lo")
	// Nothing reads the socket after its first batch until the burst is
	// over.
	gate := make(chan struct{})
	rec.mu.Lock()
	rec.gate = gate
	rec.mu.Unlock()
	var burst []string
	for i := range 50 {
		burst = append(burst, fmt.Sprintf("link add calo%02d type veth peer name peo%02d", i, i))
	}
	topotest.Batch(t, ns, burst)
	rec.mu.Lock()
	rec.gate = nil
	rec.mu.Unlock()
	close(gate)
	rec.waitFor(t, "lost receive:", "no buffer space available")
	got := rec.waitFor(t, "resync links=", "calo49")
	for i := range 50 {
		if !strings.Contains(got, fmt.Sprintf("calo%02d", i)) {
			t.Fatalf("the resync's listing lacks calo%02d: %s", i, got)
		}
	}
	if n := m.Resyncs(); n == 0 {
		t.Error("Resyncs = 0 after an overflow")
	}
	// The new subscription works (the tiny buffer may overflow again: a
	// resync is as good).
	topotest.Batch(t, ns, []string{"link add calolast type veth peer name peolast"})
	rec.waitFor(t, "calolast")
}

// Without Config.Namespace the Monitor follows the namespace of the thread
// that called New, also when Run and resubscriptions run elsewhere.
func TestKernelCurrentNamespace(t *testing.T) {
	ns := newNS(t)
	topotest.Batch(t, ns, []string{"link add caliX type veth peer name peerX"})
	var m *netmon.Monitor
	if err := ns.Do(func() error {
		var err error
		m, err = netmon.New(netmon.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rec := newRecorder()
	m.Register(rec)
	netmontest.Run(t, m)
	rec.waitFor(t, "resync links=caliX,lo,peerX")
	topotest.Batch(t, ns, []string{"link set caliX up"})
	rec.waitFor(t, "change newlink caliX")
	// InNamespace opens sockets there too.
	var idx int
	if err := m.InNamespace(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("caliX")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
			return err
		}
		idx = int(ifr.Uint32())
		return nil
	}); err != nil || idx == 0 {
		t.Fatalf("InNamespace: caliX has index %d: %v", idx, err)
	}
}
