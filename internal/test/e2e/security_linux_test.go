package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// Security properties of the built binary, each with a test that fails if
// it regresses:
//
//   - no reply on an interface outside the selection (a NOARP or
//     bridge-enslaved cali*), nor for a target outside the policy;
//   - no reply to a frame that was not broadcast or sent to pxresp's MAC
//     (multicast destinations included), also with --mac, where frames for
//     other hosts do reach pxresp;
//   - pxresp never writes /proc/sys: it serves with /proc/sys read-only, a
//     trace of its opens shows no write access under /proc or /sys, and no
//     sysctl of its namespace changes while it runs;
//   - pxresp sends nothing but replies to requests, on selected interfaces
//     only: a capture of every frame leaving the host namespace holds
//     exactly the expected replies.

// secReply is the reply pxresp sends from mac to the request req (the
// kernel's arp_send_dst(ARPOP_REPLY, ...)).
func secReply(req []byte, mac net.HardwareAddr) []byte {
	var f arpframe.Frame
	if err := arpframe.Decode(req, &f); err != nil {
		panic(fmt.Sprintf("secReply of %x: %v", req, err))
	}
	return arpframe.EncodeReply(make([]byte, arpframe.Len), &f, [6]byte(mac))
}

// secTagged inserts an 802.1Q tag with VLAN ID vid into f.
func secTagged(f []byte, vid uint16) []byte {
	b := slices.Clone(f[:12])
	b = binary.BigEndian.AppendUint16(b, 0x8100)
	b = binary.BigEndian.AppendUint16(b, vid)
	return append(b, f[12:]...)
}

// expectSilence sends frame, then probe (a request pxresp answers), and
// requires that the next reply is the probe's: pxresp handles the frames of
// one interface in order, so a reply to frame would come first. Nothing is
// drained, so a late reply shows up at the next call.
func expectSilence(t *testing.T, c *arptest.Client, name string, frame, probe []byte, mac net.HardwareAddr) {
	t.Helper()
	if err := c.Send(frame); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	expectReply(t, c, name+" (the probe after it)", probe, mac)
}

// expectReply sends frame and requires that the next reply is its answer.
func expectReply(t *testing.T, c *arptest.Client, name string, frame []byte, mac net.HardwareAddr) {
	t.Helper()
	if err := c.Send(frame); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	got, err := c.NextReply(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := secReply(frame, mac); !bytes.Equal(got, want) {
		t.Errorf("%s: next reply\n got %x\nwant %x", name, got, want)
	}
}

// secDetach returns the request and reply counts pxresp logged when it
// detached iface (at the latest when it stopped).
func secDetach(t *testing.T, p *pxproc.Proc, iface string) (requests, replies int) {
	t.Helper()
	l := detachLine(t, p, iface)
	return int(l.Uint("requests")), int(l.Uint("replies"))
}

// TestNoReplyOutsideSelectionOrPolicy: with several gateways and targets,
// a selected interface answers exactly the policy's addresses, and not the
// ones next to them; cali* interfaces that are NOARP or enslaved to a
// bridge are not selected and never answered on. (TestRequestsAndRefusals
// covers an interface outside the glob and the kernel-like refusals.)
func TestNoReplyOutsideSelectionOrPolicy(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 3)
		ctx := context.Background()
		a, noarp, bridged := tp.Pods[0], tp.Pods[1], tp.Pods[2]
		if err := tp.Host.IP(ctx, "link", "set", noarp.HostIf, "arp", "off"); err != nil {
			t.Fatal(err)
		}
		// The bridge stays down: nothing it does can answer a pod.
		if err := tp.Host.IP(ctx, "link", "add", "br0sec", "type", "bridge"); err != nil {
			t.Fatal(err)
		}
		if err := tp.Host.IP(ctx, "link", "set", bridged.HostIf, "master", "br0sec"); err != nil {
			t.Fatal(err)
		}
		p := dp.start(t, tp, "--iface", "cali*",
			"--gw", "169.254.1.1", "--gw", "169.254.1.254", "--gw", "10.96.0.1",
			"--target", "10.244.0.0/16", "--target", "192.0.2.7")
		p.WaitT(t, pxproc.Has("msg=attach"), 1)
		ca := topotest.Client(t, a)
		gw := net.HardwareAddr(topo.GatewayMAC)
		req := func(target string) []byte {
			return arptest.Request(a.MAC, a.IP, netip.MustParseAddr(target), arptest.Broadcast)
		}
		probe := req("169.254.1.1")
		answered := []string{"169.254.1.1", "169.254.1.254", "10.96.0.1", "10.244.0.1", "10.244.255.254", "10.244.0.3", "192.0.2.7"}
		refused := []string{
			"169.254.1.2", "169.254.1.0", "169.254.1.253", "169.254.1.255", "169.254.0.1", // next to the gateways
			"10.96.0.2", "10.96.0.0",
			"10.243.255.255", "10.245.0.0", "10.245.0.1", // just outside 10.244.0.0/16
			"192.0.2.6", "192.0.2.8", "192.0.2.0", // next to the single target
		}
		// Not asked: the host's own addresses (198.18.0.1), which the host's
		// kernel answers on any interface whatever proxy_arp says.
		for _, target := range answered {
			expectReply(t, ca, "who-has "+target, req(target), gw)
		}
		for _, target := range refused {
			expectSilence(t, ca, "who-has "+target, req(target), probe, gw)
		}

		// Not selected: the glob matches, but the link is NOARP or a bridge
		// port. No probe is answered there, so silence is waited for.
		for _, pod := range []*topo.Pod{noarp, bridged} {
			c := topotest.Client(t, pod)
			for _, target := range []string{"169.254.1.1", "169.254.1.254", "10.244.0.2"} {
				f := arptest.Request(pod.MAC, pod.IP, netip.MustParseAddr(target), arptest.Broadcast)
				if r := topotest.Ask(t, c, f, 300*time.Millisecond); r != nil {
					t.Errorf("%s: reply %x to who-has %s", pod.HostIf, r, target)
				}
			}
		}
		p.StopT(t, time.Second)
		if n := p.Count(pxproc.Has("msg=attach")); n != 1 || p.Count(pxproc.Has("msg=attach", "iface="+a.HostIf)) != 1 {
			t.Errorf("%d attaches, want only %s:\n%s", n, a.HostIf, p.Log())
		}
		nReq, nRep := secDetach(t, p, a.HostIf)
		wantReq := len(answered) + 2*len(refused)
		wantRep := len(answered) + len(refused)
		if nReq != wantReq || nRep != wantRep {
			t.Errorf("%s: pxresp counted %d requests and %d replies, want %d and %d", a.HostIf, nReq, nRep, wantReq, wantRep)
		}
		t.Logf("%d targets answered, %d refused (each followed by an answered probe); pxresp counted %d requests, %d replies",
			len(answered), len(refused), nReq, nRep)
	})
}

// TestNoReplyUnlessBroadcastOrToUs: a request sent to a multicast MAC, to
// ff:ff:ff:ff:ff:fe or to another host is never answered — also with --mac,
// where the BPF filter lets through frames for other hosts that are sent to
// the --mac address, and where VLAN-tagged broadcasts (which the kernel
// marks as for another host after taking the tag off) must still be dropped.
func TestNoReplyUnlessBroadcastOrToUs(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		a := tp.Pods[0]
		ifMAC := net.HardwareAddr(topo.GatewayMAC)
		override := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
		for _, run := range []struct {
			name string
			args []string
			mac  net.HardwareAddr // what replies carry
		}{
			{"interface MAC", nil, ifMAC},
			{"--mac", []string{"--mac", override.String()}, override},
		} {
			t.Run(run.name, func(t *testing.T) {
				p := dp.start(t, tp, append([]string{"--iface", "cali*", "--gw", "169.254.1.1"}, run.args...)...)
				p.WaitT(t, pxproc.Has("msg=attach"), 1)
				c := topotest.Client(t, a)
				req := func(dst net.HardwareAddr) []byte { return arptest.Request(a.MAC, a.IP, topo.Gateway, dst) }
				// The probe asks from another sender address, so that its reply
				// differs from one to any of the frames below.
				probe := arptest.Request(a.MAC, netip.MustParseAddr("10.244.0.250"), topo.Gateway, arptest.Broadcast)
				expectReply(t, c, "broadcast", req(arptest.Broadcast), run.mac)
				expectReply(t, c, "unicast to the MAC replies carry", req(run.mac), run.mac)
				// Which of them reach pxresp, to be counted as requests and not
				// answered: those to a group address (the kernel marks them
				// multicast); not those to another unicast MAC, which the kernel
				// marks for another host and the filter drops (with --mac too,
				// unless sent to the --mac address), nor VLAN-tagged ones.
				const (
					never = iota
					always
				)
				silent := []struct {
					name  string
					frame []byte
					reach int
				}{
					{"IPv4 multicast 01:00:5e:00:00:01", req(net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), always},
					{"IPv4 multicast 01:00:5e:7f:ff:fa", req(net.HardwareAddr{0x01, 0, 0x5e, 0x7f, 0xff, 0xfa}), always},
					{"IPv6 multicast 33:33:00:00:00:01", req(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}), always},
					{"ff:ff:ff:ff:ff:fe", req(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}), always},
					{"another host", req(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}), never},
					{"the requester's own MAC", req(a.MAC), never},
					{"802.1Q VLAN 5, broadcast", secTagged(req(arptest.Broadcast), 5), never},
					{"802.1Q VLAN 5, multicast", secTagged(req(net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), 5), never},
				}
				wantReq, wantRep := 2, 2
				for _, s := range silent {
					expectSilence(t, c, s.name, s.frame, probe, run.mac)
					wantReq++ // the probe
					wantRep++
					if s.reach == always {
						wantReq++
					}
				}
				p.StopT(t, time.Second)
				nReq, nRep := secDetach(t, p, a.HostIf)
				if nReq != wantReq || nRep != wantRep {
					t.Errorf("pxresp counted %d requests and %d replies, want %d and %d", nReq, nRep, wantReq, wantRep)
				}
				t.Logf("%d frames not broadcast nor for us, none answered; pxresp counted %d requests, %d replies", len(silent), nReq, nRep)
			})
		}
	})
}

// procSysRO is a shell line that makes /proc/sys a read-only bind mount in
// a new private mount namespace (so nothing leaks out of it), then runs the
// command given as its arguments.
const procSysRO = `mount --bind /proc/sys /proc/sys && mount -o remount,ro,bind /proc/sys && exec "$0" "$@"`

func procSysROWrapper() []string {
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", procSysRO}
}

// TestServesWithReadOnlyProcSys runs pxresp with /proc/sys read-only, as in
// a locked-down container, and requires that it serves and logs no error.
func TestServesWithReadOnlyProcSys(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 1)
		pod := tp.Pods[0]
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		// The premise: in that wrapper, /proc/sys cannot be written.
		out, err := tp.Host.Exec(ctx, append(procSysROWrapper(), "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/proxy_arp")...)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Fatalf("premise: writing /proc/sys in the wrapper: %v: %q; want a read-only file system error", err, out)
		}
		if v := strings.TrimSpace(topotest.Exec(t, tp.Host, "cat", "/proc/sys/net/ipv4/conf/all/proxy_arp")); v != "0" {
			t.Fatalf("conf/all/proxy_arp is %q after the premise check, want 0", v)
		}

		p := dp.startAs(t, tp, procSysROWrapper(), "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=attach"), 1)
		mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		if !roProcSys(string(mounts)) {
			t.Fatalf("pxresp does not see /proc/sys read-only:\n%s", mounts)
		}
		c := topotest.Client(t, pod)
		if r := topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
			t.Error("no reply from pxresp with /proc/sys read-only")
		}
		if out := topotest.Exec(t, pod.NS, "ping", "-c", "2", "-i", "0.2", "-W", "1", tp.UplinkIP.String()); !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping through pxresp with /proc/sys read-only: %s", out)
		}
		p.StopT(t, time.Second)
		for _, level := range []string{"level=WARN", "level=ERROR"} {
			if n := p.Count(pxproc.Has(level)); n != 0 {
				t.Errorf("%d %s lines:\n%s", n, level, p.Log())
			}
		}
	})
}

// roProcSys says whether mountinfo has /proc/sys mounted read-only (the
// last mount on a mount point is the visible one).
func roProcSys(mountinfo string) bool {
	ro := false
	for _, l := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == "/proc/sys" {
			ro = slices.Contains(strings.Split(f[5], ","), "ro")
		}
	}
	return ro
}

// TestNoProcSysWrites traces pxresp's opens and writes while it attaches,
// serves and detaches, and requires that it opened nothing under /proc or
// /sys for writing; it also requires that no sysctl of the namespace
// (net.ipv4.conf, net.ipv4.neigh, net.ipv6.conf) changed, which covers the
// netlink route to them too.
func TestNoProcSysWrites(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		strace := privtest.Tool(t, "strace", "strace")
		tp := newTopo(t, 1)
		ctx := context.Background()
		pod := tp.Pods[0]
		before := netSysctls(t, tp.Host)
		trace := filepath.Join(t.TempDir(), "strace.out")
		wrapper := []string{strace, "-f", "-qq", "-s", "256", "-e", "trace=open,openat,openat2,creat,truncate,write", "-o", trace}
		p := dp.startAs(t, tp, wrapper, "--iface", "cali*", "--gw", "169.254.1.1")
		p.WaitT(t, pxproc.Has("msg=attach"), 1)
		// pxresp is strace's child, held by a pidfd: the signals below cannot
		// reach another process that reuses the PID.
		px, err := p.Child()
		if err != nil {
			t.Fatal(err)
		}
		if comm, err := procstat.Comm(px.Pid); err != nil || comm != "pxresp" {
			t.Fatalf("strace's child %d is %q (%v), want pxresp", px.Pid, comm, err)
		}
		t.Cleanup(func() { _ = px.Kill() }) // if the test fails before SIGTERM; strace then exits too

		c := topotest.Client(t, pod)
		if r := topotest.Ask(t, c, arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), time.Second); r == nil {
			t.Error("no reply from the traced pxresp")
		}
		// Attach, MAC change, down/up, detach: every path that could touch a
		// setting of an interface.
		extra, err := tp.AddPod(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has("msg=attach"), 2)
		for _, args := range [][]string{{"address", "02:ee:00:00:00:02"}, {"down"}, {"up"}} {
			if err := tp.Host.IP(ctx, append([]string{"link", "set", extra.HostIf}, args...)...); err != nil {
				t.Fatal(err)
			}
		}
		p.WaitT(t, pxproc.Has(`msg="link changed"`, "iface="+extra.HostIf), 2)
		if err := tp.DelPod(ctx, extra); err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has("msg=detach"), 1)

		// Stop pxresp itself (strace follows it out and exits with its status).
		if err := px.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.WaitExit(5 * time.Second); err != nil {
			t.Fatalf("pxresp under strace still running 5s after SIGTERM: %v", err)
		} else if code != 0 {
			t.Errorf("strace/pxresp exit code %d after SIGTERM to pxresp", code)
		}

		data, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		opens, writes, bad := checkTrace(string(data))
		if writes == 0 || !strings.Contains(string(data), "msg=start") {
			t.Fatalf("the trace does not show pxresp's own log writes: the wrong process was traced?\n%.2000s", data)
		}
		for _, l := range bad {
			t.Errorf("write access under /proc or /sys: %s", l)
		}
		t.Logf("trace: %d opens (%s), %d writes, none with write access under /proc or /sys", len(opens), strings.Join(opens, ", "), writes)

		// The extra pod's interface came and went with its own settings; all
		// others must be as they were.
		after := netSysctls(t, tp.Host)
		changed := 0
		for k, v := range before {
			if after[k] != v {
				changed++
				t.Errorf("sysctl %s changed while pxresp ran: %q -> %q", k, v, after[k])
			}
		}
		for k := range after {
			if _, ok := before[k]; !ok {
				t.Errorf("sysctl %s appeared while pxresp ran", k)
			}
		}
		t.Logf("%d net.ipv4.conf/neigh and net.ipv6.conf sysctls read before and after, %d changed", len(before), changed)
	})
}

var traceOpen = regexp.MustCompile(`^\d+\s+(open|openat|openat2|creat|truncate)\((?:AT_FDCWD, |-?\d+, )?"([^"]*)"(.*)$`)

// checkTrace returns the paths opened, the number of write calls and the
// lines that open (or create, or truncate) a path under /proc or /sys with
// write access.
func checkTrace(trace string) (opens []string, writes int, bad []string) {
	for _, l := range strings.Split(trace, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], "write(") {
			writes++
			continue
		}
		m := traceOpen.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		call, path, rest := m[1], m[2], m[3]
		opens = append(opens, path)
		if !strings.HasPrefix(path, "/proc/") && !strings.HasPrefix(path, "/sys/") {
			continue
		}
		if call == "creat" || call == "truncate" || strings.Contains(rest, "O_WRONLY") || strings.Contains(rest, "O_RDWR") ||
			strings.Contains(rest, "O_CREAT") || strings.Contains(rest, "O_TRUNC") || strings.Contains(rest, "O_APPEND") {
			bad = append(bad, l)
		}
	}
	slices.Sort(opens)
	return slices.Compact(opens), writes, bad
}

// netSysctls reads the namespace's interface and neighbour settings.
func netSysctls(t *testing.T, ns *topo.NS) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "sysctl", "-a")
	out, err := cmd.Output() // stderr: keys that cannot be read (stable_secret)
	if err != nil && len(out) == 0 {
		t.Fatalf("sysctl -a in %s: %v", ns.Name, err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, " = ")
		if ok && (strings.HasPrefix(k, "net.ipv4.conf.") || strings.HasPrefix(k, "net.ipv4.neigh.") || strings.HasPrefix(k, "net.ipv6.conf.")) {
			m[k] = v
		}
	}
	if len(m) < 50 {
		t.Fatalf("sysctl -a in %s: only %d interface settings read", ns.Name, len(m))
	}
	return m
}

// capture records every frame of a namespace, on every interface, in both
// directions: an unbound ETH_P_ALL packet socket.
type capture struct {
	fd   int
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	frames []captured
	err    error
}

type captured struct {
	ifindex int
	pkttype uint8
	data    []byte
}

func startCapture(t *testing.T, ns *topo.NS) *capture {
	t.Helper()
	c := &capture{fd: -1, stop: make(chan struct{}), done: make(chan struct{})}
	err := ns.Do(func() error {
		proto := int(0x0300) // htons(ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture in %s: %v", ns.Name, err)
	}
	go c.run()
	t.Cleanup(func() { c.finish(t) })
	return c
}

func (c *capture) run() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	stopping := false
	for {
		if !stopping {
			select {
			case <-c.stop:
				stopping = true // read what is queued, then end
			default:
			}
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) && stopping {
			return
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		f := captured{data: bytes.Clone(buf[:n])}
		if ll != nil {
			f.ifindex, f.pkttype = ll.Ifindex, ll.Pkttype
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// finish stops the capture once the frames already queued are read
// (idempotent), requires that the socket dropped none, and returns what it
// recorded. A frame sent on an interface is queued to the capture socket
// before the sender's write returns, so after the sender has exited, all
// of its frames are in.
func (c *capture) finish(t *testing.T) []captured {
	t.Helper()
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 {
		st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		switch {
		case err != nil:
			t.Errorf("capture: PACKET_STATISTICS: %v", err)
		case st.Drops != 0:
			t.Errorf("capture: the socket dropped %d frames: the capture is incomplete", st.Drops)
		}
		unix.Close(c.fd)
		c.fd = -1
	}
	if c.err != nil {
		t.Errorf("capture: %v", c.err)
	}
	return slices.Clone(c.frames)
}

// TestSendsOnlyRepliesOnSelectedInterfaces captures every frame in the host
// namespace while pxresp starts, pods send requests and hostile frames on
// selected and unselected interfaces, and pxresp stops. Every frame that
// left the host must be one of the replies expected for the requests that
// deserve one, on the interface they came in on, each exactly once;
// nothing leaves an unselected interface. The host's own kernel must stay
// silent for this to be attributable: IPv6 is disabled in every namespace
// (no ND, MLD or router solicitations), no pod sends IP, nothing is asked
// of the host's own addresses, and kernel proxy_arp is off. Nothing is
// excluded from the capture.
func TestSendsOnlyRepliesOnSelectedInterfaces(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 3)
		ctx := context.Background()
		a, b, off := tp.Pods[0], tp.Pods[1], tp.Pods[2]
		for _, ns := range []*topo.NS{tp.Host, tp.Sink, a.NS, b.NS, off.NS} {
			for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
				if err := ns.Sysctl(ctx, k, "1"); err != nil {
					t.Fatal(err)
				}
			}
		}
		rename(t, tp, off.HostIf, "tap0sec")
		names := map[int]string{}
		if err := tp.Host.Do(func() error {
			ifs, err := net.Interfaces()
			for _, ifi := range ifs {
				names[ifi.Index] = ifi.Name
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		capt := startCapture(t, tp.Host)

		p := dp.start(t, tp, "--iface", "cali*", "--gw", "169.254.1.1", "--target", "10.244.0.0/16")
		p.WaitT(t, pxproc.Has("msg=attach"), 2)
		gw := net.HardwareAddr(topo.GatewayMAC)
		bc := arptest.Broadcast
		type sent struct {
			c      *arptest.Client
			pod    *topo.Pod
			frame  []byte
			answer bool
		}
		var all []sent
		var clients []*arptest.Client
		for _, pod := range []*topo.Pod{a, b, off} {
			c := topotest.Client(t, pod)
			clients = append(clients, c)
			selected := pod != off
			other := a.IP
			if pod == a {
				other = b.IP
			}
			req := arptest.Request
			good := req(pod.MAC, pod.IP, topo.Gateway, bc)
			trunc := slices.Clone(good[:30])
			badOp := slices.Clone(good)
			badOp[21] = 9
			reply := slices.Clone(good)
			reply[21] = 2
			for _, s := range []sent{
				{frame: good, answer: true},
				{frame: req(pod.MAC, pod.IP, topo.Gateway, gw), answer: true},
				{frame: req(pod.MAC, pod.IP, other, bc), answer: true},
				{frame: secTagged(good, 0), answer: true}, // priority tag: an ordinary request
				{frame: req(pod.MAC, netip.IPv4Unspecified(), topo.Gateway, bc)},
				{frame: req(pod.MAC, pod.IP, pod.IP, bc)},
				{frame: req(pod.MAC, netip.MustParseAddr("10.244.99.1"), pod.IP, bc)}, // own address
				{frame: req(pod.MAC, pod.IP, netip.MustParseAddr("192.0.2.1"), bc)},
				{frame: req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{2, 0, 0, 0, 0, 0x99})},
				{frame: req(pod.MAC, pod.IP, topo.Gateway, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1})},
				{frame: req(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, pod.IP, topo.Gateway, bc)},
				{frame: secTagged(good, 5)},
				{frame: trunc},
				{frame: badOp},
				{frame: reply},
			} {
				s.c, s.pod = c, pod
				s.answer = s.answer && selected
				all = append(all, s)
			}
		}
		// Five rounds, interleaved across the pods.
		const rounds = 5
		var expected []captured // the replies, as the host sends them
		perClient := map[*arptest.Client]int{}
		for range rounds {
			for _, s := range all {
				if err := s.c.Send(s.frame); err != nil {
					t.Fatal(err)
				}
				if s.answer {
					req := s.frame
					if binary.BigEndian.Uint16(req[12:]) == 0x8100 {
						req = append(slices.Clone(req[:12]), req[16:]...)
					}
					expected = append(expected, captured{ifindex: ifindexOf(t, names, s.pod.HostIf), pkttype: unix.PACKET_OUTGOING, data: secReply(req, gw)})
					perClient[s.c]++
				}
			}
		}
		for _, c := range clients {
			for i := range perClient[c] {
				r, err := c.NextReply(2 * time.Second)
				if err != nil || r == nil {
					t.Fatalf("reply %d of %d to a client: %x %v", i+1, perClient[c], r, err)
				}
			}
			if r, err := c.NextReply(100 * time.Millisecond); r != nil || err != nil {
				t.Errorf("an extra reply %x (%v)", r, err)
			}
		}
		p.StopT(t, time.Second) // pxresp has exited: whatever it sent is in the capture
		frames := capt.finish(t)

		var out []captured
		in := map[string]int{}
		for _, f := range frames {
			if f.pkttype == unix.PACKET_OUTGOING {
				out = append(out, f)
			} else {
				in[names[f.ifindex]]++
			}
		}
		key := func(f captured) string { return fmt.Sprintf("%d %x", f.ifindex, f.data) }
		want := map[string]int{}
		for _, f := range expected {
			want[key(f)]++
		}
		got := map[string]int{}
		perIf := map[string]int{}
		for _, f := range out {
			got[key(f)]++
			perIf[names[f.ifindex]]++
		}
		for k, n := range got {
			if want[k] != n {
				ifindex, data, _ := strings.Cut(k, " ")
				i, _ := strconv.Atoi(ifindex)
				t.Errorf("sent %d× on %s, expected %d×: %s", n, names[i], want[k], data)
			}
		}
		for k, n := range want {
			if got[k] == 0 {
				t.Errorf("expected reply never sent (%d×): %s", n, k)
			}
		}
		for _, ifname := range []string{"up0", "lo", "tap0sec"} {
			if perIf[ifname] != 0 {
				t.Errorf("%d frames left the unselected interface %s", perIf[ifname], ifname)
			}
		}
		t.Logf("captured %d frames in the host namespace: %d received %v, %d sent %v, all of them the %d expected replies",
			len(frames), len(frames)-len(out), in, len(out), perIf, len(expected))
	})
}

func ifindexOf(t *testing.T, names map[int]string, name string) int {
	t.Helper()
	for i, n := range names {
		if n == name {
			return i
		}
	}
	t.Fatalf("no interface %s in the host namespace", name)
	return 0
}
