package route

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/pxresp/pxresp/policy"
	"golang.org/x/sys/unix"
)

// devConf is what the kernel's input route lookup reads of an interface's
// configuration: its own forwarding sysctl, max(all, own) rp_filter, and
// whether it has an IPv4 address.
type devConf struct {
	forwarding bool
	rpFilter   int
	hasAddr    bool
}

// classify answers the lookup for a request from src on iif for dst: the
// kernel's input route lookup, and the output-route fallback where the
// input lookup fails because of forwarding or rp_filter (see the package
// documentation). fallback reports that the class came from the fallback
// and is a unicast route. An error means the route could not be
// classified; the class is then RouteUnknown.
func classify(lk lookuper, iif int, src, dst netip.Addr) (cl policy.RouteClass, fallback bool, err error) {
	ri, inErr := lk.input(dst, src, iif)
	switch {
	case inErr == nil:
		return classOf(ri, iif), false, nil
	case isErrno(inErr, unix.ENETUNREACH, unix.EACCES):
		// No route, or a prohibit route.
		return policy.RouteNone, false, nil
	case !isErrno(inErr, unix.EHOSTUNREACH, unix.EINVAL, unix.EXDEV):
		return policy.RouteUnknown, false, fmt.Errorf("input route lookup: %w", inErr)
	case martian(src) || martian(dst):
		// Refused before any table lookup.
		return policy.RouteNone, false, nil
	}
	// Forwarding off gives EHOSTUNREACH, rp_filter EINVAL (EXDEV before
	// Linux 6.13); so do routes and addresses that no sysctl makes
	// answerable: tell them apart.
	conf, err := lk.devconf(iif)
	if err != nil {
		return policy.RouteUnknown, false, fmt.Errorf("read the interface's forwarding and rp_filter: %w", err)
	}
	// The sender's route, for the checks of fib_validate_source.
	si, serr := lk.output(src)
	switch {
	case serr != nil && !routeErr(serr):
		return policy.RouteUnknown, false, fmt.Errorf("output route lookup of the sender (fallback): %w", serr)
	case serr == nil && si.typ == unix.RTN_LOCAL:
		// A sender that is one of the host's own addresses is refused
		// whatever the sysctls say.
		return policy.RouteNone, false, nil
	}
	if conf.forwarding {
		if isErrno(inErr, unix.EHOSTUNREACH) {
			// Not forwarding: an unreachable route.
			return policy.RouteNone, false, nil
		}
		if conf.rpFilter == 0 || rpPasses(conf, si, serr, iif) {
			// Not rp_filter: a blackhole route, or a martian.
			return policy.RouteNone, false, nil
		}
	}
	ri, err = lk.output(dst)
	if err != nil {
		if routeErr(err) {
			// unreachable, blackhole, prohibit or no route at all.
			return policy.RouteNone, false, nil
		}
		return policy.RouteUnknown, false, fmt.Errorf("output route lookup (fallback): %w", err)
	}
	cl = classOf(ri, iif)
	return cl, cl == policy.RouteElsewhere || cl == policy.RouteBack, nil
}

// rpPasses says whether reverse-path filtering (conf.rpFilter 1 or 2) lets
// the sender through on iif, given the sender's output route si (or the
// error serr looking it up), as __fib_validate_source decides: a unicast
// route back through iif passes; in loose mode (2) any unicast route back
// passes too, but only if iif has an IPv4 address (a Calico veth has none).
func rpPasses(conf devConf, si routeInfo, serr error, iif int) bool {
	if serr != nil || si.typ != unix.RTN_UNICAST {
		return false
	}
	return si.oif == iif || conf.rpFilter == 2 && conf.hasAddr
}

// classOf maps a route answer to its class for a request on iif.
func classOf(ri routeInfo, iif int) policy.RouteClass {
	switch ri.typ {
	case unix.RTN_LOCAL:
		return policy.RouteLocal
	case unix.RTN_UNICAST:
		if ri.oif == iif {
			return policy.RouteBack
		}
		return policy.RouteElsewhere
	}
	// Broadcast, multicast, anycast, ...: never answered.
	return policy.RouteNone
}

// martian reports addresses the kernel's input route lookup refuses before
// any table lookup: 0.0.0.0/8, loopback (without route_localnet),
// multicast, the limited broadcast address.
func martian(a netip.Addr) bool {
	b := a.As4()
	return b[0] == 0 || a.IsLoopback() || a.IsMulticast() || b == [4]byte{255, 255, 255, 255}
}

// routeErr reports the errors with which the kernel says "no usable route":
// no route (ENETUNREACH), unreachable (EHOSTUNREACH), blackhole or martian
// (EINVAL), prohibit (EACCES), rp_filter before 6.13 (EXDEV).
func routeErr(err error) bool {
	return isErrno(err, unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EINVAL, unix.EACCES, unix.EXDEV)
}

func isErrno(err error, errnos ...syscall.Errno) bool {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return false
	}
	for _, n := range errnos {
		if e == n {
			return true
		}
	}
	return false
}
