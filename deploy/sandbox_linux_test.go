package deploy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// The sandbox tests run pxresp in a test topology the way pxresp.service
// and daemonset.yaml run it, minus systemd and Kubernetes: the same user,
// capabilities, no_new_privs, flags and config, checking what it does
// against what the sandbox allows.

// openDir makes a temporary directory that every user may read (the
// unprivileged pxresp reads its config there), removed when t ends.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pxresp-deploy")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stop signals pid (pxresp, the wrapper's child or the wrapper itself) with
// SIGTERM and waits at most 10 s for the wrapper to exit.
func stop(t *testing.T, p *pxproc.Proc, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitExit(10 * time.Second); err != nil {
		t.Fatalf("still running 10s after SIGTERM: %v", err)
	}
}

// get does GET path on addr from inside ns and returns status and body.
func get(t *testing.T, ns *topo.NS, addr, path string) (int, string) {
	t.Helper()
	code, body, err := tryGet(ns, addr, path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	return code, body
}

// serves checks that pxresp answers on tp: the existing pod pings the
// uplink through it, and a pod added now (a new AF_PACKET socket) is
// attached and answered.
func serves(t *testing.T, tp *topo.Topology, p *pxproc.Proc) {
	t.Helper()
	ctx := context.Background()
	pod := tp.Pods[0]
	if out, err := pod.NS.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "2", tp.UplinkIP.String()); err != nil ||
		!strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping from the pod: %v\n%s", err, out)
	}
	np, err := tp.AddPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+np.HostIf), 1)
	c, err := arptest.Open(np.NS, np.PodIf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Ask(arptest.Request(np.MAC, np.IP, topo.Gateway, arptest.Broadcast), 5*time.Second); err != nil || r == nil {
		t.Errorf("a pod added after start is not answered (%v)", err)
	}
}

// syscallGroups reads systemd's system call groups: "@name" -> members
// (names and other groups).
func syscallGroups(t *testing.T, sa string) map[string][]string {
	t.Helper()
	out, err := exec.Command(sa, "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	var cur string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "@"):
			cur = strings.TrimSpace(l)
		case cur != "" && strings.HasPrefix(l, " "):
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
				groups[cur] = append(groups[cur], s)
			}
		default:
			cur = ""
		}
	}
	if len(groups["@system-service"]) == 0 {
		t.Fatalf("no @system-service in systemd-analyze syscall-filter:\n%s", out)
	}
	return groups
}

// allowedSyscalls applies the unit's SystemCallFilter= lines (an allow
// list, then deny lists starting with "~") the way systemd does; @default
// is always allowed.
func allowedSyscalls(t *testing.T, groups map[string][]string, lines []string) map[string]bool {
	t.Helper()
	var expand func(name string, into map[string]bool, on bool)
	expand = func(name string, into map[string]bool, on bool) {
		if !strings.HasPrefix(name, "@") {
			into[name] = on
			return
		}
		members, ok := groups[name]
		if !ok {
			t.Fatalf("unknown system call group %s", name)
		}
		for _, m := range members {
			expand(m, into, on)
		}
	}
	allowed := map[string]bool{}
	expand("@default", allowed, true)
	for i, l := range lines {
		deny := strings.HasPrefix(l, "~")
		if i == 0 && deny {
			t.Fatalf("SystemCallFilter=%s: want an allow list first", l)
		}
		for _, name := range strings.Fields(strings.TrimPrefix(l, "~")) {
			expand(name, allowed, !deny)
		}
	}
	return allowed
}

// traced is what a strace -f log shows of the traced program.
type traced struct {
	syscalls map[string]int // name -> calls
	families map[string]int // socket() address family -> calls
	bad      []string       // lines that break a unit setting, and why
}

var (
	straceLine = regexp.MustCompile(`^\d+\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()`)
	socketCall = regexp.MustCompile(`\bsocket\((AF_\w+)`)
	openCall   = regexp.MustCompile(`\bopenat2?\(.*\b(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC)\b`)
)

// parseTrace reads an strace -f log from the successful execve of bin on.
func parseTrace(t *testing.T, path, bin string) traced {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := traced{syscalls: map[string]int{}, families: map[string]int{}}
	started := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !started {
			started = strings.Contains(l, `execve("`+bin+`"`) && strings.HasSuffix(l, "= 0")
			continue
		}
		m := straceLine.FindStringSubmatch(l)
		if m == nil {
			continue // signals, exits
		}
		name := m[1] + m[2]
		if m[2] != "" { // not a "resumed" line: count each call once
			tr.syscalls[name]++
		}
		if fm := socketCall.FindStringSubmatch(l); fm != nil {
			tr.families[fm[1]]++
		}
		switch {
		case (name == "mmap" || name == "mprotect" || name == "pkey_mprotect") &&
			strings.Contains(l, "PROT_WRITE") && strings.Contains(l, "PROT_EXEC"):
			tr.bad = append(tr.bad, "MemoryDenyWriteExecute: "+l)
		case strings.Contains(l, "CLONE_NEW") || name == "setns" || name == "unshare":
			tr.bad = append(tr.bad, "RestrictNamespaces: "+l)
		case openCall.MatchString(l) && !strings.Contains(l, `"/dev/null"`):
			tr.bad = append(tr.bad, "ProtectSystem=strict / readOnlyRootFilesystem (opened for writing): "+l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !started {
		t.Fatalf("%s: no successful execve of %s", path, bin)
	}
	return tr
}

// TestSystemdSandbox runs pxresp as each unit would (an unprivileged user
// with only the unit's ambient capabilities, the bounding set cut to them,
// no_new_privs, the unit's flags), under strace, through start, traffic, a
// metrics scrape, a new interface, a reload and a stop, and checks every
// system call it made against the unit's SystemCallFilter=, every socket
// against RestrictAddressFamilies=, and MemoryDenyWriteExecute=,
// RestrictNamespaces= and the read-only file system against what it did.
// pxresp-ebpf.service must run the eBPF datapath.
func TestSystemdSandbox(t *testing.T) {
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) { systemdSandbox(t, u) })
	}
}

func systemdSandbox(t *testing.T, u unit) {
	strace := privtest.Tool(t, "strace", "strace")
	setpriv := privtest.Tool(t, "setpriv", "util-linux")
	sa := systemdAnalyze(t)
	tp := topotest.New(t, 1, "deploy")
	unit := unitDirectives(readFile(t, u.file))
	allowed := allowedSyscalls(t, syscallGroups(t, sa), unit["SystemCallFilter"])
	families := strings.Fields(unit["RestrictAddressFamilies"][0])
	bin := pxproc.Bin(t)
	// setpriv's capability list: "-all,+net_raw,..."
	caps := "-all"
	for _, c := range strings.Fields(unit["AmbientCapabilities"][0]) {
		caps += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	// ExecStart's flags, but for the config file, which is the test's copy.
	flags := strings.Fields(unit["ExecStart"][0])[1:]
	i := slices.Index(flags, "--config")
	if i < 0 || i+1 >= len(flags) {
		t.Fatalf("ExecStart=%s: no --config", unit["ExecStart"][0])
	}
	flags = slices.Delete(flags, i, i+2)

	dir := openDir(t)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, readFile(t, "config.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "trace")
	const metrics = "127.0.0.1:9597" // in the test's host namespace
	// strace slows pxresp down: 20 s for each log line waited for.
	p := pxproc.StartT(t, tp.Host, pxproc.Options{Timeout: 20 * time.Second, Bin: bin,
		Wrapper: []string{strace, "-f", "-qq", "-s", "256", "-o", trace,
			setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
			"--inh-caps", caps, "--ambient-caps", caps, "--bounding-set", caps, "--no-new-privs"},
		Args: append([]string{"--config", cfg, "--metrics-addr", metrics}, flags...)})
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	if want := wantDatapath(u.file); want != "" {
		checkDatapath(t, p, want)
	}
	px, err := p.Child()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Kill() }) // if the test fails before SIGTERM; strace then exits too
	pid := px.Pid

	serves(t, tp, p)
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, body := get(t, tp.Host, metrics, path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.WaitT(t, pxproc.Has("msg=reloaded"), 1)
	stop(t, p, pid)

	tr := parseTrace(t, trace, bin)
	var names []string
	for name := range tr.syscalls {
		names = append(names, name)
		if !allowed[name] {
			t.Errorf("system call %s (%d calls) is outside SystemCallFilter=%q: systemd would fail it", name, tr.syscalls[name], unit["SystemCallFilter"])
		}
	}
	slices.Sort(names)
	t.Logf("%d distinct system calls: %s", len(names), strings.Join(names, " "))
	t.Logf("socket families: %v", tr.families)
	for fam := range tr.families {
		if !slices.Contains(families, fam) {
			t.Errorf("socket family %s is outside RestrictAddressFamilies=%s", fam, families)
		}
	}
	switch wantDatapath(u.file) {
	case "ebpf":
		if tr.syscalls["bpf"] == 0 {
			t.Error("the trace shows no bpf(2): the eBPF datapath did not run")
		}
	default:
		if !slices.Contains(names, "socket") || tr.families["AF_PACKET"] < 2 {
			t.Errorf("the trace shows %d AF_PACKET sockets, want one per pod", tr.families["AF_PACKET"])
		}
	}
	for _, b := range tr.bad {
		t.Error(b)
	}
}

// TestDaemonSetSandbox runs pxresp as each DaemonSet's container would run
// under a runc-style runtime: user 65532, the bounding set cut to the added
// capabilities, those permitted and effective but not ambient before the
// exec, no_new_privs (allowPrivilegeEscalation: false), the container's
// binary and args and the ConfigMap's config. With the file capability
// that image.sh gives the binary it serves, its probes answer and it runs
// the datapath of its variant; without, it exits naming CAP_NET_RAW. The
// eBPF binary under the packet manifest's capabilities cannot even start.
func TestDaemonSetSandbox(t *testing.T) {
	for _, v := range daemonSets {
		t.Run(v.file, func(t *testing.T) { daemonSetSandbox(t, v) })
	}
}

// imageBinaries reads image.sh's setcap lines: the file capability of each
// binary in the image, by its path there.
func imageBinaries(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range regexp.MustCompile(`(?m)^\s*setcap (\S+) "\$root(/\S+)"$`).FindAllStringSubmatch(string(readFile(t, "image.sh")), -1) {
		m[l[2]] = l[1]
	}
	if len(m) < 2 {
		t.Fatalf("image.sh: %d setcap lines, want one per binary", len(m))
	}
	return m
}

// entrypoint is the image's entrypoint (image.sh).
const entrypoint = "/usr/local/bin/pxresp"

// capMask is the mask of Kubernetes capability names ("NET_RAW").
func capMask(t *testing.T, caps []corev1.Capability) uint64 {
	t.Helper()
	var m uint64
	for _, c := range caps {
		n, ok := capNumbers[string(c)]
		if !ok {
			t.Fatalf("capability %s: not known to the test", c)
		}
		m |= 1 << n
	}
	return m
}

var capNumbers = map[string]int{"NET_RAW": unix.CAP_NET_RAW, "NET_ADMIN": unix.CAP_NET_ADMIN, "BPF": unix.CAP_BPF}

func daemonSetSandbox(t *testing.T, v daemonSet) {
	capsh := privtest.Tool(t, "capsh", "libcap2-bin")
	setcap := privtest.Tool(t, "setcap", "libcap2-bin")
	tp := topotest.New(t, 1, "deploy")
	m := decodeManifest(t, readFile(t, v.file))
	if m.err != nil {
		t.Fatal(m.err)
	}
	c := m.ds.Spec.Template.Spec.Containers[0]
	uid := *m.ds.Spec.Template.Spec.SecurityContext.RunAsUser
	path := entrypoint
	if len(c.Command) > 0 {
		path = c.Command[0]
	}
	fileCaps, ok := imageBinaries(t)[path]
	if !ok {
		t.Fatalf("%s runs %s, which image.sh does not install", v.file, path)
	}

	dir := openDir(t)
	env := containerEnv(t, c, tp.UplinkIP.String())
	var args []string
	for _, a := range c.Args {
		args = append(args, expand(a, env))
	}
	i := slices.Index(args, "--config")
	cfg := filepath.Join(dir, filepath.Base(args[i+1]))
	if err := os.WriteFile(cfg, []byte(m.cm.Data[filepath.Base(args[i+1])]), 0o644); err != nil {
		t.Fatal(err)
	}
	args[i+1] = cfg
	plain := filepath.Join(dir, "pxresp")
	withCap := filepath.Join(dir, "cap-"+filepath.Base(path))
	for _, p := range []string{plain, withCap} {
		if err := exec.Command("cp", pxproc.Bin(t), p).Run(); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(setcap, fileCaps, withCap).CombinedOutput(); err != nil {
		t.Fatalf("setcap: %v %s", err, out)
	}
	out, err := exec.Command(capsh, "--print").Output()
	if err != nil {
		t.Fatal(err)
	}
	bm := regexp.MustCompile(`(?m)^Bounding set =(.*)$`).FindSubmatch(out)
	if bm == nil {
		t.Fatalf("capsh --print: no bounding set:\n%s", out)
	}
	bounding := strings.Split(strings.TrimSpace(string(bm[1])), ",")
	// capsh execs the binary it names with --shell, with the arguments
	// after "--"; every capability but the added ones leaves the bounding
	// set, and those are permitted and effective before the exec.
	runc := func(t *testing.T, bin string, add []corev1.Capability) *pxproc.Proc {
		t.Helper()
		var keep []string
		for _, c := range add {
			keep = append(keep, "cap_"+strings.ToLower(string(c)))
		}
		drop := slices.DeleteFunc(slices.Clone(bounding), func(s string) bool { return slices.Contains(keep, s) })
		return pxproc.StartT(t, tp.Host, pxproc.Options{Timeout: 20 * time.Second, Command: append([]string{capsh,
			"--drop=" + strings.Join(drop, ","), "--keep=1",
			"--gid=" + strconv.FormatInt(uid, 10), "--uid=" + strconv.FormatInt(uid, 10), "--caps=" + strings.Join(keep, ",") + "+ep",
			"--no-new-privs", "--shell=" + bin, "--"}, args...)})
	}

	t.Run("without the file capability", func(t *testing.T) {
		p := runc(t, plain, v.caps)
		code, err := p.WaitExit(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code != 1 || p.Count(pxproc.Contains("needs CAP_NET_RAW")) == 0 {
			t.Errorf("exit %d, log %q; want exit 1 naming CAP_NET_RAW", code, p.Log())
		}
	})

	if want := capMask(t, v.caps); want != procstat.NetRawMask {
		// The file capability asks for more than NET_RAW: under the packet
		// manifest's capabilities the execve fails (EPERM).
		t.Run("under the packet manifest's capabilities", func(t *testing.T) {
			p := runc(t, withCap, daemonSets[0].caps)
			code, err := p.WaitExit(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code == 0 || p.Count(pxproc.Contains("execve")) == 0 {
				t.Errorf("exit %d, log %q; want capsh's failed execve", code, p.Log())
			}
		})
	}

	t.Run("with the file capability", func(t *testing.T) {
		p := runc(t, withCap, v.caps)
		p.WaitT(t, pxproc.Has("msg=ready"), 1)
		checkDatapath(t, p, wantDatapath(v.file))
		// Once ready, pxresp keeps CAP_NET_RAW alone (the bounding set
		// stays: without CAP_SETPCAP the kernel refuses to shrink it).
		p.WaitT(t, pxproc.Contains(`msg="privileges `), 1)
		pid := p.Pid() // capsh and ip netns exec exec, they do not fork
		tasks, err := procstat.TaskCaps(strconv.Itoa(pid))
		if err != nil {
			t.Fatal(err)
		}
		procstat.CheckTasks(t, tasks, procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: capMask(t, v.caps), NoNewPrivs: 1})
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("Uid:\t%d", uid); !strings.Contains(string(status), want) {
			t.Errorf("/proc/%d/status lacks %q:\n%s", pid, want, status)
		}
		serves(t, tp, p)
		// The kubelet probes the pod IP, the node's with hostNetwork.
		node := net.JoinHostPort(tp.UplinkIP.String(), strconv.Itoa(metricsPort))
		for _, p := range []string{c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path, "/metrics"} {
			if code, body := get(t, tp.Host, node, p); code != http.StatusOK {
				t.Errorf("GET %s: %d %s", p, code, body)
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "VmHWM:") || strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "Threads:") {
					t.Log(strings.Join(strings.Fields(l), " "))
				}
			}
		}
		stop(t, p, pid)
	})
}
