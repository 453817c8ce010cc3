package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/diag"
	"github.com/pxresp/pxresp/internal/route"
	"github.com/pxresp/pxresp/internal/test/scrape"
	"github.com/pxresp/pxresp/policy"
)

// Every metric pxresp exports, with its type; route ones only in route mode.
var pxrespMetrics = map[string]string{
	"pxresp_requests_total":                               "counter",
	"pxresp_replies_total":                                "counter",
	"pxresp_requests_ignored_total":                       "counter",
	"pxresp_rate_limited_total":                           "counter",
	"pxresp_dry_run_replies_total":                        "counter",
	"pxresp_malformed_frames_total":                       "counter",
	"pxresp_send_errors_total":                            "counter",
	"pxresp_read_errors_total":                            "counter",
	"pxresp_storms_total":                                 "counter",
	"pxresp_storms_shedding":                              "gauge",
	"pxresp_shed_frames_total":                            "counter",
	"pxresp_socket_queued_frames_total":                   "counter",
	"pxresp_socket_dropped_frames_total":                  "counter",
	"pxresp_attaches_total":                               "counter",
	"pxresp_detaches_total":                               "counter",
	"pxresp_attach_errors_total":                          "counter",
	"pxresp_netlink_resyncs_total":                        "counter",
	"pxresp_interfaces_attached":                          "gauge",
	"pxresp_interfaces_skipped":                           "gauge",
	"pxresp_sysctl_problems":                              "gauge",
	"pxresp_reply_latency_seconds":                        "histogram",
	"pxresp_config_reloads_total":                         "counter",
	"pxresp_config_last_reload_successful":                "gauge",
	"pxresp_config_last_reload_success_timestamp_seconds": "gauge",
	"pxresp_build_info":                                   "gauge",
	"pxresp_datapath_info":                                "gauge",
}

var routeMetrics = map[string]string{
	"pxresp_route_lookups_total":             "counter",
	"pxresp_route_lookup_errors_total":       "counter",
	"pxresp_route_fallbacks_total":           "counter",
	"pxresp_route_cache_invalidations_total": "counter",
	"pxresp_route_cache_entries":             "gauge",
}

// fakeSnapshot fills every field with a distinct value.
func fakeSnapshot(routeMode bool) snapshot {
	var s snapshot
	r := &s.Responders
	r.Requests, r.Replies, r.RateLimited, r.DryRun = 1001, 502, 3, 4
	r.Malformed, r.SendErrors, r.ReadErrors = 5, 6, 7
	r.Storms, r.StormsEnded, r.Shed, r.KernelQueued, r.KernelDrops = 23, 21, 24, 25, 26
	for v := range policy.NumVerdicts {
		if policy.Verdict(v) != policy.Reply {
			r.Ignored[v] = uint64(100 + v)
		}
	}
	s.Attached, s.Attaches, s.Detaches, s.AttachErrors, s.Resyncs = 8, 9, 10, 11, 12
	s.SysctlProblems = map[string]int{diag.ProxyARP: 21, diag.Forwarding: 22, diag.RPFilter: 23}
	s.Skipped = map[ifwatch.Skip]int{ifwatch.NoRule: 31, ifwatch.HasMaster: 32, ifwatch.NoARP: 33, ifwatch.Loopback: 34, ifwatch.NotEthernet: 35}
	if routeMode {
		s.Route = &route.Stats{Hits: 13, Misses: 14, Limited: 15, Errors: 16, Fallbacks: 17, Invalidations: 18,
			Entries: 20}
	}
	return s
}

type metricsRig struct {
	m     *metrics
	srv   *httptest.Server
	ready atomic.Bool
	snap  atomic.Pointer[snapshot]
	now   time.Time
}

func newMetricsRig(t *testing.T, s snapshot) *metricsRig {
	t.Helper()
	r := &metricsRig{now: time.Unix(1_700_000_000, 250_000_000)}
	r.snap.Store(&s)
	m, reg := newMetricsAt(about{Version: "1.2.3-test", Datapath: EBPF, DatapathReason: "requested"}, func() snapshot { return *r.snap.Load() }, func() time.Time { return r.now })
	r.m = m
	r.srv = httptest.NewServer(newHTTPHandler(reg, r.ready.Load, nil))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *metricsRig) scrape(t *testing.T) (scrape.Exposition, string) {
	t.Helper()
	return scrape.Metrics(t, r.srv.Client(), r.srv.URL+"/metrics")
}

// TestMetricsExposition scrapes /metrics over HTTP and checks that every
// metric is there with its type and that each value is the snapshot's.
func TestMetricsExposition(t *testing.T) {
	for _, route := range []bool{false, true} {
		t.Run(fmt.Sprintf("route=%v", route), func(t *testing.T) {
			s := fakeSnapshot(route)
			r := newMetricsRig(t, s)
			for _, v := range []float64{0.5e-6, 12e-6, 12e-6, 3e-3, 10} {
				r.m.Latency.Observe(v)
			}
			e, _ := r.scrape(t)

			want := pxrespMetrics
			if route {
				want = mapsUnion(pxrespMetrics, routeMetrics)
			}
			for name, typ := range want {
				if got := e.Types[name]; got != typ {
					t.Errorf("%s: TYPE %q, want %q", name, got, typ)
				}
			}
			var got []string
			for name := range e.Types {
				if strings.HasPrefix(name, "pxresp_") {
					got = append(got, name)
				}
			}
			if len(got) != len(want) {
				t.Errorf("pxresp_ metric families %v, want exactly %d (%v)", got, len(want), want)
			}
			// The standard collectors.
			for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "go_gc_duration_seconds",
				"process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes", "process_start_time_seconds",
				"promhttp_metric_handler_requests_total"} {
				if _, ok := e.Types[name]; !ok {
					t.Errorf("standard metric %s missing", name)
				}
			}

			rs := &s.Responders
			for _, c := range []struct {
				name string
				want uint64
			}{
				{"pxresp_requests_total", rs.Requests},
				{"pxresp_replies_total", rs.Replies},
				{"pxresp_rate_limited_total", rs.RateLimited},
				{"pxresp_dry_run_replies_total", rs.DryRun},
				{"pxresp_malformed_frames_total", rs.Malformed},
				{"pxresp_send_errors_total", rs.SendErrors},
				{"pxresp_read_errors_total", rs.ReadErrors},
				{"pxresp_storms_total", rs.Storms},
				{"pxresp_storms_shedding", rs.Storms - rs.StormsEnded},
				{"pxresp_shed_frames_total", rs.Shed},
				{"pxresp_socket_queued_frames_total", rs.KernelQueued},
				{"pxresp_socket_dropped_frames_total", rs.KernelDrops},
				{"pxresp_attaches_total", s.Attaches},
				{"pxresp_detaches_total", s.Detaches},
				{"pxresp_attach_errors_total", s.AttachErrors},
				{"pxresp_netlink_resyncs_total", s.Resyncs},
				{"pxresp_interfaces_attached", uint64(s.Attached)},
			} {
				if got := e.Get(t, c.name); got != float64(c.want) {
					t.Errorf("%s = %v, want %d", c.name, got, c.want)
				}
			}
			for check, n := range s.SysctlProblems {
				if got := e.Get(t, "pxresp_sysctl_problems", "check", check); got != float64(n) {
					t.Errorf("pxresp_sysctl_problems{check=%q} = %v, want %d", check, got, n)
				}
			}
			for _, r := range skipReasons {
				if got := e.Get(t, "pxresp_interfaces_skipped", "reason", r.label); got != float64(s.Skipped[r.skip]) {
					t.Errorf("pxresp_interfaces_skipped{reason=%q} = %v, want %d", r.label, got, s.Skipped[r.skip])
				}
			}
			for v := range policy.NumVerdicts {
				if policy.Verdict(v) == policy.Reply {
					continue
				}
				name := policy.Verdict(v).String()
				if got := e.Get(t, "pxresp_requests_ignored_total", "verdict", name); got != float64(rs.Ignored[v]) {
					t.Errorf("ignored{verdict=%q} = %v, want %d", name, got, rs.Ignored[v])
				}
			}
			if route {
				rt := s.Route
				for _, c := range []struct {
					key  string
					want uint64
				}{
					{scrape.Series("pxresp_route_lookups_total", "result", "hit"), rt.Hits},
					{scrape.Series("pxresp_route_lookups_total", "result", "miss"), rt.Misses},
					{scrape.Series("pxresp_route_lookups_total", "result", "limited"), rt.Limited},
					{"pxresp_route_lookup_errors_total", rt.Errors},
					{"pxresp_route_fallbacks_total", rt.Fallbacks},
					{"pxresp_route_cache_invalidations_total", rt.Invalidations},
					{"pxresp_route_cache_entries", rt.Entries},
				} {
					if got, ok := e.Values[c.key]; !ok || got != float64(c.want) {
						t.Errorf("%s = %v (present %v), want %d", c.key, got, ok, c.want)
					}
				}
				if n := len(e.Names("pxresp_route_lookups_total")); n != len(routeResults) {
					t.Errorf("%d route lookup series, want %d", n, len(routeResults))
				}
			} else if ks := e.Names("pxresp_route_"); len(ks) != 0 {
				t.Errorf("route metrics without a route-mode rule: %v", ks)
			}

			// The histogram: 5 observations, in base units (seconds).
			h := "pxresp_reply_latency_seconds"
			if got := e.Get(t, h+"_count"); got != 5 {
				t.Errorf("%s_count = %v, want 5", h, got)
			}
			if got := e.Get(t, h+"_sum"); got < 10.003 || got > 10.0031 {
				t.Errorf("%s_sum = %v, want 10.0030245", h, got)
			}
			for _, c := range []struct {
				le   string
				want float64
			}{{"1e-06", 1}, {"8e-06", 1}, {"1.6e-05", 3}, {"0.004096", 4}, {"0.131072", 4}, {"+Inf", 5}} {
				if got := e.Get(t, h+"_bucket", "le", c.le); got != c.want {
					t.Errorf("%s_bucket{le=%q} = %v, want %v", h, c.le, got, c.want)
				}
			}
			if n := len(e.Names(h + "_bucket")); n != len(latencyBuckets)+1 {
				t.Errorf("%d latency buckets, want %d", n, len(latencyBuckets)+1)
			}

			if got := e.Get(t, "pxresp_build_info", "version", "1.2.3-test", "goversion", runtime.Version()); got != 1 {
				t.Errorf("pxresp_build_info = %v, want 1", got)
			}
			if got := e.Get(t, "pxresp_datapath_info", "datapath", "ebpf", "reason", "requested"); got != 1 {
				t.Errorf("pxresp_datapath_info = %v, want 1", got)
			}
			// At start: no reload yet, and the initial load succeeded.
			for _, res := range []string{"success", "failure"} {
				if got := e.Get(t, "pxresp_config_reloads_total", "result", res); got != 0 {
					t.Errorf("reloads{result=%q} = %v at start, want 0", res, got)
				}
			}
			if got := e.Get(t, "pxresp_config_last_reload_successful"); got != 1 {
				t.Errorf("last_reload_successful = %v at start, want 1", got)
			}
			if got := e.Get(t, "pxresp_config_last_reload_success_timestamp_seconds"); got != 1_700_000_000.25 {
				t.Errorf("last_reload_success_timestamp_seconds = %v at start, want 1700000000.25", got)
			}
		})
	}
}

func mapsUnion(a, b map[string]string) map[string]string {
	m := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// TestMetricsScrapeAndCompare checks a few families against the exact text
// with client_golang's own parser, over HTTP.
func TestMetricsScrapeAndCompare(t *testing.T) {
	r := newMetricsRig(t, fakeSnapshot(false))
	want := `
# HELP pxresp_interfaces_attached Interfaces with an open listener now.
# TYPE pxresp_interfaces_attached gauge
pxresp_interfaces_attached 8
# HELP pxresp_replies_total ARP replies sent.
# TYPE pxresp_replies_total counter
pxresp_replies_total 502
`
	if err := testutil.ScrapeAndCompare(r.srv.URL+"/metrics", strings.NewReader(want),
		"pxresp_interfaces_attached", "pxresp_replies_total"); err != nil {
		t.Error(err)
	}
}

// TestMetricsLint proves that the names, types, units and help texts follow
// the Prometheus conventions, both from the registry and as scraped.
func TestMetricsLint(t *testing.T) {
	r := newMetricsRig(t, fakeSnapshot(true))
	r.m.Latency.Observe(20e-6)
	r.m.reload(false)
	_, reg := newMetricsAt(about{Version: "x", Datapath: Packet, DatapathReason: "auto: CAP_BPF not held"}, func() snapshot { return fakeSnapshot(true) }, time.Now)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pxresp_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		} else {
			t.Logf("lint (standard collector): %s: %s", p.Metric, p.Text)
		}
	}
	_, body := r.scrape(t)
	problems, err = promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pxresp_") {
			t.Errorf("lint of the scraped text: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestMetricsLabelsBounded: the only labels on pxresp_ metrics are fixed
// small enums, with every value present from the first scrape, and nothing
// per interface or per address.
func TestMetricsLabelsBounded(t *testing.T) {
	r := newMetricsRig(t, fakeSnapshot(true))
	e, _ := r.scrape(t)

	var verdicts []string
	for _, k := range e.Names("pxresp_requests_ignored_total{") {
		verdicts = append(verdicts, strings.TrimSuffix(strings.TrimPrefix(k, `pxresp_requests_ignored_total{verdict="`), `"}`))
	}
	var want []string
	for v := range policy.NumVerdicts {
		if policy.Verdict(v) != policy.Reply {
			want = append(want, policy.Verdict(v).String())
		}
	}
	sort.Strings(want)
	if !slices.Equal(verdicts, want) {
		t.Errorf("verdict label values %v, want every verdict but reply: %v", verdicts, want)
	}
	if len(verdicts) != policy.NumVerdicts-1 {
		t.Errorf("%d verdict series, want %d", len(verdicts), policy.NumVerdicts-1)
	}

	allowed := map[string]map[string]bool{
		"pxresp_requests_ignored_total": {"verdict": true},
		"pxresp_config_reloads_total":   {"result": true},
		"pxresp_route_lookups_total":    {"result": true},
		"pxresp_build_info":             {"version": true, "goversion": true},
		"pxresp_datapath_info":          {"datapath": true, "reason": true},
		"pxresp_reply_latency_seconds":  {"le": true},
		"pxresp_sysctl_problems":        {"check": true},
		"pxresp_interfaces_skipped":     {"reason": true},
	}
	n := 0
	for _, k := range e.Names("pxresp_") {
		n++
		name, labels, _ := strings.Cut(k, "{")
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			if kv == "" {
				continue
			}
			l, _, _ := strings.Cut(kv, "=")
			if !allowed[base][l] {
				t.Errorf("series %s has label %q", k, l)
			}
		}
	}
	// 17 plain counters and gauges, NumVerdicts-1 verdicts, the histogram's
	// buckets (and +Inf), sum and count, 2 reload results, 2 reload gauges,
	// build and datapath info, 3 route results, 3 more route counters and
	// the route cache's size, a sysctl gauge per check and a skipped gauge
	// per reason.
	if want := 17 + (policy.NumVerdicts - 1) + len(latencyBuckets) + 3 + 2 + 2 + 2 + 3 + 3 + 1 + len(diag.Checks) + len(skipReasons); n != want {
		t.Errorf("%d pxresp_ series, want %d: %v", n, want, e.Names("pxresp_"))
	}
}

// TestMetricsMonotonic: with a snapshot that only grows, no counter (nor a
// histogram's count, sum or bucket) ever goes back between scrapes, and the
// set of series does not change.
func TestMetricsMonotonic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	s := fakeSnapshot(true)
	step := func() snapshot {
		mu.Lock()
		defer mu.Unlock()
		r := &s.Responders
		for _, p := range []*uint64{&r.Requests, &r.Replies, &r.RateLimited, &r.DryRun, &r.Malformed, &r.SendErrors,
			&r.ReadErrors, &r.Shed, &r.KernelQueued, &r.KernelDrops, &s.Attaches, &s.Detaches, &s.AttachErrors, &s.Resyncs,
			&s.Route.Hits, &s.Route.Misses, &s.Route.Limited, &s.Route.Errors, &s.Route.Fallbacks, &s.Route.Invalidations} {
			*p += rng.Uint64N(1000)
		}
		for v := 1; v < policy.NumVerdicts; v++ {
			r.Ignored[v] += rng.Uint64N(3)
		}
		s.Attached = rng.IntN(5000)
		c := s
		rt := *s.Route
		c.Route = &rt
		return c
	}
	m, reg := newMetrics(about{Version: "t", Datapath: Packet, DatapathReason: "requested"}, step)
	srv := httptest.NewServer(newHTTPHandler(reg, func() bool { return true }, nil))
	defer srv.Close()

	var prev scrape.Exposition
	for i := range 30 {
		m.Latency.Observe(rng.Float64() / 1000)
		m.reload(i%3 == 0)
		e, _ := scrape.Metrics(t, srv.Client(), srv.URL+"/metrics")
		if i == 0 {
			prev = e
			continue
		}
		pk, ek := e.Names("pxresp_"), prev.Names("pxresp_")
		if !slices.Equal(pk, ek) {
			t.Fatalf("scrape %d: the pxresp_ series changed:\n%v\nwas\n%v", i, pk, ek)
		}
		for _, k := range pk {
			name, _, _ := strings.Cut(k, "{")
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if typ := e.Types[base]; typ != "counter" && typ != "histogram" {
				continue
			}
			if e.Values[k] < prev.Values[k] {
				t.Errorf("scrape %d: %s went back from %v to %v", i, k, prev.Values[k], e.Values[k])
			}
		}
		if e.Get(t, "pxresp_requests_total") <= prev.Get(t, "pxresp_requests_total") {
			t.Errorf("scrape %d: requests did not grow although the snapshot did", i)
		}
		prev = e
	}
	if got := prev.Get(t, "pxresp_reply_latency_seconds_count"); got != 30 {
		t.Errorf("latency count %v, want 30", got)
	}
}

// TestMetricsSnapshotSerialised: concurrent scrapes never run the snapshot
// function concurrently.
func TestMetricsSnapshotSerialised(t *testing.T) {
	var inside, overlaps, calls atomic.Int32
	_, reg := newMetrics(about{Version: "t", Datapath: Packet, DatapathReason: "requested"}, func() snapshot {
		calls.Add(1)
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(time.Millisecond)
		inside.Add(-1)
		return fakeSnapshot(false)
	})
	srv := httptest.NewServer(newHTTPHandler(reg, func() bool { return true }, nil))
	defer srv.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				resp, err := srv.Client().Get(srv.URL + "/metrics")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	if calls.Load() != 40 || overlaps.Load() != 0 {
		t.Errorf("%d snapshot calls (want 40), %d overlapping", calls.Load(), overlaps.Load())
	}
}

// TestMetricsReload: reload results are counted by result, the gauge shows
// the last one, and the timestamp moves only on success.
func TestMetricsReload(t *testing.T) {
	r := newMetricsRig(t, fakeSnapshot(false))
	check := func(step string, ok, fail, last, ts float64) {
		t.Helper()
		e, _ := r.scrape(t)
		for _, c := range []struct {
			key       string
			got, want float64
		}{
			{"success", e.Get(t, "pxresp_config_reloads_total", "result", "success"), ok},
			{"failure", e.Get(t, "pxresp_config_reloads_total", "result", "failure"), fail},
			{"last_reload_successful", e.Get(t, "pxresp_config_last_reload_successful"), last},
			{"last_reload_success_timestamp_seconds", e.Get(t, "pxresp_config_last_reload_success_timestamp_seconds"), ts},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %v, want %v", step, c.key, c.got, c.want)
			}
		}
	}
	t0 := 1_700_000_000.25
	check("start", 0, 0, 1, t0)
	r.now = r.now.Add(10 * time.Second)
	r.m.reload(false)
	check("failed reload", 0, 1, 0, t0)
	r.now = r.now.Add(10 * time.Second)
	r.m.reload(true)
	check("successful reload", 1, 1, 1, t0+20)
	r.now = r.now.Add(10 * time.Second)
	r.m.reload(false)
	r.m.reload(false)
	check("two failed reloads", 1, 3, 0, t0+20)
}

// TestHealthAndReady: /healthz is 200 while serving; /readyz is 503 with a
// reason until ready() is true, then 200; both plain text, GET and HEAD only.
func TestHealthAndReady(t *testing.T) {
	r := newMetricsRig(t, fakeSnapshot(false))
	c := r.srv.Client()
	do := func(method, path string) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, r.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	expect := func(method, path string, code int, body string) {
		t.Helper()
		gotCode, gotBody, h := do(method, path)
		if gotCode != code || (body != "" && gotBody != body) {
			t.Errorf("%s %s: %d %q, want %d %q", method, path, gotCode, gotBody, code, body)
		}
		if code < 300 || code == http.StatusServiceUnavailable {
			if ct := h.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("%s %s: Content-Type %q", method, path, ct)
			}
		}
	}
	notReady := "not ready: the initial interfaces are not attached yet\n"
	expect("GET", "/healthz", 200, "ok\n")
	expect("HEAD", "/healthz", 200, "")
	expect("GET", "/readyz", 503, notReady)
	expect("HEAD", "/readyz", 503, "")
	r.ready.Store(true)
	expect("GET", "/readyz", 200, "ready\n")
	expect("HEAD", "/readyz", 200, "")
	expect("GET", "/healthz", 200, "ok\n")
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		for _, m := range []string{"POST", "PUT", "DELETE"} {
			code, _, h := do(m, path)
			if code != http.StatusMethodNotAllowed || !strings.Contains(h.Get("Allow"), "GET") {
				t.Errorf("%s %s: %d, Allow %q; want 405 allowing GET", m, path, code, h.Get("Allow"))
			}
		}
	}
	for _, path := range []string{"/", "/healthz/x", "/metricsx", "/debug/pprof/"} {
		expect("GET", path, 404, "")
	}
}

// TestMetricsServeHTTP: serveHTTP serves the handler and returns nil soon
// after its context is cancelled.
func TestMetricsServeHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, reg := newMetrics(about{Version: "t", Datapath: Packet, DatapathReason: "requested"}, func() snapshot { return fakeSnapshot(false) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveHTTP(ctx, ln, newHTTPHandler(reg, func() bool { return true }, nil), "", slog.New(slog.DiscardHandler))
	}()
	base := "http://" + ln.Addr().String()
	c := &http.Client{Timeout: 5 * time.Second}
	if code, body, _ := scrape.Fetch(t, c, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	e, _ := scrape.Metrics(t, c, base+"/metrics")
	if got := e.Get(t, "pxresp_replies_total"); got != 502 {
		t.Errorf("replies %v", got)
	}
	c.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveHTTP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveHTTP did not return within 5s of cancel")
	}
	if _, err := c.Get(base + "/healthz"); err == nil {
		t.Error("still serving after serveHTTP returned")
	}

	// A listener that fails on its own is an error.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	if err := serveHTTP(context.Background(), ln2, http.NotFoundHandler(), "", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("serveHTTP on a closed listener returned nil")
	}
}
