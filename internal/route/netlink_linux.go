package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
)

// lookupTimeout bounds one netlink request (the kernel answers
// RTM_GETROUTE at once; this only guards against a lost answer).
const lookupTimeout = time.Second

// nlLookup makes route lookups over netlink: routes and addresses through
// a netlink.Handle, netconf (which the netlink package does not know)
// through a socket of its own. netlink.Handle serialises requests on its
// socket and pairs answers by sequence number, so it is safe for concurrent
// use; the Cache serialises misses anyway.
type nlLookup struct {
	h    *netlink.Handle
	conf *nl.SocketHandle
}

// openLookup opens the sockets in the Monitor's namespace.
func openLookup(mon *netmon.Monitor) (*nlLookup, error) {
	var h *netlink.Handle
	var s *nl.NetlinkSocket
	err := mon.InNamespace(func() error {
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
