package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// ErrNoFirewall means neither iptables nor nft is installed: the snat
// scenario needs one of them (Debian packages iptables or nftables).
var ErrNoFirewall = errors.New("the snat scenario needs iptables or nft: install the Debian package iptables (or nftables)")

// firewallTool, when set ("iptables" or "nft"), forces that tool (tests).
var firewallTool = ""

// firewall adds the MASQUERADE rule and reads its counter, with iptables
// or, failing that, nft. Both run inside the host namespace only.
type firewall struct {
	kind string // "iptables" or "nft"
	path string
}

func findFirewall() (*firewall, error) {
	kinds := []string{"iptables", "nft"}
	if firewallTool != "" {
		kinds = []string{firewallTool}
	}
	for _, k := range kinds {
		// Also where root's tools live when PATH lacks the sbin directories.
		for _, p := range []string{k, "/usr/sbin/" + k, "/sbin/" + k} {
			if path, err := exec.LookPath(p); err == nil {
				return &firewall{kind: k, path: path}, nil
			}
		}
	}
	return nil, ErrNoFirewall
}

// nft table and chain of the rule.
const nftTable, nftChain = "pxresp_snat", "postrouting"

// masquerade adds the rule in ns and returns it as a command line.
func (f *firewall) masquerade(ctx context.Context, ns *topo.NS, src netip.Prefix) (string, error) {
	var cmds [][]string
	switch f.kind {
	case "iptables":
		cmds = [][]string{{"-t", "nat", "-A", "POSTROUTING", "-s", src.String(), "-j", "MASQUERADE"}}
	default:
		cmds = [][]string{
			{"add", "table", "ip", nftTable},
			{"add", "chain", "ip", nftTable, nftChain, "{", "type", "nat", "hook", "postrouting", "priority", "100", ";", "}"},
			{"add", "rule", "ip", nftTable, nftChain, "ip", "saddr", src.String(), "counter", "masquerade"},
		}
	}
	var lines []string
	for _, c := range cmds {
		cctx, cancel := context.WithTimeout(ctx, cmdTimeout)
		out, err := ns.Exec(cctx, append([]string{f.path}, c...)...)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w: %s", f.kind, strings.Join(c, " "), err, strings.TrimSpace(out))
		}
		lines = append(lines, f.kind+" "+strings.Join(c, " "))
	}
	return strings.Join(lines, "; "), nil
}

func (f *firewall) counterArgs() []string {
	if f.kind == "iptables" {
		return []string{f.path, "-t", "nat", "-L", "POSTROUTING", "-v", "-n", "-x"}
	}
	return []string{f.path, "list", "chain", "ip", nftTable, nftChain}
}

func (f *firewall) counterCmd(ns *topo.NS) string {
	args := f.counterArgs()
	args[0] = f.kind
	return "ip netns exec " + ns.Name + " " + strings.Join(args, " ")
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ masquerade`)

// counter returns the packets the MASQUERADE rule matched.
func (f *firewall) counter(ctx context.Context, ns *topo.NS) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := ns.Exec(ctx, f.counterArgs()...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %s", f.kind, err, strings.TrimSpace(out))
	}
	return parseCounter(f.kind, out)
}

func parseCounter(kind, out string) (uint64, error) {
	if kind == "nft" {
		m := nftCounter.FindStringSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("nft: no masquerade counter in %q", out)
		}
		return strconv.ParseUint(m[1], 10, 64)
	}
	// iptables -v -n -x: "pkts bytes target prot opt in out source destination".
	for l := range strings.Lines(out) {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == "MASQUERADE" {
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("iptables: no MASQUERADE rule in %q", out)
}

// udpSource sends a UDP datagram from namespace from to dst (a socket the
// function opens in namespace to) and returns the source address that
// socket saw: with SNAT, the host's uplink address. It tries at most 5
// times, 500 ms each.
func udpSource(ctx context.Context, from, to *topo.NS, dst netip.Addr) (netip.AddrPort, error) {
	var ln *net.UDPConn
	if err := to.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 0)))
		return err
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen in %s: %w", to.Name, err)
	}
	defer ln.Close()
	raddr := ln.LocalAddr().(*net.UDPAddr)
	var c *net.UDPConn
	if err := from.Do(func() (err error) {
		c, err = net.DialUDP("udp4", nil, raddr)
		return err
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("dial from %s: %w", from.Name, err)
	}
	defer c.Close()
	msg := []byte("pxresp scenario snat")
	buf := make([]byte, 64)
	var lastErr error
	for range 5 {
		if err := ctx.Err(); err != nil {
			return netip.AddrPort{}, err
		}
		if _, err := c.Write(msg); err != nil {
			lastErr = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_ = ln.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, src, err := ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			lastErr = err
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return netip.AddrPort{}, err
		}
		if string(buf[:n]) == string(msg) {
			return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no datagram from %s reached %s:%d: %v", from.Name, dst, raddr.Port, lastErr)
}
