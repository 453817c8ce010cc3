package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// daemon keeps one responder per attached interface, driven by ifwatch
// events. handle runs on the watcher's goroutine; closeAll after it.
type daemon struct {
	ctx      context.Context
	policy   *policy.Policy
	override net.HardwareAddr
	log      *slog.Logger
	listen   func(responder.Config) (server, error)
	// rateLimit is each responder's limit in replies per second (0: none);
	// newDaemon sets responder.DefaultRateLimit.
	rateLimit int

	attached map[int]*attachment
	wg       sync.WaitGroup
	closing  chan struct{} // a semaphore bounding the sockets closed at once
}

// server is what the daemon needs of a *responder.Responder.
type server interface {
	Serve(context.Context) error
	Close() error
	SetMAC(net.HardwareAddr)
	SetOnLink([]netip.Prefix)
	Stats() responder.Stats
	Bound() bool
}

type attachment struct {
	srv  server
	link ifwatch.Link
	done chan struct{}
}

func newDaemon(ctx context.Context, p *policy.Policy, override net.HardwareAddr, log *slog.Logger) *daemon {
	return &daemon{
		ctx: ctx, policy: p, override: override, log: log, rateLimit: responder.DefaultRateLimit,
		listen:   func(c responder.Config) (server, error) { return responder.Listen(c) },
		attached: make(map[int]*attachment),
		closing:  make(chan struct{}, maxClosing),
	}
}

func (d *daemon) handle(ev ifwatch.Event) {
	l := ev.Link
	switch ev.Kind {
	case ifwatch.Attach:
		d.attach(l)
	case ifwatch.Update:
		a, ok := d.attached[l.Index]
		if !ok {
			d.attach(l)
			return
		}
		if ev.Resync && !a.srv.Bound() {
			// The interface left the namespace and came back unseen
			// (ifwatch resynced): its socket is unbound for good. Only
			// a listing can hide that; outside one, an unbound socket
			// means the link is being deleted, and a Detach follows.
			d.log.Warn("listener lost its interface; reopening", "iface", l.Name, "ifindex", l.Index)
			d.detach(a.link)
			d.attach(l)
			return
		}
		if l.MAC.String() != a.link.MAC.String() {
			d.log.Info("mac changed", "iface", l.Name, "ifindex", l.Index, "mac", l.MAC.String())
			a.srv.SetMAC(l.MAC)
		}
		if l.Name != a.link.Name || l.Up != a.link.Up {
			d.log.Info("link changed", "iface", l.Name, "ifindex", l.Index, "up", l.Up)
		}
		a.srv.SetOnLink(l.OnLink)
		a.link = l
	case ifwatch.Detach:
		d.detach(l)
	}
}

func (d *daemon) attach(l ifwatch.Link) {
	if _, ok := d.attached[l.Index]; ok {
		return
	}
	srv, err := d.listen(responder.Config{
		Index: l.Index, Name: l.Name, MAC: l.MAC, Override: d.override,
		Policy: d.policy, OnLink: l.OnLink, Logger: d.log, RateLimit: d.rateLimit,
	})
	if err != nil {
		// The link may already be gone again; ifwatch will say so.
		d.log.Error("attach failed", "iface", l.Name, "ifindex", l.Index, "err", err)
		return
	}
	a := &attachment{srv: srv, link: l, done: make(chan struct{})}
	d.attached[l.Index] = a
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(a.done)
		if err := srv.Serve(d.ctx); err != nil {
			d.log.Error("listener failed", "iface", l.Name, "ifindex", l.Index, "err", err)
		}
	}()
	d.log.Info("attach", "iface", l.Name, "ifindex", l.Index, "mac", l.MAC.String(), "up", l.Up)
}

// maxClosing bounds how many sockets are closed at once. Each close blocks
// its thread in the kernel, and the Go runtime keeps every thread it ever
// started for a blocking call: unbounded, a burst of 100 deletions leaves
// pxresp with ~70 idle threads for good.
const maxClosing = 4

// detach closes the interface's listener. Closing an AF_PACKET socket
// waits for an RCU grace period (~10 ms), so it happens on a goroutine of
// its own: the watcher goes on with the next event, and a burst of deletions
// does not hold up new interfaces. closeAll waits for these goroutines.
func (d *daemon) detach(l ifwatch.Link) {
	a, ok := d.attached[l.Index]
	if !ok {
		return
	}
	delete(d.attached, l.Index)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.closing <- struct{}{}
		_ = a.srv.Close()
		<-d.closing
		<-a.done
		st := a.srv.Stats()
		d.log.Info("detach", "iface", l.Name, "ifindex", l.Index, "mac", a.link.MAC.String(),
			"requests", st.Requests, "replies", st.Replies, "rate_limited", st.RateLimited)
	}()
}

// run serves the interfaces w selects until the daemon's context is done,
// then closes every listener and waits for them to end.
func (d *daemon) run(w *ifwatch.Watcher) error {
	err := w.Run(d.ctx, d.handle)
	d.closeAll()
	return err
}

// closeAll detaches every interface and waits for all listeners to end.
func (d *daemon) closeAll() {
	for _, a := range d.attached {
		d.detach(a.link)
	}
	d.wg.Wait()
}
