package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// cmdTimeout bounds any one command the package runs itself (iptables, nft,
// ip route get); topo bounds its own the same way.
const cmdTimeout = 10 * time.Second

var validPrefix = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,40}$`)

// Net is the set of network namespaces one scenario built, all named
// Prefix + a short name. Close removes them.
type Net struct {
	Prefix string

	mu      sync.Mutex
	created []*topo.NS // namespaces made and not yet deleted, in order
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
// conf/{all,default} sysctls before any interface exists
// (topo.NS.InitSysctls): proxy_arp 0 and rp_filter 0 everywhere, and
// forwarding on for a router.
func (n *Net) addNS(ctx context.Context, short string, r role) (*topo.NS, error) {
	ns := &topo.NS{Name: n.Prefix + short}
	if err := ns.Create(ctx); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.created = append(n.created, ns)
	n.all = append(n.all, ns)
	n.mu.Unlock()
	if err := ns.InitSysctls(ctx, r == router); err != nil {
		return nil, err
	}
	if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
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
	for _, ns := range slices.Backward(slices.Clone(n.created)) {
		if err := ns.Delete(context.Background()); err != nil {
			errs = append(errs, err)
			continue
		}
		n.created = slices.DeleteFunc(n.created, func(x *topo.NS) bool { return x == ns })
	}
	return errors.Join(errs...)
}

// veth makes a veth pair, aIf in a and bIf in b, with the given MACs (nil:
// the kernel's random one), both down.
func veth(ctx context.Context, a *topo.NS, aIf string, aMAC net.HardwareAddr, b *topo.NS, bIf string, bMAC net.HardwareAddr) error {
	if err := a.IP(ctx, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		return err
	}
	if aMAC != nil {
		if err := a.IP(ctx, "link", "set", aIf, "address", aMAC.String()); err != nil {
			return err
		}
	}
	if bMAC != nil {
		if err := b.IP(ctx, "link", "set", bIf, "address", bMAC.String()); err != nil {
			return err
		}
	}
	return nil
}

// up sets the links up and waits until each has carrier.
func up(ctx context.Context, links ...nsLink) error {
	for _, l := range links {
		if err := l.ns.IP(ctx, "link", "set", l.ifname, "up"); err != nil {
			return err
		}
	}
	for _, l := range links {
		if err := l.ns.WaitUp(ctx, l.ifname); err != nil {
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

// caliName returns a Calico-like host interface name for key ("cali" and
// 11 hex digits), distinct from topo's pod names.
func caliName(key string) string { return topo.CaliName("pxresp-scenario-" + key) }
