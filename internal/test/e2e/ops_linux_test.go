package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/internal/test/configmap"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scrape"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// Operating pxresp: TLS and basic auth on its HTTP listener, following a
// ConfigMap-style config file, and pxresp status.

// selfSigned writes a throwaway self-signed certificate for 127.0.0.1 and
// its key into dir, and returns their paths and a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pxresp test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// get GETs url with c, with basic auth if user is set, and returns the
// status code and body; err is the transport's.
func get(c *http.Client, url, user, password string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

// TestWebConfigTLSAndBasicAuth: with --web.config.file, the metrics
// listener speaks only TLS, with the file's certificate, and refuses a
// request without the file's user and password, or with a wrong one;
// pxresp status reaches it with the user in the URL and --ca-file.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	tp := newTopo(t, 1)
	a := tp.Pods[0]
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, fmt.Appendf(nil, "tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n",
		certFile, keyFile, hash), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t, tp.Host)
	p := startPxresp(t, tp, "--iface", "cali*", "--gw", topo.Gateway.String(), "--metrics-addr", addr, "--web.config.file", webConfig)
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	p.WaitT(t, pxproc.Contains("TLS is enabled"), 1)

	hc := nsHTTPClient(tp.Host)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	url := "https://" + addr + "/metrics"
	for _, c := range []struct {
		user, password string
		want           int
	}{
		{"", "", http.StatusUnauthorized},
		{"prometheus", "wrong", http.StatusUnauthorized},
		{"someone", "s3cret", http.StatusUnauthorized},
		{"prometheus", "s3cret", http.StatusOK},
	} {
		code, body, err := get(hc, url, c.user, c.password)
		if err != nil || code != c.want {
			t.Errorf("GET %s as %q/%q: %d %v, want %d", url, c.user, c.password, code, err, c.want)
		}
		if c.want == http.StatusOK && !strings.Contains(body, "pxresp_interfaces_attached 1") {
			t.Errorf("GET %s: no pxresp_interfaces_attached 1 in\n%.500s", url, body)
		}
		if c.want != http.StatusOK && strings.Contains(body, "pxresp_") {
			t.Errorf("GET %s as %q: metrics served without credentials", url, c.user)
		}
	}
	// Plain HTTP is not served.
	if code, body, _ := get(hc, "http://"+addr+"/metrics", "prometheus", "s3cret"); code == http.StatusOK || strings.Contains(body, "pxresp_") {
		t.Errorf("plain HTTP: %d, metrics served", code)
	}
	// A client that does not trust the certificate is refused by TLS.
	untrusting := nsHTTPClient(tp.Host)
	if _, _, err := get(untrusting, url, "prometheus", "s3cret"); err == nil {
		t.Error("a client without the CA got an answer")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := tp.Host.Exec(ctx, pxproc.Bin(t), "status", "--addr", "https://prometheus:s3cret@"+addr, "--ca-file", certFile)
	if err != nil || !statusRow(out, a.HostIf, "attached") {
		t.Errorf("pxresp status over TLS: %v\n%s", err, out)
	}
	out, err = tp.Host.Exec(ctx, pxproc.Bin(t), "status", "--addr", "https://"+addr, "--ca-file", certFile)
	if err == nil || !strings.Contains(out, "401 Unauthorized") {
		t.Errorf("pxresp status without the user: %v\n%s", err, out)
	}
	p.StopT(t, time.Second)
}

// statusRow reports whether the status table has a row for iface whose
// STATE is state.
func statusRow(table, iface, state string) bool {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == iface && f[2] == state {
			return true
		}
	}
	return false
}

// TestConfigMapUpdateReloads: a running pxresp follows a ConfigMap
// update (the kubelet's ..data symlink swap) without a signal: the new
// gateway is answered, the old not, and the log says what changed; an
// invalid update is refused and counted, and the previous configuration
// keeps answering.
func TestConfigMapUpdateReloads(t *testing.T) {
	tp := newTopo(t, 2)
	a, b := tp.Pods[0], tp.Pods[1]
	vol := configmap.New(t, "config.yaml", gatewayRule("169.254.1.1"))
	addr := freeLoopbackAddr(t, tp.Host)
	p := startPxresp(t, tp, "--config", vol.Path(), "--metrics-addr", addr)
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	p.WaitT(t, pxproc.Has("msg=attach"), 2)
	ca := topotest.Client(t, a)
	if !answered(t, ca, a, gw1, time.Second) {
		t.Fatal("169.254.1.1 not answered at start")
	}

	// The gateway changes and the calico rule narrows to pod A's
	// interface; a new rule takes pod B's.
	vol.Update(t, fmt.Sprintf(`rules:
- name: calico
  interfaces: [%s]
  gateways: [169.254.1.2]
- name: other
  interfaces: [%s]
  gateways: [169.254.1.2]
`, a.HostIf, b.HostIf))
	l := p.WaitT(t, pxproc.Has("msg=reloaded", `trigger="file changed"`), 1)
	for key, want := range map[string]string{"rules_changed": "[calico]", "rules_added": "[other]", "rules_removed": "[]"} {
		if got := l.Attr(key); got != want {
			t.Errorf("reload log %s=%q, want %q: %s", key, got, want, l)
		}
	}
	if !answered(t, ca, a, gw2, time.Second) || answered(t, ca, a, gw1, 100*time.Millisecond) {
		t.Error("after the update: want 169.254.1.2 answered and 169.254.1.1 not")
	}
	p.WaitT(t, pxproc.Has("msg=rule", "rule=other"), 1)

	// The other rule goes: pod B's interface is detached, and the log says so.
	vol.Update(t, fmt.Sprintf("rules:\n- name: calico\n  interfaces: [%s]\n  gateways: [169.254.1.2]\n", a.HostIf))
	l = p.WaitT(t, pxproc.Has("msg=reloaded"), 2)
	if got := l.Attr("detached"); got != "["+b.HostIf+"]" || l.Attr("rules_removed") != "[other]" {
		t.Errorf("reload log: detached %q rules_removed %q, want [%s] [other]: %s", got, l.Attr("rules_removed"), b.HostIf, l)
	}

	// An invalid update is refused and counted; the running rules stay.
	vol.Update(t, "rules:\n- name: calico\n  interfaces: ['cali*']\n  gateways: [169.254.1.300]\n")
	p.WaitT(t, pxproc.Contains(`msg="reload failed"`, `trigger="file changed"`, "169.254.1.300"), 1)
	if !answered(t, ca, a, gw2, time.Second) {
		t.Error("after a refused update: 169.254.1.2 no longer answered")
	}
	e, body := waitMetrics(t, nsHTTPClient(tp.Host), "http://"+addr+"/metrics", func(e scrape.Exposition) bool {
		return e.Get(t, "pxresp_config_reloads_total", "result", "failure") == 1
	})
	for _, c := range []struct {
		key  string
		want float64
	}{
		{scrape.Series("pxresp_config_reloads_total", "result", "success"), 2},
		{scrape.Series("pxresp_config_reloads_total", "result", "failure"), 1},
		{"pxresp_config_last_reload_successful", 0},
	} {
		if got, ok := e.Values[c.key]; !ok || got != c.want {
			t.Errorf("%s = %v, want %v\n%s", c.key, got, c.want, body)
		}
	}
	if n := p.Count(pxproc.Has("msg=attach")); n != 2 {
		t.Errorf("%d attaches, want the 2 from the start: reloads reopened listeners", n)
	}
	p.StopT(t, time.Second)
}

// TestStatusExplainsSkipped: pxresp status lists every interface of the
// node: a pod's, attached with its rule and counters; a cali* veth that is
// a bridge port, and one with NOARP, skipped with the reason; loopback and
// the uplink too. The reasons are in the JSON, in the metrics and, at
// debug level, in the log, once per interface.
func TestStatusExplainsSkipped(t *testing.T) {
	tp := newTopo(t, 1)
	a := tp.Pods[0]
	ctx := context.Background()
	// The names stay unique to this test's namespace, which it owns.
	const bridge, bridged, noarp = "pxbr0", "calibridged0", "calinoarp0"
	if err := tp.Host.Batch(ctx, []string{
		"link add " + bridge + " type bridge",
		"link add " + bridged + " type veth peer name pxbrpeer0",
		"link set " + bridged + " master " + bridge,
		"link add " + noarp + " type veth peer name pxnoarppeer0",
		"link set " + noarp + " arp off",
		"link set " + bridge + " up",
		"link set " + bridged + " up",
		"link set " + noarp + " up",
	}); err != nil {
		t.Fatal(err)
	}
	if err := tp.SetKernelProxyARP(ctx, a.HostIf, true, -1); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t, tp.Host)
	p := startPxresp(t, tp, "--iface", "cali*", "--gw", topo.Gateway.String(), "--metrics-addr", addr, "--log-level", "debug")
	p.WaitT(t, pxproc.Has("msg=ready"), 1)
	p.WaitT(t, pxproc.Has("msg=sysctl", "iface="+a.HostIf, "check=proxy_arp"), 1)
	out := topotest.Exec(t, a.NS, "ping", "-c", "1", "-W", "1", tp.UplinkIP.String())
	if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping: %s", out)
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	table, err := tp.Host.Exec(sctx, pxproc.Bin(t), "status", "--addr", "http://"+addr)
	if err != nil {
		t.Fatalf("pxresp status: %v\n%s", err, table)
	}
	t.Logf("pxresp status:\n%s", table)
	for _, c := range []struct{ iface, state, why string }{
		{a.HostIf, "attached", ""},
		{bridged, "skipped", "has a master (bridge, bond or VRF port): master " + bridge},
		{noarp, "skipped", "NOARP"},
		{"lo", "skipped", "loopback"},
		{"up0", "skipped", "no rule matches"},
		{bridge, "skipped", "no rule matches"},
	} {
		if !statusRow(table, c.iface, c.state) || !strings.Contains(rowOf(table, c.iface), c.why) {
			t.Errorf("%s: want %s %q in the table", c.iface, c.state, c.why)
		}
	}
	if !strings.Contains(table, a.HostIf) || !strings.Contains(rowOfCheck(table, a.HostIf, "proxy_arp"), "proxy_arp") {
		t.Errorf("no proxy_arp problem for %s in the table", a.HostIf)
	}

	// The JSON: the attached interface's rule and counters.
	code, body, _ := scrape.Fetch(t, nsHTTPClient(tp.Host), "http://"+addr+status.Path)
	var st status.Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET %s: %d %s", status.Path, code, body)
	}
	for _, i := range st.Interfaces {
		if i.Name == a.HostIf && (i.Rule != "rule 1" || i.Counters == nil || i.Counters.Replies < 1 || len(i.Problems) != 1) {
			t.Errorf("%s in /status: %+v, want rule 1, a reply at least and the proxy_arp problem", a.HostIf, i)
		}
	}

	e, _ := scrape.Metrics(t, nsHTTPClient(tp.Host), "http://"+addr+"/metrics")
	for _, c := range []struct {
		key  string
		want float64
	}{
		{scrape.Series("pxresp_interfaces_skipped", "reason", "has_master"), 1},
		{scrape.Series("pxresp_interfaces_skipped", "reason", "noarp"), 1},
		{scrape.Series("pxresp_interfaces_skipped", "reason", "loopback"), 1},
		{scrape.Series("pxresp_sysctl_problems", "check", "proxy_arp"), 1},
		{scrape.Series("pxresp_sysctl_problems", "check", "rp_filter"), 0},
		{"pxresp_attach_errors_total", 0},
	} {
		if got, ok := e.Values[c.key]; !ok || got != c.want {
			t.Errorf("%s = %v, want %v", c.key, got, c.want)
		}
	}
	// Skips are logged at debug level, once each, however many
	// notifications the link gets.
	for range 3 {
		if err := tp.Host.IP(ctx, "link", "set", bridged, "mtu", "1400"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.Host.IP(ctx, "link", "set", bridged, "nomaster"); err != nil {
		t.Fatal(err)
	}
	p.WaitT(t, pxproc.Has("msg=attach", "iface="+bridged), 1)
	for iface, reason := range map[string]string{bridged: "has a master (bridge, bond or VRF port)", noarp: "NOARP"} {
		if n := p.Count(pxproc.Has("msg=skip", "iface="+iface, fmt.Sprintf("reason=%q", reason))); n != 1 {
			t.Errorf("%d skip lines for %s, want 1:\n%s", n, iface, p.Log())
		}
	}
	p.StopT(t, time.Second)
}

// rowOf returns the line of the interface table that starts with iface.
func rowOf(table, iface string) string {
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, iface+" ") {
			return line
		}
	}
	return ""
}

// rowOfCheck returns the line of the sysctl table for iface and check.
func rowOfCheck(table, iface, check string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == iface && f[1] == check {
			return line
		}
	}
	return ""
}
