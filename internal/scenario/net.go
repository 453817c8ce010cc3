package scenario

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pxresp/pxresp/internal/topo"
)

const (
	cmdTimeout = 10 * time.Second // any one ip/sysctl command
	upTimeout  = 3 * time.Second  // a link getting carrier
	runNetns   = "/run/netns"
)

var validPrefix = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,40}$`)

// Net is the set of network namespaces one scenario built, all named
// Prefix + a short name. Close removes them.
type Net struct {
	Prefix string

	mu      sync.Mutex
	created []string // namespaces made and not yet deleted, in order
	all     []*topo.NS
}

func newNet(prefix string) (*Net, error) {
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("scenario: prefix %q: want 1-40 letters, digits, '_', '.', '-'", prefix)
	}
	return &Net{Prefix: prefix}, nil
}

// Namespaces returns every namespace built, in the order they were made.
func (n *Net) Namespaces() []*topo.NS {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.all)
}

// role says how a new namespace is configured.
type role int

const (
	leaf   role = iota // an end host: no forwarding
	router             // a node or proxy host: forwards
)

// addNS creates the namespace Prefix+short with lo up, and writes its
// conf/{all,default} sysctls before any interface exists (a new interface
// copies conf/default): proxy_arp 0 and rp_filter 0 everywhere (a new
// namespace inherits the root namespace's IPv4 settings, which may differ),
// and forwarding on for a router.
func (n *Net) addNS(ctx context.Context, short string, r role) (*topo.NS, error) {
	ns := &topo.NS{Name: n.Prefix + short}
	cctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	if _, err := runIP(cctx, "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.created = append(n.created, ns.Name)
	n.all = append(n.all, ns)
	n.mu.Unlock()
	fwd := "0"
	if r == router {
		fwd = "1"
	}
	if err := sysctl(ctx, ns,
		"net.ipv4.ip_forward="+fwd,
		"net.ipv4.conf.all.forwarding="+fwd,
		"net.ipv4.conf.default.forwarding="+fwd,
		"net.ipv4.conf.all.proxy_arp=0",
		"net.ipv4.conf.default.proxy_arp=0",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	); err != nil {
		return nil, err
	}
	if err := ipIn(ctx, ns, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Close deletes every namespace the Net made, last made first. It is
// idempotent and best effort: it tries them all and joins the errors.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, name := range slices.Backward(slices.Clone(n.created)) {
		if err := deleteNS(name); err != nil {
			errs = append(errs, err)
			continue
		}
		n.created = slices.DeleteFunc(n.created, func(s string) bool { return s == name })
	}
	return errors.Join(errs...)
}

func deleteNS(name string) error {
	if _, err := os.Lstat(filepath.Join(runNetns, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	_, err := runIP(ctx, "netns", "del", name)
	return err
}

// veth makes a veth pair, aIf in a and bIf in b, with the given MACs (nil:
// the kernel's random one), both down.
func veth(ctx context.Context, a *topo.NS, aIf string, aMAC net.HardwareAddr, b *topo.NS, bIf string, bMAC net.HardwareAddr) error {
	if err := ipIn(ctx, a, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		return err
	}
	if aMAC != nil {
		if err := ipIn(ctx, a, "link", "set", aIf, "address", aMAC.String()); err != nil {
			return err
		}
	}
	if bMAC != nil {
		if err := ipIn(ctx, b, "link", "set", bIf, "address", bMAC.String()); err != nil {
			return err
		}
	}
	return nil
}

// up sets the links up and waits until each has carrier.
func up(ctx context.Context, links ...nsLink) error {
	for _, l := range links {
		if err := ipIn(ctx, l.ns, "link", "set", l.ifname, "up"); err != nil {
			return err
		}
	}
	for _, l := range links {
		if err := waitUp(ctx, l.ns, l.ifname); err != nil {
			return err
		}
	}
	return nil
}

// nsLink names an interface in a namespace.
type nsLink struct {
	ns     *topo.NS
	ifname string
}

// linkInfo is the part of `ip -j link show` read here.
type linkInfo struct {
	Flags   []string `json:"flags"`
	Address string   `json:"address"`
}

func showLink(ctx context.Context, ns *topo.NS, ifname string) (linkInfo, error) {
	out, err := ipJSON(ctx, ns, "link", "show", "dev", ifname)
	if err != nil {
		return linkInfo{}, err
	}
	var ls []linkInfo
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		return linkInfo{}, fmt.Errorf("scenario: ip -n %s -j link show dev %s: unexpected output %q (%v)", ns.Name, ifname, out, err)
	}
	return ls[0], nil
}

// linkMAC returns the interface's MAC address.
func linkMAC(ctx context.Context, ns *topo.NS, ifname string) (net.HardwareAddr, error) {
	l, err := showLink(ctx, ns, ifname)
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(l.Address)
	if err != nil {
		return nil, fmt.Errorf("scenario: %s in %s: address %q: %w", ifname, ns.Name, l.Address, err)
	}
	return mac, nil
}

// waitUp polls (every 5 ms, at most 3 s) until ifname is UP and LOWER_UP: a
// packet sent before the carrier is up is lost.
func waitUp(ctx context.Context, ns *topo.NS, ifname string) error {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		l, err := showLink(ctx, ns, ifname)
		if err != nil {
			return err
		}
		if slices.Contains(l.Flags, "UP") && slices.Contains(l.Flags, "LOWER_UP") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("scenario: %s in %s not up with carrier after %v (flags %v): %w", ifname, ns.Name, upTimeout, l.Flags, ctx.Err())
		case <-tick.C:
		}
	}
}

// caliName returns a Calico-like host interface name: "cali" and 11 hex
// digits of a hash of key.
func caliName(key string) string {
	sum := sha1.Sum([]byte("pxresp-scenario-" + key))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}

// ipIn runs `ip -n NS args...`, bounded by ctx and 10 s.
func ipIn(ctx context.Context, ns *topo.NS, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := runIP(ctx, append([]string{"-n", ns.Name}, args...)...)
	return err
}

// ipJSON runs `ip -n NS -j args...` and returns its stdout.
func ipJSON(ctx context.Context, ns *topo.NS, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return runIP(ctx, append([]string{"-n", ns.Name, "-j"}, args...)...)
}

// sysctl writes net.* key=value pairs inside ns in one command.
func sysctl(ctx context.Context, ns *topo.NS, kvs ...string) error {
	for _, kv := range kvs {
		if k, _, ok := strings.Cut(kv, "="); !ok || !strings.HasPrefix(k, "net.") {
			return fmt.Errorf("scenario: sysctl %q: only net.* keys of the namespace", kv)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := ns.Exec(ctx, append([]string{"sysctl", "-qw"}, kvs...)...)
	return err
}

// readSysctl reads a net.* key inside ns.
func readSysctl(ctx context.Context, ns *topo.NS, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := ns.Exec(ctx, "sysctl", "-n", key)
	return strings.TrimSpace(out), err
}

// runIP runs `ip args...` and returns stdout; the error names the command,
// the exit status and stderr.
func runIP(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.String(), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
