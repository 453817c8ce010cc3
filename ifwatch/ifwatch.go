package ifwatch

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/pxresp/pxresp/internal/netmon"
)

// Kind is the kind of an Event.
type Kind uint8

const (
	// Attach: the link is newly selected; start serving it.
	Attach Kind = iota + 1
	// Update: an attached link changed (name, MAC, up/down, OnLink or
	// rule).
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

// Skip is why a link that the watcher knows is not selected.
type Skip uint8

const (
	// Selected: the link is not skipped.
	Selected Skip = iota
	// NoRule: the selector returned no rule for its name.
	NoRule
	// HasMaster: it is a port of a bridge, bond, VRF or team (it has a
	// master device), whose ARP the master handles.
	HasMaster
	// NoARP: the link has IFF_NOARP.
	NoARP
	// Loopback: the link is a loopback device.
	Loopback
	// NotEthernet: the link's hardware type is not Ethernet.
	NotEthernet
)

func (s Skip) String() string {
	switch s {
	case Selected:
		return "selected"
	case NoRule:
		return "no rule matches"
	case HasMaster:
		return "has a master (bridge, bond or VRF port)"
	case NoARP:
		return "NOARP"
	case Loopback:
		return "loopback"
	case NotEthernet:
		return "not Ethernet"
	}
	return fmt.Sprintf("skip(%d)", uint8(s))
}

// LinkState is a link that the watcher knows, selected or not.
type LinkState struct {
	Index int
	Name  string
	// Master is the ifindex of the link's master device, 0 if none.
	Master int
	// Skip says why the link is not selected; Selected if it is.
	Skip Skip
}

// Event is one change in the set of selected links. For Detach, Link and
// Rule are the last reported for the link.
type Event[R comparable] struct {
	Kind Kind
	Link Link
	// Rule is what the selector returned for the link's name.
	Rule R
	// Resync is true for events that come from a full listing (the first,
	// and those after lost notifications) rather than from a notification
	// or a selector change. After a gap, a link can look unchanged and yet
	// have left the namespace and come back: a caller holding per-link
	// resources should re-check them.
	Resync bool
}

// Config configures a Watcher.
type Config[R comparable] struct {
	// Select returns the rule that serves the interface name, and whether
	// one does. Required.
	Select func(name string) (rule R, ok bool)
	// Handle receives the events. Required.
	Handle func(Event[R])
	// Logger receives debug logs. nil means slog.Default().
	Logger *slog.Logger
}

// Watcher follows the selected links of one network namespace: register it
// with the namespace's netmon.Monitor. Create it with New.
type Watcher[R comparable] struct {
	log    *slog.Logger
	handle func(Event[R])

	mu sync.Mutex // serialises the state and the handler's calls
	st *state[R]

	ready     chan struct{} // closed after the first listing's events
	readyOnce sync.Once
}

var _ netmon.Consumer = (*Watcher[string])(nil)

// New validates cfg and returns a Watcher.
func New[R comparable](cfg Config[R]) (*Watcher[R], error) {
	if cfg.Select == nil {
		return nil, errors.New("ifwatch: no selector")
	}
	if cfg.Handle == nil {
		return nil, errors.New("ifwatch: no event handler")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Watcher[R]{log: log, handle: cfg.Handle, st: newState(cfg.Select), ready: make(chan struct{})}, nil
}

// SetSelector replaces the selector and re-evaluates the known links (see
// the package doc); the events it causes are handled before it returns. It
// is safe to call at any time, also before the first listing, but not from
// the handler.
func (w *Watcher[R]) SetSelector(sel func(name string) (rule R, ok bool)) error {
	if sel == nil {
		return errors.New("ifwatch: no selector")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emit(w.st.reselect(sel))
	return nil
}

// Ready is closed once the events of the first listing have been handled.
func (w *Watcher[R]) Ready() <-chan struct{} { return w.ready }

// Resync reconciles the state with a listing (netmon.Consumer).
func (w *Watcher[R]) Resync(l *netmon.Listing) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emit(w.st.reconcile(l))
	w.readyOnce.Do(func() { close(w.ready) })
}

// Change applies a notification (netmon.Consumer); only link and route
// notifications matter.
func (w *Watcher[R]) Change(m *netmon.Message) {
	if m.Link == nil && m.Route == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.emit(w.st.apply(m))
}

// Lost does nothing (netmon.Consumer): the Resync that follows reconciles.
func (w *Watcher[R]) Lost(reason string) {
	w.log.Debug("ifwatch: notifications lost; waiting for the resync", "reason", reason)
}

// Links returns every link the watcher knows, in ifindex order, with why
// it is skipped if it is.
func (w *Watcher[R]) Links() []LinkState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.linkStates()
}

// emit handles the events, and logs at debug level each link whose reason
// to be skipped changed: once per change, not once per notification.
func (w *Watcher[R]) emit(evs []Event[R]) {
	for _, n := range w.st.takeNotes() {
		w.log.Debug("skip", "iface", n.Name, "ifindex", n.Index, "reason", n.Skip.String(), "master", n.Master)
	}
	for _, ev := range evs {
		w.handle(ev)
	}
}
