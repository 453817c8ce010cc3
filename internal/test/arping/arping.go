// Package arping runs the system's arping command for tests, whichever of
// the two common implementations is installed: Thomas Habets' (Debian
// package arping, interface given with -i) or iputils' (Debian package
// iputils-arping, interface given with -I). Args builds the command line
// for the installed one and Replies reads the output of either.
package arping

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Impl is an arping implementation.
type Impl int

const (
	// Habets is Thomas Habets' arping (Debian package arping).
	Habets Impl = iota + 1
	// IPutils is the arping of iputils (Debian package iputils-arping).
	IPutils
)

func (i Impl) String() string {
	switch i {
	case Habets:
		return "arping (Habets)"
	case IPutils:
		return "arping (iputils)"
	}
	return "arping (unknown)"
}

// Classify tells the implementation from the output of `arping -V`:
// iputils prints its version, Habets' arping (for which -V needs an
// argument) prints its usage and banner.
func Classify(versionOutput string) (Impl, error) {
	switch {
	case strings.Contains(versionOutput, "iputils"):
		return IPutils, nil
	case strings.Contains(versionOutput, "Habets"):
		return Habets, nil
	}
	line, _, _ := strings.Cut(strings.TrimSpace(versionOutput), "\n")
	return 0, fmt.Errorf("arping: unknown implementation (arping -V: %q); install Debian package arping or iputils-arping", line)
}

var (
	detectOnce sync.Once
	detected   Impl
	detectErr  error
)

// Detect finds the installed arping, once per process. It only runs
// `arping -V`, which sends nothing.
func Detect() (Impl, error) {
	detectOnce.Do(func() { detected, detectErr = detect() })
	return detected, detectErr
}

func detect() (Impl, error) {
	path, err := exec.LookPath("arping")
	if err != nil {
		return 0, errors.New("arping is missing (Debian package arping or iputils-arping)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The exit status differs between the implementations: only the
	// output counts.
	out, _ := exec.CommandContext(ctx, path, "-V").CombinedOutput()
	if ctx.Err() != nil {
		return 0, errors.New("arping -V did not exit within 5s")
	}
	return Classify(string(out))
}

// Args returns the command line that sends count ARP requests for target
// out of iface and waits at most deadline (whole seconds, at least one)
// for the replies, for the installed implementation.
func Args(iface string, target netip.Addr, count int, deadline time.Duration) ([]string, error) {
	impl, err := Detect()
	if err != nil {
		return nil, err
	}
	return ArgsFor(impl, iface, target, count, deadline), nil
}

// ArgsFor is Args for the implementation impl.
func ArgsFor(impl Impl, iface string, target netip.Addr, count int, deadline time.Duration) []string {
	ifFlag := "-i"
	if impl == IPutils {
		ifFlag = "-I"
	}
	secs := max(int((deadline+time.Second-1)/time.Second), 1)
	return []string{"arping", "-c", strconv.Itoa(count), "-w", strconv.Itoa(secs), ifFlag, iface, target.String()}
}

// Reply is one answer that arping printed.
type Reply struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

var (
	// Habets: "60 bytes from ee:ee:ee:ee:ee:ee (169.254.1.1): index=0 time=..."
	habetsReply = regexp.MustCompile(`(?m)^\d+ bytes from ([0-9A-Fa-f:]{17}) \(([0-9.]+)\)`)
	// iputils: "Unicast reply from 169.254.1.1 [EE:EE:EE:EE:EE:EE]  0.611ms"
	iputilsReply = regexp.MustCompile(`(?m)^(?:Unicast|Broadcast) reply from ([0-9.]+) \[([0-9A-Fa-f:]{17})\]`)
)

// Replies returns the replies in the output of either implementation, in
// order. Lines that are not replies are ignored.
func Replies(out string) []Reply {
	var rs []Reply
	for _, line := range strings.Split(out, "\n") {
		var ip, mac string
		if m := habetsReply.FindStringSubmatch(line); m != nil {
			mac, ip = m[1], m[2]
		} else if m := iputilsReply.FindStringSubmatch(line); m != nil {
			ip, mac = m[1], m[2]
		} else {
			continue
		}
		a, err1 := netip.ParseAddr(ip)
		hw, err2 := net.ParseMAC(mac)
		if err1 != nil || err2 != nil {
			continue
		}
		rs = append(rs, Reply{IP: a, MAC: hw})
	}
	return rs
}
