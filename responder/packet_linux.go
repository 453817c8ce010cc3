package responder

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// rcvBuf is the socket receive buffer pxresp asks for: about 5000 queued ARP
// frames (each costs ~800 bytes of skb truesize), 50 ms of a 100k/s flood,
// where the default (net.core.rmem_default, usually 208 KiB) holds ~270. It
// is a limit, not an allocation. Setting it above net.core.rmem_max needs
// SO_RCVBUFFORCE and CAP_NET_ADMIN; with CAP_NET_RAW alone the default stays.
const rcvBuf = 4 << 20

// readBufLen is larger than any Ethernet frame on a standard-MTU link; a
// longer frame is truncated to it, which cannot turn it into a valid request
// it was not already.
const readBufLen = 2048

// packetConn is the AF_PACKET transport. It reads and writes with raw
// syscalls on the socket's file descriptor through syscall.RawConn, so that
// one wake-up of the Serve goroutine drains every queued frame, and no frame
// allocates.
type packetConn struct {
	c       *packet.Conn
	rc      syscall.RawConn
	closing atomic.Bool

	buf []byte

	// Per-call arguments and results of the RawConn callbacks, kept here so
	// that the callbacks are built once and never allocate.
	handle  func([]byte)
	readErr error
	readFn  func(fd uintptr) bool
	out     []byte
	sendErr error
	writeFn func(fd uintptr) bool
}

// listenPacket opens a raw AF_PACKET socket for ARP on the interface with
// the given index, in the calling thread's network namespace.
func listenPacket(index int, name string, override net.HardwareAddr) (*packetConn, error) {
	prog, err := filter(override)
	if err != nil {
		return nil, fmt.Errorf("assemble BPF filter: %w", err)
	}
	c, err := packet.Listen(&net.Interface{Index: index, Name: name}, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: prog})
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// Our own replies never reach the socket, not even the filter.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil || serr != nil {
		_ = c.Close()
		return nil, fmt.Errorf("set PACKET_IGNORE_OUTGOING: %w", errors.Join(err, serr))
	}
	_ = rc.Control(func(fd uintptr) {
		// Best effort; see rcvBuf.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
	})
	p := &packetConn{c: c, rc: rc, buf: make([]byte, readBufLen)}
	p.readFn = p.readAll
	p.writeFn = p.writeOne
	return p, nil
}

// readAll is the RawConn read callback: it reads until the socket's queue is
// empty (false: wait for more), an error occurs or the conn closes (true).
func (p *packetConn) readAll(fd uintptr) bool {
	for !p.closing.Load() {
		n, err := unix.Read(int(fd), p.buf)
		switch err {
		case nil:
			p.handle(p.buf[:n])
		case unix.EAGAIN:
			return false
		case unix.EINTR:
		default:
			p.readErr = err
			return true
		}
	}
	return true
}

// maxErrors bounds how many socket errors in a row, with no frame between
// them, receive tolerates. A link going down queues one ENETDOWN, so a
// healthy socket never comes close; the bound only keeps a broken one from
// spinning.
const maxErrors = 64

func (p *packetConn) receive(handle func([]byte), onErr func(error)) error {
	frames := 0
	p.handle = func(b []byte) {
		frames++
		handle(b)
	}
	defer func() { p.handle = nil }()
	for errs := 0; ; {
		p.readErr = nil
		before := frames
		err := p.rc.Read(p.readFn)
		if p.closing.Load() {
			return net.ErrClosed
		}
		if err != nil {
			return err
		}
		if frames != before {
			errs = 0
		}
		if errs++; errs >= maxErrors {
			return fmt.Errorf("giving up after %d socket errors in a row: %w", errs, p.readErr)
		}
		onErr(p.readErr)
	}
}

func (p *packetConn) writeOne(fd uintptr) bool {
	_, p.sendErr = unix.Write(int(fd), p.out)
	// On EAGAIN (a full send buffer) the reply is dropped rather than
	// waited for: the requester will ask again.
	return true
}

func (p *packetConn) send(frame []byte) error {
	p.out, p.sendErr = frame, nil
	err := p.rc.Write(p.writeFn)
	p.out = nil
	if err != nil {
		return err
	}
	return p.sendErr
}

// bound reports whether the socket is still bound to its interface. The
// kernel unbinds it for good (ifindex -1) when the interface leaves the
// namespace, even if it comes back.
func (p *packetConn) bound() bool {
	ok := true
	_ = p.rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if ll, isLL := sa.(*unix.SockaddrLinklayer); err == nil && isLL {
			ok = ll.Ifindex > 0
		}
	})
	return ok
}

func (p *packetConn) close() error {
	p.closing.Store(true)
	return p.c.Close()
}

// CheckPermission opens and closes an unbound AF_PACKET socket, so that a
// daemon without CAP_NET_RAW fails at start with a clear error rather than
// on every interface it attaches.
func CheckPermission() error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("cannot open an AF_PACKET socket (%v): pxresp needs CAP_NET_RAW", err)
		}
		return fmt.Errorf("cannot open an AF_PACKET socket: %w", err)
	}
	return unix.Close(fd)
}
