// Package ifwatch turns a netmon.Monitor's link and route notifications
// into Attach, Update and Detach events for the interfaces a selector
// serves, each with its rule and the IPv4 destinations routed out of it. A
// Watcher is the Monitor's Consumer; its handler gets the events one at a
// time, in order, and Ready is closed once the first listing's are handled.
//
// # Selection
//
// A selector, a function of the interface name, decides which interfaces
// are served and under which rule (pxresp passes its configuration's
// first-match rules). On top of it the Watcher never selects loopback,
// NOARP links (IFF_NOARP), non-Ethernet links (EncapType other than
// "ether") or links enslaved to a master such as a bridge, bond or VRF
// (MasterIndex != 0). The Watcher reports the selection as a stream of
// Events, each with the link's rule:
//
//   - Attach, once per ifindex, when a link becomes selected: it exists at
//     the first listing, is created, or is renamed into the selection or
//     released by its master.
//   - Update when something in Link or the rule changed for an attached
//     link: its name (still selected), its MAC address, IFF_UP, OnLink, or
//     the rule the selector gives it. A link that goes down stays attached;
//     Update carries Up=false.
//   - Detach when an attached link is deleted (moving it to another network
//     namespace is a deletion here), renamed out of the selection,
//     enslaved, or made NOARP.
//
// Every link that is not selected has a Skip reason (NoRule, HasMaster,
// NoARP, Loopback, NotEthernet); Links returns every known link with its
// reason, and the Watcher logs each skipped link at debug level when its
// reason (or name) changes, not at every notification.
//
// Link.OnLink lists the destinations of the IPv4 unicast routes of the main
// table whose output device is the link (multipath routes have no single
// output device and are ignored). Route changes emit Update for the attached
// links they concern. When a link goes administratively down the kernel
// flushes its IPv4 routes without notification; the Watcher infers that
// from the link notification and empties OnLink. Link and route
// notifications come in the kernel's order, on the Monitor's one socket.
//
// # Listings and resyncs
//
// The Monitor subscribes before it lists, so nothing that happens in
// between is lost: notifications queued during the listing are applied
// after it; they may replay states the listing already includes (a link
// created and deleted meanwhile is attached, then detached), and the
// state converges to the latest. Ready is closed once the events of the
// first listing have been handled: the initial selection is attached.
//
// After the Monitor lost notifications it lists again, and the Watcher
// reconciles: attached links that vanished are detached, newly selected
// ones attached, and every link that stays attached gets an Update,
// changed or not, because a change the gap hid (a move to another
// namespace and back) can matter to the caller. Events from a listing have
// Resync set.
//
// # Changing the selection
//
// SetSelector replaces the selector (a configuration reload) and
// re-evaluates the links the Watcher knows, without a listing: Attach for
// links newly selected, Detach for attached links no longer selected,
// Update for attached links whose rule changed (a rule compares with ==: a
// reloaded configuration's rules are new values, so every attached link
// gets an Update), nothing for the others.
//
// # Calls
//
// The handler is called synchronously, one event at a time, in order: from
// the Monitor's goroutine, and from SetSelector's caller for the events a
// new selector causes. It must return quickly, since notifications wait
// while it runs, and must not call SetSelector. Events never share memory
// with the Watcher or with each other.
package ifwatch
