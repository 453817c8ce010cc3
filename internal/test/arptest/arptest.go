// Package arptest is a raw ARP client for tests and benchmarks: it sends
// hand-made ARP frames from inside a network namespace and reads the
// replies. The frames are internal/arpframe's: decode a reply with
// arpframe.Decode.
package arptest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = net.HardwareAddr(slices.Clone(arpframe.Broadcast[:]))

// Request returns the frame "who-has target tell sender", from senderMAC to
// the Ethernet destination dst (arpframe.EncodeRequest).
func Request(senderMAC net.HardwareAddr, sender, target netip.Addr, dst net.HardwareAddr) []byte {
	return arpframe.EncodeRequest(make([]byte, arpframe.Len), [6]byte(dst), [6]byte(senderMAC), sender, target)
}

// IsReply says whether frame is a well-formed ARP reply.
func IsReply(frame []byte) bool {
	var f arpframe.Frame
	return arpframe.Decode(frame, &f) == nil && f.Op == arpframe.OpReply
}

// Client is an AF_PACKET socket for ARP on one interface of a namespace.
// It does not see the frames it sends itself.
type Client struct {
	c   *packet.Conn
	buf []byte
}

// Open opens a Client on interface ifname inside ns.
func Open(ns *topo.NS, ifname string) (*Client, error) {
	var c *packet.Conn
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		if err != nil {
			return err
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("arptest: client on %s in %s: %w", ifname, ns.Name, err)
	}
	return &Client{c: c, buf: make([]byte, 2048)}, nil
}

// Close closes the socket.
func (c *Client) Close() error { return c.c.Close() }

// Send transmits frame.
func (c *Client) Send(frame []byte) error {
	_, err := c.c.WriteTo(frame, &packet.Addr{HardwareAddr: frame[0:6]})
	return err
}

// Ask drops frames already queued, sends frame and returns the first ARP
// reply that arrives within wait, or nil if none does.
func (c *Client) Ask(frame []byte, wait time.Duration) ([]byte, error) {
	c.Drain()
	if err := c.Send(frame); err != nil {
		return nil, err
	}
	return c.NextReply(wait)
}

// NextReply returns the next ARP reply that arrives within wait, or nil.
func (c *Client) NextReply(wait time.Duration) ([]byte, error) { return c.NextReplyTo(nil, wait) }

// NextReplyTo is NextReply for the replies whose Ethernet destination is
// dst (any if dst is nil): those to other senders on the interface are
// skipped.
func (c *Client) NextReplyTo(dst net.HardwareAddr, wait time.Duration) ([]byte, error) {
	deadline := time.Now().Add(wait)
	if err := c.c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	for {
		n, _, err := c.c.ReadFrom(c.buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if IsReply(c.buf[:n]) && (dst == nil || bytes.Equal(c.buf[:6], dst)) {
			return bytes.Clone(c.buf[:n]), nil
		}
	}
}

// Drain discards the frames already queued (late replies, say).
func (c *Client) Drain() {
	for range 1000 {
		_ = c.c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, _, err := c.c.ReadFrom(c.buf); err != nil {
			return
		}
	}
}
