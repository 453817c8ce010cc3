package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// fakeServer stands in for a responder.
type fakeServer struct {
	cfg     responder.Config
	mu      sync.Mutex
	mac     net.HardwareAddr
	onLink  []netip.Prefix
	unbound bool
	closed  chan struct{}
	once    sync.Once
}

func (f *fakeServer) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-f.closed:
	}
	return nil
}
func (f *fakeServer) Close() error { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeServer) SetMAC(m net.HardwareAddr) {
	f.mu.Lock()
	f.mac = m
	f.mu.Unlock()
}
func (f *fakeServer) SetOnLink(p []netip.Prefix) {
	f.mu.Lock()
	f.onLink = p
	f.mu.Unlock()
}
func (f *fakeServer) Stats() responder.Stats { return responder.Stats{} }
func (f *fakeServer) Bound() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unbound
}

// waitClosed fails the test unless s is closed within 5 s (detach closes
// listeners on a goroutine of its own).
func waitClosed(t *testing.T, what string, s *fakeServer) {
	t.Helper()
	select {
	case <-s.closed:
	case <-time.After(5 * time.Second):
		t.Errorf("%s did not close the listener", what)
	}
}

func testDaemon(t *testing.T, ctx context.Context) (*daemon, map[int]*fakeServer) {
	t.Helper()
	pol, err := policy.New([]netip.Addr{netip.MustParseAddr("169.254.1.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := newDaemon(ctx, pol, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	servers := map[int]*fakeServer{}
	d.listen = func(c responder.Config) (server, error) {
		if c.Name == "calibroken" {
			return nil, errors.New("no such device")
		}
		s := &fakeServer{cfg: c, mac: c.MAC, closed: make(chan struct{})}
		servers[c.Index] = s
		return s, nil
	}
	return d, servers
}

func link(i int, name string, mac byte) ifwatch.Link {
	return ifwatch.Link{Index: i, Name: name, MAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, mac}, Up: true}
}

func TestDaemonFollowsEvents(t *testing.T) {
	d, servers := testDaemon(t, context.Background())
	d.handle(ifwatch.Event{Kind: ifwatch.Attach, Link: link(4, "calia", 1)})
	d.handle(ifwatch.Event{Kind: ifwatch.Attach, Link: link(4, "calia", 1)}) // once per ifindex
	d.handle(ifwatch.Event{Kind: ifwatch.Attach, Link: link(9, "calibroken", 1)})
	if len(servers) != 1 || len(d.attached) != 1 {
		t.Fatalf("%d servers, %d attached; want 1 and 1", len(servers), len(d.attached))
	}
	s := servers[4]
	if s.cfg.Index != 4 || s.cfg.Name != "calia" || s.cfg.Policy == nil {
		t.Errorf("listener config %+v", s.cfg)
	}

	up := link(4, "calia", 2)
	up.OnLink = []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}
	d.handle(ifwatch.Event{Kind: ifwatch.Update, Link: up})
	if s.mac.String() != up.MAC.String() || len(s.onLink) != 1 {
		t.Errorf("after update: mac %v onLink %v", s.mac, s.onLink)
	}
	// An update for an interface that failed to attach retries the attach.
	d.handle(ifwatch.Event{Kind: ifwatch.Update, Link: link(5, "calib", 1)})
	if _, ok := servers[5]; !ok {
		t.Error("update of an unattached link did not attach it")
	}

	// The interface left the namespace and came back while ifwatch was
	// resyncing: its socket is unbound, and the Update after the resync
	// makes the daemon open a new one.
	s.mu.Lock()
	s.unbound = true
	s.mu.Unlock()
	d.handle(ifwatch.Event{Kind: ifwatch.Update, Link: up})
	if d.attached[4].srv != s {
		t.Fatal("an unbound listener was reopened on a notification (the link is being deleted)")
	}
	d.handle(ifwatch.Event{Kind: ifwatch.Update, Link: up, Resync: true})
	waitClosed(t, "an update of an unbound listener", s)
	if s2 := servers[4]; s2 == s || d.attached[4] == nil || d.attached[4].srv != s2 {
		t.Fatal("an unbound listener was not reopened")
	}

	d.handle(ifwatch.Event{Kind: ifwatch.Detach, Link: up})
	waitClosed(t, "detach", servers[4])
	d.handle(ifwatch.Event{Kind: ifwatch.Detach, Link: up}) // unknown: ignored
	d.closeAll()
	if len(d.attached) != 0 {
		t.Errorf("%d still attached after closeAll", len(d.attached))
	}
	waitClosed(t, "closeAll", servers[5])
}
