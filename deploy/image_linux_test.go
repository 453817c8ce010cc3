package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// The image test: `make image` into a container storage of the test's own,
// then the image run by podman and runc with what daemonset.yaml says,
// mapped to podman's flags, in the host namespace of a test topology.

// imageLabels are the OCI labels the image must carry.
var imageLabels = []string{"title", "description", "version", "revision", "source", "licenses"}

// podman runs podman (or buildah) against the test's storage.
type podman struct {
	tool    string
	storage []string
}

func (p podman) run(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, p.tool, append(slices.Clone(p.storage), args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(p.tool), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (p podman) runT(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := p.run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storageDir makes the test's container storage (vfs: plain directories,
// no mounts left behind) and removes it when t ends.
func storageDir(t *testing.T) (dir string, opts []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pxresp-image")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// conmon's exit command (podman container cleanup, with these
		// storage options) may still write here after podman rm: wait
		// until no process names dir, then remove it.
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := errors.New("a process still uses it")
			if !usedBy(dir) {
				err = os.RemoveAll(dir)
			}
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("container storage: %v", err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	return dir, []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
}

// usedBy reports whether a process has dir in its command line.
func usedBy(dir string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(dir)) {
			return true
		}
	}
	return false
}

// podmanFlags maps the pod spec's container c to `podman run` flags the way
// a CRI runtime applies them; what it cannot map fails t.
func podmanFlags(t *testing.T, spec corev1.PodSpec, c corev1.Container) []string {
	t.Helper()
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil || sc.Capabilities == nil {
		t.Fatal("securityContext or capabilities missing")
	}
	uid, gid := sc.RunAsUser, sc.RunAsGroup
	if uid == nil {
		uid = psc.RunAsUser
	}
	if gid == nil {
		gid = psc.RunAsGroup
	}
	if uid == nil || gid == nil {
		t.Fatal("runAsUser or runAsGroup missing")
	}
	flags := []string{"--user", fmt.Sprintf("%d:%d", *uid, *gid)}
	for _, c := range sc.Capabilities.Drop {
		flags = append(flags, "--cap-drop="+strings.ToLower(string(c)))
	}
	for _, c := range sc.Capabilities.Add {
		flags = append(flags, "--cap-add="+strings.ToLower(string(c)))
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Fatal("privileged: not mapped")
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		// Kubernetes adds no tmpfs, podman would.
		flags = append(flags, "--read-only", "--read-only-tmpfs=false")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		flags = append(flags, "--security-opt", "no-new-privileges")
	}
	sp := sc.SeccompProfile
	if sp == nil {
		sp = psc.SeccompProfile
	}
	if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatalf("seccompProfile %v: only RuntimeDefault (podman's default profile) is mapped", sp)
	}
	if !spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Fatalf("hostNetwork %v hostPID %v hostIPC %v: only the host's network is mapped", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	// command replaces the image's entrypoint (args, its cmd).
	switch len(c.Command) {
	case 0:
	case 1:
		flags = append(flags, "--entrypoint", c.Command[0])
	default:
		t.Fatalf("command %q: only a binary, without arguments, is mapped", c.Command)
	}
	if m := c.Resources.Limits.Memory(); !m.IsZero() {
		flags = append(flags, "--memory", strconv.FormatInt(m.Value(), 10))
	}
	return flags
}

// ulimits are podman's --ulimit flags: podman's defaults may exceed the
// machine's hard limits, and runc then fails to set them (EPERM), so these
// are at most the hard limits, and modest.
func ulimits(t *testing.T) []string {
	t.Helper()
	var flags []string
	for _, l := range []struct {
		name string
		res  int
		max  uint64
	}{{"nofile", unix.RLIMIT_NOFILE, 1 << 16}, {"nproc", unix.RLIMIT_NPROC, 4096}} {
		var r unix.Rlimit
		if err := unix.Getrlimit(l.res, &r); err != nil {
			t.Fatal(err)
		}
		n := min(r.Max, l.max)
		flags = append(flags, "--ulimit", fmt.Sprintf("%s=%d:%d", l.name, n, n))
	}
	return flags
}

// netnsPath is the path of ns for --network ns:PATH; it must not be the
// test process's own (the root namespace).
func netnsPath(t *testing.T, ns *topo.NS) string {
	t.Helper()
	path := filepath.Join("/run/netns", ns.Name)
	var a, b syscall.Stat_t
	if err := syscall.Stat(path, &a); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/proc/self/ns/net", &b); err != nil {
		t.Fatal(err)
	}
	if ns.Name == "" || a.Ino == b.Ino && a.Dev == b.Dev {
		t.Fatalf("%s is the root network namespace", path)
	}
	return path
}

// tryGet does GET addr+path from inside ns and returns status and body,
// without failing t: the connection is made on the thread that ns.Do
// switched into ns.
func tryGet(ns *topo.NS, addr, path string) (int, string, error) {
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// checkRelease checks what `make release` left in dist: static
// executables for their architecture (no interpreter, no shared
// libraries) that SHA256SUMS lists with their digests.
func checkRelease(t *testing.T, dist string) {
	t.Helper()
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]elf.Machine{"pxresp-linux-amd64": elf.EM_X86_64, "pxresp-linux-arm64": elf.EM_AARCH64}
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	if len(lines) != len(want) {
		t.Errorf("SHA256SUMS:\n%s\nwant a line for each of %v", sums, slices.Collect(maps.Keys(want)))
	}
	for _, l := range lines {
		sum, name, _ := strings.Cut(l, "  ")
		machine, ok := want[name]
		if !ok {
			t.Errorf("SHA256SUMS: unexpected line %q", l)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", name, got, sum)
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		libs, _ := f.ImportedLibraries()
		interp := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
		if f.Machine != machine || f.Type != elf.ET_EXEC || interp || len(libs) > 0 {
			t.Errorf("%s: %v %v, interpreter %v, libraries %v; want a static %v executable", name, f.Machine, f.Type, interp, libs, machine)
		}
	}
}

// TestImage builds the image with `make image`, checks the release, the
// index, the labels and each binary's file capability, and runs it as the
// pod of each DaemonSet variant (runImage), the eBPF one also under
// podman's own seccomp profile, which refuses bpf(2).
func TestImage(t *testing.T) {
	pm := podman{tool: privtest.Tool(t, "podman", "podman"), storage: nil}
	bh := podman{tool: privtest.Tool(t, "buildah", "buildah")}
	privtest.Tool(t, "runc", "runc")
	privtest.Tool(t, "setcap", "libcap2-bin")
	image := makeVar(t, "image-name")

	dir, storage := storageDir(t)
	pm.storage = append(slices.Clone(storage), "--runtime", "runc", "--cgroup-manager", "cgroupfs",
		"--tmpdir", filepath.Join(dir, "tmp"), "--events-backend", "none")
	bh.storage = storage
	dist := filepath.Join(dir, "dist")

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "make", "-s", "-C", "..", "image",
		"DIST="+dist, "IMAGE_STORAGE="+strings.Join(storage, " ")).CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Logf("make image: %v", time.Since(start).Round(time.Second))

	checkRelease(t, dist)

	// The index holds amd64 and arm64, the archive too.
	var index struct {
		Manifests []struct {
			Platform struct{ OS, Architecture string }
		}
	}
	skopeo := podman{tool: privtest.Tool(t, "skopeo", "skopeo")}
	archive := "oci-archive:" + filepath.Join(dist, "pxresp-image.oci.tar")
	for src, raw := range map[string]string{
		image:   bh.runT(t, "manifest", "inspect", image),
		archive: skopeo.runT(t, "inspect", "--raw", archive),
	} {
		if err := json.Unmarshal([]byte(raw), &index); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		var plats []string
		for _, m := range index.Manifests {
			plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
		}
		if slices.Sort(plats); !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
			t.Errorf("%s: platforms %v, want linux/amd64 and linux/arm64", src, plats)
		}
	}
	var inspect []struct {
		Config struct {
			User       string
			Entrypoint []string
			Labels     map[string]string
		}
	}
	if err := json.Unmarshal([]byte(pm.runT(t, "image", "inspect", image)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	cfg := inspect[0].Config
	if cfg.User != "65532:65532" || !slices.Equal(cfg.Entrypoint, []string{"/usr/local/bin/pxresp"}) {
		t.Errorf("user %q entrypoint %q", cfg.User, cfg.Entrypoint)
	}
	for _, l := range imageLabels {
		if cfg.Labels["org.opencontainers.image."+l] == "" {
			t.Errorf("no label org.opencontainers.image.%s: %v", l, cfg.Labels)
		}
	}
	if v := cfg.Labels["org.opencontainers.image.version"]; !strings.HasPrefix(v, image[strings.LastIndex(image, ":")+1:]+"+") {
		t.Errorf("label version %q does not start with the tag of %s", v, image)
	}

	// Each binary carries its file capability: a CRI runtime, unlike
	// podman, gives a non-root container no ambient capabilities.
	getcap := privtest.Tool(t, "getcap", "libcap2-bin")
	root := strings.TrimSpace(pm.runT(t, "image", "mount", image))
	for path, want := range imageBinaries(t) {
		out, err := exec.Command(getcap, filepath.Join(root, path)).CombinedOutput()
		if f := strings.Fields(string(out)); err != nil || len(f) != 2 || !sameFileCaps(f[1], want) {
			t.Errorf("getcap on the image's %s: %v %q, want %s", path, err, out, want)
		}
	}
	pm.runT(t, "image", "unmount", image)

	for _, v := range daemonSets {
		t.Run(v.file, func(t *testing.T) { runImage(t, pm, image, dir, v, "") })
	}
	// The eBPF variant under a default profile that allows bpf(2) only with
	// CAP_SYS_ADMIN: podman's own.
	t.Run(daemonSets[1].file+" under podman's seccomp profile", func(t *testing.T) {
		runImage(t, pm, image, dir, daemonSets[1], "podman")
	})
}

// sameFileCaps compares two file capabilities in setcap's text form
// ("cap_a,cap_b=ep"), whatever the order of the names.
func sameFileCaps(a, b string) bool {
	norm := func(s string) string {
		names, flags, _ := strings.Cut(s, "=")
		l := strings.Split(names, ",")
		slices.Sort(l)
		return strings.Join(l, ",") + "=" + flags
	}
	return norm(a) == norm(b)
}

// seccompProfile writes the seccomp profile that stands for RuntimeDefault
// when the container adds BPF: podman's default profile, with bpf(2)
// allowed when CAP_BPF is held as containerd's and Docker's default
// profiles do (podman's allows it only with CAP_SYS_ADMIN).
func seccompProfile(t *testing.T, dir string) string {
	t.Helper()
	const def = "/usr/share/containers/seccomp.json"
	var prof map[string]any
	if err := json.Unmarshal(readFile(t, def), &prof); err != nil {
		t.Fatalf("%s: %v", def, err)
	}
	rules, _ := prof["syscalls"].([]any)
	refused := false
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		names, _ := rule["names"].([]any)
		ex, _ := rule["excludes"].(map[string]any)
		if rule["action"] != "SCMP_ACT_ERRNO" || !slices.Contains(names, any("bpf")) || ex == nil {
			continue
		}
		// The rule refusing bpf without CAP_SYS_ADMIN: it refuses it
		// without CAP_BPF too.
		caps, _ := ex["caps"].([]any)
		if !slices.Contains(caps, any("CAP_SYS_ADMIN")) {
			continue
		}
		rule["names"] = slices.DeleteFunc(slices.Clone(names), func(n any) bool { return n == "bpf" })
		rules = append(rules,
			map[string]any{"names": []string{"bpf"}, "action": "SCMP_ACT_ERRNO", "errnoRet": rule["errnoRet"],
				"excludes": map[string]any{"caps": []string{"CAP_SYS_ADMIN", "CAP_BPF"}}},
			map[string]any{"names": []string{"bpf"}, "action": "SCMP_ACT_ALLOW",
				"includes": map[string]any{"caps": []string{"CAP_BPF"}}, "excludes": map[string]any{"caps": []string{"CAP_SYS_ADMIN"}}})
		refused = true
		break
	}
	if !refused {
		t.Fatalf("%s: no rule refusing bpf without CAP_SYS_ADMIN; the test does not know this profile", def)
	}
	prof["syscalls"] = rules
	b, err := json.Marshal(prof)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "seccomp-bpf.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runImage runs the image as the pod of DaemonSet variant v would run, in
// a test topology of its own: pods resolve their gateway and ping through
// it, /readyz answers on the node's IP and nowhere else, the process runs
// the variant's datapath and holds exactly its capabilities, as 65532,
// with no_new_privs, seccomp and a read-only root; and once stopped,
// nothing answers. seccomp "podman" keeps podman's own default profile for
// the eBPF variant (bpf(2) only with CAP_SYS_ADMIN): pxresp then runs the
// packet datapath.
func runImage(t *testing.T, pm podman, image, dir string, v daemonSet, seccomp string) {
	tp := topotest.New(t, 2, "image")
	m := decodeManifest(t, readFile(t, v.file))
	if m.err != nil {
		t.Fatal(m.err)
	}
	spec := m.ds.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != image {
		t.Fatalf("%s runs %s, make image built %s", v.file, c.Image, image)
	}
	datapath := wantDatapath(v.file)
	hostIP := tp.UplinkIP.String()
	env := containerEnv(t, c, hostIP)
	flags := []string{"run", "-d", "--pull", "never", "--log-driver", "k8s-file",
		"--name", "pxresp-" + strings.TrimSuffix(tp.Prefix, "-"),
		"--network", "ns:" + netnsPath(t, tp.Host)}
	flags = append(flags, podmanFlags(t, spec, c)...)
	if datapath == "ebpf" {
		if seccomp == "podman" {
			datapath = "packet"
		} else {
			flags = append(flags, "--security-opt", "seccomp="+seccompProfile(t, t.TempDir()))
		}
	}
	flags = append(flags, ulimits(t)...)
	for _, vm := range c.VolumeMounts {
		var vol *corev1.Volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == vm.Name {
				vol = &spec.Volumes[i]
			}
		}
		if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != m.cm.Name || !vm.ReadOnly {
			t.Fatalf("volume mount %s: only the ConfigMap %s, read-only, is mapped", vm.Name, m.cm.Name)
		}
		cmDir, err := os.MkdirTemp(dir, "configmap")
		if err == nil {
			err = os.Chmod(cmDir, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range m.cm.Data {
			if err := os.WriteFile(filepath.Join(cmDir, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		flags = append(flags, "--volume", cmDir+":"+vm.MountPath+":ro")
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		flags = append(flags, "--env", k+"="+env[k])
	}
	flags = append(flags, image)
	for _, a := range c.Args {
		flags = append(flags, expand(a, env))
	}

	id := strings.TrimSpace(pm.runT(t, flags...))
	removed := false
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := pm.run(ctx, "logs", id)
			t.Logf("container log:\n%s", out)
		}
		if removed {
			return
		}
		if _, err := pm.run(ctx, "rm", "--force", "--time", "2", id); err != nil {
			t.Error(err)
		}
	})

	// Ready on the node's IP, where the kubelet's probes ask.
	metrics := net.JoinHostPort(hostIP, strconv.Itoa(metricsPort))
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := tryGet(tp.Host, metrics, c.ReadinessProbe.HTTPGet.Path)
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s%s: %d %v", metrics, c.ReadinessProbe.HTTPGet.Path, code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _, err := tryGet(tp.Host, metrics, c.LivenessProbe.HTTPGet.Path); err != nil || code != http.StatusOK {
		t.Errorf("GET %s: %d %v", c.LivenessProbe.HTTPGet.Path, code, err)
	}
	// And nowhere else.
	loop := net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort))
	if _, _, err := tryGet(tp.Host, loop, "/metrics"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("GET %s/metrics: %v, want connection refused", loop, err)
	}
	checkContainerDatapath(t, pm, id, datapath)
	if seccomp == "podman" {
		// The fallback's reason names the likely cause, not the
		// capabilities, which the container holds.
		waitLog(t, pm, id, "a seccomp profile that forbids it?")
	}

	// Pods resolve their gateway and reach the node, the far end and each
	// other through it.
	for _, p := range tp.Pods {
		for _, dst := range []string{tp.UplinkIP.String(), tp.SinkIP.String(), tp.Pods[(p.Index+1)%len(tp.Pods)].IP.String()} {
			if out := topotest.Exec(t, p.NS, "ping", "-c", "2", "-i", "0.2", "-W", "2", dst); !strings.Contains(out, " 0% packet loss") {
				t.Errorf("ping %s from pod %d: %s", dst, p.Index, out)
			}
		}
		if out := topotest.Exec(t, p.NS, "ip", "neigh", "show", topo.Gateway.String(), "dev", p.PodIf); !strings.Contains(out, "lladdr "+topo.GatewayMAC.String()) {
			t.Errorf("pod %d: neighbour %s: %q, want lladdr %s", p.Index, topo.Gateway, out, topo.GatewayMAC)
		}
	}
	if datapath == "ebpf" {
		checkTCX(t, tp, len(tp.Pods))
	}

	// The process: 65532, CAP_NET_RAW alone in every thread once it has
	// given up the rest (its bounding set: the manifest's), no_new_privs,
	// seccomp filtering, the root filesystem read-only.
	waitLog(t, pm, id, `msg="privileges `)
	pid := strings.TrimSpace(pm.runT(t, "inspect", "--format", "{{.State.Pid}}", id))
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65532\t65532\t65532\t65532", "Gid:\t65532\t65532\t65532\t65532", "Seccomp:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("/proc/%s/status lacks %q:\n%s", pid, want, status)
		}
	}
	tasks, err := procstat.TaskCaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	bounding := capMask(t, v.caps)
	// The inheritable set is the runtime's choice (podman sets the added
	// capabilities there, CRI runtimes leave it empty); it gives nothing
	// without a file or ambient capability to match.
	for tid, caps := range tasks {
		if caps["CapInh"] == fmt.Sprintf("%016x", bounding) {
			tasks[tid]["CapInh"] = "0"
		}
	}
	procstat.CheckTasks(t, tasks, procstat.Caps{Prm: procstat.NetRawMask, Eff: procstat.NetRawMask, Bnd: bounding, NoNewPrivs: 1})
	mounts, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	rootRO := false
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			rootRO = slices.Contains(strings.Split(f[5], ","), "ro")
		}
	}
	if !rootRO {
		t.Errorf("the container's root filesystem is not read-only:\n%s", mounts)
	}

	// Stopped (SIGTERM, as the kubelet does), nothing stays attached and
	// nothing answers.
	pm.runT(t, "stop", "--time", "10", id)
	pm.runT(t, "rm", id)
	removed = true
	checkTCX(t, tp, 0)
	pod := tp.Pods[0]
	cl, err := arptest.Open(pod.NS, pod.PodIf)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if r, err := cl.Ask(arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast), 500*time.Millisecond); r != nil {
		t.Errorf("a request answered after pxresp stopped (%v)", err)
	}
}

// waitLog waits at most 10 s for the container's log to contain s.
func waitLog(t *testing.T, pm podman, id, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		log := pm.runT(t, "logs", id)
		if strings.Contains(log, s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the container's log after 10 s:\n%s", s, log)
		}
	}
}

// checkContainerDatapath requires the container's log to name datapath
// want.
func checkContainerDatapath(t *testing.T, pm podman, id, want string) {
	t.Helper()
	log := pm.runT(t, "logs", id)
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=datapath ") {
			if !strings.Contains(l, " datapath="+want+" ") {
				t.Errorf("datapath: %q, want %s", l, want)
			}
			return
		}
	}
	t.Errorf("no datapath in the log, want %s:\n%s", want, log)
}

// checkTCX requires n tcx ingress programs in all on the host sides of
// the topology's pods, queried from inside its host namespace.
func checkTCX(t *testing.T, tp *topo.Topology, n int) {
	t.Helper()
	got := map[string]int{}
	total := 0
	for _, p := range tp.Pods {
		got[p.HostIf] = len(topotest.TCXIngress(t, tp.Host, p.HostIf))
		total += got[p.HostIf]
	}
	if total != n {
		t.Errorf("tcx ingress programs on the pods' host sides: %v, want %d in all", got, n)
	}
}
