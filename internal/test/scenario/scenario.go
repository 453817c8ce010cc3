// Package scenario builds the setups where some host answers ARP for
// others (same-node pods, pod to host, SNAT, a split L2 segment, two nodes)
// out of network namespaces, for privileged end-to-end tests and for
// `make demo SCENARIO=name`. Each scenario is a topology where some host
// must answer ARP on behalf of others; with kernel proxy_arp off and nothing
// in its place the traffic fails, and with pxresp (or, as the reference,
// the kernel's proxy_arp) answering it flows.
//
// A Scenario is static (name, title, description); Build makes an Instance:
// the namespaces, the answerers (where pxresp runs, with which arguments,
// and which kernel settings stand for it in the reference run), the pings
// that must go through, the neighbour entries that must show the proxied
// MAC, and further checks (SNAT's source address). Every namespace is named
// by the caller's prefix (topo.NewPrefix) and Instance.Close removes them
// all; nothing is sent outside them.
//
// Everything needs root; see internal/privtest.
package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// Scenario is one setup.
type Scenario struct {
	// Name is what `make demo SCENARIO=` and `pxresp-demo --scenario` take.
	Name string
	// Title is a one-line summary.
	Title string
	// Text describes the topology and the traffic path hop by hop, and
	// which ARP request pxresp answers on which interface (docs/scenarios.md).
	Text string

	build func(ctx context.Context, n *Net, in *Instance) error
}

// All returns every scenario, in a fixed order.
func All() []*Scenario { return slices.Clone(all) }

// Lookup returns the scenario called name.
func Lookup(name string) (*Scenario, bool) {
	i := slices.IndexFunc(all, func(s *Scenario) bool { return s.Name == name })
	if i < 0 {
		return nil, false
	}
	return all[i], true
}

// Names returns the scenarios' names.
func Names() []string {
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
	}
	return names
}

// Instance is a built scenario.
type Instance struct {
	Scenario *Scenario
	Net      *Net
	// Layout describes what was built, a line per namespace or link.
	Layout []string
	// Answerers are where pxresp runs (one process each).
	Answerers []*Answerer
	// Pings must all get replies with an ARP answerer, and none without.
	Pings []Ping
	// Neighs are the neighbour entries that, after the pings, must hold the
	// proxied MAC.
	Neighs []Neigh
	// Checks must pass, after the pings, with an ARP answerer.
	Checks []Check
}

// Answerer is one ARP answerer: a pxresp process, or, in the reference
// run, the kernel settings it replaces.
type Answerer struct {
	NS *topo.NS
	// Args are pxresp's arguments; when Config is set, the caller writes it
	// to a file and appends "--config FILE".
	Args   []string
	Config string
	// Attach lists the interfaces pxresp must attach before it serves.
	Attach []string
	// ProxyARP lists the interfaces where the kernel reference sets
	// net.ipv4.conf.IF.proxy_arp=1 (and proxy_delay 0, as Calico does).
	ProxyARP []string
	// ProxyEntries are the kernel reference's `ip neigh add proxy ADDR dev
	// IF` entries (with proxy_delay 0 on IF).
	ProxyEntries []ProxyEntry
}

// WriteConfig writes the answerer's config file into dir, named after its
// namespace, and returns its path; "" when it has none.
func (a *Answerer) WriteConfig(dir string) (string, error) {
	if a.Config == "" {
		return "", nil
	}
	path := filepath.Join(dir, a.NS.Name+".yaml")
	if err := os.WriteFile(path, []byte(a.Config), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// PxrespArgs returns pxresp's arguments; configPath is WriteConfig's result.
func (a *Answerer) PxrespArgs(configPath string) []string {
	args := slices.Clone(a.Args)
	if configPath != "" {
		args = append(args, "--config", configPath)
	}
	return args
}

// ProxyEntry is one explicit proxy neighbour entry.
type ProxyEntry struct {
	Addr netip.Addr
	Dev  string
}

// Ping is an ICMP echo from a namespace to an address.
type Ping struct {
	From *topo.NS
	To   netip.Addr
	What string // e.g. "pod0 -> pod1"
}

// Neigh is a neighbour entry expected after the pings: in NS, on Dev, Addr
// is at MAC (the MAC of the interface that answered by proxy).
type Neigh struct {
	NS   *topo.NS
	Dev  string
	Addr netip.Addr
	MAC  net.HardwareAddr
	What string
}

// Check is a further check that must pass with an answerer.
type Check struct {
	What string
	// Cmd is the command line it runs, for a transcript; "" when it runs
	// none (the check is done in Go).
	Cmd string
	// Run returns a detail line for the transcript, or an error.
	Run func(ctx context.Context) (string, error)
}

// Build builds the scenario in namespaces named prefix + short names. On
// error it removes what it made.
func (s *Scenario) Build(ctx context.Context, prefix string) (_ *Instance, err error) {
	n, err := newNet(prefix)
	if err != nil {
		return nil, err
	}
	in := &Instance{Scenario: s, Net: n}
	defer func() {
		if err != nil {
			if cerr := n.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup after failed build: %w", cerr))
			}
		}
	}()
	if err := s.build(ctx, n, in); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", s.Name, err)
	}
	return in, nil
}

// Close removes every namespace of the instance. Stop pxresp first: a
// process in a deleted namespace keeps it alive, unnamed.
func (in *Instance) Close() error { return in.Net.Close() }

// FlushNeigh empties the neighbour table of every namespace (not the
// permanent entries, nor the proxy entries), so that the next run starts
// with a fresh ARP exchange.
func (in *Instance) FlushNeigh(ctx context.Context) error {
	var errs []error
	for _, ns := range in.Net.Namespaces() {
		errs = append(errs, ns.IP(ctx, "neigh", "flush", "all"))
	}
	return errors.Join(errs...)
}

// Kernel turns the kernel reference on or off for every answerer.
func (in *Instance) Kernel(ctx context.Context, on bool) error {
	var errs []error
	for _, a := range in.Answerers {
		errs = append(errs, a.Kernel(ctx, on))
	}
	return errors.Join(errs...)
}

// Kernel turns the kernel's proxy ARP for this answerer on or off:
// proxy_arp on ProxyARP's interfaces, the proxy entries.
func (a *Answerer) Kernel(ctx context.Context, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	for _, ifname := range a.ProxyARP {
		if err := a.NS.Sysctls(ctx, "net.ipv4.conf."+ifname+".proxy_arp="+v, "net.ipv4.neigh."+ifname+".proxy_delay=0"); err != nil {
			return err
		}
	}
	for _, e := range a.ProxyEntries {
		if on {
			if err := a.NS.Sysctls(ctx, "net.ipv4.neigh."+e.Dev+".proxy_delay=0"); err != nil {
				return err
			}
			if err := a.NS.IP(ctx, "neigh", "replace", "proxy", e.Addr.String(), "dev", e.Dev); err != nil {
				return err
			}
		} else if err := a.NS.IP(ctx, "neigh", "del", "proxy", e.Addr.String(), "dev", e.Dev); err != nil && !strings.Contains(err.Error(), "No such file") {
			return err
		}
	}
	return nil
}

// KernelOff returns an error unless the kernel would stay silent in every
// answerer's namespace: proxy_arp 0 on all, default and every served
// interface, and no proxy neighbour entry.
func (in *Instance) KernelOff(ctx context.Context) error {
	var errs []error
	for _, a := range in.Answerers {
		ifs := []string{"all", "default"}
		ifs = append(ifs, a.Attach...)
		for _, ifname := range ifs {
			key := "net.ipv4.conf." + ifname + ".proxy_arp"
			v, err := a.NS.ReadSysctl(ctx, key)
			if err != nil {
				errs = append(errs, err)
			} else if v != "0" {
				errs = append(errs, fmt.Errorf("%s in %s is %s", key, a.NS.Name, v))
			}
		}
		out, err := a.NS.IPOut(ctx, "-j", "neigh", "show", "proxy")
		if err != nil {
			errs = append(errs, err)
		} else if s := strings.TrimSpace(out); s != "" && s != "[]" {
			errs = append(errs, fmt.Errorf("proxy entries in %s: %s", a.NS.Name, s))
		}
	}
	return errors.Join(errs...)
}

// PingArgs returns the ping command line: with wantReply, three echoes
// (success is any reply); without, one echo waiting one second.
func PingArgs(to netip.Addr, wantReply bool) []string {
	if wantReply {
		return []string{"ping", "-n", "-c3", "-i0.2", "-W2", to.String()}
	}
	return []string{"ping", "-n", "-c1", "-W1", to.String()}
}

// Run pings and reports whether a reply came, with ping's output.
func (p Ping) Run(ctx context.Context, wantReply bool) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := p.From.Exec(ctx, PingArgs(p.To, wantReply)...)
	if err != nil && !strings.Contains(err.Error(), "exit status") {
		out += "\n" + err.Error()
	}
	return err == nil, out
}

// neighEntry is the part of `ip -j neigh show` read here.
type neighEntry struct {
	Dst    string   `json:"dst"`
	Dev    string   `json:"dev"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// Cmd is the command line that shows the entry.
func (nb Neigh) Cmd() string {
	return "ip -n " + nb.NS.Name + " neigh show " + nb.Addr.String() + " dev " + nb.Dev
}

// Check reads the entry and returns its text ("ADDR lladdr MAC STATE"); the
// error says how it differs from the expected MAC.
func (nb Neigh) Check(ctx context.Context) (string, error) {
	out, err := nb.NS.IPOut(ctx, "-j", "neigh", "show", nb.Addr.String(), "dev", nb.Dev)
	if err != nil {
		return "", err
	}
	var es []neighEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		return "", fmt.Errorf("%s: unexpected output %q: %v", nb.Cmd(), out, err)
	}
	if len(es) == 0 {
		return "", fmt.Errorf("%s: no entry", nb.Cmd())
	}
	e := es[0]
	text := strings.TrimSpace(fmt.Sprintf("%s lladdr %s %s", nb.Addr, e.LLAddr, strings.Join(e.State, ",")))
	got, err := net.ParseMAC(e.LLAddr)
	if err != nil || got.String() != nb.MAC.String() {
		return text, fmt.Errorf("%s is at %q, want %s", nb.Addr, e.LLAddr, nb.MAC)
	}
	return text, nil
}
