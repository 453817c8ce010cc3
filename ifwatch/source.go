package ifwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// source is what the Watcher needs from netlink; tests replace it with a
// fake. The subscribe methods behave like netlink's: on success a goroutine
// sends updates to ch (blocking) and closes ch when it stops, either after
// done is closed or after a receive error, which it first passes to onErr.
// On failure nothing runs and ch is never closed. Lists may return
// netlink.ErrDumpInterrupted.
type source interface {
	subscribeLinks(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error
	subscribeRoutes(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error
	listLinks() ([]netlink.Link, error)
	listRoutes() ([]netlink.Route, error)
	close()
}

// netlinkSource is the source backed by the kernel.
type netlinkSource struct {
	ns     netns.NsHandle // netns.None() for the current namespace
	rcvbuf int
	force  bool
	h      *netlink.Handle // for the lists
}

// openNetlink returns a netlinkSource for namespace ns.
func openNetlink(ns netns.NsHandle, rcvbuf int, force bool) (source, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return &netlinkSource{ns: ns, rcvbuf: rcvbuf, force: force, h: h}, nil
}

func (s *netlinkSource) subscribeLinks(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace:              &s.ns,
		ErrorCallback:          onErr,
		ReceiveBufferSize:      s.rcvbuf,
		ReceiveBufferForceSize: s.force,
	})
}

func (s *netlinkSource) subscribeRoutes(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error {
	return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:              &s.ns,
		ErrorCallback:          onErr,
		ReceiveBufferSize:      s.rcvbuf,
		ReceiveBufferForceSize: s.force,
	})
}

func (s *netlinkSource) listLinks() ([]netlink.Link, error) { return s.h.LinkList() }

func (s *netlinkSource) listRoutes() ([]netlink.Route, error) {
	return s.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
}

func (s *netlinkSource) close() { s.h.Close() }

// subscription is one pair of link and route subscriptions sharing a done
// channel.
type subscription struct {
	links    chan netlink.LinkUpdate
	routes   chan netlink.RouteUpdate
	done     chan struct{}
	linkErr  atomic.Pointer[error] // last error reported by the link subscription
	routeErr atomic.Pointer[error] // last error reported by the route subscription
}

// subscribe starts a link and a route subscription on src.
func (w *Watcher) subscribe(src source) (*subscription, error) {
	s := &subscription{
		links:  make(chan netlink.LinkUpdate),
		routes: make(chan netlink.RouteUpdate),
		done:   make(chan struct{}),
	}
	if err := src.subscribeLinks(s.links, s.done, s.onError(w.log, "link", &s.linkErr)); err != nil {
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	if err := src.subscribeRoutes(s.routes, s.done, s.onError(w.log, "route", &s.routeErr)); err != nil {
		s.routes = nil // never closed: nothing to drain
		s.stop()
		return nil, fmt.Errorf("subscribe to route updates: %w", err)
	}
	return s, nil
}

// onError returns the error callback of one subscription: it records and
// logs the error, unless the subscription is being stopped (closing its
// socket makes the receive fail).
func (s *subscription) onError(log *slog.Logger, what string, last *atomic.Pointer[error]) func(error) {
	return func(err error) {
		select {
		case <-s.done:
			return
		default:
		}
		last.Store(&err)
		log.Warn("netlink subscription error", "subscription", what, "err", err)
	}
}

// lost describes why the subscription named what closed its channel.
func (s *subscription) lost(what string, last *atomic.Pointer[error]) string {
	if err := last.Load(); err != nil {
		return fmt.Sprintf("%s subscription closed: %v", what, *err)
	}
	return what + " subscription closed"
}

// stop ends both subscriptions and drains their channels until netlink
// closes them, so its goroutines, blocked sending, can exit.
func (s *subscription) stop() {
	close(s.done)
	links, routes := s.links, s.routes
	for links != nil || routes != nil {
		select {
		case _, ok := <-links:
			if !ok {
				links = nil
			}
		case _, ok := <-routes:
			if !ok {
				routes = nil
			}
		}
	}
}

// Dumps that the kernel reports as interrupted (the table changed during
// the dump) are retried dumpAttempts times in all, waiting dumpBackoff,
// then twice as long each time.
const (
	dumpAttempts = 5
	dumpBackoff  = 10 * time.Millisecond
)

// retryDump calls list until it returns no netlink.ErrDumpInterrupted, at
// most dumpAttempts times. It returns ctx.Err() if ctx is done while it
// waits.
func retryDump[T any](ctx context.Context, log *slog.Logger, what string, list func() ([]T, error)) ([]T, error) {
	delay := dumpBackoff
	for attempt := 1; ; attempt++ {
		v, err := list()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == dumpAttempts {
			return nil, fmt.Errorf("list %s (attempt %d): %w", what, attempt, err)
		}
		log.Debug("netlink dump interrupted; retrying", "list", what, "attempt", attempt, "delay", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// msgType names a netlink message type, for logs.
func msgType(t uint16) string {
	switch t {
	case unix.RTM_NEWLINK:
		return "newlink"
	case unix.RTM_DELLINK:
		return "dellink"
	case unix.RTM_NEWROUTE:
		return "newroute"
	case unix.RTM_DELROUTE:
		return "delroute"
	}
	return fmt.Sprintf("type(%d)", t)
}
