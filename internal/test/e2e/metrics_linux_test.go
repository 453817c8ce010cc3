package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scrape"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
	"github.com/pxresp/pxresp/policy"
)

// nsHTTPClient is an HTTP client whose connections are made inside ns:
// each dial runs on a thread switched into the namespace (topo.NS.Do), and
// the socket stays there. No proxy, no keep-alive.
func nsHTTPClient(ns *topo.NS) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := ns.Do(func() (err error) {
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port free in ns.
func freeLoopbackAddr(t *testing.T, ns *topo.NS) string {
	t.Helper()
	var addr string
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = ln.Addr().String()
		return ln.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitMetrics scrapes url until ok accepts the scrape.Exposition (at most 5 s)
// and returns the last one either way.
func waitMetrics(t *testing.T, c *http.Client, url string, ok func(scrape.Exposition) bool) (scrape.Exposition, string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, body := scrape.Metrics(t, c, url)
		if ok(e) || time.Now().After(deadline) {
			return e, body
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countReplies reads the ARP replies queued on c until none arrives for
// 300 ms (at most 1000) and checks that each is from the gateway MAC.
func countReplies(t *testing.T, c *arptest.Client, who string) int {
	t.Helper()
	n := 0
	for range 1000 {
		r, err := c.NextReply(300 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			return n
		}
		if !bytes.Equal(r[6:12], topo.GatewayMAC) || !bytes.Equal(replyMAC(r), topo.GatewayMAC) {
			t.Errorf("%s: reply %x not from the gateway MAC %v", who, r, net.HardwareAddr(topo.GatewayMAC))
		}
		n++
	}
	t.Fatalf("%s: more than 1000 replies", who)
	return n
}

// counters are the pxresp_ values this test predicts.
type counters map[string]float64

// packetOnly are the series that only the packet datapath counts: its
// sockets' kernel queues, the storms it sheds, and the reply latency it
// measures in userspace. The eBPF datapath exports them under the same
// names, at 0.
var packetOnly = []string{
	"pxresp_socket_queued_frames_total",
	"pxresp_socket_dropped_frames_total",
	"pxresp_storms_total",
	"pxresp_storms_shedding",
	"pxresp_shed_frames_total",
	"pxresp_reply_latency_seconds_count",
	scrape.Series("pxresp_reply_latency_seconds_bucket", "le", "+Inf"),
}

// expect returns want as dp counts it: on eBPF, the packet-only series
// are 0.
func (dp datapath) expect(want counters) counters {
	if dp == packetDP {
		return want
	}
	c := maps.Clone(want)
	for _, k := range packetOnly {
		c[k] = 0
	}
	return c
}

func (c counters) diff(e scrape.Exposition) []string {
	var d []string
	for k, want := range c {
		got, ok := e.Values[k]
		if !ok || got != want {
			d = append(d, fmt.Sprintf("%s = %v (present %v), want %v", k, got, ok, want))
		}
	}
	return d
}

// TestMetricsEndToEnd runs the built pxresp with --metrics-addr in the host
// namespace, makes real traffic (pods' kernels resolving their gateway for
// ping, then raw requests that are answered, ignored with each verdict,
// malformed or filtered), and scrapes /metrics from inside that namespace:
// every count must be exact. /healthz and /readyz answer 200 once pxresp
// logged msg=ready, and detaching and attaching interfaces shows in the
// gauges and counters while the traffic counters keep what the gone
// interface counted. It runs on each datapath, with the same expectations
// (packetOnly aside), and the datapath shows as a label of some series.
func TestMetricsEndToEnd(t *testing.T) {
	eachDatapath(t, func(t *testing.T, dp datapath) {
		tp := newTopo(t, 2)
		a, b := tp.Pods[0], tp.Pods[1]
		addr := freeLoopbackAddr(t, tp.Host)
		hc := nsHTTPClient(tp.Host)
		base := "http://" + addr
		// Open before pxresp starts: each client sees every reply its pod gets.
		ca, cb := topotest.Client(t, a), topotest.Client(t, b)

		p := dp.start(t, tp, "--iface", "cali*", "--gw", topo.Gateway.String(),
			"--target", topo.PodCIDR.String(), "--metrics-addr", addr)
		p.WaitT(t, pxproc.Has("msg=ready"), 1)
		for _, c := range []struct{ path, body string }{{"/healthz", "ok\n"}, {"/readyz", "ready\n"}} {
			if code, body, _ := scrape.Fetch(t, hc, base+c.path); code != http.StatusOK || body != c.body {
				t.Errorf("GET %s after msg=ready: %d %q, want 200 %q", c.path, code, body, c.body)
			}
		}

		// Phase 1: the pods' own kernels resolve 169.254.1.1 to ping.
		podsPing(t, tp, 2)
		ra, rb := countReplies(t, ca, "pod A"), countReplies(t, cb, "pod B")
		if ra < 1 || rb < 1 {
			t.Errorf("the pods' kernels got %d and %d replies, want at least one each", ra, rb)
		}
		want := counters{
			"pxresp_requests_total":              float64(ra + rb),
			"pxresp_replies_total":               float64(ra + rb),
			"pxresp_reply_latency_seconds_count": float64(ra + rb),
			scrape.Series("pxresp_reply_latency_seconds_bucket", "le", "+Inf"): float64(ra + rb),
			"pxresp_malformed_frames_total":                                    0,
			"pxresp_rate_limited_total":                                        0,
			"pxresp_dry_run_replies_total":                                     0,
			"pxresp_send_errors_total":                                         0,
			"pxresp_read_errors_total":                                         0,
			"pxresp_socket_queued_frames_total":                                float64(ra + rb),
			"pxresp_socket_dropped_frames_total":                               0,
			"pxresp_storms_total":                                              0,
			"pxresp_storms_shedding":                                           0,
			"pxresp_shed_frames_total":                                         0,
			"pxresp_interfaces_attached":                                       2,
			"pxresp_attaches_total":                                            2,
			"pxresp_detaches_total":                                            0,
			"pxresp_attach_errors_total":                                       0,
			"pxresp_netlink_resyncs_total":                                     0,
			scrape.Series("pxresp_config_reloads_total", "result", "success"):  0,
			scrape.Series("pxresp_config_reloads_total", "result", "failure"):  0,
			"pxresp_config_last_reload_successful":                             1,
			scrape.Series("pxresp_build_info", "version", buildInfoVersion(t, hc, base), "goversion", runtime.Version()): 1,
		}
		verdicts := map[string]float64{}
		for v := 1; v < policy.NumVerdicts; v++ {
			verdicts[policy.Verdict(v).String()] = 0
		}
		setVerdicts := func() {
			for v, n := range verdicts {
				want[scrape.Series("pxresp_requests_ignored_total", "verdict", v)] = n
			}
		}
		setVerdicts()
		e, body := waitMetrics(t, hc, base+"/metrics", func(e scrape.Exposition) bool { return len(dp.expect(want).diff(e)) == 0 })
		for _, d := range dp.expect(want).diff(e) {
			t.Errorf("after the pings: %s", d)
		}
		t.Logf("after the pings: %d replies, latency sum %.1f µs", ra+rb, 1e6*e.Values["pxresp_reply_latency_seconds_sum"])
		if dp == packetDP && e.Values["pxresp_reply_latency_seconds_sum"] <= 0 {
			t.Error("latency sum is 0 after replies")
		}
		for _, s := range []string{a.HostIf, b.HostIf, a.IP.String(), b.IP.String()} {
			if strings.Contains(body, s) {
				t.Errorf("/metrics mentions %s: no per-interface or per-address labels", s)
			}
		}
		if !slices.ContainsFunc(slices.Collect(maps.Keys(e.Values)), func(k string) bool { return strings.Contains(k, `datapath="`+string(dp)+`"`) }) {
			t.Errorf("no series with the label datapath=%q:\n%s", dp, body)
		}
		for _, name := range []string{"process_open_fds", "process_resident_memory_bytes", "go_goroutines"} {
			if _, ok := e.Values[name]; !ok {
				t.Errorf("%s missing", name)
			}
		}
		if e.Get(t, "pxresp_config_last_reload_success_timestamp_seconds") <= 0 {
			t.Error("no timestamp for the configuration loaded at start")
		}

		// Phase 2: raw requests with a known fate each.
		bc := arptest.Broadcast
		gwMAC := net.HardwareAddr(topo.GatewayMAC)
		stranger := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
		unknown := netip.MustParseAddr("192.0.2.1")
		good := arptest.Request(a.MAC, a.IP, topo.Gateway, bc)
		const (
			reply     = "reply"
			malformed = "malformed"
			filtered  = "filtered" // dropped by the BPF filter: counted nowhere
		)
		cases := []struct {
			c     *arptest.Client
			frame []byte
			n     int
			fate  string // reply, malformed, filtered or a verdict
		}{
			{ca, good, 5, reply},
			{ca, arptest.Request(a.MAC, a.IP, topo.Gateway, gwMAC), 3, reply}, // unicast re-probe
			{ca, arptest.Request(a.MAC, a.IP, b.IP, bc), 2, reply},            // another pod (--target)
			{ca, arptest.Request(a.MAC, netip.IPv4Unspecified(), topo.Gateway, bc), 3, policy.Probe.String()},
			{ca, arptest.Request(a.MAC, a.IP, a.IP, bc), 2, policy.Gratuitous.String()},
			{ca, arptest.Request(a.MAC, a.IP, unknown, bc), 4, policy.NotTarget.String()},
			{ca, arptest.Request(a.MAC, netip.MustParseAddr("10.244.9.9"), a.IP, bc), 1, policy.OwnAddress.String()},
			{ca, arptest.Request(a.MAC, a.IP, topo.Gateway, net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}), 2, policy.NotForUs.String()},
			{ca, arptest.Request(a.MAC, netip.MustParseAddr("255.255.255.255"), topo.Gateway, bc), 1, policy.BadSender.String()},
			{ca, arptest.Request(a.MAC, a.IP, netip.MustParseAddr("255.255.255.255"), bc), 1, policy.BadTarget.String()},
			{ca, good[:30], 2, malformed},
			{ca, arptest.Request(a.MAC, a.IP, topo.Gateway, stranger), 2, filtered},
			{cb, arptest.Request(b.MAC, b.IP, topo.Gateway, bc), 4, reply},
			{cb, arptest.Request(b.MAC, netip.IPv4Unspecified(), topo.Gateway, bc), 1, policy.Probe.String()},
			{cb, arptest.Request(b.MAC, b.IP, netip.MustParseAddr("192.0.2.7"), bc), 2, policy.NotTarget.String()},
		}
		var wantA, wantB, requests, replies, bad int
		for _, c := range cases {
			for range c.n {
				if err := c.c.Send(c.frame); err != nil {
					t.Fatal(err)
				}
			}
			switch c.fate {
			case reply:
				requests += c.n
				replies += c.n
				if c.c == ca {
					wantA += c.n
				} else {
					wantB += c.n
				}
			case malformed:
				bad += c.n
			case filtered:
			default:
				if _, ok := verdicts[c.fate]; !ok {
					t.Fatalf("unknown verdict %q", c.fate)
				}
				requests += c.n
				verdicts[c.fate] += float64(c.n)
			}
		}
		if ra2, rb2 := countReplies(t, ca, "pod A"), countReplies(t, cb, "pod B"); ra2 != wantA || rb2 != wantB {
			t.Errorf("raw requests: pods got %d and %d replies, want %d and %d", ra2, rb2, wantA, wantB)
		}
		total := float64(ra + rb + replies)
		want["pxresp_requests_total"] = float64(ra+rb) + float64(requests)
		want["pxresp_replies_total"] = total
		want["pxresp_reply_latency_seconds_count"] = total
		want[scrape.Series("pxresp_reply_latency_seconds_bucket", "le", "+Inf")] = total
		want["pxresp_malformed_frames_total"] = float64(bad)
		// Every request and malformed frame passed the filter; the filtered
		// ones did not.
		want["pxresp_socket_queued_frames_total"] = float64(ra+rb) + float64(requests+bad)
		setVerdicts()
		e, _ = waitMetrics(t, hc, base+"/metrics", func(e scrape.Exposition) bool { return len(dp.expect(want).diff(e)) == 0 })
		for _, d := range dp.expect(want).diff(e) {
			t.Errorf("after the raw requests: %s", d)
		}
		t.Logf("after the raw requests: %v requests, %v replies, %v malformed, ignored %v",
			e.Values["pxresp_requests_total"], e.Values["pxresp_replies_total"], e.Values["pxresp_malformed_frames_total"], verdicts)

		// Phase 3: a pod goes, another comes. The gone interface's counts stay.
		ctx := context.Background()
		if err := tp.DelPod(ctx, b); err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has("msg=detach"), 1)
		delete(want, "pxresp_read_errors_total") // the deleted link may report ENETDOWN first
		want["pxresp_interfaces_attached"] = 1
		want["pxresp_detaches_total"] = 1
		e, _ = waitMetrics(t, hc, base+"/metrics", func(e scrape.Exposition) bool { return len(dp.expect(want).diff(e)) == 0 })
		for _, d := range dp.expect(want).diff(e) {
			t.Errorf("after deleting a pod: %s", d)
		}
		if _, err := tp.AddPod(ctx); err != nil {
			t.Fatal(err)
		}
		p.WaitT(t, pxproc.Has("msg=attach"), 3)
		want["pxresp_interfaces_attached"] = 2
		want["pxresp_attaches_total"] = 3
		e, _ = waitMetrics(t, hc, base+"/metrics", func(e scrape.Exposition) bool { return len(dp.expect(want).diff(e)) == 0 })
		for _, d := range dp.expect(want).diff(e) {
			t.Errorf("after adding a pod: %s", d)
		}
		if code, body, _ := scrape.Fetch(t, hc, base+"/readyz"); code != http.StatusOK {
			t.Errorf("GET /readyz: %d %q", code, body)
		}
		p.StopT(t, time.Second)
	})
}

// buildInfoVersion returns the version label of pxresp_build_info.
func buildInfoVersion(t *testing.T, hc *http.Client, base string) string {
	t.Helper()
	e, _ := scrape.Metrics(t, hc, base+"/metrics")
	ks := e.Names("pxresp_build_info")
	if len(ks) != 1 {
		t.Fatalf("pxresp_build_info series: %v, want one", ks)
	}
	// The labels are sorted: goversion="...",version="...".
	_, rest, ok := strings.Cut(ks[0], `,version="`)
	v, _, _ := strings.Cut(rest, `"`)
	if !ok || v == "" {
		t.Fatalf("pxresp_build_info series %s: no version", ks[0])
	}
	return v
}
