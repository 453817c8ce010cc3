package ifwatch

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKey identifies an IPv4 route of the main table the way the kernel
// does: destination, TOS and priority (metric).
type routeKey struct {
	dst      netip.Prefix
	tos      int
	priority int
}

// state is the Watcher's view of the namespace. It does no I/O: it turns
// netlink notifications and listings into Events.
type state struct {
	globs    []string
	attached map[int]Link                  // selected links, by ifindex
	up       map[int]bool                  // last known IFF_UP of every link
	routes   map[int]map[routeKey]struct{} // IPv4 unicast main-table routes, by output ifindex, for every link
}

func newState(globs []string) *state {
	return &state{
		globs:    globs,
		attached: make(map[int]Link),
		up:       make(map[int]bool),
		routes:   make(map[int]map[routeKey]struct{}),
	}
}

// selects reports whether the link should be attached.
func (s *state) selects(a *netlink.LinkAttrs) bool {
	return a.RawFlags&(unix.IFF_LOOPBACK|unix.IFF_NOARP) == 0 &&
		a.EncapType == "ether" &&
		a.MasterIndex == 0 &&
		Match(s.globs, a.Name)
}

// applyLink applies one link notification.
func (s *state) applyLink(u netlink.LinkUpdate) []Event {
	// Bridge port notifications (AF_BRIDGE) also use RTM_NEWLINK and
	// RTM_DELLINK; only AF_UNSPEC ones describe the link itself.
	if u.Family != unix.AF_UNSPEC {
		return nil
	}
	a := u.Link.Attrs()
	switch u.Header.Type {
	case unix.RTM_NEWLINK:
		return s.observe(a)
	case unix.RTM_DELLINK:
		delete(s.up, a.Index)
		delete(s.routes, a.Index)
		return s.detach(a.Index)
	}
	return nil
}

// observe records the current attributes of a link and returns the Event,
// if any, that they cause.
func (s *state) observe(a *netlink.LinkAttrs) []Event {
	up := a.RawFlags&unix.IFF_UP != 0
	if s.up[a.Index] && !up {
		// Going down flushes the link's IPv4 routes, without notification.
		delete(s.routes, a.Index)
	}
	s.up[a.Index] = up
	if !s.selects(a) {
		return s.detach(a.Index)
	}
	l := Link{
		Index:  a.Index,
		Name:   a.Name,
		MAC:    slices.Clone(a.HardwareAddr),
		Up:     up,
		OnLink: s.onLink(a.Index),
	}
	old, attached := s.attached[a.Index]
	s.attached[a.Index] = l
	switch {
	case !attached:
		return []Event{{Kind: Attach, Link: l.clone()}}
	case !old.equal(l):
		return []Event{{Kind: Update, Link: l.clone()}}
	}
	return nil
}

// detach forgets an attached link; it returns nil for other links.
func (s *state) detach(index int) []Event {
	l, ok := s.attached[index]
	if !ok {
		return nil
	}
	delete(s.attached, index)
	return []Event{{Kind: Detach, Link: l.clone()}}
}

// applyRoute applies one route notification.
func (s *state) applyRoute(u netlink.RouteUpdate) []Event {
	key, ok := keyOf(&u.Route)
	if !ok {
		return nil
	}
	index := u.LinkIndex // 0 for a multipath route: ignored
	var touched []int
	switch u.Type {
	case unix.RTM_NEWROUTE:
		if u.NlFlags&unix.NLM_F_REPLACE != 0 {
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
	var evs []Event
	for _, i := range slices.Compact(touched) {
		evs = append(evs, s.refreshOnLink(i)...)
	}
	return evs
}

func (s *state) addRoute(index int, key routeKey) {
	if s.routes[index] == nil {
		s.routes[index] = make(map[routeKey]struct{})
	}
	s.routes[index][key] = struct{}{}
}

// refreshOnLink emits Update if the link is attached and its OnLink changed.
func (s *state) refreshOnLink(index int) []Event {
	l, ok := s.attached[index]
	if !ok {
		return nil
	}
	onLink := s.onLink(index)
	if slices.Equal(l.OnLink, onLink) {
		return nil
	}
	l.OnLink = onLink
	s.attached[index] = l
	return []Event{{Kind: Update, Link: l.clone()}}
}

// onLink returns the sorted, distinct destinations routed out the link, or
// nil if there are none.
func (s *state) onLink(index int) []netip.Prefix {
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
// attached unchanged.
func (s *state) reconcile(links []netlink.Link, routes []netlink.Route) []Event {
	s.routes = make(map[int]map[routeKey]struct{})
	for i := range routes {
		if key, ok := keyOf(&routes[i]); ok && routes[i].LinkIndex != 0 {
			s.addRoute(routes[i].LinkIndex, key)
		}
	}
	s.up = make(map[int]bool, len(links))
	present := make(map[int]bool, len(links))
	for _, l := range links {
		present[l.Attrs().Index] = true
	}
	var evs []Event
	for _, index := range slices.Sorted(maps.Keys(s.attached)) {
		if !present[index] {
			evs = append(evs, s.detach(index)...)
		}
	}
	wasAttached := maps.Clone(s.attached)
	reported := make(map[int]bool)
	for _, l := range links {
		for _, ev := range s.observe(l.Attrs()) {
			reported[ev.Link.Index] = true
			evs = append(evs, ev)
		}
	}
	// Links that stayed attached and look unchanged still get an Update:
	// what happened during the gap can have changed what the caller holds
	// for them (a move to another namespace and back unbinds its socket,
	// and the link comes back with the same index, name and MAC).
	for _, index := range slices.Sorted(maps.Keys(wasAttached)) {
		if l, ok := s.attached[index]; ok && !reported[index] {
			evs = append(evs, Event{Kind: Update, Link: l.clone()})
		}
	}
	for i := range evs {
		evs[i].Resync = true
	}
	return evs
}

// reselect applies new globs to a fresh listing of links: Detach for
// attached links that are gone or no longer selected, Attach for newly
// selected ones, Update for attached links that changed meanwhile. Unlike
// reconcile it keeps the routes and marks nothing as a resync: the
// subscription is intact.
func (s *state) reselect(globs []string, links []netlink.Link) []Event {
	s.globs = globs
	present := make(map[int]bool, len(links))
	for _, l := range links {
		present[l.Attrs().Index] = true
	}
	var evs []Event
	for _, index := range slices.Sorted(maps.Keys(s.attached)) {
		if !present[index] {
			evs = append(evs, s.detach(index)...)
		}
	}
	for _, l := range links {
		evs = append(evs, s.observe(l.Attrs())...)
	}
	return evs
}

// keyOf returns the key of an IPv4 unicast route of the main table; ok is
// false for any other route.
func keyOf(r *netlink.Route) (key routeKey, ok bool) {
	if r.Family != unix.AF_INET || r.Table != unix.RT_TABLE_MAIN || r.Type != unix.RTN_UNICAST ||
		r.Flags&unix.RTM_F_CLONED != 0 {
		return routeKey{}, false
	}
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // no RTA_DST: the default route
	if r.Dst != nil {
		addr, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, bits := r.Dst.Mask.Size()
		if !ok || !addr.Unmap().Is4() || bits != 32 {
			return routeKey{}, false
		}
		dst = netip.PrefixFrom(addr.Unmap(), ones).Masked()
	}
	return routeKey{dst: dst, tos: r.Tos, priority: r.Priority}, true
}
