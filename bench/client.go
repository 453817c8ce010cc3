package main

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// rawSock is the bench's ARP client: an AF_PACKET socket bound to one
// interface in a namespace the bench made (a pod's eth0, or a veth end in
// the "far" namespace). It is driven with raw syscalls on the file
// descriptor (no Go netpoller, no allocation per frame), from a goroutine
// locked to its OS thread (see onThread).
type rawSock struct {
	fd      int
	ifname  string
	ns      string
	mac     [6]byte
	ip      netip.Addr
	bcast   [arpframe.Len]byte // who-has gateway, to ff:ff:ff:ff:ff:ff
	unicast [arpframe.Len]byte // the same, to ee:ee:ee:ee:ee:ee (re-probe)
	m       replyMatcher
	buf     [2048]byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openRawSock opens the client socket on ifname inside ns. ip is the sender
// address the requests carry.
func openRawSock(ns *topo.NS, ifname string, ip netip.Addr) (*rawSock, error) {
	socks, err := openRawSocks(ns, []string{ifname}, []netip.Addr{ip})
	if err != nil {
		return nil, err
	}
	return socks[0], nil
}

// openRawSocks opens client sockets on several interfaces of ns at once
// (entering a namespace costs milliseconds).
func openRawSocks(ns *topo.NS, ifnames []string, ips []netip.Addr) ([]*rawSock, error) {
	var socks []*rawSock
	err := ns.Do(func() error {
		for i, name := range ifnames {
			s := &rawSock{fd: -1, ifname: name, ns: ns.Name, ip: ips[i]}
			err := s.open()
			if err != nil {
				s.close()
				return fmt.Errorf("client socket on %s/%s: %w", ns.Name, name, err)
			}
			socks = append(socks, s)
		}
		return nil
	})
	if err != nil {
		for _, s := range socks {
			s.close()
		}
		return nil, err
	}
	for _, s := range socks {
		s.bcast = arpRequest(arpframe.Broadcast, s.mac, s.ip, topo.Gateway)
		s.unicast = arpRequest(gatewayMAC, s.mac, s.ip, topo.Gateway)
		s.m = newReplyMatcher(topo.Gateway, s.mac, s.ip)
		s.drain()
		_ = s.packetStats() // reset the counters
	}
	return socks, nil
}

// open makes the socket, in the calling thread's namespace.
func (s *rawSock) open() error {
	// Protocol 0: the socket receives nothing until bind sets the protocol
	// and the interface. (Created with ETH_P_ARP, it would be hooked on all
	// interfaces and bind would have to unhook it, which waits for an RCU
	// grace period: about 10 ms per socket.)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	s.fd = fd
	// ioctls rather than net.InterfaceByName, which dumps every link of the
	// namespace (a thousand in the scale tests).
	ifr, err := unix.NewIfreq(s.ifname)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("SIOCGIFINDEX: %w", err)
	}
	index := int(ifr.Uint32())
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return fmt.Errorf("SIOCGIFHWADDR: %w", err)
	}
	// The union holds a struct sockaddr: sa_family (2 bytes), then the address.
	raw := (*[unix.IFNAMSIZ + 24]byte)(unsafe.Pointer(ifr))
	copy(s.mac[:], raw[unix.IFNAMSIZ+2:unix.IFNAMSIZ+8])
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: index}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	// Our own requests must not come back to us as received frames.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fmt.Errorf("PACKET_IGNORE_OUTGOING: %w", err)
	}
	// Room for a flood's replies while the receiver thread is late.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20); err != nil {
		return fmt.Errorf("SO_RCVBUFFORCE: %w", err)
	}
	return nil
}

func (s *rawSock) close() {
	if s != nil && s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// request returns the broadcast or the unicast request.
func (s *rawSock) request(k kind) *[arpframe.Len]byte {
	if k == unicastReq {
		return &s.unicast
	}
	return &s.bcast
}

// setRecvTimeout bounds every blocking read.
func (s *rawSock) setRecvTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// send writes one frame; it does not allocate.
func (s *rawSock) send(f *[arpframe.Len]byte) error {
	_, err := unix.Write(s.fd, f[:])
	return err
}

// recvDontWait reads one queued frame without blocking; n < 0 when none.
func (s *rawSock) recvDontWait() int {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&s.buf[0])),
		uintptr(len(s.buf)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return -1
	}
	return int(n)
}

// drain discards queued frames (at most 100000) and returns how many of them
// were replies to us.
func (s *rawSock) drain() int {
	replies := 0
	for range 100000 {
		n := s.recvDontWait()
		if n < 0 {
			break
		}
		if s.m.match(s.buf[:n]) {
			replies++
		}
	}
	return replies
}

// errTimeout: no reply within the timeout.
var errTimeout = errors.New("no reply")

// rtt sends req and waits (blocking read, SO_RCVTIMEO = timeout) for the
// reply: one request outstanding. It returns the round trip in ns.
func (s *rawSock) rtt(req *[arpframe.Len]byte, timeout time.Duration) (int64, error) {
	t0 := time.Now()
	if _, err := unix.Write(s.fd, req[:]); err != nil {
		return 0, fmt.Errorf("send: %w", err)
	}
	// Frames that are not our reply (none expected) are skipped, at most
	// 10000 of them.
	for range 10000 {
		n, err := unix.Read(s.fd, s.buf[:])
		el := time.Since(t0)
		switch {
		case err == nil:
			if s.m.match(s.buf[:n]) {
				return el.Nanoseconds(), nil
			}
		case err == unix.EAGAIN || err == unix.EWOULDBLOCK:
			return 0, errTimeout
		case err == unix.EINTR:
		default:
			return 0, fmt.Errorf("recv: %w", err)
		}
		if el > timeout {
			return 0, errTimeout
		}
	}
	return 0, errTimeout
}

// stamp returns the kernel's receive timestamp of the last frame read, in
// nanoseconds since the Unix epoch (SIOCGSTAMPNS), or 0. The first call
// turns timestamping on and returns 0.
func (s *rawSock) stamp() int64 {
	var ts unix.Timespec
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), unix.SIOCGSTAMPNS, uintptr(unsafe.Pointer(&ts))); e != 0 {
		return 0
	}
	return ts.Nano()
}

// packetStats returns and resets the socket's PACKET_STATISTICS: frames
// queued to it and frames it dropped because its buffer was full.
func (s *rawSock) packetStats() unix.TpacketStats {
	st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return unix.TpacketStats{}
	}
	return *st
}

// waitReadable waits up to d for a frame (ppoll, sub-millisecond timeout).
func (s *rawSock) waitReadable(d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	n, err := unix.Ppoll(fds, &ts, nil)
	return err == nil && n > 0
}

// onThread runs fn on a new goroutine locked to its own OS thread, pinned to
// CPU cpu (or allowed on every CPU when cpu < 0), and waits for it. The
// thread is never unlocked, so the Go runtime ends it with the goroutine and
// its affinity never leaks to other code.
func onThread(cpu int, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic on measuring thread: %v", r)
			}
		}()
		var set unix.CPUSet
		if cpu >= 0 {
			set.Set(cpu)
		} else {
			// Every CPU: the kernel ignores bits of CPUs that do not exist.
			for i := range 1024 {
				set.Set(i)
			}
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			done <- fmt.Errorf("sched_setaffinity: %w", err)
			return
		}
		done <- fn()
	}()
	return <-done
}
