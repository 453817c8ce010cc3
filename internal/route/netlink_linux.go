package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// lookupTimeout bounds one netlink request (the kernel answers
// RTM_GETROUTE at once; this only guards against a lost answer).
const lookupTimeout = time.Second

// The notification groups that can change a route lookup's answer.
var groups = []uint{
	unix.RTNLGRP_LINK,
	unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE,
	unix.RTNLGRP_IPV4_RULE,
	unix.RTNLGRP_IPV4_NETCONF,
	unix.RTNLGRP_NEXTHOP,
}

// ownNamespace returns a handle of the Cache's own: a duplicate of ns, or
// the calling thread's namespace if ns is nil.
func ownNamespace(ns *netns.NsHandle) (netns.NsHandle, error) {
	if ns == nil {
		h, err := netns.Get()
		if err != nil {
			return netns.None(), fmt.Errorf("route cache: get the current network namespace: %w", err)
		}
		return h, nil
	}
	fd, err := unix.FcntlInt(uintptr(*ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("route cache: duplicate the network namespace handle: %w", err)
	}
	return netns.NsHandle(fd), nil
}

// inNamespace runs fn on a locked OS thread that is in namespace ns,
// switching the thread into it only if it is not there already (which
// needs CAP_SYS_ADMIN), and back afterwards. Sockets that fn opens stay in
// ns. If switching back fails, the thread stays locked and ends with its
// goroutine, so it never runs other code in the wrong namespace.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get the current network namespace: %w", err)
			return
		}
		defer cur.Close()
		if cur.Equal(ns) {
			err := fn()
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(cur); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("switch back from the network namespace: %w", err))
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nlLookup makes route lookups over netlink: routes and addresses through
// a netlink.Handle, netconf (which the netlink package does not know)
// through a socket of its own. netlink.Handle serialises requests on its
// socket and pairs answers by sequence number, so it is safe for concurrent
// use; the Cache serialises misses anyway.
type nlLookup struct {
	h    *netlink.Handle
	conf *nl.SocketHandle
}

func openLookup(ns netns.NsHandle) (*nlLookup, error) {
	var h *netlink.Handle
	var s *nl.NetlinkSocket
	err := inNamespace(ns, func() error {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return err
		}
		// None, None: in this thread's namespace, no switching.
		s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		if h != nil {
			h.Close()
		}
		return nil, fmt.Errorf("route cache: open a netlink socket for route lookups: %w", err)
	}
	tv := unix.NsecToTimeval(lookupTimeout.Nanoseconds())
	_ = s.SetSendTimeout(&tv)
	_ = s.SetReceiveTimeout(&tv)
	if err := h.SetSocketTimeout(lookupTimeout); err != nil {
		h.Close()
		s.Close()
		return nil, fmt.Errorf("route cache: set the netlink socket timeout: %w", err)
	}
	return &nlLookup{h: h, conf: &nl.SocketHandle{Socket: s}}, nil
}

func (l *nlLookup) input(dst, src netip.Addr, iif int) (routeInfo, error) {
	return first(l.h.RouteGetWithOptions(dst.AsSlice(), &netlink.RouteGetOptions{IifIndex: iif, SrcAddr: src.AsSlice()}))
}

func (l *nlLookup) output(dst netip.Addr) (routeInfo, error) {
	return first(l.h.RouteGetWithOptions(dst.AsSlice(), nil))
}

func first(rs []netlink.Route, err error) (routeInfo, error) {
	if err != nil {
		return routeInfo{}, err
	}
	if len(rs) == 0 {
		return routeInfo{}, errors.New("empty RTM_GETROUTE answer")
	}
	return routeInfo{typ: rs[0].Type, oif: rs[0].LinkIndex}, nil
}

// Netconf attributes (linux/netconf.h), which x/sys/unix does not define.
const (
	netconfaIfindex    = 1
	netconfaForwarding = 2
	netconfaRPFilter   = 3
	netconfaIfindexAll = -1
)

func (l *nlLookup) devconf(iif int) (devConf, error) {
	dev, err := l.netconf(iif)
	if err != nil {
		return devConf{}, fmt.Errorf("netconf of ifindex %d: %w", iif, err)
	}
	all, err := l.netconf(netconfaIfindexAll)
	if err != nil {
		return devConf{}, fmt.Errorf("netconf of all: %w", err)
	}
	addrs, err := l.h.AddrList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: iif}}, netlink.FAMILY_V4)
	if err != nil {
		return devConf{}, fmt.Errorf("addresses of ifindex %d: %w", iif, err)
	}
	return devConf{
		forwarding: dev[netconfaForwarding] != 0,
		rpFilter:   max(dev[netconfaRPFilter], all[netconfaRPFilter]),
		hasAddr:    len(addrs) > 0,
	}, nil
}

// netconf asks the kernel for the IPv4 netconf of ifindex (RTM_GETNETCONF)
// and returns its int32 attributes by type.
func (l *nlLookup) netconf(ifindex int) (map[uint16]int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNETCONF, 0)
	req.AddData(rawData{unix.AF_INET, 0, 0, 0}) // struct netconfmsg, padded
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(int32(ifindex)))
	req.AddData(nl.NewRtAttr(netconfaIfindex, b))
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: l.conf}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNETCONF)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 || len(msgs[0]) < 4 {
		return nil, errors.New("empty RTM_GETNETCONF answer")
	}
	attrs, err := nl.ParseRouteAttr(msgs[0][4:])
	if err != nil {
		return nil, err
	}
	vals := map[uint16]int{}
	for _, a := range attrs {
		if len(a.Value) == 4 {
			vals[a.Attr.Type] = int(int32(binary.NativeEndian.Uint32(a.Value)))
		}
	}
	if _, ok := vals[netconfaForwarding]; !ok {
		return nil, errors.New("RTM_GETNETCONF answer without forwarding")
	}
	return vals, nil
}

// rawData is request data sent as is.
type rawData []byte

func (d rawData) Len() int          { return len(d) }
func (d rawData) Serialize() []byte { return d }

func (l *nlLookup) close() {
	l.h.Close()
	l.conf.Close()
}

// nlSubscriber opens notification sockets in its namespace.
type nlSubscriber struct {
	ns     netns.NsHandle
	rcvbuf int
}

func (s *nlSubscriber) subscribe() (eventSub, error) {
	var sub *nlSub
	err := inNamespace(s.ns, func() error {
		var err error
		sub, err = openSub(s.rcvbuf)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to netlink notifications: %w", err)
	}
	return sub, nil
}

func (s *nlSubscriber) close() { s.ns.Close() }

// nlSub is a NETLINK_ROUTE socket bound to the notification groups, read
// through Go's poller, so that closing it wakes a blocked read.
type nlSub struct {
	f  *os.File
	rc syscall.RawConn
}

// openSub opens the socket in the calling thread's namespace.
func openSub(rcvbuf int) (*nlSub, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	var mask uint32
	for _, g := range groups {
		mask |= 1 << (g - 1)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("netlink socket: SO_RCVBUF %d: %w", rcvbuf, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: mask}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: bind to groups %#x: %w", mask, err)
	}
	f := os.NewFile(uintptr(fd), "netlink-route-notifications")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &nlSub{f: f, rc: rc}, nil
}

func (s *nlSub) read(buf []byte) (int, error) {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), buf)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, os.NewSyscallError("read", rerr)
	}
	if n == 0 {
		return 0, errors.New("netlink socket: empty read")
	}
	return n, nil
}

func (s *nlSub) close() error { return s.f.Close() }

// msgType names the type of the first message in a notification batch,
// for debug logs.
func msgType(b []byte) string {
	if len(b) < unix.NLMSG_HDRLEN {
		return "short"
	}
	switch t := binary.NativeEndian.Uint16(b[4:6]); t {
	case unix.RTM_NEWLINK:
		return "newlink"
	case unix.RTM_DELLINK:
		return "dellink"
	case unix.RTM_NEWADDR:
		return "newaddr"
	case unix.RTM_DELADDR:
		return "deladdr"
	case unix.RTM_NEWROUTE:
		return "newroute"
	case unix.RTM_DELROUTE:
		return "delroute"
	case unix.RTM_NEWRULE:
		return "newrule"
	case unix.RTM_DELRULE:
		return "delrule"
	case unix.RTM_NEWNETCONF:
		return "newnetconf"
	case unix.RTM_DELNETCONF:
		return "delnetconf"
	case unix.RTM_NEWNEXTHOP:
		return "newnexthop"
	case unix.RTM_DELNEXTHOP:
		return "delnexthop"
	default:
		return fmt.Sprintf("type(%d)", t)
	}
}
