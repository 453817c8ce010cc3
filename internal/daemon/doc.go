// Package daemon is the pxresp daemon behind cmd/pxresp: Run follows the
// namespace's links through one netmon.Monitor and an ifwatch.Watcher whose
// selector is the configuration's rules, keeps one responder per selected
// interface (attach, Apply in place, detach) on the datapath chosen at
// start (Datapath: an AF_PACKET responder, or the eBPF program for
// gateway-mode rules), reloads the configuration on request, serves
// metrics and health, and drops every capability but CAP_NET_RAW once the
// first interfaces are attached.
//
// Run returns when its context is done, after every listener has closed;
// it returns an error only when it cannot start or netlink fails for good.
package daemon
