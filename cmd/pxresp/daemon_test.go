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

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// fakeServer stands in for a responder.
type fakeServer struct {
	cfg    responder.Config
	mu     sync.Mutex
	mac    net.HardwareAddr
	onLink []netip.Prefix
	closed chan struct{}
	once   sync.Once
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

	d.handle(ifwatch.Event{Kind: ifwatch.Detach, Link: up})
	select {
	case <-s.closed:
	default:
		t.Error("detach did not close the listener")
	}
	d.handle(ifwatch.Event{Kind: ifwatch.Detach, Link: up}) // unknown: ignored
	d.closeAll()
	if len(d.attached) != 0 {
		t.Errorf("%d still attached after closeAll", len(d.attached))
	}
	select {
	case <-servers[5].closed:
	default:
		t.Error("closeAll left a listener open")
	}
}
