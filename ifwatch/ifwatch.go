// Package ifwatch follows the network interfaces that pxresp should answer
// ARP on, and the IPv4 routes that leave through them.
//
// A Watcher selects links whose name matches one of its shell globs
// (path.Match syntax) and that can carry ARP: it never selects loopback,
// NOARP links (IFF_NOARP), non-Ethernet links (EncapType other than "ether")
// or links enslaved to a master such as a bridge, bond or VRF
// (MasterIndex != 0). Run reports the selection as a stream of Events:
//
//   - Attach, once per ifindex, when a link becomes selected: it exists when
//     Run starts, is created, or is renamed into a glob or released by its
//     master.
//   - Update when something in Link changed for an attached link: its name
//     (still matching), its MAC address, IFF_UP, or OnLink. A link that goes
//     down stays attached; Update carries Up=false.
//   - Detach when an attached link is deleted (moving it to another network
//     namespace is a deletion here), renamed out of every glob, enslaved, or
//     made NOARP.
//
// Link.OnLink lists the destinations of the IPv4 unicast routes of the main
// table whose output device is the link (multipath routes have no single
// output device and are ignored). Route changes emit Update for the attached
// links they concern. When a link goes administratively down the kernel
// flushes its IPv4 routes without notification; the Watcher infers that
// from the link event and empties OnLink.
//
// # Mechanism, overflow and resync
//
// Run subscribes to netlink link and route notifications first, then lists
// all links and routes, so nothing that happens in between is lost.
// Notifications queued during the listing are applied after it; they may
// replay states the listing already includes (a link created and deleted
// meanwhile is attached, then detached), and the state converges to the
// latest. Run then follows the notifications; it never polls.
//
// If the kernel drops notifications because a socket's receive buffer
// overflowed (ENOBUFS), or a receive fails, the netlink library closes that
// subscription's channel. Run then resyncs: it stops both subscriptions,
// subscribes again, lists links and routes again (retrying a dump the
// kernel reports as interrupted, a few times with a short backoff) and
// reconciles: attached links that vanished are detached, newly selected
// ones attached, and every link that stays attached gets an Update, changed
// or not, because a change the gap hid (a move to another namespace and
// back) can matter to the caller. Resyncs counts these recoveries;
// each is logged at warn level with its reason. A larger Config.RecvBufSize
// makes overflows rarer.
//
// Link and route notifications arrive on two sockets, so their relative
// order is lost. OnLink can therefore be wrong when a link's down/up cycle
// and a change of its routes are queued together: a route added right
// after the link came back up can be forgotten, or one flushed by the down
// kept, until the next change of the link's routes or the next resync.
//
// # Changing the selection
//
// SetGlobs replaces the globs of a running Watcher (a configuration
// reload). Run lists the links again and emits Attach for links the new
// globs select, Detach for attached links they no longer select, and nothing
// for links that stay selected. Ready is closed once the events of the first
// listing have been handled: the initial selection is attached.
//
// The handler passed to Run is called synchronously, from Run's goroutine,
// in order; it must return quickly, since notifications wait while it runs.
// Events never share memory with the Watcher or with each other.
package ifwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
)

// Kind is the kind of an Event.
type Kind uint8

const (
	// Attach: the link is newly selected; start serving it.
	Attach Kind = iota + 1
	// Update: an attached link changed (name, MAC, up/down or OnLink).
	Update
	// Detach: the link is gone or no longer selected; stop serving it.
	Detach
)

func (k Kind) String() string {
	switch k {
	case Attach:
		return "attach"
	case Update:
		return "update"
	case Detach:
		return "detach"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Link is the state of a selected interface.
type Link struct {
	// Index is the interface index, the link's identity.
	Index int
	// Name is the interface name.
	Name string
	// MAC is the interface's current hardware address.
	MAC net.HardwareAddr
	// Up is IFF_UP (administratively up).
	Up bool
	// OnLink holds the destinations of the IPv4 unicast main-table routes
	// whose output device is this link, sorted (netip.Prefix.Compare). A
	// route without destination (the default route) is 0.0.0.0/0.
	OnLink []netip.Prefix
}

func (l Link) equal(o Link) bool {
	return l.Index == o.Index && l.Name == o.Name && l.Up == o.Up &&
		slices.Equal(l.MAC, o.MAC) && slices.Equal(l.OnLink, o.OnLink)
}

// clone returns a copy of l that shares no memory with it.
func (l Link) clone() Link {
	l.MAC = slices.Clone(l.MAC)
	l.OnLink = slices.Clone(l.OnLink)
	return l
}

// Event is one change in the set of selected links. For Detach, Link is the
// last state reported for the link.
type Event struct {
	Kind Kind
	Link Link
	// Resync is true for events that come from a full listing (at start,
	// and after a lost subscription) rather than from a notification. After
	// a gap, a link can look unchanged and yet have left the namespace and
	// come back: a caller holding per-link resources should re-check them.
	Resync bool
}

// Config configures a Watcher.
type Config struct {
	// Globs select interfaces by name, in path.Match syntax (e.g. "cali*").
	// At least one is required.
	Globs []string
	// Namespace is the network namespace to watch. nil means the namespace
	// of the thread that calls Run, normally the process's. The Watcher
	// does not close the handle; it must stay open while Run runs.
	Namespace *netns.NsHandle
	// Logger receives debug logs for every netlink notification and warn
	// logs for resyncs and netlink errors. nil means slog.Default().
	Logger *slog.Logger
	// RecvBufSize is the receive buffer size, in bytes, of each netlink
	// subscription socket (SO_RCVBUF). 0 keeps the system default; the
	// kernel caps it at net.core.rmem_max unless RecvBufForce is set.
	RecvBufSize int
	// RecvBufForce sets the buffer with SO_RCVBUFFORCE, which ignores
	// net.core.rmem_max and needs CAP_NET_ADMIN.
	RecvBufForce bool
}

// Watcher follows the selected links of one network namespace. Create it
// with New.
type Watcher struct {
	globs   []string
	log     *slog.Logger
	open    func() (source, error) // replaced by tests
	running atomic.Bool
	resyncs atomic.Uint64

	newGlobs  chan []string // SetGlobs to Run: the latest globs, at most one pending
	ready     chan struct{} // closed after the first listing's events
	readyOnce sync.Once
}

// New validates cfg and returns a Watcher. An invalid glob is reported with
// its text, e.g. `invalid interface glob "cali[": syntax error in pattern`.
func New(cfg Config) (*Watcher, error) {
	if err := CheckGlobs(cfg.Globs); err != nil {
		return nil, err
	}
	if cfg.Namespace != nil && !cfg.Namespace.IsOpen() {
		return nil, errors.New("network namespace handle is closed")
	}
	if cfg.RecvBufSize < 0 {
		return nil, fmt.Errorf("negative netlink receive buffer size %d", cfg.RecvBufSize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ns := netns.None()
	if cfg.Namespace != nil {
		ns = *cfg.Namespace
	}
	return &Watcher{
		globs:    slices.Clone(cfg.Globs),
		newGlobs: make(chan []string, 1),
		ready:    make(chan struct{}),
		log:      log,
		open: func() (source, error) {
			return openNetlink(ns, cfg.RecvBufSize, cfg.RecvBufForce)
		},
	}, nil
}

// CheckGlobs validates interface globs: at least one, none empty, each in
// path.Match syntax. The error names the bad glob.
func CheckGlobs(globs []string) error {
	if len(globs) == 0 {
		return errors.New("no interface glob")
	}
	for _, g := range globs {
		if g == "" {
			return errors.New(`invalid interface glob "": empty`)
		}
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("invalid interface glob %q: %w", g, err)
		}
	}
	return nil
}

// SetGlobs replaces the Watcher's globs. It is safe to call at any time,
// also before Run; Run applies the latest globs as soon as it can (see the
// package doc). An invalid list is refused and changes nothing.
func (w *Watcher) SetGlobs(globs []string) error {
	if err := CheckGlobs(globs); err != nil {
		return err
	}
	globs = slices.Clone(globs)
	for {
		select {
		case w.newGlobs <- globs:
			return nil
		default:
		}
		// A change not yet applied is superseded by this one.
		select {
		case <-w.newGlobs:
		default:
		}
	}
}

// Ready is closed once Run has handled the events of its first listing.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Match reports whether name matches at least one of globs (path.Match
// syntax). A malformed glob matches nothing; New rejects those.
func Match(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Resyncs returns how many times the Watcher lost a netlink subscription
// and rebuilt its state from a full listing. It is safe to call at any time.
func (w *Watcher) Resyncs() uint64 { return w.resyncs.Load() }

// Run lists the links, emits Attach for the selected ones, then follows
// changes and calls handle for each Event until ctx is done. Each Run starts
// from an empty state; it emits no Detach when it returns. It returns nil
// once ctx is done, or an error if netlink fails in a way a resync cannot
// fix (subscribing or listing fails). Run returns only after it has stopped
// its netlink subscriptions and drained their channels. A Watcher runs one
// Run at a time.
func (w *Watcher) Run(ctx context.Context, handle func(Event)) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("watcher is already running")
	}
	defer w.running.Store(false)

	src, err := w.open()
	if err != nil {
		return err
	}
	defer src.close()

	st := newState(w.globs)
	emit := func(evs []Event) {
		for _, ev := range evs {
			handle(ev)
		}
	}
	for {
		sub, err := w.subscribe(src)
		if err != nil {
			return err
		}
		reason, err := w.session(ctx, src, sub, st, emit)
		sub.stop()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		n := w.resyncs.Add(1)
		w.log.Warn("netlink subscription lost; resubscribing and resyncing", "reason", reason, "resyncs", n)
	}
}

// session lists links and routes, reconciles st with them and follows the
// subscription until it breaks (returning why) or ctx is done.
func (w *Watcher) session(ctx context.Context, src source, sub *subscription, st *state, emit func([]Event)) (string, error) {
	links, err := retryDump(ctx, w.log, "links", src.listLinks)
	if err != nil {
		return "", err
	}
	routes, err := retryDump(ctx, w.log, "routes", src.listRoutes)
	if err != nil {
		return "", err
	}
	if ctx.Err() != nil {
		return "", nil
	}
	emit(st.reconcile(links, routes))
	w.readyOnce.Do(func() { close(w.ready) })
	for {
		select {
		case <-ctx.Done():
			return "", nil
		case globs := <-w.newGlobs:
			links, err := retryDump(ctx, w.log, "links", src.listLinks)
			if err != nil {
				return "", err
			}
			w.log.Debug("interface globs changed", "globs", globs)
			emit(st.reselect(globs, links))
		case u, ok := <-sub.links:
			if !ok {
				return sub.lost("link", &sub.linkErr), nil
			}
			w.log.Debug("netlink link event", "type", msgType(u.Header.Type), "family", u.Family,
				"index", u.Link.Attrs().Index, "name", u.Link.Attrs().Name, "mac", u.Link.Attrs().HardwareAddr,
				"flags", u.Link.Attrs().RawFlags, "encap", u.Link.Attrs().EncapType, "master", u.Link.Attrs().MasterIndex)
			emit(st.applyLink(u))
		case u, ok := <-sub.routes:
			if !ok {
				return sub.lost("route", &sub.routeErr), nil
			}
			w.log.Debug("netlink route event", "type", msgType(u.Type), "flags", u.NlFlags, "family", u.Family,
				"table", u.Table, "rtype", u.Route.Type, "dst", u.Dst, "oif", u.LinkIndex, "priority", u.Priority)
			emit(st.applyRoute(u))
		}
	}
}
