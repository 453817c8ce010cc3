package inkernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/ratelimit"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// ErrRouteMode is wrapped by the error Attach and Apply return for a
// route-mode policy: those are served by the packet datapath
// (responder.Listen), never by the kernel program.
var ErrRouteMode = errors.New("route mode is served by the packet datapath, not the eBPF program")

// Program is the loaded program and its maps, one per process, shared by
// every interface (the maps are keyed by ifindex). It is safe for
// concurrent use.
type Program struct {
	objs pxrespObjects

	mu     sync.Mutex
	ifaces map[int]*Iface // attached, by ifindex
	closed bool
	// The network namespace of the first Attach, the one the Program
	// serves (its maps are keyed by ifindex): its ID, and a netlink handle
	// opened in it, for Bound.
	netns string
	nl    *netlink.Handle
	nlMu  sync.Mutex
}

// Load loads the program and creates its maps. It needs CAP_BPF and
// CAP_NET_ADMIN.
func Load() (*Program, error) {
	p := &Program{ifaces: make(map[int]*Iface)}
	if err := loadPxrespObjects(&p.objs, nil); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("loading the eBPF program (it needs CAP_BPF and CAP_NET_ADMIN): %w", err)
		}
		return nil, fmt.Errorf("loading the eBPF program: %w", err)
	}
	return p, nil
}

// Close closes every Iface still attached, then the program and its maps.
func (p *Program) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ifaces := make([]*Iface, 0, len(p.ifaces))
	for _, i := range p.ifaces {
		ifaces = append(ifaces, i)
	}
	p.mu.Unlock()
	var errs []error
	for _, i := range ifaces {
		errs = append(errs, i.Close())
	}
	errs = append(errs, p.objs.Close())
	if p.nl != nil {
		p.nl.Close()
	}
	return errors.Join(errs...)
}

// Attach fills the maps for cfg's interface and attaches the program to its
// tc ingress as a tcx link, first in the interface's tcx chain, in the
// network namespace of the calling thread. It uses cfg's Index, Name,
// Settings, Logger, RateLimit, RateBurst and DryRun, with the meanings and
// defaults they have for responder.Listen; Router and Latency are ignored.
// A Program serves the network namespace of its first Attach: later ones
// must be made there too, and one interface is attached at most once.
func (p *Program) Attach(cfg responder.Config) (*Iface, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, err := p.add(&cfg)
	if err != nil {
		return nil, err
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: cfg.Index,
		Program:   p.objs.Pxresp,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    link.Head(),
	})
	if err != nil {
		delete(p.ifaces, i.index)
		return nil, errors.Join(fmt.Errorf("attach to %s (ifindex %d): %w", cfg.Name, cfg.Index, err), i.clear())
	}
	i.link = l
	return i, nil
}

// add checks cfg, fills the maps for its interface and records it: Attach
// without the link. The caller holds p.mu.
func (p *Program) add(cfg *responder.Config) (*Iface, error) {
	if cfg.Index <= 0 {
		return nil, fmt.Errorf("in-kernel responder for %q: invalid ifindex %d", cfg.Name, cfg.Index)
	}
	if err := checkSettings(&cfg.Settings); err != nil {
		return nil, fmt.Errorf("in-kernel responder for %q: %w", cfg.Name, err)
	}
	switch {
	case p.closed:
		return nil, fmt.Errorf("attach to %s: %w", cfg.Name, net.ErrClosed)
	case p.ifaces[cfg.Index] != nil:
		return nil, fmt.Errorf("attach to %s: ifindex %d is attached already", cfg.Name, cfg.Index)
	}
	if err := p.pinNetns(); err != nil {
		return nil, fmt.Errorf("attach to %s: %w", cfg.Name, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	i := &Iface{
		p:     p,
		index: cfg.Index,
		name:  cfg.Name,
		log:   log.With("iface", cfg.Name, "ifindex", cfg.Index),
		done:  make(chan struct{}),
	}
	if err := i.fill(cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("attach to %s (ifindex %d): %w", cfg.Name, cfg.Index, err), i.clear())
	}
	p.ifaces[cfg.Index] = i
	return i, nil
}

// pinNetns records the calling thread's network namespace as the one p
// serves, on the first call, and refuses another one later. The caller
// holds p.mu.
func (p *Program) pinNetns() error {
	h, err := netns.Get()
	if err != nil {
		return fmt.Errorf("the calling thread's network namespace: %w", err)
	}
	defer h.Close()
	id := h.UniqueId()
	switch {
	case p.netns == id:
		return nil
	case p.netns != "":
		return fmt.Errorf("the program serves network namespace %s, not %s", p.netns, id)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	p.netns, p.nl = id, nl
	return nil
}

// inNetns reports whether the namespace p serves has an interface of
// index ifindex.
func (p *Program) inNetns(ifindex int) bool {
	p.nlMu.Lock()
	defer p.nlMu.Unlock()
	if p.nl == nil {
		return false
	}
	l, err := p.nl.LinkByIndex(ifindex)
	return err == nil && l.Attrs().Index == ifindex
}

// checkSettings is responder's check, and the refusal of route mode.
func checkSettings(s *responder.Settings) error {
	if err := s.Check(); err != nil {
		return err
	}
	if s.Policy.Mode() != policy.GatewayMode {
		return ErrRouteMode
	}
	return nil
}

// Iface is the program on one interface. Its methods are those the daemon
// uses on a *responder.Responder, with the same meanings; they are safe
// for concurrent use.
type Iface struct {
	p     *Program
	index int
	name  string
	log   *slog.Logger
	link  link.Link     // nil only in tests that run the program without attaching it
	done  chan struct{} // closed by Close

	mu       sync.Mutex // serialises Apply, Close and the map updates
	set      installed
	closed   bool
	final    responder.Stats // the counters at Close
	closeErr error
}

// installed is what the maps hold for an interface.
type installed struct {
	cfg     pxrespIface
	targets []pxrespAddrKey
	onLink  []pxrespAddrKey
}

// desired returns what the maps hold for s on ifindex.
func desired(ifindex int, s *responder.Settings, dryRun bool) installed {
	var in installed
	copy(in.cfg.Mac[:], s.MAC)
	in.cfg.Answer = in.cfg.Mac
	if len(s.Override) > 0 {
		copy(in.cfg.Answer[:], s.Override)
	}
	if dryRun {
		in.cfg.Flags |= pxrespIfaceFlagIFACE_DRY_RUN
	}
	for _, gw := range s.Policy.Gateways() {
		in.targets = appendKey(in.targets, ifindex, netip.PrefixFrom(gw, 32))
	}
	for _, t := range s.Policy.Targets() {
		in.targets = appendKey(in.targets, ifindex, t)
	}
	for _, o := range s.OnLink {
		in.onLink = appendKey(in.onLink, ifindex, o)
	}
	return in
}

// appendKey appends the trie key of prefix p on ifindex to keys, unless it
// is there already or p is not IPv4 (an IPv4 request never matches it).
func appendKey(keys []pxrespAddrKey, ifindex int, p netip.Prefix) []pxrespAddrKey {
	if !p.IsValid() || !p.Addr().Is4() {
		return keys
	}
	k := pxrespAddrKey{
		Prefixlen: 32 + uint32(p.Bits()),
		Ifindex:   uint32(ifindex),
		Addr:      p.Masked().Addr().As4(),
	}
	if slices.Contains(keys, k) {
		return keys
	}
	return append(keys, k)
}

// fill writes cfg's entries into the maps: counters, limit, prefixes,
// then the interface's entry, which makes the program act on it.
func (i *Iface) fill(cfg *responder.Config) error {
	m := &i.p.objs.pxrespMaps
	key := uint32(i.index)
	zero := make([]pxrespCounters, ebpf.MustPossibleCPU())
	if err := m.Stats.Update(key, zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("counters: %w", err)
	}
	lim := ratelimit.New(cfg.RateLimit, cfg.RateBurst, nil)
	if interval, burst := lim.Limit(); interval > 0 {
		v := pxrespLimit{Interval: uint64(interval), Depth: uint64(burst) * uint64(interval)}
		if err := m.Limits.Update(key, &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("rate limit: %w", err)
		}
	}
	return i.install(desired(i.index, &cfg.Settings, cfg.DryRun))
}

// install brings the maps from i.set to next: new prefixes first, then the
// interface's entry, then the stale prefixes out, so that a request never
// meets a half-written state of its own (it may meet the old and the new
// prefixes together, for a moment).
func (i *Iface) install(next installed) error {
	m := &i.p.objs.pxrespMaps
	one := uint8(1)
	for _, k := range next.targets {
		if err := m.Targets.Update(&k, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("target %v: %w", keyPrefix(k), err)
		}
	}
	for _, k := range next.onLink {
		if err := m.Onlink.Update(&k, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("on-link prefix %v: %w", keyPrefix(k), err)
		}
	}
	key := uint32(i.index)
	if err := m.Ifaces.Update(key, &next.cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("interface settings: %w", err)
	}
	var errs []error
	for _, k := range i.set.targets {
		if !slices.Contains(next.targets, k) {
			errs = append(errs, deleteKey(m.Targets, &k))
		}
	}
	for _, k := range i.set.onLink {
		if !slices.Contains(next.onLink, k) {
			errs = append(errs, deleteKey(m.Onlink, &k))
		}
	}
	i.set = next
	return errors.Join(errs...)
}

// clear deletes every entry of the interface from the maps; the
// interface's entry first, which stops the program acting on it.
func (i *Iface) clear() error {
	m := &i.p.objs.pxrespMaps
	key := uint32(i.index)
	errs := []error{deleteKey(m.Ifaces, key), deleteKey(m.Limits, key), deleteKey(m.Stats, key)}
	for _, k := range i.set.targets {
		errs = append(errs, deleteKey(m.Targets, &k))
	}
	for _, k := range i.set.onLink {
		errs = append(errs, deleteKey(m.Onlink, &k))
	}
	i.set = installed{}
	return errors.Join(errs...)
}

// deleteKey deletes key from m; a key that is not there is no error.
func deleteKey(m *ebpf.Map, key any) error {
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete from map %s: %w", m, err)
	}
	return nil
}

func keyPrefix(k pxrespAddrKey) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)-32)
}

// Apply changes what the interface answers, in place: the maps are
// updated and the link stays. It refuses what responder's Apply refuses,
// and route mode (ErrRouteMode); then nothing changes.
func (i *Iface) Apply(s responder.Settings) error {
	if err := checkSettings(&s); err != nil {
		return fmt.Errorf("%s: %w", i.name, err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("%s: %w", i.name, net.ErrClosed)
	}
	dry := i.set.cfg.Flags&pxrespIfaceFlagIFACE_DRY_RUN != 0
	if err := i.install(desired(i.index, &s, dry)); err != nil {
		return fmt.Errorf("%s: %w", i.name, err)
	}
	return nil
}

// MAC returns the hardware address replies carry.
func (i *Iface) MAC() net.HardwareAddr {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.set.cfg.Answer[:])
}

// Bound reports whether the link is still attached to the interface in
// the Program's network namespace: it is not once the interface is gone or
// has left the namespace (a tcx link goes with its interface into another
// namespace, where the program keeps running until Close), or after Close.
func (i *Iface) Bound() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed || i.link == nil {
		return false
	}
	info, err := i.link.Info()
	if err != nil || info.TCX() == nil || info.TCX().Ifindex != uint32(i.index) {
		return false
	}
	return i.p.inNetns(i.index)
}

// Stats returns the interface's counters: the sum of the program's per-CPU
// counters, or after Close the final ones. The packet datapath's storm,
// shedding and socket counters stay 0.
func (i *Iface) Stats() responder.Stats {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return i.final
	}
	return i.read()
}

// read sums the per-CPU counters. The caller holds mu.
func (i *Iface) read() responder.Stats {
	var per []pxrespCounters
	var s responder.Stats
	if err := i.p.objs.Stats.Lookup(uint32(i.index), &per); err != nil {
		return s
	}
	for _, c := range per {
		s.Requests += c.Requests
		s.Replies += c.Replies
		s.Malformed += c.Malformed
		s.SendErrors += c.SendErrors
		s.RateLimited += c.RateLimited
		s.DryRun += c.DryRun
		for v := range s.Ignored {
			s.Ignored[v] += c.Ignored[v]
		}
	}
	return s
}

// Serve blocks until ctx is done or Close is called, and returns nil; a
// done ctx closes the Iface. The program answers whether Serve runs or
// not: Serve is there so that the daemon runs both datapaths alike.
func (i *Iface) Serve(ctx context.Context) error {
	select {
	case <-ctx.Done():
		if err := i.Close(); err != nil {
			i.log.Warn("close", "err", err)
		}
	case <-i.done:
	}
	return nil
}

// Close detaches the link, keeps the final counters and deletes the
// interface's map entries. It is safe to call more than once; later calls
// return the first call's result.
func (i *Iface) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return i.closeErr
	}
	i.closed = true
	var errs []error
	if i.link != nil {
		if err := i.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	i.final = i.read()
	errs = append(errs, i.clear())
	if err := errors.Join(errs...); err != nil {
		i.closeErr = fmt.Errorf("%s: %w", i.name, err)
	}
	close(i.done)
	i.mu.Unlock()

	i.p.mu.Lock()
	if i.p.ifaces[i.index] == i {
		delete(i.p.ifaces, i.index)
	}
	i.p.mu.Unlock()
	return i.closeErr
}
