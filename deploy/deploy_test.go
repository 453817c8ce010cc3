package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
)

func TestMain(m *testing.M) { pxproc.Main(m) }

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// systemdAnalyze finds systemd-analyze: a skip without it, or a failure
// when privileged tests are required (CI installs the systemd package).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if privtest.Required() {
			t.Fatalf("systemd-analyze is missing (Debian package systemd): %v", err)
		}
		t.Skipf("systemd-analyze is missing (Debian package systemd): %v", err)
	}
	return p
}

// unitCopy writes pxresp.service into a temporary directory with ExecStart
// pointing at bin (systemd-analyze verify wants an executable there).
func unitCopy(t *testing.T, unit []byte, bin string) string {
	t.Helper()
	const exec = "/usr/local/bin/pxresp"
	if !bytes.Contains(unit, []byte("ExecStart="+exec+" ")) {
		t.Fatalf("pxresp.service: no ExecStart=%s", exec)
	}
	path := filepath.Join(t.TempDir(), "pxresp.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("="+exec+" "), []byte("="+bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// verify runs systemd-analyze verify on the unit file: any output is a
// problem, since unknown or misspelt keys are only warnings (exit 0).
func verify(t *testing.T, sa, unit string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(unit), err, out)
	}
	return nil
}

// unit is one of the systemd units and what its test requires of it.
type unit struct {
	file string
	// maxExposure is the overall exposure level that `systemd-analyze
	// security` gave the unit when it was written (systemd 252, Debian 12);
	// higher means a hardening setting was lost.
	maxExposure float64
	// want are the directives the unit must have, with their only value.
	want map[string]string
	// filter is the unit's SystemCallFilter= lines, in order.
	filter []string
}

// units are the packet datapath's unit and the eBPF one's, which differs
// from it only in the capabilities, bpf(2), the --datapath flag and the
// comments (TestSystemdUnitVariants).
var units = []unit{
	{
		file: "pxresp.service", maxExposure: 1.7,
		want: map[string]string{
			"ExecStart":             "/usr/local/bin/pxresp --config /etc/pxresp/config.yaml",
			"CapabilityBoundingSet": "CAP_NET_RAW",
			"AmbientCapabilities":   "CAP_NET_RAW",
		},
		filter: []string{"@system-service", "~@privileged"},
	},
	{
		// CAP_BPF, CAP_NET_ADMIN, and bpf(2) and capset(2) from
		// @privileged cost 0.3.
		file: "pxresp-ebpf.service", maxExposure: 2.0,
		want: map[string]string{
			"ExecStart":             "/usr/local/bin/pxresp --config /etc/pxresp/config.yaml --datapath auto",
			"CapabilityBoundingSet": "CAP_BPF CAP_NET_ADMIN CAP_NET_RAW",
			"AmbientCapabilities":   "CAP_BPF CAP_NET_ADMIN CAP_NET_RAW",
		},
		filter: []string{"@system-service", "~@privileged", "bpf capset"},
	},
}

// unitDirectives parses a unit file into key -> values, in order.
func unitDirectives(unit []byte) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' || l[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = append(m[k], v)
		}
	}
	return m
}

// TestSystemdUnit checks each unit with systemd-analyze: verify (the unit
// loads, every key is known, the command exists) and security (the
// exposure level does not rise), and checks the settings pxresp relies on.
func TestSystemdUnit(t *testing.T) {
	sa := systemdAnalyze(t)
	bin := pxproc.Bin(t)
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) { checkUnit(t, sa, bin, u) })
	}
	// The binary takes the flags ExecStart gives it.
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, f := range []string{"-config", "-datapath"} {
		if !bytes.Contains(help, []byte(f)) {
			t.Errorf("pxresp --help does not list %s:\n%s", f, help)
		}
	}
}

func checkUnit(t *testing.T, sa, bin string, u unit) {
	unitText := readFile(t, u.file)
	if err := verify(t, sa, unitCopy(t, unitText, bin)); err != nil {
		t.Error(err)
	}
	// The check itself: a misspelt key and a missing binary are caught.
	typo := bytes.Replace(unitText, []byte("ProtectSystem=strict"), []byte("ProtectSytem=strict"), 1)
	if err := verify(t, sa, unitCopy(t, typo, bin)); err == nil || !strings.Contains(err.Error(), "ProtectSytem") {
		t.Errorf("a misspelt key went through verify: %v", err)
	}
	if err := verify(t, sa, unitCopy(t, unitText, filepath.Join(t.TempDir(), "missing"))); err == nil {
		t.Error("a missing ExecStart binary went through verify")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "security", "--offline=yes", unitCopy(t, unitText, bin)).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=yes: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for pxresp.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: exposure %.1f", level)
	if level > u.maxExposure {
		t.Errorf("exposure level %.1f, was %.1f:\n%s", level, u.maxExposure, out)
	}

	d := unitDirectives(unitText)
	want := map[string]string{
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"Type":                    "simple",
		"DynamicUser":             "yes",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectKernelTunables":   "yes",
		"RestrictAddressFamilies": "AF_PACKET AF_NETLINK AF_INET AF_INET6 AF_UNIX",
		"Restart":                 "on-failure",
	}
	maps.Copy(want, u.want)
	for k, w := range want {
		if got := d[k]; len(got) != 1 || got[0] != w {
			t.Errorf("%s=%q, want %q", k, got, w)
		}
	}
	if got := d["SystemCallFilter"]; !slices.Equal(got, u.filter) {
		t.Errorf("SystemCallFilter=%q, want %q", got, u.filter)
	}
	// These would hide the host's interfaces, take the capabilities out of
	// the host's user namespace, or hide /proc/sys.
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "ProcSubset", "NetworkNamespacePath"} {
		if v, ok := d[k]; ok {
			t.Errorf("%s=%q: pxresp must see the host's network and /proc/sys", k, v)
		}
	}
}

// TestSystemdUnitVariants: the eBPF unit is the packet one but for the
// directives that make it the eBPF one, so that a hardening change to one
// cannot miss the other.
func TestSystemdUnitVariants(t *testing.T) {
	packet, ebpf := unitDirectives(readFile(t, units[0].file)), unitDirectives(readFile(t, units[1].file))
	differ := []string{"Description", "ExecStart", "CapabilityBoundingSet", "AmbientCapabilities", "SystemCallFilter"}
	for _, k := range slices.Sorted(maps.Keys(packet)) {
		if !slices.Contains(differ, k) && !slices.Equal(packet[k], ebpf[k]) {
			t.Errorf("%s: %s=%q, %s=%q", k, units[0].file, packet[k], units[1].file, ebpf[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ebpf)) {
		if _, ok := packet[k]; !ok {
			t.Errorf("%s sets %s=%q, %s does not", units[1].file, k, ebpf[k], units[0].file)
		}
	}
}

// document is one YAML document of a manifest and its kind.
type document struct {
	line int // where it starts in the file
	kind string
	data []byte
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// documents splits a multi-document YAML file.
func documents(t *testing.T, data []byte) []document {
	t.Helper()
	var docs []document
	line := 1
	for _, part := range docSep.Split(string(data), -1) {
		start := line
		line += strings.Count(part, "\n")
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(part, "")) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(part), &tm); err != nil {
			t.Fatalf("document at line %d: %v", start, err)
		}
		docs = append(docs, document{start, tm.APIVersion + "/" + tm.Kind, []byte(part)})
	}
	return docs
}

// manifest is daemonset.yaml decoded.
type manifest struct {
	sa  *corev1.ServiceAccount
	cm  *corev1.ConfigMap
	ds  *appsv1.DaemonSet
	err error
}

// decodeManifest decodes every document strictly (unknown or duplicate
// fields are errors) into its Kubernetes API type.
func decodeManifest(t *testing.T, data []byte) manifest {
	t.Helper()
	var m manifest
	for _, d := range documents(t, data) {
		var obj any
		switch d.kind {
		case "v1/ServiceAccount":
			m.sa = &corev1.ServiceAccount{}
			obj = m.sa
		case "v1/ConfigMap":
			m.cm = &corev1.ConfigMap{}
			obj = m.cm
		case "apps/v1/DaemonSet":
			m.ds = &appsv1.DaemonSet{}
			obj = m.ds
		default:
			m.err = fmt.Errorf("line %d: unexpected kind %q", d.line, d.kind)
			return m
		}
		if err := yaml.UnmarshalStrict(d.data, obj); err != nil {
			m.err = fmt.Errorf("line %d: %s: %w", d.line, d.kind, err)
			return m
		}
	}
	if m.sa == nil || m.cm == nil || m.ds == nil {
		m.err = fmt.Errorf("want a ServiceAccount, a ConfigMap and a DaemonSet, got %v %v %v", m.sa != nil, m.cm != nil, m.ds != nil)
	}
	return m
}

// metricsPort is the port of --metrics-addr in the DaemonSet.
const metricsPort = 9597

// hostIPEnv is the DaemonSet's variable holding the node's IP.
const hostIPEnv = "HOST_IP"

// daemonSet is one of the DaemonSet manifests and the capabilities its
// container adds (and needs).
type daemonSet struct {
	file string
	caps []corev1.Capability
}

// daemonSets are the packet datapath's manifest and the eBPF one's, which
// differs from it only in its container's command, capabilities and
// --datapath flag (TestDaemonSetVariants).
var daemonSets = []daemonSet{
	{"daemonset.yaml", []corev1.Capability{"NET_RAW"}},
	{"daemonset-ebpf.yaml", []corev1.Capability{"BPF", "NET_ADMIN", "NET_RAW"}},
}

// TestDaemonSet decodes each DaemonSet manifest into the Kubernetes API
// types, strictly, and checks what pxresp needs and what it must not have.
func TestDaemonSet(t *testing.T) {
	for _, v := range daemonSets {
		t.Run(v.file, func(t *testing.T) { checkDaemonSet(t, v) })
	}
}

func checkDaemonSet(t *testing.T, v daemonSet) {
	data := readFile(t, v.file)
	m := decodeManifest(t, data)
	if m.err != nil {
		t.Fatal(m.err)
	}
	// The strict decode catches a typo.
	if bad := decodeManifest(t, bytes.Replace(data, []byte("hostNetwork:"), []byte("hostNetwrok:"), 1)); bad.err == nil ||
		!strings.Contains(bad.err.Error(), "hostNetwrok") {
		t.Errorf("a misspelt field decoded: %v", bad.err)
	}

	ds, ns := m.ds, m.ds.Namespace
	if m.sa.Namespace != ns || m.cm.Namespace != ns {
		t.Errorf("namespaces: ServiceAccount %q, ConfigMap %q, DaemonSet %q", m.sa.Namespace, m.cm.Namespace, ns)
	}
	spec := ds.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsMap(ds.Spec.Selector)
	if err != nil || len(sel) == 0 {
		t.Errorf("selector %v: %v", ds.Spec.Selector, err)
	}
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the selector %s=%s does not match the pod template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("updateStrategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
	}
	if !spec.HostNetwork {
		t.Error("hostNetwork is not true: pxresp must serve the node's interfaces")
	}
	if spec.ServiceAccountName != m.sa.Name {
		t.Errorf("serviceAccountName %q, ServiceAccount %q", spec.ServiceAccountName, m.sa.Name)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	}) {
		t.Errorf("tolerations %v: want one that tolerates every taint (operator: Exists), to run on every node", spec.Tolerations)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers; want one container", len(spec.Containers), len(spec.InitContainers))
	}
	c := spec.Containers[0]

	// Least privilege: non-root, CAP_NET_RAW only, nothing to gain, nothing
	// to write.
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil || sc.Capabilities == nil {
		t.Fatal("pod or container securityContext, or capabilities, missing")
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	uid := sc.RunAsUser
	if uid == nil {
		uid = psc.RunAsUser
	}
	if !nonRoot || uid == nil || *uid == 0 {
		t.Errorf("runAsNonRoot %v, runAsUser %v: want a non-root UID", nonRoot, uid)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, v.caps) {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] add %v", sc.Capabilities.Drop, sc.Capabilities.Add, v.caps)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile %v, want RuntimeDefault", sp)
	}

	// The config: --config FILE, FILE from the ConfigMap, and valid.
	args := c.Args
	arg := func(flag string) string {
		i := slices.Index(args, flag)
		if i < 0 || i+1 >= len(args) {
			t.Errorf("args %q: no %s", args, flag)
			return ""
		}
		return args[i+1]
	}
	cfgPath := arg("--config")
	var vol *corev1.Volume
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == filepath.Dir(cfgPath) {
			if !vm.ReadOnly {
				t.Errorf("volume mount %s is not read-only", vm.MountPath)
			}
			for i := range spec.Volumes {
				if spec.Volumes[i].Name == vm.Name {
					vol = &spec.Volumes[i]
				}
			}
		}
	}
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != m.cm.Name {
		t.Fatalf("--config %s is not on a volume from ConfigMap %s", cfgPath, m.cm.Name)
	}
	text, ok := m.cm.Data[filepath.Base(cfgPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", m.cm.Name, filepath.Base(cfgPath))
	}
	cfg, err := config.Parse("daemonset.yaml ConfigMap "+m.cm.Name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Match("cali2c7032f0518"); r == nil {
		t.Error("the ConfigMap's config serves no cali* interface")
	}

	// Metrics and probes on --metrics-addr: the node's IP, never every
	// address.
	host, port, err := net.SplitHostPort(arg("--metrics-addr"))
	if err != nil || port != strconv.Itoa(metricsPort) {
		t.Errorf("--metrics-addr %q (%v): want port %d", arg("--metrics-addr"), err, metricsPort)
	}
	if want := "$(" + hostIPEnv + ")"; host != want {
		t.Errorf("--metrics-addr %q: want host %s, the node's IP", arg("--metrics-addr"), want)
	}
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == hostIPEnv }); i < 0 ||
		c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "status.hostIP" {
		t.Errorf("env %v: want %s from the downward API's status.hostIP", c.Env, hostIPEnv)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v: want kubernetes.io/os: linux", spec.NodeSelector)
	}
	var named string
	for _, p := range c.Ports {
		if p.ContainerPort == metricsPort && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			named = p.Name
		}
	}
	if named == "" {
		t.Errorf("ports %v: no TCP container port %d", c.Ports, metricsPort)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || (g.Port.String() != named && g.Port.IntValue() != metricsPort) {
			t.Errorf("%s probe: httpGet %s port %s, want %s on port %d", p.name, g.Path, g.Port.String(), p.path, metricsPort)
		}
		// Without a host the kubelet asks the pod's IP, which with
		// hostNetwork is the node's IP, where pxresp listens.
		if g.Host != "" {
			t.Errorf("%s probe: host %q, want none (the pod's IP)", p.name, g.Host)
		}
	}

	// Resources: requests for scheduling, a memory limit.
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("resources: requests %v limits %v; want cpu and memory requests and a memory limit", req, lim)
	}
	if lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("memory limit %v below the request %v", lim.Memory(), req.Memory())
	}
}

// TestDaemonSetVariants: the eBPF manifest is the packet one but for its
// container's command (the binary with the eBPF file capability), the
// capabilities it adds and --datapath auto, so that a change to one cannot
// miss the other.
func TestDaemonSetVariants(t *testing.T) {
	packet := decodeManifest(t, readFile(t, daemonSets[0].file))
	ebpf := decodeManifest(t, readFile(t, daemonSets[1].file))
	if err := errors.Join(packet.err, ebpf.err); err != nil {
		t.Fatal(err)
	}
	want := packet.ds.DeepCopy()
	c := &want.Spec.Template.Spec.Containers[0]
	c.Command = []string{ebpfBinary}
	c.Args = append([]string{"--datapath", "auto"}, c.Args...)
	c.SecurityContext.Capabilities.Add = daemonSets[1].caps
	if diff := cmp.Diff(want, ebpf.ds); diff != "" {
		t.Errorf("%s is not %s with the eBPF changes (-want +got):\n%s", daemonSets[1].file, daemonSets[0].file, diff)
	}
	if diff := cmp.Diff(packet.sa, ebpf.sa); diff != "" {
		t.Errorf("ServiceAccount (-%s +%s):\n%s", daemonSets[0].file, daemonSets[1].file, diff)
	}
	if diff := cmp.Diff(packet.cm, ebpf.cm); diff != "" {
		t.Errorf("ConfigMap (-%s +%s):\n%s", daemonSets[0].file, daemonSets[1].file, diff)
	}
}

// ebpfBinary is the image's copy of pxresp with the file capability
// cap_bpf,cap_net_admin,cap_net_raw=ep (deploy/image.sh).
const ebpfBinary = "/usr/local/bin/pxresp-ebpf"

// TestConfigExample: deploy/config.yaml is valid, and so is each of its
// commented-out example rules once uncommented.
func TestConfigExample(t *testing.T) {
	data := readFile(t, "config.yaml")
	cfg, err := config.Parse("config.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Match("cali2c7032f0518"); r == nil || r.Name != "calico" {
		t.Errorf("cali2c7032f0518 is served by %v, want rule calico", r)
	}
	// Uncomment "  # - name: ..." rules and their "  #   key: ..." lines.
	var b strings.Builder
	rule := regexp.MustCompile(`^  # (- |  )[a-z]+:`)
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if rule.MatchString(l) {
			l = "  " + strings.TrimPrefix(l, "  # ")
			if strings.HasPrefix(l, "  - ") {
				n++
			}
		}
		b.WriteString(l + "\n")
	}
	all, err := config.Parse("config.yaml, uncommented", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Rules) != 1+n || n < 2 {
		t.Errorf("uncommented: %d rules, want 1 + %d examples", len(all.Rules), n)
	}
}

// makeVar runs `make -s TARGET` at the top of the repository and returns
// its output: a skip without make, or a failure when privileged tests are
// required (CI installs make).
func makeVar(t *testing.T, target string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		if privtest.Required() {
			t.Fatalf("make is missing (Debian package make): %v", err)
		}
		t.Skipf("make is missing (Debian package make): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "make", "-s", "--no-print-directory", "-C", "..", target).Output()
	if err != nil {
		t.Fatalf("make %s: %v", target, err)
	}
	return strings.TrimSpace(string(out))
}

// TestDaemonSetImage: the DaemonSet runs the image that `make image` tags,
// a release tag rather than a moving one.
func TestDaemonSetImage(t *testing.T) {
	image := makeVar(t, "image-name")
	for _, v := range daemonSets {
		m := decodeManifest(t, readFile(t, v.file))
		if m.err != nil {
			t.Fatal(m.err)
		}
		if got := m.ds.Spec.Template.Spec.Containers[0].Image; got != image {
			t.Errorf("%s runs %q, make image builds %q", v.file, got, image)
		}
	}
	if !regexp.MustCompile(`:v[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(image) {
		t.Errorf("image %q: want a release tag vX.Y.Z", image)
	}
}

// TestPodMonitor decodes podmonitor.yaml strictly into the Prometheus
// Operator's type and checks that it selects the DaemonSet's pods on their
// metrics port.
func TestPodMonitor(t *testing.T) {
	data := readFile(t, "podmonitor.yaml")
	var pm monitoringv1.PodMonitor
	if err := yaml.UnmarshalStrict(data, &pm); err != nil {
		t.Fatal(err)
	}
	if pm.APIVersion != monitoringv1.SchemeGroupVersion.String() || pm.Kind != monitoringv1.PodMonitorsKind {
		t.Errorf("apiVersion %q kind %q", pm.APIVersion, pm.Kind)
	}
	m := decodeManifest(t, readFile(t, "daemonset.yaml"))
	if m.err != nil {
		t.Fatal(m.err)
	}
	pod := m.ds.Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("selector %v (%v) does not match the DaemonSet's pods %v", pm.Spec.Selector, err, pod.Labels)
	}
	if pm.Namespace != m.ds.Namespace || !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{m.ds.Namespace}) {
		t.Errorf("namespace %q, namespaceSelector %v: want %s", pm.Namespace, pm.Spec.NamespaceSelector.MatchNames, m.ds.Namespace)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	c := pod.Spec.Containers[0]
	if ep.Port == nil || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == *ep.Port && p.ContainerPort == metricsPort }) {
		t.Errorf("endpoint port %v: want the container's port %d by name", ep.Port, metricsPort)
	}
	if ep.Path != "" && ep.Path != "/metrics" {
		t.Errorf("endpoint path %q, want /metrics", ep.Path)
	}
}

// containerEnv is the environment the kubelet gives container c: its
// values, the downward API's status.hostIP as hostIP, and resource fields
// of its limits in bytes (divisor 1). Any other source fails t.
func containerEnv(t *testing.T, c corev1.Container, hostIP string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP":
			env[e.Name] = hostIP
		case e.ValueFrom.ResourceFieldRef != nil && strings.HasPrefix(e.ValueFrom.ResourceFieldRef.Resource, "limits."):
			q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(e.ValueFrom.ResourceFieldRef.Resource, "limits."))]
			if !ok {
				t.Fatalf("env %s: no %s", e.Name, e.ValueFrom.ResourceFieldRef.Resource)
			}
			env[e.Name] = strconv.FormatInt(q.Value(), 10)
		default:
			t.Fatalf("env %s: a source this test does not know: %+v", e.Name, e.ValueFrom)
		}
	}
	return env
}

var envRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand replaces $(NAME) in s with env[NAME] as the kubelet does in args
// and env values: $$ is a literal $, an undefined $(NAME) stays as it is.
func expand(s string, env map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// TestExpand checks expand against the kubelet's rules.
func TestExpand(t *testing.T) {
	env := map[string]string{"HOST_IP": "192.0.2.7", "A": "x"}
	for in, want := range map[string]string{
		"$(HOST_IP):9597": "192.0.2.7:9597",
		"$(NOPE):1":       "$(NOPE):1",
		"$$(A)":           "$(A)",
		"$(A)$(A)-$":      "xx-$",
		"plain":           "plain",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// wantDatapath is the datapath pxresp must run under the variant in file,
// on the machines the tests run on (a kernel with tcx, bpf(2) allowed).
func wantDatapath(file string) string {
	if strings.Contains(file, "-ebpf") {
		return "ebpf"
	}
	return "packet"
}

// checkDatapath requires pxresp's start log to name datapath want.
func checkDatapath(t *testing.T, p *pxproc.Proc, want string) {
	t.Helper()
	if p.Count(pxproc.ChoseDatapath(want)) == 0 {
		t.Errorf("no %s in the log:\n%s", pxproc.ChoseDatapath(want), p.Log())
	}
}
