package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// checkTasks requires every thread of process pid to hold exactly want.
func checkTasks(t *testing.T, pid int, want procstat.Caps) {
	t.Helper()
	tasks, err := procstat.TaskCaps(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	procstat.CheckTasks(t, tasks, want)
}

// TestPrivilegesDroppedDaemon: the pxresp binary started as root, or as
// nobody with more than CAP_NET_RAW, drops to CAP_NET_RAW on every thread
// once ready, on either datapath: the eBPF one needs CAP_BPF and
// CAP_NET_ADMIN to load its program, not to attach it. It still serves: a
// pod's kernel resolves the gateway and pings through it, and a veth
// created after the drop is attached on the same datapath (a new AF_PACKET
// socket, or a new tcx link and map entries) and answered.
func TestPrivilegesDroppedDaemon(t *testing.T) {
	tp := newTopo(t, 1)
	all := procstat.AllCaps(t)
	for _, c := range []struct {
		name     string
		datapath string
		wrapper  []string
		want     procstat.Caps
	}{
		{"root", "packet", nil, procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: procstat.NetRawMask, NoNewPrivs: 1}},
		{"nobody with CAP_NET_RAW and CAP_NET_ADMIN", "packet",
			slices.Concat(procstat.AsNobody, []string{"--inh-caps", "-all,+net_raw,+net_admin", "--ambient-caps", "-all,+net_raw,+net_admin"}),
			procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: all, NoNewPrivs: 1}},
		{"root, eBPF", "ebpf", nil, procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: procstat.NetRawMask, NoNewPrivs: 1}},
		{"nobody with CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF, eBPF", "ebpf",
			slices.Concat(procstat.AsNobody, []string{"--inh-caps", "-all,+net_raw,+net_admin,+bpf", "--ambient-caps", "-all,+net_raw,+net_admin,+bpf"}),
			procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: all, NoNewPrivs: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p := startPxrespAs(t, tp, c.wrapper, "--datapath", c.datapath, "--iface", "cali*", "--gw", "169.254.1.1")
			p.WaitT(t, pxproc.Has(`msg="privileges dropped"`), 1)
			checkTasks(t, p.Pid(), c.want)

			pod := tp.Pods[0]
			if out, err := pod.NS.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", tp.UplinkIP.String()); err != nil ||
				!strings.Contains(out, " 0% packet loss") {
				t.Errorf("ping from the pod after the drop: %v\n%s", err, out)
			}
			np, err := tp.AddPod(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := tp.DelPod(ctx, np); err != nil {
					t.Error(err)
				}
			}()
			p.WaitT(t, pxproc.Has("msg=attach", "iface="+np.HostIf, "datapath="+c.datapath), 1)
			cl, err := arptest.Open(np.NS, np.PodIf)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if r := topotest.Ask(t, cl, arptest.Request(np.MAC, np.IP, topo.Gateway, arptest.Broadcast), 2*time.Second); r == nil {
				t.Error("a veth created after the drop is not answered")
			}
			if n := p.Count(pxproc.Has("level=ERROR")); n != 0 {
				t.Errorf("%d error lines in the log", n)
			}
			checkTasks(t, p.Pid(), c.want)
			p.StopT(t, time.Second)
		})
	}
}
