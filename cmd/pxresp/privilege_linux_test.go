package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arptest"
	"github.com/pxresp/pxresp/internal/topo"
)

// Capability masks as /proc/PID/status shows them.
const (
	netRawMask = 1 << unix.CAP_NET_RAW // 0x2000
	setpcapBit = 1 << unix.CAP_SETPCAP
	netAdmin   = 1 << unix.CAP_NET_ADMIN
)

// dropChildEnv makes the test binary a child that calls dropPrivileges
// (see init below) instead of running tests.
const dropChildEnv = "PXRESP_TEST_DROP_PRIVILEGES"

// dropReport is what the child prints on stdout.
type dropReport struct {
	Err string `json:"err"` // from dropPrivileges
	// Tasks maps each thread's id to its capability lines of
	// /proc/self/task/TID/status (CapInh, CapPrm, CapEff, CapBnd, CapAmb,
	// NoNewPrivs).
	Tasks map[string]map[string]string `json:"tasks"`
	// Packet is the error opening an AF_PACKET socket after the drop ("" if
	// it opened); RcvBufForce that of SO_RCVBUFFORCE on it (CAP_NET_ADMIN).
	Packet      string `json:"packet"`
	RcvBufForce string `json:"rcvbufforce"`
}

func init() {
	if os.Getenv(dropChildEnv) == "1" {
		os.Exit(dropChild())
	}
}

// dropChild runs in the re-executed test binary: it makes extra OS threads,
// drops privileges, and reports every thread's capabilities and whether
// AF_PACKET sockets still open.
func dropChild() int {
	// Threads of our own besides the runtime's: psx must reach them all.
	release := make(chan struct{})
	started := make(chan struct{})
	for range 8 {
		go func() {
			runtime.LockOSThread()
			started <- struct{}{}
			<-release
		}()
	}
	for range 8 {
		<-started
	}
	var rep dropReport
	if err := dropPrivileges(slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		rep.Err = err.Error()
	}
	rep.Tasks = map[string]map[string]string{}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", t.Name(), "status"))
		if err != nil {
			continue // the thread ended
		}
		rep.Tasks[t.Name()] = capLines(string(b))
	}
	// Protocol 0: the socket receives nothing and sends nothing.
	if fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err != nil {
		rep.Packet = err.Error()
	} else {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20); err != nil {
			rep.RcvBufForce = err.Error()
		}
		unix.Close(fd)
	}
	close(release)
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// capLines picks the capability lines out of a /proc status file.
func capLines(status string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(l, ":")
		switch k {
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs":
			if ok {
				m[k] = strings.TrimSpace(v)
			}
		}
	}
	return m
}

// wantCaps are the expected capability lines, as numbers.
type wantCaps struct{ inh, prm, eff, bnd, amb, noNewPrivs uint64 }

// checkTasks requires every task to show exactly want.
func checkTasks(t *testing.T, tasks map[string]map[string]string, want wantCaps) {
	t.Helper()
	if len(tasks) < 2 {
		t.Errorf("%d threads, want several", len(tasks))
	}
	for tid, m := range tasks {
		for _, c := range []struct {
			key  string
			want uint64
			base int
		}{
			{"CapInh", want.inh, 16}, {"CapPrm", want.prm, 16}, {"CapEff", want.eff, 16},
			{"CapBnd", want.bnd, 16}, {"CapAmb", want.amb, 16}, {"NoNewPrivs", want.noNewPrivs, 10},
		} {
			got, err := strconv.ParseUint(m[c.key], c.base, 64)
			if err != nil || got != c.want {
				t.Errorf("thread %s: %s %q, want %#x", tid, c.key, m[c.key], c.want)
			}
		}
	}
}

// allCaps is the test's own bounding set: what a child starts with. It is
// every capability of the kernel unless the machine that runs the test
// holds back some.
func allCaps(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(capLines(string(b))["CapBnd"], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var asNobody = []string{"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"}

// TestDropPrivileges runs dropPrivileges in a re-executed test binary (in
// a network namespace of the test's own) under several starting
// privileges, and reads every thread's capabilities afterwards.
func TestDropPrivileges(t *testing.T) {
	tp := newTopo(t, 0)
	all := allCaps(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		wrapper []string
		want    wantCaps
		log     []string // substrings of the log
		packet  bool     // an AF_PACKET socket opens after the drop
	}{
		{"root", nil,
			wantCaps{prm: netRawMask, eff: netRawMask, bnd: netRawMask, noNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "before.inheritable=none", "before.ambient=none", "before.no_new_privs=false",
				"after.permitted=cap_net_raw", "after.effective=cap_net_raw", "after.inheritable=none",
				"after.ambient=none", "after.bounding=cap_net_raw", "after.no_new_privs=true"}, true},
		// Without CAP_SETPCAP the kernel keeps the bounding set as it is.
		{"root without CAP_SETPCAP", []string{"setpriv", "--bounding-set", "-setpcap"},
			wantCaps{prm: netRawMask, eff: netRawMask, bnd: all &^ setpcapBit, noNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "after.permitted=cap_net_raw"}, true},
		{"nobody with CAP_NET_RAW and CAP_NET_ADMIN",
			append(asNobody[:len(asNobody):len(asNobody)], "--inh-caps", "-all,+net_raw,+net_admin", "--ambient-caps", "-all,+net_raw,+net_admin"),
			wantCaps{prm: netRawMask, eff: netRawMask, bnd: all, noNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "before.permitted=cap_net_admin,cap_net_raw", "before.ambient=cap_net_admin,cap_net_raw",
				"after.permitted=cap_net_raw", "after.ambient=none"}, true},
		// Already minimal: nothing changes.
		{"nobody with CAP_NET_RAW only",
			append(asNobody[:len(asNobody):len(asNobody)], "--inh-caps", "-all,+net_raw", "--ambient-caps", "-all,+net_raw"),
			wantCaps{inh: netRawMask, prm: netRawMask, eff: netRawMask, bnd: all, amb: netRawMask},
			[]string{`msg="privileges already minimal"`, "caps.permitted=cap_net_raw", "caps.ambient=cap_net_raw"}, true},
		{"nobody without capabilities",
			append(asNobody[:len(asNobody):len(asNobody)], "--inh-caps", "-all"),
			wantCaps{bnd: all},
			[]string{`msg="privileges already minimal"`, "caps.permitted=none"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			argv := append([]string{"netns", "exec", tp.Host.Name}, c.wrapper...)
			argv = append(argv, exe, "-test.run=^$")
			cmd := exec.CommandContext(ctx, "ip", argv...)
			// GORACE: no 1 s sleep at exit in a -race build.
			cmd.Env = append(os.Environ(), dropChildEnv+"=1", "GORACE=atexit_sleep_ms=0")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\nstderr:\n%s", err, stderr.String())
			}
			var rep dropReport
			if err := json.Unmarshal(out, &rep); err != nil {
				t.Fatalf("child output %q: %v", out, err)
			}
			if rep.Err != "" {
				t.Fatalf("dropPrivileges: %s", rep.Err)
			}
			checkTasks(t, rep.Tasks, c.want)
			if logs := stderr.String(); strings.Count(logs, "\n") != 1 {
				t.Errorf("want one log line, got:\n%s", logs)
			}
			for _, s := range c.log {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("log lacks %q:\n%s", s, stderr.String())
				}
			}
			if opened := rep.Packet == ""; opened != c.packet {
				t.Errorf("AF_PACKET socket after the drop: %q, want it to open: %v", rep.Packet, c.packet)
			}
			if c.packet && !strings.Contains(rep.RcvBufForce, "operation not permitted") {
				t.Errorf("SO_RCVBUFFORCE after the drop: %q, want EPERM (CAP_NET_ADMIN is gone)", rep.RcvBufForce)
			}
			t.Logf("%d threads; log: %s", len(rep.Tasks), strings.TrimSpace(stderr.String()))
		})
	}
}

// taskCaps reads the capability lines of every thread of process pid.
func taskCaps(t *testing.T, pid int) map[string]map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]map[string]string{}
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status")); err == nil {
			m[e.Name()] = capLines(string(b))
		}
	}
	return m
}

// TestPrivilegesDroppedDaemon: the pxresp binary started as root, or as
// nobody with more than CAP_NET_RAW, drops to CAP_NET_RAW on every thread
// once ready, and still serves: a pod's kernel resolves the gateway and
// pings through it, and a veth created after the drop is attached (a new
// AF_PACKET socket) and answered.
func TestPrivilegesDroppedDaemon(t *testing.T) {
	tp := newTopo(t, 1)
	all := allCaps(t)
	for _, c := range []struct {
		name    string
		wrapper []string
		want    wantCaps
	}{
		{"root", nil, wantCaps{prm: netRawMask, eff: netRawMask, bnd: netRawMask, noNewPrivs: 1}},
		{"nobody with CAP_NET_RAW and CAP_NET_ADMIN",
			append(asNobody[:len(asNobody):len(asNobody)], "--inh-caps", "-all,+net_raw,+net_admin", "--ambient-caps", "-all,+net_raw,+net_admin"),
			wantCaps{prm: netRawMask, eff: netRawMask, bnd: all, noNewPrivs: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p := startPxrespAs(t, tp, c.wrapper, "--iface", "cali*", "--gw", "169.254.1.1")
			p.waitLog(t, `msg="privileges dropped"`, 1)
			checkTasks(t, taskCaps(t, p.cmd.Process.Pid), c.want)

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
			p.waitLog(t, "msg=attach", 1, "iface="+np.HostIf)
			cl, err := arptest.Open(np.NS, np.PodIf)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if r := ask(t, cl, arptest.Request(np.MAC, np.IP, topo.Gateway, arptest.Broadcast), 2*time.Second); r == nil {
				t.Error("a veth created after the drop is not answered")
			}
			if n := p.count("level=ERROR"); n != 0 {
				t.Errorf("%d error lines in the log", n)
			}
			checkTasks(t, taskCaps(t, p.cmd.Process.Pid), c.want)
			p.stop(t)
		})
	}
}
