package ifwatch

import (
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
)

// routeKey identifies an IPv4 route of the main table the way the kernel
// does: destination, TOS and priority (metric).
type routeKey struct {
	dst      netip.Prefix
	tos      int
	priority int
}

// linkAttrs are the attributes of a link that selection and Link need.
type linkAttrs struct {
	index    int
	name     string
	mac      net.HardwareAddr
	rawFlags uint32
	encap    string
	master   int
}

func attrsOf(l netlink.Link) linkAttrs {
	a := l.Attrs()
	return linkAttrs{
		index:    a.Index,
		name:     a.Name,
		mac:      slices.Clone(a.HardwareAddr),
		rawFlags: a.RawFlags,
		encap:    a.EncapType,
		master:   a.MasterIndex,
	}
}

func (a *linkAttrs) up() bool { return a.rawFlags&unix.IFF_UP != 0 }

func (a *linkAttrs) linkState(skip Skip) LinkState {
	return LinkState{Index: a.index, Name: a.name, Master: a.master, Skip: skip}
}

// served is an attached link and the rule it is served under.
type served[R comparable] struct {
	link Link
	rule R
}

// state is the Watcher's view of the namespace. It does no I/O: it turns
// netlink notifications, listings and selector changes into Events, and
// notes each link whose reason to be skipped changed.
type state[R comparable] struct {
	sel      func(name string) (R, bool)
	attached map[int]served[R]             // selected links, by ifindex
	links    map[int]linkAttrs             // last known attributes of every link
	routes   map[int]map[routeKey]struct{} // IPv4 unicast main-table routes, by output ifindex, for every link
	skips    map[int]Skip                  // why each known link is not selected (Selected if it is)
	// notes are the links whose Skip changed (or that were renamed
	// while skipped) since the last takeNotes.
	notes []LinkState
}

func newState[R comparable](sel func(string) (R, bool)) *state[R] {
	return &state[R]{
		sel:      sel,
		attached: make(map[int]served[R]),
		links:    make(map[int]linkAttrs),
		routes:   make(map[int]map[routeKey]struct{}),
		skips:    make(map[int]Skip),
	}
}

// selects returns the rule the link is served under, or why it is not:
// the built-in exclusions first, then the selector.
func (s *state[R]) selects(a *linkAttrs) (R, Skip) {
	var none R
	switch {
	case a.rawFlags&unix.IFF_LOOPBACK != 0:
		return none, Loopback
	case a.encap != "ether":
		return none, NotEthernet
	case a.rawFlags&unix.IFF_NOARP != 0:
		return none, NoARP
	case a.master != 0:
		return none, HasMaster
	}
	r, ok := s.sel(a.name)
	if !ok {
		return none, NoRule
	}
	return r, Selected
}

// note records a's reason to be skipped, and notes it if it changed.
func (s *state[R]) note(a *linkAttrs, skip Skip) {
	old, known := s.skips[a.index]
	s.skips[a.index] = skip
	if skip == Selected || known && old == skip && s.links[a.index].name == a.name {
		return
	}
	s.notes = append(s.notes, a.linkState(skip))
}

// takeNotes returns and forgets the notes.
func (s *state[R]) takeNotes() []LinkState {
	n := s.notes
	s.notes = nil
	return n
}

// linkStates returns every known link, in ifindex order.
func (s *state[R]) linkStates() []LinkState {
	out := make([]LinkState, 0, len(s.links))
	for _, index := range slices.Sorted(maps.Keys(s.links)) {
		a := s.links[index]
		out = append(out, a.linkState(s.skips[index]))
	}
	return out
}

// apply applies one notification.
func (s *state[R]) apply(m *netmon.Message) []Event[R] {
	switch {
	case m.Link != nil:
		return s.applyLink(m)
	case m.Route != nil:
		return s.applyRoute(m)
	}
	return nil
}

// applyLink applies one link notification.
func (s *state[R]) applyLink(m *netmon.Message) []Event[R] {
	// Bridge port notifications (AF_BRIDGE) also use RTM_NEWLINK and
	// RTM_DELLINK; only AF_UNSPEC ones describe the link itself.
	if m.Family != unix.AF_UNSPEC {
		return nil
	}
	a := attrsOf(m.Link)
	switch m.Type {
	case unix.RTM_NEWLINK:
		return s.observe(a)
	case unix.RTM_DELLINK:
		delete(s.links, a.index)
		delete(s.routes, a.index)
		delete(s.skips, a.index)
		return s.detach(a.index)
	}
	return nil
}

// observe records the current attributes of a link and returns the Event,
// if any, that they cause.
func (s *state[R]) observe(a linkAttrs) []Event[R] {
	if old, ok := s.links[a.index]; ok && old.up() && !a.up() {
		// Going down flushes the link's IPv4 routes, without notification.
		delete(s.routes, a.index)
	}
	rule, skip := s.selects(&a)
	s.note(&a, skip)
	s.links[a.index] = a
	if skip != Selected {
		return s.detach(a.index)
	}
	l := Link{
		Index:  a.index,
		Name:   a.name,
		MAC:    slices.Clone(a.mac),
		Up:     a.up(),
		OnLink: s.onLink(a.index),
	}
	old, attached := s.attached[a.index]
	s.attached[a.index] = served[R]{link: l, rule: rule}
	switch {
	case !attached:
		return []Event[R]{{Kind: Attach, Link: l.clone(), Rule: rule}}
	case !old.link.equal(l) || old.rule != rule:
		return []Event[R]{{Kind: Update, Link: l.clone(), Rule: rule}}
	}
	return nil
}

// detach forgets an attached link; it returns nil for other links.
func (s *state[R]) detach(index int) []Event[R] {
	a, ok := s.attached[index]
	if !ok {
		return nil
	}
	delete(s.attached, index)
	return []Event[R]{{Kind: Detach, Link: a.link.clone(), Rule: a.rule}}
}

// applyRoute applies one route notification.
func (s *state[R]) applyRoute(m *netmon.Message) []Event[R] {
	key, ok := keyOf(m.Route)
	if !ok {
		return nil
	}
	index := m.Route.OIF // 0 for a multipath route: ignored
	var touched []int
	switch m.Type {
	case unix.RTM_NEWROUTE:
		if m.Flags&unix.NLM_F_REPLACE != 0 {
			// The route replaced one with the same key, perhaps through
			// another link.
			for i, keys := range s.routes {
				if _, ok := keys[key]; ok {
					delete(keys, key)
					touched = append(touched, i)
				}
			}
		}
		if index != 0 {
			s.addRoute(index, key)
			touched = append(touched, index)
		}
	case unix.RTM_DELROUTE:
		if keys := s.routes[index]; keys != nil {
			delete(keys, key)
			touched = append(touched, index)
		}
	}
	slices.Sort(touched)
	var evs []Event[R]
	for _, i := range slices.Compact(touched) {
		evs = append(evs, s.refreshOnLink(i)...)
	}
	return evs
}

func (s *state[R]) addRoute(index int, key routeKey) {
	if s.routes[index] == nil {
		s.routes[index] = make(map[routeKey]struct{})
	}
	s.routes[index][key] = struct{}{}
}

// refreshOnLink emits Update if the link is attached and its OnLink changed.
func (s *state[R]) refreshOnLink(index int) []Event[R] {
	a, ok := s.attached[index]
	if !ok {
		return nil
	}
	onLink := s.onLink(index)
	if slices.Equal(a.link.OnLink, onLink) {
		return nil
	}
	a.link.OnLink = onLink
	s.attached[index] = a
	return []Event[R]{{Kind: Update, Link: a.link.clone(), Rule: a.rule}}
}

// onLink returns the sorted, distinct destinations routed out the link, or
// nil if there are none.
func (s *state[R]) onLink(index int) []netip.Prefix {
	var dsts []netip.Prefix
	for k := range s.routes[index] {
		dsts = append(dsts, k.dst)
	}
	slices.SortFunc(dsts, netip.Prefix.Compare)
	return slices.Compact(dsts)
}

// reconcile replaces the state with a full listing of links and routes and
// returns the Events that bring the attached set in line with it: Detach
// for attached links that are gone, then, in listing order, Attach, Update
// or Detach for the listed links, then an Update for every link that stayed
// attached unchanged. Every Event has Resync set.
func (s *state[R]) reconcile(l *netmon.Listing) []Event[R] {
	s.routes = make(map[int]map[routeKey]struct{})
	for i := range l.Routes {
		if key, ok := keyOf(&l.Routes[i]); ok && l.Routes[i].OIF != 0 {
			s.addRoute(l.Routes[i].OIF, key)
		}
	}
	old := s.links
	s.links = make(map[int]linkAttrs, len(l.Links))
	present := make(map[int]bool, len(l.Links))
	for _, x := range l.Links {
		present[x.Attrs().Index] = true
		if a, ok := old[x.Attrs().Index]; ok {
			s.links[a.index] = a // for note's rename check
		}
	}
	maps.DeleteFunc(s.skips, func(index int, _ Skip) bool { return !present[index] })
	var evs []Event[R]
	for _, index := range slices.Sorted(maps.Keys(s.attached)) {
		if !present[index] {
			evs = append(evs, s.detach(index)...)
		}
	}
	wasAttached := maps.Clone(s.attached)
	reported := make(map[int]bool)
	for _, x := range l.Links {
		for _, ev := range s.observe(attrsOf(x)) {
			reported[ev.Link.Index] = true
			evs = append(evs, ev)
		}
	}
	// Links that stayed attached and look unchanged still get an Update:
	// what happened during the gap can have changed what the caller holds
	// for them (a move to another namespace and back unbinds its socket,
	// and the link comes back with the same index, name and MAC).
	for _, index := range slices.Sorted(maps.Keys(wasAttached)) {
		if a, ok := s.attached[index]; ok && !reported[index] {
			evs = append(evs, Event[R]{Kind: Update, Link: a.link.clone(), Rule: a.rule})
		}
	}
	for i := range evs {
		evs[i].Resync = true
	}
	return evs
}

// reselect applies a new selector to every known link, in ifindex order:
// Attach for newly selected links, Detach for attached links no longer
// selected, Update for attached links whose rule changed. It needs no
// listing: the state keeps every link's attributes, and its routes.
func (s *state[R]) reselect(sel func(string) (R, bool)) []Event[R] {
	s.sel = sel
	var evs []Event[R]
	for _, index := range slices.Sorted(maps.Keys(s.links)) {
		evs = append(evs, s.observe(s.links[index])...)
	}
	return evs
}

// keyOf returns the key of an IPv4 unicast route of the main table; ok is
// false for any other route.
func keyOf(r *netmon.Route) (key routeKey, ok bool) {
	if r.Family != unix.AF_INET || r.Table != unix.RT_TABLE_MAIN || r.Type != unix.RTN_UNICAST ||
		r.Flags&unix.RTM_F_CLONED != 0 || !r.Dst.Addr().Is4() {
		return routeKey{}, false
	}
	return routeKey{dst: r.Dst.Masked(), tos: r.Tos, priority: r.Priority}, true
}
