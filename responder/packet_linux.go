package responder

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

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

// oobLen is the control buffer for recvmsg with SO_TIMESTAMPNS: room for
// the timestamp's message (32 bytes on 64-bit) and some to spare.
const oobLen = 128

// packetConn is the AF_PACKET transport. It reads and writes with raw
// syscalls on the socket's file descriptor through syscall.RawConn, so that
// one wake-up of the Serve goroutine drains every queued frame, and no frame
// allocates.
//
// Opened with timestamps, it reads with recvmsg(2) into a preallocated
// message header and control buffer, and hands each frame's kernel receive
// timestamp (SCM_TIMESTAMPNS) to handle; otherwise it reads with read(2),
// which costs less, and hands 0.
type packetConn struct {
	c       *packet.Conn
	rc      syscall.RawConn
	closing atomic.Bool
	paced   atomic.Bool // the filter sheds a sender: see shedPace

	statsMu        sync.Mutex
	packets, drops uint64 // PACKET_STATISTICS, accumulated

	buf []byte

	// For recvmsg: msg points at iov (buf) and oob. Used only by readAllTS.
	oob []byte
	iov unix.Iovec
	msg unix.Msghdr

	// Per-call arguments and results of the RawConn callbacks, kept here so
	// that the callbacks are built once and never allocate.
	handle  func([]byte, int64)
	readErr error
	readFn  func(fd uintptr) bool
	out     []byte
	sendErr error
	writeFn func(fd uintptr) bool
}

// listenPacket opens a raw AF_PACKET socket for ARP on the interface with
// the given index, in the calling thread's network namespace. With
// timestamps, the kernel stamps each frame it receives (SO_TIMESTAMPNS) and
// receive hands the stamps on.
func listenPacket(index int, name string, override net.HardwareAddr, timestamps bool) (*packetConn, error) {
	prog, err := filter(shedRule{}, override)
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
	if timestamps {
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		}); err != nil || serr != nil {
			_ = c.Close()
			return nil, fmt.Errorf("set SO_TIMESTAMPNS: %w", errors.Join(err, serr))
		}
		p.oob = make([]byte, oobLen)
		p.iov.Base = &p.buf[0]
		p.iov.SetLen(len(p.buf))
		p.msg.Iov = &p.iov
		p.msg.SetIovlen(1)
		p.msg.Control = &p.oob[0]
		p.readFn = p.readAllTS
	}
	p.writeFn = p.writeOne
	return p, nil
}

// batch is how many frames a Serve goroutine handles before it lets the
// other goroutines run (runtime.Gosched): a socket whose queue never empties
// does not keep its thread until the scheduler preempts it, while the other
// sockets' frames wait.
const batch = 64

// shedPace is how long a Serve goroutine whose socket filter sheds a
// storming sender waits, once the queue is empty, before it reads again:
// the sample the filter lets through is then read in batches, a few wake-ups
// per pace rather than one per frame. Requests on that interface wait up to
// shedPace longer; none is lost (see rcvBuf).
const shedPace = 5 * time.Millisecond

// idle is called by the read callbacks when the queue is empty. It reports
// whether to read again: once, after shedPace, while the filter sheds a
// sender; otherwise the callback returns to wait for the socket.
func (p *packetConn) idle(slept *bool) bool {
	if *slept || !p.paced.Load() {
		return false
	}
	*slept = true
	time.Sleep(shedPace)
	return true
}

// readAll is the RawConn read callback: it reads until the socket's queue is
// empty (false: wait for more), an error occurs or the conn closes (true).
func (p *packetConn) readAll(fd uintptr) bool {
	slept := false
	for i := 1; !p.closing.Load(); i++ {
		if i%batch == 0 {
			runtime.Gosched()
		}
		n, err := unix.Read(int(fd), p.buf)
		switch err {
		case nil:
			slept = false
			p.handle(p.buf[:n], 0)
		case unix.EAGAIN:
			if !p.idle(&slept) {
				return false
			}
		case unix.EINTR:
		default:
			p.readErr = err
			return true
		}
	}
	return true
}

// readAllTS is readAll with recvmsg(2), for the receive timestamps. It calls
// the syscall itself: unix.Recvmsg allocates the sender's address and the
// message header on every call.
func (p *packetConn) readAllTS(fd uintptr) bool {
	slept := false
	for i := 1; !p.closing.Load(); i++ {
		if i%batch == 0 {
			runtime.Gosched()
		}
		p.msg.SetControllen(len(p.oob))
		p.msg.Flags = 0
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&p.msg)), 0)
		switch errno {
		case 0:
			var rx int64
			if p.msg.Flags&unix.MSG_CTRUNC == 0 {
				rx = rxTimestamp(p.oob[:min(int(p.msg.Controllen), len(p.oob))])
			}
			slept = false
			p.handle(p.buf[:n], rx)
		case unix.EAGAIN:
			if !p.idle(&slept) {
				return false
			}
		case unix.EINTR:
		default:
			p.readErr = errno
			return true
		}
	}
	return true
}

// rxTimestamp returns the time in an SCM_TIMESTAMPNS control message among
// those in oob, in nanoseconds since the Unix epoch, or 0 if there is none
// or it is cut short. It does not allocate.
func rxTimestamp(oob []byte) int64 {
	const tsLen = int(unsafe.Sizeof(unix.Timespec{}))
	for hdr := unix.CmsgLen(0); len(oob) >= hdr; {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS {
			if l < hdr+tsLen {
				return 0
			}
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hdr]))
			return ts.Nano()
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// maxErrors bounds how many socket errors in a row, with no frame between
// them, receive tolerates. A link going down queues one ENETDOWN, so a
// healthy socket never comes close; the bound only keeps a broken one from
// spinning.
const maxErrors = 64

func (p *packetConn) receive(handle func([]byte, int64), onErr func(error)) error {
	frames := 0
	p.handle = func(b []byte, rx int64) {
		frames++
		handle(b, rx)
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

// setFilter replaces the socket's BPF filter (SO_ATTACH_FILTER on the open
// socket: the kernel swaps the program atomically, and frames already
// queued stay queued).
func (p *packetConn) setFilter(shed shedRule, overrides ...net.HardwareAddr) error {
	prog, err := filter(shed, overrides...)
	if err != nil {
		return fmt.Errorf("assemble BPF filter: %w", err)
	}
	if err := p.c.SetBPF(prog); err != nil {
		return err
	}
	p.paced.Store(shed.active())
	return nil
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

// kernelStats returns the frames the kernel queued for the socket and those
// it dropped because the queue was full, since the socket was opened
// (PACKET_STATISTICS, which the kernel resets on each read, accumulated).
// It is safe to call from any goroutine, also after close.
func (p *packetConn) kernelStats() (packets, drops uint64) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	if !p.closing.Load() {
		p.readStats()
	}
	return p.packets, p.drops
}

// readStats adds the kernel's counts since the last read to p's. The
// caller holds statsMu.
func (p *packetConn) readStats() {
	if st, err := p.c.Stats(); err == nil {
		// tp_packets counts the dropped frames too.
		p.packets += uint64(st.Packets) - uint64(st.Drops)
		p.drops += uint64(st.Drops)
	}
}

func (p *packetConn) close() error {
	p.statsMu.Lock()
	if !p.closing.Load() {
		p.readStats()
	}
	p.closing.Store(true)
	p.statsMu.Unlock()
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
