// Package topo builds the reference topology of docs/topology.md — a
// Calico-style node — out of network namespaces, for tests, the demo and
// benchmarks. With prefix P (see NewPrefix):
//
//	netns Ppod0                       netns Phost                          netns Psink
//	eth0 10.244.0.2/32  <--veth-->  cali2c7032f0518 ee:ee:ee:ee:ee:ee
//	                                  (no address)
//	169.254.1.1 dev eth0 scope link   10.244.0.2 dev cali2c7032f0518 scope link
//	default via 169.254.1.1 dev eth0  up0 198.18.0.1/24  <--veth-->  eth0 198.18.0.2/24
//	                                  default via 198.18.0.2          10.244.0.0/16 via 198.18.0.1
//	netns Ppod1 ... (10.244.0.3)      10.244.0.3 dev caliabaa07686c4 scope link
//
// Everything is made with the `ip` command (iproute2) and `sysctl` (procps),
// inside namespaces whose names start with a unique prefix; nothing touches
// the root namespace. The host namespace has forwarding on (ip_forward and
// conf/{all,default}/forwarding), proxy_arp off on all, default and every
// cali interface, and rp_filter 0 on all and default (so on every interface
// made later: a cali interface has no address, and with rp_filter 1 or 2
// the kernel's proxy ARP would also hinge on the pod's /32 route; a test
// that wants that can set it with Host.Sysctl). The kernel's proxy ARP,
// when a test turns it on with SetKernelProxyARP, then answers exactly as
// docs/topology.md describes.
//
// All of it needs root; see internal/privtest.
package topo

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Addresses of the reference topology.
var (
	// Gateway is the pods' default gateway, answered by proxy ARP.
	Gateway = netip.MustParseAddr("169.254.1.1")
	// GatewayMAC is the MAC address of every cali interface.
	GatewayMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// PodCIDR holds the pod addresses: pod i has PodCIDR's address 2+i.
	PodCIDR = netip.MustParsePrefix("10.244.0.0/16")
	// UplinkIP is the host's address on its uplink "up0".
	UplinkIP = netip.MustParseAddr("198.18.0.1")
	// SinkIP is the sink namespace's address at the other end of up0.
	SinkIP = netip.MustParseAddr("198.18.0.2")
)

const (
	uplinkIf = "up0"
	podIf    = "eth0"
	maxPods  = 65532 // pod IPs 10.244.0.2 .. 10.244.255.254
)

// Options configure New.
type Options struct {
	// Pods is the number of pods to create at start (0 or more).
	Pods int
	// Prefix starts the name of every namespace made: PREFIX"host",
	// PREFIX"sink", PREFIX"pod0", ... "" means NewPrefix("pxr").
	Prefix string
}

// Pod is one pod: a namespace with eth0, veth peer of a cali interface in
// the host namespace.
type Pod struct {
	Index  int
	NS     *NS
	IP     netip.Addr       // 10.244.0.(2+Index) (continuing into 10.244.1.0 past 253)
	HostIf string           // host side: "cali" + 11 hex digits derived from Index
	PodIf  string           // "eth0"
	MAC    net.HardwareAddr // pod eth0's MAC, read back after creation
}

// Topology is a built reference node. AddPod, DelPod and Close may be
// called from several goroutines; reading Pods while another goroutine adds
// or deletes pods is not safe.
type Topology struct {
	Prefix   string
	Host     *NS // the node: cali interfaces, up0, forwarding; pxresp runs here
	Sink     *NS // the far end of the uplink: eth0 198.18.0.2/24
	Pods     []*Pod
	UplinkIP netip.Addr // 198.18.0.1 on host "up0"
	SinkIP   netip.Addr // 198.18.0.2 on sink "eth0"

	mu      sync.Mutex
	next    int      // index of the next pod
	created []string // namespaces made and not yet deleted
}

var validPrefix = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,40}$`)

// NewPrefix returns a namespace name prefix unique to this process and
// call: tag + pid + "-" + 6 random hex digits + "-", e.g.
// "pxr4242-1a2b3c-". Characters of tag other than letters, digits, "_" and
// "." are dropped, and it is cut to 12 characters.
func NewPrefix(tag string) string {
	tag = strings.Map(func(r rune) rune {
		if r < 128 && (r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, tag)
	if len(tag) > 12 {
		tag = tag[:12]
	}
	var b [3]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return fmt.Sprintf("%s%d-%s-", tag, os.Getpid(), hex.EncodeToString(b[:]))
}

// New builds the topology with opts.Pods pods. On any error it removes the
// namespaces it made and returns the error.
func New(ctx context.Context, opts Options) (_ *Topology, err error) {
	if opts.Pods < 0 || opts.Pods > maxPods {
		return nil, fmt.Errorf("topo: Pods = %d, want 0..%d", opts.Pods, maxPods)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = NewPrefix("pxr")
	}
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("topo: prefix %q: want 1-40 letters, digits, '_', '.', '-'", prefix)
	}
	t := &Topology{
		Prefix:   prefix,
		Host:     &NS{Name: prefix + "host"},
		Sink:     &NS{Name: prefix + "sink"},
		UplinkIP: UplinkIP,
		SinkIP:   SinkIP,
	}
	defer func() {
		if err != nil {
			if cerr := t.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("topo: cleanup after failed New: %w", cerr))
			}
		}
	}()
	if err := t.setupHost(ctx); err != nil {
		return nil, err
	}
	for range opts.Pods {
		if _, err := t.AddPod(ctx); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// addNS creates a namespace and records it for Close.
func (t *Topology) addNS(ctx context.Context, ns *NS) error {
	if err := ns.Create(ctx); err != nil {
		return err
	}
	t.created = append(t.created, ns.Name)
	return nil
}

// setupHost makes the host and sink namespaces and the uplink between them.
func (t *Topology) setupHost(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ns := range []*NS{t.Host, t.Sink} {
		if err := t.addNS(ctx, ns); err != nil {
			return err
		}
	}
	// Set the defaults before any interface exists: a new interface copies
	// conf/default (forwarding, proxy_arp, rp_filter).
	if err := t.Host.InitSysctls(ctx, true); err != nil {
		return err
	}
	h, s := t.Host, t.Sink
	up := UplinkIP.String() + "/24"
	return runSteps(ctx, []step{
		{h, []string{"link", "set", "lo", "up"}},
		{s, []string{"link", "set", "lo", "up"}},
		{h, []string{"link", "add", uplinkIf, "type", "veth", "peer", "name", podIf, "netns", s.Name}},
		{s, []string{"addr", "add", SinkIP.String() + "/24", "dev", podIf}},
		{s, []string{"link", "set", podIf, "up"}},
		{h, []string{"addr", "add", up, "dev", uplinkIf}},
		{h, []string{"link", "set", uplinkIf, "up"}},
		{h, []string{"route", "add", "default", "via", SinkIP.String(), "dev", uplinkIf}},
		{s, []string{"route", "add", PodCIDR.String(), "via", UplinkIP.String(), "dev", podIf}},
	})
}

// step is one `ip -n NS args...` command.
type step struct {
	ns   *NS
	args []string
}

// runSteps runs steps in order and stops at the first error.
func runSteps(ctx context.Context, steps []step) error {
	for _, st := range steps {
		if err := st.ns.IP(ctx, st.args...); err != nil {
			return err
		}
	}
	return nil
}

// podIP returns the address of pod i.
func podIP(i int) netip.Addr {
	b := PodCIDR.Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n += uint32(2 + i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// CaliName returns a Calico-like host interface name for key: "cali" and
// the first 11 hex digits of key's SHA-1, like Calico's (which hashes the
// workload ID). Different keys give different names in practice.
func CaliName(key string) string {
	sum := sha1.Sum([]byte(key))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}

// hostIfName returns the host-side interface name of pod i.
func hostIfName(i int) string { return CaliName("pxresp-pod-" + strconv.Itoa(i)) }

// AddPod creates the next pod (index = one more than the last one created,
// never reused) and appends it to t.Pods. It returns once both ends of the
// veth are up with carrier and all routes exist, so it is safe to call while
// pxresp runs. On error it removes what it made.
func (t *Topology) AddPod(ctx context.Context) (_ *Pod, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next >= maxPods {
		return nil, fmt.Errorf("topo: no pod address left after %d pods", maxPods)
	}
	i := t.next
	t.next++
	p := &Pod{
		Index:  i,
		NS:     &NS{Name: t.Prefix + "pod" + strconv.Itoa(i)},
		IP:     podIP(i),
		HostIf: hostIfName(i),
		PodIf:  podIf,
	}
	if err := t.addNS(ctx, p.NS); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Deleting the pod namespace deletes the veth pair once the peer
			// is in it; before that the pair is still whole in the host.
			_ = t.Host.IP(context.WithoutCancel(ctx), "link", "del", p.HostIf)
			if derr := t.delNS(context.WithoutCancel(ctx), p.NS.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	h, pn := t.Host, p.NS
	tmp := "pxrpeer" + strconv.Itoa(i) // the peer's name while it is in the host
	route := p.IP.String() + "/32"
	if err := runSteps(ctx, []step{
		{pn, []string{"link", "set", "lo", "up"}},
		// As docs/topology.md says: make the pair in the host, move the peer into
		// the pod and call it eth0.
		{h, []string{"link", "add", p.HostIf, "type", "veth", "peer", "name", tmp}},
		{h, []string{"link", "set", tmp, "netns", pn.Name}},
		{pn, []string{"link", "set", tmp, "name", podIf}},
		{h, []string{"link", "set", p.HostIf, "address", GatewayMAC.String()}},
	}); err != nil {
		return nil, err
	}
	if err := h.Sysctl(ctx, "net.ipv4.conf."+p.HostIf+".proxy_arp", "0"); err != nil {
		return nil, err
	}
	if err := runSteps(ctx, []step{
		{h, []string{"link", "set", p.HostIf, "up"}},
		{pn, []string{"addr", "add", route, "dev", podIf}},
		{pn, []string{"link", "set", podIf, "up"}},
	}); err != nil {
		return nil, err
	}
	// The routes need the links up, and a packet sent before the carrier
	// is up is lost: wait until both ends say UP and LOWER_UP.
	for _, end := range []struct {
		ns *NS
		If string
	}{{h, p.HostIf}, {pn, podIf}} {
		if err := end.ns.WaitUp(ctx, end.If); err != nil {
			return nil, err
		}
	}
	if err := h.IP(ctx, "route", "add", route, "dev", p.HostIf, "scope", "link"); err != nil {
		return nil, err
	}
	// The gateway route first: the default route needs its next hop on link.
	if err := pn.IP(ctx, "route", "add", Gateway.String(), "dev", podIf, "scope", "link"); err != nil {
		return nil, err
	}
	if err := pn.IP(ctx, "route", "add", "default", "via", Gateway.String(), "dev", podIf); err != nil {
		return nil, err
	}
	if p.MAC, err = pn.LinkMAC(ctx, podIf); err != nil {
		return nil, err
	}
	t.Pods = append(t.Pods, p)
	return p, nil
}

// DelPod deletes the pod's host-side interface (its peer goes with it) and
// its namespace, and removes it from t.Pods.
func (t *Topology) DelPod(ctx context.Context, p *Pod) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.Index(t.Pods, p)
	if i < 0 {
		return fmt.Errorf("topo: pod %d is not in topology %s", p.Index, t.Prefix)
	}
	t.Pods = slices.Delete(t.Pods, i, i+1)
	err := t.Host.IP(ctx, "link", "del", p.HostIf)
	return errors.Join(err, t.delNS(ctx, p.NS.Name))
}

var validIfName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,15}$`)

// SetKernelProxyARP turns the kernel's proxy ARP on or off on the host
// interface ifname (net.ipv4.conf.IF.proxy_arp) and, unless proxyDelay < 0,
// sets net.ipv4.neigh.IF.proxy_delay to proxyDelay, in 1/100 s (the
// kernel's default is 80; Calico uses 0). ifname may be "all" or
// "default" too, but proxyDelay then must be < 0 for "all".
func (t *Topology) SetKernelProxyARP(ctx context.Context, ifname string, on bool, proxyDelay int) error {
	if !validIfName.MatchString(ifname) {
		return fmt.Errorf("topo: bad interface name %q", ifname)
	}
	v := "0"
	if on {
		v = "1"
	}
	kvs := []string{"net.ipv4.conf." + ifname + ".proxy_arp=" + v}
	if proxyDelay >= 0 {
		kvs = append(kvs, "net.ipv4.neigh."+ifname+".proxy_delay="+strconv.Itoa(proxyDelay))
	}
	return t.Host.Sysctls(ctx, kvs...)
}

// Close deletes every namespace this topology made and still has. It is
// idempotent and best effort: it tries them all and returns the errors
// joined. A process still running in a deleted namespace (pxresp in the
// host) keeps that namespace alive, unnamed, until it exits.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	// Last made first: pods, then sink and host.
	for _, name := range slices.Backward(slices.Clone(t.created)) {
		errs = append(errs, t.delNS(context.Background(), name))
	}
	t.Pods = nil
	return errors.Join(errs...)
}

// delNS deletes a namespace this topology made (if it still exists) and
// forgets it.
func (t *Topology) delNS(ctx context.Context, name string) error {
	i := slices.Index(t.created, name)
	if i < 0 {
		return nil
	}
	if err := (&NS{Name: name}).Delete(ctx); err != nil {
		return err
	}
	t.created = slices.Delete(t.created, i, i+1)
	return nil
}

// List returns the names of the namespaces in /run/netns that start with
// prefix, sorted.
func List(prefix string) ([]string, error) {
	ents, err := os.ReadDir(runNetns)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("topo: list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Cleanup deletes every namespace whose name starts with prefix, for a
// process that lost its *Topology (a signal handler, a test's safety net).
// An empty prefix is refused.
func Cleanup(prefix string) error {
	if prefix == "" {
		return errors.New("topo: Cleanup needs a non-empty prefix")
	}
	names, err := List(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, (&NS{Name: name}).Delete(context.Background()))
	}
	return errors.Join(errs...)
}

// CleanupStale deletes the namespaces left by dead processes: those named
// by NewPrefix(tag) (tag, pid, "-") whose pid no longer runs. Call it before
// New to clear what a killed test run (go test's timeout) left behind.
func CleanupStale(tag string) error {
	if tag == "" {
		return errors.New("topo: CleanupStale needs a non-empty tag")
	}
	names, err := List(tag)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		digits, _, ok := strings.Cut(name[len(tag):], "-")
		pid, perr := strconv.Atoi(digits)
		if !ok || perr != nil || pid <= 0 || strings.TrimLeft(digits, "0123456789") != "" {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // alive (or not ours to judge)
		}
		errs = append(errs, (&NS{Name: name}).Delete(context.Background()))
	}
	return errors.Join(errs...)
}
