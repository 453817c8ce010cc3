// Package netmon owns the rtnetlink subscription of one network namespace:
// one NETLINK_ROUTE socket joined to the link, IPv4 address, IPv4 route,
// IPv4 rule, nexthop and IPv4 netconf groups. A Monitor reads it and hands
// every notification to its consumers; when notifications may have been
// lost it tells them, subscribes again, lists the namespace and hands them
// the listing.
//
// Contract: consumers (Register) are called synchronously, one call at a
// time, in registration order, on the goroutine that runs Run. Each
// consumer gets, in this order: a Resync with a full listing after every
// (re)subscription (and one of its own when it registers while Run is
// following notifications), then a Change per notification read, and Lost
// when the subscription broke; a Resync follows every Lost. Nothing that
// happens between the subscription and the listing is lost: the socket is
// subscribed first and listed second, so a change made meanwhile is both in
// the listing and in a Change after it.
//
// # Mechanism
//
// The subscription socket is read through Go's poller by a goroutine of
// the Monitor's own, which hands each batch of messages, a copy, to Run's
// goroutine. Run decodes them: RTM_NEWLINK and RTM_DELLINK into a
// netlink.Link (netlink.LinkDeserialize), RTM_NEWROUTE and RTM_DELROUTE into
// a Route (nl.DeserializeRtMsg, nl.ParseRouteAttr); every other message of
// the groups (addresses, rules, nexthops, netconf) is delivered with its
// type only, as "something changed".
//
// The kernel reports ENOBUFS on a read when the socket's receive buffer
// overflowed and notifications were dropped. On that error, any other
// receive error, or a message Run cannot decode, Run counts a resync
// (Resyncs), logs it once at warn level with its reason, calls every
// consumer's Lost, closes the socket and subscribes again. If subscribing
// or listing fails then, it retries with a backoff (doubling from 10 ms up
// to a second) until it succeeds or its context is done; meanwhile a
// consumer that registers is told Lost at once. The listing holds the links
// and the IPv4 routes of the main table; a dump that the kernel reports as
// interrupted (the table changed during it) is retried a few times with a
// short backoff.
//
// Run fails only when its first subscription or listing fails (a
// missing permission, a namespace that is gone): there is then nothing to
// resync to.
//
// Config.RecvBufSize sets the socket's receive buffer: a larger one makes
// overflows rarer during bursts of interface churn.
package netmon
