package netmon

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// groups are the notification groups the subscription joins: every
// change that can alter a link, its IPv4 routes, or an IPv4 route lookup.
var groups = []uint{
	unix.RTNLGRP_LINK,
	unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE,
	unix.RTNLGRP_IPV4_RULE,
	unix.RTNLGRP_IPV4_NETCONF,
	unix.RTNLGRP_NEXTHOP,
}

// dumpTimeout bounds each receive of a dump's answer.
const dumpTimeout = 5 * time.Second

// ownNamespace returns a handle of the caller's own: a duplicate of ns, or
// the calling thread's namespace if ns is nil.
func ownNamespace(ns *netns.NsHandle) (netns.NsHandle, error) {
	if ns == nil {
		h, err := netns.Get()
		if err != nil {
			return netns.None(), fmt.Errorf("get the current network namespace: %w", err)
		}
		return h, nil
	}
	if !ns.IsOpen() {
		return netns.None(), errors.New("the network namespace handle is closed")
	}
	fd, err := unix.FcntlInt(uintptr(*ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("duplicate the network namespace handle: %w", err)
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

// nlSource is the source backed by the kernel: subscriptions and dumps
// in one namespace.
type nlSource struct {
	ns     netns.NsHandle
	rcvbuf int
	force  bool
	dump   *nl.SocketHandle
}

// openNetlink opens the socket for dumps in ns.
func openNetlink(ns netns.NsHandle, rcvbuf int, force bool) (source, error) {
	var s *nl.NetlinkSocket
	err := inNamespace(ns, func() error {
		var err error
		// None, None: in this thread's namespace, no switching.
		s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open a netlink socket for listings: %w", err)
	}
	tv := unix.NsecToTimeval(dumpTimeout.Nanoseconds())
	if err := errors.Join(s.SetSendTimeout(&tv), s.SetReceiveTimeout(&tv)); err != nil {
		s.Close()
		return nil, fmt.Errorf("set the netlink socket timeout: %w", err)
	}
	return &nlSource{ns: ns, rcvbuf: rcvbuf, force: force, dump: &nl.SocketHandle{Socket: s}}, nil
}

func (s *nlSource) subscribe() (conn, error) {
	var sub *nlSub
	err := inNamespace(s.ns, func() error {
		var err error
		sub, err = openSub(s.rcvbuf, s.force)
		return err
	})
	if err != nil {
		return nil, err
	}
	return sub, nil
}

func (s *nlSource) listLinks() ([]netlink.Link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: s.dump}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err // ErrDumpInterrupted too: the caller retries
	}
	links := make([]netlink.Link, 0, len(msgs))
	for _, m := range msgs {
		l, err := netlink.LinkDeserialize(nil, m)
		if err != nil {
			return nil, fmt.Errorf("decode a link: %w", err)
		}
		links = append(links, l)
	}
	return links, nil
}

func (s *nlSource) listRoutes() ([]Route, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET}})
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: s.dump}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	if err != nil {
		return nil, err
	}
	var routes []Route
	for _, m := range msgs {
		r, err := decodeRoute(m)
		if err != nil {
			return nil, fmt.Errorf("decode a route: %w", err)
		}
		if r.Family == unix.AF_INET && r.Table == unix.RT_TABLE_MAIN {
			routes = append(routes, r)
		}
	}
	return routes, nil
}

func (s *nlSource) close() { s.dump.Close() }

// nlSub is a NETLINK_ROUTE socket bound to the notification groups, read
// through Go's poller, so that closing it wakes a blocked read.
type nlSub struct {
	f  *os.File
	rc syscall.RawConn
}

// openSub opens the socket in the calling thread's namespace.
func openSub(rcvbuf int, force bool) (*nlSub, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	var mask uint32
	for _, g := range groups {
		mask |= 1 << (g - 1)
	}
	if rcvbuf > 0 {
		opt, name := unix.SO_RCVBUF, "SO_RCVBUF"
		if force {
			opt, name = unix.SO_RCVBUFFORCE, "SO_RCVBUFFORCE"
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, rcvbuf); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("netlink socket: %s %d: %w", name, rcvbuf, err)
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
