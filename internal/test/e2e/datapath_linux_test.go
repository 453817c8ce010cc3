package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scrape"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// The choice of datapath, end to end: --datapath ebpf answers from the
// program and keeps what serving it needs; without CAP_BPF, ebpf refuses
// to start and auto falls back to AF_PACKET, saying so; a reload that
// moves an interface into a route-mode rule moves it to AF_PACKET.

// nobodyWith runs pxresp as nobody holding caps (setpriv's names, such as
// "net_raw,net_admin") as ambient capabilities, and nothing else.
func nobodyWith(caps string) []string {
	var plus []string
	for c := range strings.SplitSeq(caps, ",") {
		plus = append(plus, "+"+c)
	}
	set := "-all," + strings.Join(plus, ",")
	return slices.Concat(procstat.AsNobody, []string{"--inh-caps", set, "--ambient-caps", set, "--bounding-set", set})
}

// pingGateway pings the host's uplink address from pod through its
// gateway, which the pod's kernel resolves with ARP first.
func pingGateway(t *testing.T, tp *topo.Topology, pod *topo.Pod) {
	t.Helper()
	if out := topotest.Exec(t, pod.NS, "ping", "-c", "2", "-i", "0.2", "-W", "1", tp.UplinkIP.String()); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping from %s through the gateway: %s", pod.NS.Name, out)
	}
}

// statusDatapaths returns the datapath of every attached interface in
// pxresp's /status, and the status itself.
func statusDatapaths(t *testing.T, tp *topo.Topology, addr string) (map[string]string, status.Status) {
	t.Helper()
	code, body, _ := scrape.Fetch(t, nsHTTPClient(tp.Host), "http://"+addr+status.Path)
	var st status.Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET %s: %d %s", status.Path, code, body)
	}
	m := map[string]string{}
	for _, i := range st.Interfaces {
		if i.State == status.Attached {
			m[i.Name] = i.Datapath
		}
	}
	return m, st
}

// stopClean stops p and requires that it logged no error.
func stopClean(t *testing.T, p *pxproc.Proc) {
	t.Helper()
	p.StopT(t, time.Second)
	if n := p.Count(pxproc.Has("level=ERROR")); n != 0 {
		t.Errorf("%d error lines in the log:\n%s", n, p.Log())
	}
}

// TestDatapathEBPF: with --datapath ebpf, as root, the program answers:
// the pods' kernels resolve their gateway and ping through it, and a raw
// request is answered with the kernel's reply; the attach lines, /status
// and pxresp_datapath_info say ebpf, and the replies are counted under the
// packet datapath's metric names. (TestPrivilegesDroppedDaemon checks
// what it keeps, and that it attaches new interfaces after the drop.)
func TestDatapathEBPF(t *testing.T) {
	tp := newTopo(t, 2)
	a, b := tp.Pods[0], tp.Pods[1]
	addr := freeLoopbackAddr(t, tp.Host)
	p := startPxresp(t, tp, "--datapath", "ebpf", "--iface", "cali*", "--gw", topo.Gateway.String(), "--metrics-addr", addr)
	p.WaitT(t, pxproc.Has("msg=datapath", "datapath=ebpf", "reason=requested"), 1)
	p.WaitT(t, pxproc.Has("msg=attach", "datapath=ebpf"), 2)
	for _, pod := range tp.Pods {
		if n := len(topotest.TCXIngress(t, tp.Host, pod.HostIf)); n != 1 {
			t.Errorf("%s: %d tcx ingress programs, want pxresp's", pod.HostIf, n)
		}
	}
	pingGateway(t, tp, a)
	if out := topotest.Exec(t, a.NS, "ping", "-c", "2", "-i", "0.2", "-W", "1", b.IP.String()); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping pod to pod: %s", out)
	}
	c := topotest.Client(t, b)
	req := arptest.Request(b.MAC, b.IP, topo.Gateway, arptest.Broadcast)
	if r := topotest.Ask(t, c, req, 2*time.Second); !bytes.Equal(r, secReply(req, topo.GatewayMAC)) {
		t.Errorf("reply %x, want the kernel's %x", r, secReply(req, topo.GatewayMAC))
	}

	dps, st := statusDatapaths(t, tp, addr)
	if dps[a.HostIf] != "ebpf" || dps[b.HostIf] != "ebpf" || st.Datapath != "ebpf" || st.DatapathReason != "requested" {
		t.Errorf("/status: datapath %q (%q), interfaces %v; want ebpf (requested) everywhere", st.Datapath, st.DatapathReason, dps)
	}
	e, body := waitMetrics(t, nsHTTPClient(tp.Host), "http://"+addr+"/metrics", func(e scrape.Exposition) bool {
		return e.Values["pxresp_replies_total"] >= 3
	})
	if got := e.Values[scrape.Series("pxresp_datapath_info", "datapath", "ebpf", "reason", "requested")]; got != 1 {
		t.Errorf(`pxresp_datapath_info{datapath="ebpf",reason="requested"} = %v, want 1:\n%s`, got, body)
	}
	// Both pods' kernels and the raw request, at least.
	if got, req := e.Values["pxresp_replies_total"], e.Values["pxresp_requests_total"]; got < 3 || req < got {
		t.Errorf("pxresp_replies_total = %v of %v requests, want 3 at least", got, req)
	}
	// Stopped, pxresp leaves nothing attached, and nothing answers.
	stopClean(t, p)
	for _, pod := range tp.Pods {
		if n := len(topotest.TCXIngress(t, tp.Host, pod.HostIf)); n != 0 {
			t.Errorf("%s: %d tcx ingress programs after pxresp stopped, want none", pod.HostIf, n)
		}
	}
	if r := topotest.Ask(t, c, req, 300*time.Millisecond); r != nil {
		t.Errorf("reply %x after pxresp stopped", r)
	}
}

// TestDatapathWithoutCapBPF: as nobody with CAP_NET_RAW and CAP_NET_ADMIN
// but not CAP_BPF, --datapath ebpf exits 1 at start with one line naming
// CAP_BPF, and auto (the default) serves from AF_PACKET, saying why in the
// log, /status and pxresp_datapath_info.
func TestDatapathWithoutCapBPF(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	noBPF := nobodyWith("net_raw,net_admin")
	args := []string{"--iface", "cali*", "--gw", topo.Gateway.String()}

	q := pxproc.StartT(t, tp.Host, pxproc.Options{Wrapper: noBPF, Args: append([]string{"--datapath", "ebpf"}, args...)})
	code, err := q.WaitExit(10 * time.Second)
	lines := q.Lines()
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0].Text, "CAP_BPF") || lines[0].Attr("level") != "ERROR" {
		t.Errorf("--datapath ebpf without CAP_BPF: exit %d (%v), output %q; want exit 1 and one error line naming CAP_BPF", code, err, q.Log())
	}

	addr := freeLoopbackAddr(t, tp.Host)
	p := startPxrespAs(t, tp, noBPF, append(args, "--metrics-addr", addr)...)
	l := p.WaitT(t, pxproc.Has("msg=datapath", "datapath=packet"), 1)
	reason := l.Attr("reason")
	if !strings.HasPrefix(reason, "auto: ") || !strings.Contains(reason, "CAP_BPF") {
		t.Errorf("auto without CAP_BPF: reason %q, want auto: and what is missing (CAP_BPF)", reason)
	}
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+pod.HostIf, "datapath=packet"), 1)
	pingGateway(t, tp, pod)
	dps, st := statusDatapaths(t, tp, addr)
	if dps[pod.HostIf] != "packet" || st.Datapath != "packet" || st.DatapathReason != reason {
		t.Errorf("/status: datapath %q (%q), interfaces %v; want packet (%q)", st.Datapath, st.DatapathReason, dps, reason)
	}
	e, body := scrape.Metrics(t, nsHTTPClient(tp.Host), "http://"+addr+"/metrics")
	if got := e.Values[scrape.Series("pxresp_datapath_info", "datapath", "packet", "reason", reason)]; got != 1 {
		t.Errorf("pxresp_datapath_info{datapath=\"packet\",reason=%q} = %v, want 1:\n%s", reason, got, body)
	}
	// The packet datapath keeps CAP_NET_RAW only (without CAP_SETPCAP
	// the bounding set stays as it was).
	checkTasks(t, p.Pid(), procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask,
		Bnd: procstat.NetRawMask | procstat.NetAdminMask, NoNewPrivs: 1})
	p.StopT(t, time.Second)
}

// TestDatapathFollowsRuleMode: on the eBPF datapath, a reload that turns
// the pods' rule into route mode moves their interface to AF_PACKET
// (detach, attach, logged), and back: the pod is answered throughout
// each configuration. A reload that keeps gateway mode stays in place.
func TestDatapathFollowsRuleMode(t *testing.T) {
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	cfg := newConfigFile(t, gatewayRule("169.254.1.1"))
	p := startPxresp(t, tp, "--datapath", "ebpf", "--config", string(cfg))
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+pod.HostIf, "datapath=ebpf"), 1)
	c := topotest.Client(t, pod)
	ask := func(what string) {
		t.Helper()
		if !answered(t, c, pod, gw1, 2*time.Second) {
			t.Errorf("%s: the pod's request for %v is not answered", what, gw1)
		}
	}
	ask("gateway mode")
	pingGateway(t, tp, pod)

	// Route mode: 169.254.1.1 is routed out the uplink, so it is answered.
	cfg.write(t, "rules:\n- name: calico\n  interfaces: ['cali*']\n  mode: route\n")
	hup(t, p)
	p.WaitT(t, pxproc.Has("msg=reloaded"), 1)
	p.WaitT(t, pxproc.Has(`msg="datapath changed"`, "iface="+pod.HostIf, "from=ebpf", "to=packet"), 1)
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+pod.HostIf, "datapath=packet"), 1)
	p.WaitT(t, pxproc.Has("msg=detach", "iface="+pod.HostIf, "datapath=ebpf"), 1)
	if n := len(topotest.TCXIngress(t, tp.Host, pod.HostIf)); n != 0 {
		t.Errorf("%d tcx ingress programs on the interface in route mode, want none", n)
	}
	ask("route mode")
	topotest.Exec(t, pod.NS, "ip", "neigh", "flush", "dev", pod.PodIf)
	pingGateway(t, tp, pod)

	// Back to gateway mode: onto the program again.
	cfg.write(t, gatewayRule("169.254.1.1"))
	hup(t, p)
	p.WaitT(t, pxproc.Has(`msg="datapath changed"`, "iface="+pod.HostIf, "from=packet", "to=ebpf"), 1)
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+pod.HostIf, "datapath=ebpf"), 2)
	if n := len(topotest.TCXIngress(t, tp.Host, pod.HostIf)); n != 1 {
		t.Errorf("%d tcx ingress programs on the interface in gateway mode again, want pxresp's", n)
	}
	ask("gateway mode again")

	// Another gateway: in place, no detach.
	attaches := p.Count(pxproc.Has("msg=attach"))
	cfg.write(t, gatewayRule("169.254.1.2"))
	hup(t, p)
	p.WaitT(t, pxproc.Has("msg=reloaded"), 3)
	if !answered(t, c, pod, gw2, 2*time.Second) {
		t.Errorf("the new gateway %v is not answered", gw2)
	}
	if n := p.Count(pxproc.Has("msg=attach")); n != attaches {
		t.Errorf("%d attaches after a reload within gateway mode, want %d (in place)", n, attaches)
	}
	stopClean(t, p)
}

// TestDatapathBadValue: a bad --datapath or PXRESP_DATAPATH exits 2 with
// one line naming it.
func TestDatapathBadValue(t *testing.T) {
	tp := newTopo(t, 0)
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--datapath", "xdp"}, nil, `pxresp: invalid value "xdp" for flag --datapath: want auto, packet or ebpf`},
		{nil, []string{"PXRESP_DATAPATH=bpf"}, `pxresp: invalid value "bpf" for PXRESP_DATAPATH (flag --datapath)`},
	} {
		q := pxproc.StartT(t, tp.Host, pxproc.Options{Args: append(c.args, "--iface", "cali*", "--gw", topo.Gateway.String()), Env: c.env})
		code, err := q.WaitExit(10 * time.Second)
		lines := q.Lines()
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0].Text, c.want) {
			t.Errorf("%v %v: exit %d (%v), output %q; want exit 2 and one line %q", c.args, c.env, code, err, q.Log(), c.want)
		}
	}
}
