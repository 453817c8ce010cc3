package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"golang.org/x/sys/unix"
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
		rep.Tasks[t.Name()] = procstat.CapLines(string(b))
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

// TestDropPrivileges runs dropPrivileges in a re-executed test binary (in
// a network namespace of the test's own) under several starting
// privileges, and reads every thread's capabilities afterwards.
func TestDropPrivileges(t *testing.T) {
	tp := topotest.New(t, 0, "pxdm")
	all := procstat.AllCaps(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		wrapper []string
		want    procstat.Caps
		log     []string // substrings of the log
		packet  bool     // an AF_PACKET socket opens after the drop
	}{
		{"root", nil,
			procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: procstat.NetRawMask, NoNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "before.inheritable=none", "before.ambient=none", "before.no_new_privs=false",
				"after.permitted=cap_net_raw", "after.effective=cap_net_raw", "after.inheritable=none",
				"after.ambient=none", "after.bounding=cap_net_raw", "after.no_new_privs=true"}, true},
		// Without CAP_SETPCAP the kernel keeps the bounding set as it is.
		{"root without CAP_SETPCAP", []string{"setpriv", "--bounding-set", "-setpcap"},
			procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: all &^ procstat.SetpcapBit, NoNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "after.permitted=cap_net_raw"}, true},
		{"nobody with CAP_NET_RAW and CAP_NET_ADMIN",
			append(procstat.AsNobody[:len(procstat.AsNobody):len(procstat.AsNobody)], "--inh-caps", "-all,+net_raw,+net_admin", "--ambient-caps", "-all,+net_raw,+net_admin"),
			procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: all, NoNewPrivs: 1},
			[]string{`msg="privileges dropped"`, "before.permitted=cap_net_admin,cap_net_raw", "before.ambient=cap_net_admin,cap_net_raw",
				"after.permitted=cap_net_raw", "after.ambient=none"}, true},
		// Already minimal: nothing changes.
		{"nobody with CAP_NET_RAW only",
			append(procstat.AsNobody[:len(procstat.AsNobody):len(procstat.AsNobody)], "--inh-caps", "-all,+net_raw", "--ambient-caps", "-all,+net_raw"),
			procstat.Caps{Inh: procstat.NetRawMask, Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: all, Amb: procstat.NetRawMask},
			[]string{`msg="privileges already minimal"`, "caps.permitted=cap_net_raw", "caps.ambient=cap_net_raw"}, true},
		{"nobody without capabilities",
			append(procstat.AsNobody[:len(procstat.AsNobody):len(procstat.AsNobody)], "--inh-caps", "-all"),
			procstat.Caps{Bnd: all},
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
			procstat.CheckTasks(t, rep.Tasks, c.want)
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
