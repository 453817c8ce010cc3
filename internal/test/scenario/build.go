package scenario

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// Addresses. Everything is inside the scenario's namespaces: pods in
// 10.244.0.0/16, uplinks, underlay and the SNAT client in 198.18.0.0/15,
// the broken-l2 subnet in 192.168.77.0/24.
var (
	uplinkHost = netip.MustParseAddr("198.18.0.1") // a node's up0 (pod-pod, pod-host, snat)
	uplinkSink = netip.MustParseAddr("198.18.0.2") // the sink / remote at the other end

	snatClient = netip.MustParsePrefix("198.19.1.2/24")

	l2A = netip.MustParsePrefix("192.168.77.10/24")
	l2B = netip.MustParsePrefix("192.168.77.20/24")
	// broken-l2's probes: no host has these addresses.
	l2ASide   = netip.MustParseAddr("192.168.77.11") // routed out vethA
	l2BSide   = netip.MustParseAddr("192.168.77.30") // routed out vethB
	l2NoRoute = netip.MustParseAddr("192.168.77.99") // not routed

	underlay1 = netip.MustParseAddr("198.18.0.1") // cross-node: node1's ul0
	underlay2 = netip.MustParseAddr("198.18.0.2") // cross-node: node2's ul0
)

// gatewayArgs is pxresp's command line for a Calico-style node.
func gatewayArgs(glob string) []string {
	return []string{"--iface", glob, "--gw", topo.Gateway.String()}
}

// all is the registry, in the order `--scenario list` prints it.
var all = []*Scenario{
	{
		Name:  "pod-pod",
		Title: "same-node pod to pod on a Calico node",
		Text: `Same-node pod to pod on a Calico node.
  pod0 eth0 10.244.0.2/32 <-veth-> caliA  [host]  caliB <-veth-> pod1 eth0 10.244.0.3/32
  caliA, caliB: "cali" + 11 hex digits, MAC ee:ee:ee:ee:ee:ee, no address.
  pods: 169.254.1.1 dev eth0 scope link; default via 169.254.1.1 dev eth0.
  host: 10.244.0.2 dev caliA scope link; 10.244.0.3 dev caliB scope link; forwarding on;
        up0 198.18.0.1/24 to a sink namespace, default via 198.18.0.2 (the kernel
        reference needs a route to 169.254.1.1 out another interface; pxresp does not).
  pxresp in host: --iface 'cali*' --gw 169.254.1.1
Path pod0 -> pod1:
  1. pod0 routes 10.244.0.3 via 169.254.1.1: it broadcasts
     "who-has 169.254.1.1 tell 10.244.0.2" on its eth0.
  2. pxresp answers that request on caliA: 169.254.1.1 is-at ee:ee:ee:ee:ee:ee.
  3. pod0 sends the echo to ee:ee:ee:ee:ee:ee; it arrives on caliA. The host routes
     10.244.0.3 dev caliB, asks "who-has 10.244.0.3 tell 198.18.0.1" (an ordinary
     request from its uplink address, which pod1 answers) and forwards the echo.
  4. The reply mirrors it: pod1 asks who-has 169.254.1.1 on its eth0, pxresp answers
     on caliB, and the host routes 10.244.0.2 out caliA (after asking for it, too).
  Unlike the kernel's proxy_arp, pxresp does not make the host learn the asking pod's
  MAC from its request, so the host resolves each pod with a request of its own.`,
		build: buildPodPod,
	},
	{
		Name:  "pod-host",
		Title: "a pod pings its host's address",
		Text: `A pod reaches its host's address (the pod has no route to the host,
yet ping works).
  pod0 eth0 10.244.0.2/32 <-veth-> caliA  [host: up0 198.18.0.1/24]
  Routes as in pod-pod; the host's address is the one on its uplink up0.
  pxresp in host: --iface 'cali*' --gw 169.254.1.1
Path pod0 -> 198.18.0.1:
  1. pod0 routes 198.18.0.1 via 169.254.1.1: "who-has 169.254.1.1 tell 10.244.0.2",
     broadcast on eth0.
  2. pxresp answers it on caliA: 169.254.1.1 is-at ee:ee:ee:ee:ee:ee.
  3. The echo arrives on caliA; 198.18.0.1 is local, so the host takes it.
  4. The reply: the host routes 10.244.0.2 dev caliA scope link and resolves it with
     "who-has 10.244.0.2 tell 198.18.0.1" on caliA (pod0 answers for itself).`,
		build: buildPodHost,
	},
	{
		Name:  "snat",
		Title: "a namespace with a /24 address reaches a remote through the host with SNAT",
		Text: `A namespace with a /24 address reaches a remote network through the host with
SNAT.
  ns1 c-eth0 198.19.1.2/24 <-veth-> veth-ns1 (no address)  [host]
      up0 198.18.0.1/24 <-veth-> remote eth0 198.18.0.2/24
  ns1: 169.254.1.1 dev c-eth0 scope link; default via 169.254.1.1 dev c-eth0.
  host: 198.19.1.0/24 dev veth-ns1 scope link; default via 198.18.0.2; forwarding on;
        iptables -t nat -A POSTROUTING -s 198.19.1.0/24 -j MASQUERADE (host only).
  remote: only its own 198.18.0.0/24; no route back to 198.19.1.0/24.
  pxresp in host: --iface 'veth*' --gw 169.254.1.1
Path ns1 -> 198.18.0.2:
  1. 198.18.0.2 is outside ns1's /24, so it goes via 169.254.1.1:
     "who-has 169.254.1.1 tell 198.19.1.2", broadcast on c-eth0.
  2. pxresp answers it on veth-ns1 with veth-ns1's MAC.
  3. The host routes 198.18.0.2 out up0; MASQUERADE rewrites the source
     198.19.1.2 to 198.18.0.1.
  4. The remote replies to 198.18.0.1, on its own subnet. Conntrack rewrites the
     destination back to 198.19.1.2 and the host sends it out veth-ns1, after asking
     "who-has 198.19.1.2 tell 198.18.0.1" there. The host needs that route to
     198.19.1.0/24 for the reply.
  Checked: the remote's UDP socket sees the source 198.18.0.1; the remote has no route
  to 198.19.1.2; the MASQUERADE rule counted packets.`,
		build: buildSNAT,
	},
	{
		Name:  "broken-l2",
		Title: "two hosts on one subnet without L2 between them, joined by a proxy host (route mode)",
		Text: `Two hosts in one subnet with no L2 link between them, joined by a proxy host
  a eth0 192.168.77.10/24 <-veth-> vethA  [proxy]  vethB <-veth-> b eth0 192.168.77.20/24
  proxy: no address; 192.168.77.10 dev vethA; 192.168.77.20 dev vethB; forwarding on;
         for the checks also 192.168.77.11 dev vethA, 192.168.77.30 dev vethB.
  pxresp in proxy: --mode route --iface 'veth*'
Path a -> b:
  1. 192.168.77.20 is inside a's /24, so a asks for it directly:
     "who-has 192.168.77.20 tell 192.168.77.10", broadcast on eth0.
  2. pxresp answers it on vethA with vethA's MAC, because the proxy routes
     192.168.77.20 out another interface (vethB): the kernel's proxy_arp rule.
  3. The proxy forwards the echo out vethB, after asking "who-has 192.168.77.20 tell
     0.0.0.0" there (it has no address of its own; b answers the probe).
  4. The reply mirrors it: b asks who-has 192.168.77.10 on its eth0, pxresp answers on
     vethB (192.168.77.10 is routed out vethA), the proxy forwards out vethA.
  Checked with raw requests from a: who-has 192.168.77.30 (routed out vethB, no host)
  is answered; 192.168.77.11 (routed back out vethA) and 192.168.77.99 (no route) are
  not, as with the kernel.`,
		build: func(ctx context.Context, n *Net, in *Instance) error { return buildBrokenL2(ctx, n, in, false) },
	},
	{
		Name:  "broken-l2-proxy",
		Title: "broken-l2 with explicit proxy entries (config file) instead of route mode",
		Text: `broken-l2's topology, answered by explicit proxy entries instead of route mode:
the equivalent of "ip neigh add proxy 192.168.77.20 dev vethA" and
"ip neigh add proxy 192.168.77.10 dev vethB". pxresp in proxy: --config FILE with
  rules:
    - {name: a-side, interfaces: [vethA], proxy: [192.168.77.20]}
    - {name: b-side, interfaces: [vethB], proxy: [192.168.77.10]}
Path a -> b as in broken-l2, but pxresp answers only who-has 192.168.77.20 on vethA and
who-has 192.168.77.10 on vethB, and each only while the proxy routes the address out
another interface. The kernel reference is those two proxy entries, with proxy_arp off.
Checked with raw requests from a: who-has 192.168.77.30 (routed out vethB, but no entry)
is not answered here, unlike in broken-l2; 192.168.77.11 and 192.168.77.99 are not either.`,
		build: func(ctx context.Context, n *Net, in *Instance) error { return buildBrokenL2(ctx, n, in, true) },
	},
	{
		Name:  "cross-node",
		Title: "pod to pod across two Calico-style nodes routed over an underlay",
		Text: `Pod to pod across two nodes, routed as Calico
does without encapsulation (BGP, like flannel's host-gw).
  n1pod0 eth0 10.244.1.2/32 <-veth-> caliA  [node1]  ul0 198.18.0.1/24
    <-underlay veth-> ul0 198.18.0.2/24  [node2]  caliB <-veth-> n2pod0 eth0 10.244.2.2/32
  pods: 169.254.1.1 dev eth0 scope link; default via 169.254.1.1 dev eth0.
  node1: 10.244.1.2 dev caliA scope link; 10.244.2.0/24 via 198.18.0.2 dev ul0.
  node2: 10.244.2.2 dev caliB scope link; 10.244.1.0/24 via 198.18.0.1 dev ul0.
  Each node also has up0 to a sink of its own (198.18.1.0/24, 198.18.2.0/24) and
  its default route there, for the kernel reference.
  pxresp on each node: --iface 'cali*' --gw 169.254.1.1
Path n1pod0 -> n2pod0:
  1. n1pod0 broadcasts "who-has 169.254.1.1 tell 10.244.1.2" on its eth0;
     pxresp on node1 answers it on caliA with ee:ee:ee:ee:ee:ee.
  2. node1 routes 10.244.2.2 via 198.18.0.2 out ul0 (ordinary ARP between the nodes'
     underlay addresses).
  3. node2 routes 10.244.2.2 dev caliB, asks "who-has 10.244.2.2 tell 198.18.2.1"
     there (the pod answers for itself) and delivers the echo.
  4. The reply: n2pod0 asks who-has 169.254.1.1 on its eth0; pxresp on node2 answers
     on caliB; node2 routes 10.244.1.0/24 via 198.18.0.1 back to node1, which
     delivers it out caliA (after asking who-has 10.244.1.2 there).
  Each node needs its own answerer: every pod's first hop is its own node.`,
		build: buildCrossNode,
	},
}

// node is a Calico-style node: a router namespace with up0 to a sink and a
// default route there.
type node struct {
	ns   *topo.NS
	sink *topo.NS
}

// addNode makes router namespace short, leaf namespace sinkShort, and the
// uplink up0 hostIP/24 <-> sink eth0 sinkIP/24, with the node's default
// route via sinkIP.
func addNode(ctx context.Context, n *Net, in *Instance, short, sinkShort string, hostIP, sinkIP netip.Addr) (*node, error) {
	h, err := n.addNS(ctx, short, router)
	if err != nil {
		return nil, err
	}
	s, err := n.addNS(ctx, sinkShort, leaf)
	if err != nil {
		return nil, err
	}
	if err := veth(ctx, h, "up0", nil, s, "eth0", nil); err != nil {
		return nil, err
	}
	if err := h.IP(ctx, "addr", "add", hostIP.String()+"/24", "dev", "up0"); err != nil {
		return nil, err
	}
	if err := s.IP(ctx, "addr", "add", sinkIP.String()+"/24", "dev", "eth0"); err != nil {
		return nil, err
	}
	if err := up(ctx, nsLink{h, "up0"}, nsLink{s, "eth0"}); err != nil {
		return nil, err
	}
	if err := h.IP(ctx, "route", "add", "default", "via", sinkIP.String(), "dev", "up0"); err != nil {
		return nil, err
	}
	in.Layout = append(in.Layout,
		fmt.Sprintf("%s: up0 %s/24, default via %s", h.Name, hostIP, sinkIP),
		fmt.Sprintf("%s: eth0 %s/24 (the other end of %s's up0)", s.Name, sinkIP, short))
	return &node{ns: h, sink: s}, nil
}

// pod is a Calico-style pod.
type pod struct {
	ns     *topo.NS
	ip     netip.Addr
	hostIf string
}

// addPod makes leaf namespace short with eth0 ip/32, the veth peer of
// host interface cali... (MAC ee:ee:ee:ee:ee:ee, no address), the host's
// /32 route to it, and the pod's routes to 169.254.1.1 (gateway first).
func addPod(ctx context.Context, n *Net, in *Instance, host *topo.NS, short string, ip netip.Addr) (*pod, error) {
	ns, err := n.addNS(ctx, short, leaf)
	if err != nil {
		return nil, err
	}
	p := &pod{ns: ns, ip: ip, hostIf: caliName(short)}
	if err := veth(ctx, host, p.hostIf, topo.GatewayMAC, ns, "eth0", nil); err != nil {
		return nil, err
	}
	if err := ns.IP(ctx, "addr", "add", ip.String()+"/32", "dev", "eth0"); err != nil {
		return nil, err
	}
	if err := up(ctx, nsLink{host, p.hostIf}, nsLink{ns, "eth0"}); err != nil {
		return nil, err
	}
	gw := topo.Gateway.String()
	for _, st := range []struct {
		ns   *topo.NS
		args []string
	}{
		{host, []string{"route", "add", ip.String() + "/32", "dev", p.hostIf, "scope", "link"}},
		{ns, []string{"route", "add", gw, "dev", "eth0", "scope", "link"}},
		{ns, []string{"route", "add", "default", "via", gw, "dev", "eth0"}},
	} {
		if err := st.ns.IP(ctx, st.args...); err != nil {
			return nil, err
		}
	}
	in.Layout = append(in.Layout, fmt.Sprintf("%s: eth0 %s/32, default via %s  <->  %s %s ee:ee:ee:ee:ee:ee (%s dev %s)",
		ns.Name, ip, gw, host.Name, p.hostIf, ip, p.hostIf))
	return p, nil
}

// calicoAnswerer is the answerer of a Calico-style node.
func calicoAnswerer(host *topo.NS, pods ...*pod) *Answerer {
	a := &Answerer{NS: host, Args: gatewayArgs("cali*")}
	for _, p := range pods {
		a.Attach = append(a.Attach, p.hostIf)
		a.ProxyARP = append(a.ProxyARP, p.hostIf)
	}
	return a
}

// gatewayNeigh is the pod's expected neighbour entry for 169.254.1.1.
func gatewayNeigh(p *pod, what string) Neigh {
	return Neigh{NS: p.ns, Dev: "eth0", Addr: topo.Gateway, MAC: topo.GatewayMAC, What: what}
}

func buildPodPod(ctx context.Context, n *Net, in *Instance) error {
	nd, err := addNode(ctx, n, in, "host", "sink", uplinkHost, uplinkSink)
	if err != nil {
		return err
	}
	p0, err := addPod(ctx, n, in, nd.ns, "pod0", netip.MustParseAddr("10.244.0.2"))
	if err != nil {
		return err
	}
	p1, err := addPod(ctx, n, in, nd.ns, "pod1", netip.MustParseAddr("10.244.0.3"))
	if err != nil {
		return err
	}
	in.Answerers = []*Answerer{calicoAnswerer(nd.ns, p0, p1)}
	in.Pings = []Ping{
		{From: p0.ns, To: p1.ip, What: "pod0 -> pod1"},
		{From: p1.ns, To: p0.ip, What: "pod1 -> pod0"},
	}
	in.Neighs = []Neigh{gatewayNeigh(p0, "pod0's gateway"), gatewayNeigh(p1, "pod1's gateway")}
	return nil
}

func buildPodHost(ctx context.Context, n *Net, in *Instance) error {
	nd, err := addNode(ctx, n, in, "host", "sink", uplinkHost, uplinkSink)
	if err != nil {
		return err
	}
	p0, err := addPod(ctx, n, in, nd.ns, "pod0", netip.MustParseAddr("10.244.0.2"))
	if err != nil {
		return err
	}
	in.Answerers = []*Answerer{calicoAnswerer(nd.ns, p0)}
	in.Pings = []Ping{{From: p0.ns, To: uplinkHost, What: "pod0 -> host " + uplinkHost.String()}}
	in.Neighs = []Neigh{gatewayNeigh(p0, "pod0's gateway")}
	return nil
}

func buildSNAT(ctx context.Context, n *Net, in *Instance) error {
	fw, err := findFirewall()
	if err != nil {
		return err
	}
	nd, err := addNode(ctx, n, in, "host", "remote", uplinkHost, uplinkSink)
	if err != nil {
		return err
	}
	h := nd.ns
	c, err := n.addNS(ctx, "ns1", leaf)
	if err != nil {
		return err
	}
	const hostIf, clientIf = "veth-ns1", "c-eth0"
	if err := veth(ctx, h, hostIf, nil, c, clientIf, nil); err != nil {
		return err
	}
	if err := c.IP(ctx, "addr", "add", snatClient.String(), "dev", clientIf); err != nil {
		return err
	}
	if err := up(ctx, nsLink{h, hostIf}, nsLink{c, clientIf}); err != nil {
		return err
	}
	gw := topo.Gateway.String()
	for _, st := range []struct {
		ns   *topo.NS
		args []string
	}{
		{c, []string{"route", "add", gw, "dev", clientIf, "scope", "link"}},
		{c, []string{"route", "add", "default", "via", gw, "dev", clientIf}},
		{h, []string{"route", "add", snatClient.Masked().String(), "dev", hostIf, "scope", "link"}},
	} {
		if err := st.ns.IP(ctx, st.args...); err != nil {
			return err
		}
	}
	masq, err := fw.masquerade(ctx, h, snatClient.Masked())
	if err != nil {
		return err
	}
	mac, err := h.LinkMAC(ctx, hostIf)
	if err != nil {
		return err
	}
	in.Layout = append(in.Layout,
		fmt.Sprintf("%s: %s %s, default via %s  <->  %s %s %s (no address; %s dev %s)",
			c.Name, clientIf, snatClient, gw, h.Name, hostIf, mac, snatClient.Masked(), hostIf),
		fmt.Sprintf("%s: %s", h.Name, masq))
	in.Answerers = []*Answerer{{NS: h, Args: gatewayArgs("veth*"), Attach: []string{hostIf}, ProxyARP: []string{hostIf}}}
	in.Pings = []Ping{{From: c, To: uplinkSink, What: "ns1 -> remote " + uplinkSink.String()}}
	in.Neighs = []Neigh{{NS: c, Dev: clientIf, Addr: topo.Gateway, MAC: mac, What: "ns1's gateway (" + hostIf + "'s MAC)"}}
	remote := nd.sink
	in.Checks = []Check{
		{
			What: "the remote sees the host's uplink address " + uplinkHost.String() + " as the source",
			Run: func(ctx context.Context) (string, error) {
				src, err := udpSource(ctx, c, remote, uplinkSink)
				if err != nil {
					return "", err
				}
				d := fmt.Sprintf("a UDP datagram from %s (%s) to %s: the remote's socket got it from %s",
					c.Name, snatClient.Addr(), uplinkSink, src)
				if src.Addr() != uplinkHost {
					return d, fmt.Errorf("source %s, want %s (MASQUERADE did not apply)", src.Addr(), uplinkHost)
				}
				return d, nil
			},
		},
		{
			What: "the remote has no route back to " + snatClient.Addr().String(),
			Cmd:  "ip -n " + remote.Name + " route get " + snatClient.Addr().String(),
			Run: func(ctx context.Context) (string, error) {
				ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
				defer cancel()
				out, err := exec.CommandContext(ctx, "ip", "-n", remote.Name, "route", "get", snatClient.Addr().String()).CombinedOutput()
				d := strings.TrimSpace(string(out))
				if err == nil {
					return d, fmt.Errorf("the remote has a route to %s: SNAT is not what makes the reply work", snatClient.Addr())
				}
				if !strings.Contains(d, "unreachable") {
					return d, fmt.Errorf("ip route get: %v", err)
				}
				return d, nil
			},
		},
		{
			What: "the MASQUERADE rule counted packets",
			Cmd:  fw.counterCmd(h),
			Run: func(ctx context.Context) (string, error) {
				pkts, err := fw.counter(ctx, h)
				if err != nil {
					return "", err
				}
				d := fmt.Sprintf("MASQUERADE matched %d packets (the first of each connection)", pkts)
				if pkts == 0 {
					return d, fmt.Errorf("the MASQUERADE rule counted no packets")
				}
				return d, nil
			},
		},
	}
	return nil
}

func buildBrokenL2(ctx context.Context, n *Net, in *Instance, entries bool) error {
	a, err := n.addNS(ctx, "a", leaf)
	if err != nil {
		return err
	}
	b, err := n.addNS(ctx, "b", leaf)
	if err != nil {
		return err
	}
	px, err := n.addNS(ctx, "proxy", router)
	if err != nil {
		return err
	}
	if err := veth(ctx, px, "vethA", nil, a, "eth0", nil); err != nil {
		return err
	}
	if err := veth(ctx, px, "vethB", nil, b, "eth0", nil); err != nil {
		return err
	}
	if err := a.IP(ctx, "addr", "add", l2A.String(), "dev", "eth0"); err != nil {
		return err
	}
	if err := b.IP(ctx, "addr", "add", l2B.String(), "dev", "eth0"); err != nil {
		return err
	}
	if err := up(ctx, nsLink{px, "vethA"}, nsLink{a, "eth0"}, nsLink{px, "vethB"}, nsLink{b, "eth0"}); err != nil {
		return err
	}
	if err := px.IP(ctx, "route", "add", l2A.Addr().String(), "dev", "vethA", "scope", "link"); err != nil {
		return err
	}
	if err := px.IP(ctx, "route", "add", l2B.Addr().String(), "dev", "vethB", "scope", "link"); err != nil {
		return err
	}
	// Two routes for the probes below, to addresses where no host is.
	if err := px.IP(ctx, "route", "add", l2BSide.String(), "dev", "vethB", "scope", "link"); err != nil {
		return err
	}
	if err := px.IP(ctx, "route", "add", l2ASide.String(), "dev", "vethA", "scope", "link"); err != nil {
		return err
	}
	macA, err := px.LinkMAC(ctx, "vethA")
	if err != nil {
		return err
	}
	macB, err := px.LinkMAC(ctx, "vethB")
	if err != nil {
		return err
	}
	in.Layout = append(in.Layout,
		fmt.Sprintf("%s: eth0 %s  <->  %s vethA %s", a.Name, l2A, px.Name, macA),
		fmt.Sprintf("%s: eth0 %s  <->  %s vethB %s", b.Name, l2B, px.Name, macB),
		fmt.Sprintf("%s: no address; %s and %s dev vethA; %s and %s dev vethB; forwarding on",
			px.Name, l2A.Addr(), l2ASide, l2B.Addr(), l2BSide))
	ans := &Answerer{NS: px, Attach: []string{"vethA", "vethB"}}
	if entries {
		ans.Config = proxyConfig
		ans.ProxyEntries = []ProxyEntry{{Addr: l2B.Addr(), Dev: "vethA"}, {Addr: l2A.Addr(), Dev: "vethB"}}
	} else {
		ans.Args = []string{"--mode", "route", "--iface", "veth*"}
		ans.ProxyARP = []string{"vethA", "vethB"}
	}
	in.Answerers = []*Answerer{ans}
	in.Pings = []Ping{
		{From: a, To: l2B.Addr(), What: "a -> b"},
		{From: b, To: l2A.Addr(), What: "b -> a"},
	}
	in.Neighs = []Neigh{
		{NS: a, Dev: "eth0", Addr: l2B.Addr(), MAC: macA, What: "a's entry for b (vethA's MAC)"},
		{NS: b, Dev: "eth0", Addr: l2A.Addr(), MAC: macB, What: "b's entry for a (vethB's MAC)"},
	}
	// Raw requests from a that tell the two variants apart: route mode
	// answers every address routed out another interface, a proxy entry
	// only its own address; neither answers for an address routed back out
	// vethA, nor one without a route.
	probe := func(target netip.Addr, want net.HardwareAddr, why string) Check {
		return arpProbe(a, "eth0", l2A.Addr(), target, want, why)
	}
	if entries {
		in.Checks = []Check{probe(l2BSide, nil, "routed out vethB, but no proxy entry")}
	} else {
		in.Checks = []Check{probe(l2BSide, macA, "routed out vethB")}
	}
	in.Checks = append(in.Checks,
		probe(l2ASide, nil, "routed back out vethA, where the request came from"),
		probe(l2NoRoute, nil, "no route"))
	return nil
}

// proxyConfig is broken-l2-proxy's pxresp config file.
const proxyConfig = `# broken-l2-proxy: like "ip neigh add proxy 192.168.77.20 dev vethA" and
# "ip neigh add proxy 192.168.77.10 dev vethB".
rules:
  - name: a-side
    interfaces: [vethA]
    proxy: [192.168.77.20]
  - name: b-side
    interfaces: [vethB]
    proxy: [192.168.77.10]
`

func buildCrossNode(ctx context.Context, n *Net, in *Instance) error {
	n1, err := addNode(ctx, n, in, "node1", "sink1", netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2"))
	if err != nil {
		return err
	}
	n2, err := addNode(ctx, n, in, "node2", "sink2", netip.MustParseAddr("198.18.2.1"), netip.MustParseAddr("198.18.2.2"))
	if err != nil {
		return err
	}
	if err := veth(ctx, n1.ns, "ul0", nil, n2.ns, "ul0", nil); err != nil {
		return err
	}
	if err := n1.ns.IP(ctx, "addr", "add", underlay1.String()+"/24", "dev", "ul0"); err != nil {
		return err
	}
	if err := n2.ns.IP(ctx, "addr", "add", underlay2.String()+"/24", "dev", "ul0"); err != nil {
		return err
	}
	if err := up(ctx, nsLink{n1.ns, "ul0"}, nsLink{n2.ns, "ul0"}); err != nil {
		return err
	}
	if err := n1.ns.IP(ctx, "route", "add", "10.244.2.0/24", "via", underlay2.String(), "dev", "ul0"); err != nil {
		return err
	}
	if err := n2.ns.IP(ctx, "route", "add", "10.244.1.0/24", "via", underlay1.String(), "dev", "ul0"); err != nil {
		return err
	}
	in.Layout = append(in.Layout,
		fmt.Sprintf("underlay: %s ul0 %s/24 <-> %s ul0 %s/24", n1.ns.Name, underlay1, n2.ns.Name, underlay2),
		fmt.Sprintf("%s: 10.244.2.0/24 via %s dev ul0", n1.ns.Name, underlay2),
		fmt.Sprintf("%s: 10.244.1.0/24 via %s dev ul0", n2.ns.Name, underlay1))
	p1, err := addPod(ctx, n, in, n1.ns, "n1pod0", netip.MustParseAddr("10.244.1.2"))
	if err != nil {
		return err
	}
	p2, err := addPod(ctx, n, in, n2.ns, "n2pod0", netip.MustParseAddr("10.244.2.2"))
	if err != nil {
		return err
	}
	in.Answerers = []*Answerer{calicoAnswerer(n1.ns, p1), calicoAnswerer(n2.ns, p2)}
	in.Pings = []Ping{
		{From: p1.ns, To: p2.ip, What: "node1's pod -> node2's pod"},
		{From: p2.ns, To: p1.ip, What: "node2's pod -> node1's pod"},
	}
	in.Neighs = []Neigh{gatewayNeigh(p1, "node1's pod's gateway"), gatewayNeigh(p2, "node2's pod's gateway")}
	return nil
}
