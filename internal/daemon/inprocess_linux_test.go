package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/diag"
	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/responder"
)

// In-process tests: the daemon runs in the test process against a
// reference topology of the test's own.

// inProcess is the daemon running in this test process against the host
// namespace of a topology: the netlink monitor follows that namespace
// through a handle, and the listeners' sockets are opened inside it.
type inProcess struct {
	mon    *netmon.Monitor
	events chan event // every event, after the daemon handled it
	cancel context.CancelFunc
	done   chan error
}

// startInProcess starts the daemon on a monitor configured by cfg, wired
// as Run wires it, under one rule serving "cali*", and calls hook, if not
// nil, after each event the daemon has handled. The test stops it with
// stop.
func startInProcess(t *testing.T, tp *topo.Topology, cfg netmon.Config, hook func(event)) *inProcess {
	t.Helper()
	h, err := tp.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	cf, err := config.New("test", &config.Rule{Interfaces: []string{"cali*"}, Gateways: []netip.Addr{topo.Gateway}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := newDaemon(ctx, log)
	d.diagnose = func(string, bool) ([]diag.Finding, error) { return nil, nil }
	d.listen = func(c responder.Config) (server, error) {
		var r *responder.Responder
		err := tp.Host.Do(func() (err error) {
			r, err = responder.Listen(c)
			return err
		})
		return r, err
	}
	cfg.Namespace = &h
	cfg.Logger = log
	mon, err := netmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	ip := &inProcess{mon: mon, events: make(chan event, 1024), cancel: cancel, done: make(chan error, 1)}
	w, err := ifwatch.New(ifwatch.Config[*config.Rule]{Select: selector(cf), Logger: log, Handle: func(ev event) {
		d.handle(ev)
		select {
		case ip.events <- ev:
		default: // nobody is waiting for this many
		}
		if hook != nil {
			hook(ev)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	mon.Register(w)
	go func() { ip.done <- d.run(mon) }()
	return ip
}

// waitEvent waits at most 5 s for an event of that kind for the named link.
func (ip *inProcess) waitEvent(t *testing.T, kind ifwatch.Kind, name string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ip.events:
			if ev.Kind == kind && ev.Link.Name == name {
				return
			}
		case <-timeout:
			t.Fatalf("no %v event for %s within 5s", kind, name)
		}
	}
}

// stop stops the daemon and waits (at most 5 s) until every listener ended.
func (ip *inProcess) stop(t *testing.T) {
	t.Helper()
	ip.cancel()
	select {
	case err := <-ip.done:
		if err != nil {
			t.Fatalf("netlink monitor: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("netlink monitor did not stop within 5s")
	}
}

// TestDaemonLeavesNothingBehind runs the daemon in-process against the test
// namespace and checks that a deleted veth's listener leaves no goroutine
// and no fd behind, and that shutdown leaves none at all.
func TestDaemonLeavesNothingBehind(t *testing.T) {
	tp := topotest.New(t, 1, "pxdm")
	ctx := context.Background()
	baseG := runtime.NumGoroutine()
	ip := startInProcess(t, tp, netmon.Config{}, nil)
	ip.waitEvent(t, ifwatch.Attach, tp.Pods[0].HostIf)
	oneG, oneFD := runtime.NumGoroutine(), leakcheck.FDs(t)

	pod, err := tp.AddPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ip.waitEvent(t, ifwatch.Attach, pod.HostIf)
	c := topotest.Client(t, pod)
	if r := topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
		t.Fatal("in-process daemon did not answer")
	}
	c.Close()
	if err := tp.DelPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ip.waitEvent(t, ifwatch.Detach, pod.HostIf)
	leakcheck.WaitGoroutines(t, oneG) // the listener's goroutines end once its socket is closed
	if n := leakcheck.FDs(t); n != oneFD {
		t.Errorf("%d fds after the veth was deleted, %d before it was created", n, oneFD)
	}
	ip.stop(t)
	leakcheck.WaitGoroutines(t, baseG)
}

// TestInterfaceMovesNetnsUnseen: a served interface leaves the namespace and
// comes back while pxresp's netlink subscription has overflowed, so pxresp
// never sees the move: the resync finds the link with the same ifindex,
// name and MAC. The kernel, though, unbound pxresp's socket from it for good
// when it left (packet_notifier sets the socket's ifindex to -1), so the
// daemon must notice (Responder.Bound) and open a new listener.
//
// The daemon runs in-process with a 1-byte netlink buffer, and the test
// makes the lost stretch certain: it blocks the event handler, creates a
// burst of veths (the socket overflows while nothing reads it), then moves
// the interface out and back, then lets the handler go.
func TestInterfaceMovesNetnsUnseen(t *testing.T) {
	tp := topotest.New(t, 1, "pxdm")
	pod := tp.Pods[0]
	ctx := context.Background()
	away := topotest.AddNS(t, tp.Prefix+"away")
	churnNS := topotest.AddNS(t, tp.Prefix+"churn")

	blocked, gate := make(chan struct{}), make(chan struct{})
	var sawPodDetach atomic.Bool
	ip := startInProcess(t, tp, netmon.Config{RecvBufSize: 1, RecvBufForce: true}, func(ev event) {
		if ev.Kind == ifwatch.Detach && ev.Link.Name == pod.HostIf {
			sawPodDetach.Store(true)
		}
		if ev.Kind == ifwatch.Attach && ev.Link.Name == "caligate" {
			close(blocked)
			<-gate // nothing reads the netlink sockets until the test says so
		}
	})
	ip.waitEvent(t, ifwatch.Attach, pod.HostIf)
	c := topotest.Client(t, pod)
	req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	if topotest.Ask(t, c, req, time.Second) == nil {
		t.Fatal("no reply before the move")
	}

	topotest.Batch(t, tp.Host, []string{"link add caligate type veth peer name gate netns " + churnNS.Name})
	var burst []string
	for i := range 50 {
		burst = append(burst, fmt.Sprintf("link add califill%02d type veth peer name fill%02d netns %s", i, i, churnNS.Name))
	}
	// The handler blocks on caligate's Attach; then overflow the
	// subscription and move the interface meanwhile.
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("no Attach for caligate within 5s")
	}
	topotest.Batch(t, tp.Host, burst)
	topotest.Batch(t, tp.Host, []string{"link set " + pod.HostIf + " netns " + away.Name})
	topotest.Batch(t, away, []string{"link set " + pod.HostIf + " netns " + tp.Host.Name})
	if err := tp.Host.IP(ctx, "link", "set", pod.HostIf, "up"); err != nil {
		t.Fatal(err)
	}
	close(gate)

	var reply []byte
	for i := 0; reply == nil && i < 50; i++ { // up to ~5 s for the resync
		reply = topotest.Ask(t, c, req, 100*time.Millisecond)
	}
	if ip.mon.Resyncs() == 0 {
		t.Fatal("the netlink subscription did not overflow: the test did not exercise the unseen move")
	}
	if sawPodDetach.Load() {
		t.Fatal("the watcher saw the move (a Detach for the pod's interface): the unseen case was not exercised")
	}
	if reply == nil {
		t.Fatalf("no reply after a move out and back that pxresp did not see (%d resyncs): it still holds the socket the kernel unbound", ip.mon.Resyncs())
	}
	t.Logf("move hidden by %d resync(s); served again on a new socket", ip.mon.Resyncs())
	ip.stop(t)
}
