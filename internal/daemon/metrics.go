package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/pxresp/pxresp/ifwatch"
	"github.com/pxresp/pxresp/internal/diag"
	"github.com/pxresp/pxresp/internal/route"
	"github.com/pxresp/pxresp/internal/status"
	"github.com/pxresp/pxresp/policy"
	"github.com/pxresp/pxresp/responder"
)

// Metrics (--metrics-addr). Most values are pulled: at each scrape the
// collector asks the daemon for a snapshot of its counters, so the hot path
// pays nothing for them. Only what happens outside any counter the daemon
// keeps is pushed: reload results and the reply latency histogram.
//
// No metric has a per-interface or per-address label: a node has thousands
// of short-lived cali* interfaces. The only labels are small fixed enums
// (verdict, result, check, reason), and every value of each is exported
// from the start, at 0, so that rate() and increase() work from the first
// scrape.

// snapshot is the daemon's state for one scrape.
type snapshot struct {
	// Responders is summed over every responder ever attached (live and
	// detached), so each counter in it is monotonic.
	Responders responder.Stats
	// Attached is the number of interfaces attached now.
	Attached int
	// Attaches counts listeners opened, Detaches listeners closed, and
	// AttachErrors listeners that could not be opened.
	Attaches, Detaches, AttachErrors uint64
	// Resyncs counts the netlink monitor's resyncs (netmon.Monitor.Resyncs),
	// which the interface watcher and the route cache share.
	Resyncs uint64
	// SysctlProblems counts the attached interfaces with a sysctl finding,
	// by check (diag.Checks, each present).
	SysctlProblems map[string]int
	// Skipped counts the interfaces not served, by reason (skipReasons).
	Skipped map[ifwatch.Skip]int
	// Route is the route-mode lookup cache's counters; nil until a rule is
	// in route mode (the cache then stays until exit), and while it is nil
	// no pxresp_route_* metric is exported. Entries is a gauge.
	Route *route.Stats
}

// latencyBuckets are the upper bounds of pxresp_reply_latency_seconds:
// 1 µs to 131 ms, doubling (18 buckets, then +Inf). Replies take tens of
// microseconds from the kernel's receive timestamp; the upper buckets catch
// a stalled or starved process.
var latencyBuckets = prometheus.ExponentialBuckets(1e-6, 2, 18)

// metrics holds what the daemon pushes. Everything else is pulled through
// the snapshot function given to newMetrics.
type metrics struct {
	// Latency is the reply latency histogram: pass it as
	// responder.Config.Latency.
	Latency prometheus.Histogram

	reloads             *prometheus.CounterVec
	lastReloadOK        prometheus.Gauge
	lastReloadSuccessTS prometheus.Gauge
	now                 func() time.Time
}

// about is what the info metrics say: pxresp_build_info and
// pxresp_datapath_info.
type about struct {
	Version string
	// Datapath is the one chosen at start, and DatapathReason why
	// ("requested", or --datapath auto's reason).
	Datapath       Datapath
	DatapathReason string
}

// newMetrics returns the metrics and the registry holding them, with the
// standard Go runtime and process collectors. snap is called once per
// scrape; the collector never calls it concurrently with itself. Call
// newMetrics once the initial configuration is loaded: it counts as the last
// successful load (pxresp_config_last_reload_successful 1, and its
// timestamp is now) but not as a reload.
func newMetrics(ab about, snap func() snapshot) (*metrics, *prometheus.Registry) {
	return newMetricsAt(ab, snap, time.Now)
}

func newMetricsAt(ab about, snap func() snapshot, now func() time.Time) (*metrics, *prometheus.Registry) {
	m := &metrics{
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pxresp_reply_latency_seconds",
			Help:    "Time from the kernel's receive timestamp of an answered ARP request to the return of the send of its reply, in seconds. Dry-run would-be replies and replies to requests without a kernel timestamp are not observed.",
			Buckets: latencyBuckets,
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pxresp_config_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: success (the new configuration is serving) or failure (it was refused and the previous one keeps serving). The load at start is not counted.",
		}, []string{"result"}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pxresp_config_last_reload_successful",
			Help: "1 if the last configuration load (at start or on SIGHUP) succeeded, 0 if it was refused.",
		}),
		lastReloadSuccessTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pxresp_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load (at start or on SIGHUP), in seconds.",
		}),
		now: now,
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReloadOK.Set(1)
	m.lastReloadSuccessTS.Set(unixSeconds(now()))

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pxresp_build_info",
		Help:        "Always 1; the labels give pxresp's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": ab.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	datapathInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pxresp_datapath_info",
		Help:        "Always 1; the labels give the datapath chosen at start (ebpf or packet; on ebpf, route-mode rules are served from AF_PACKET) and why: requested, or --datapath auto's reason.",
		ConstLabels: prometheus.Labels{"datapath": string(ab.Datapath), "reason": ab.DatapathReason},
	})
	datapathInfo.Set(1)

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo, datapathInfo,
		m.Latency, m.reloads, m.lastReloadOK, m.lastReloadSuccessTS,
		newCollector(snap),
	)
	return m, reg
}

func unixSeconds(t time.Time) float64 { return float64(t.Unix()) + float64(t.Nanosecond())/1e9 }

// reload records the result of a configuration reload.
func (m *metrics) reload(ok bool) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadSuccessTS.Set(unixSeconds(m.now()))
}

// collector turns a snapshot into metrics at scrape time.
type collector struct {
	mu   sync.Mutex // serialises calls to snap
	snap func() snapshot

	requests, replies, ignored, rateLimited, dryRun, malformed, sendErrors, readErrors *prometheus.Desc
	storms, shedding, shed, socketQueued, socketDrops                                  *prometheus.Desc
	attaches, detaches, attachErrors, resyncs, attached                                *prometheus.Desc
	sysctlProblems, skipped                                                            *prometheus.Desc
	routeLookups, routeErrors, routeFallbacks, routeInvalidations, routeEntries        *prometheus.Desc
}

// routeResults are the values of pxresp_route_lookups_total's result label:
// one per outcome, so that their sum is every lookup. The verdict label's
// are policy.Verdict's names, all but reply.
var routeResults = []string{"hit", "miss", "limited"}

// skipReasons are the values of pxresp_interfaces_skipped's reason label.
var skipReasons = []struct {
	skip  ifwatch.Skip
	label string
}{
	{ifwatch.NoRule, "no_rule"},
	{ifwatch.HasMaster, "has_master"},
	{ifwatch.NoARP, "noarp"},
	{ifwatch.Loopback, "loopback"},
	{ifwatch.NotEthernet, "not_ethernet"},
}

func newCollector(snap func() snapshot) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		snap: snap,
		requests: d("pxresp_requests_total",
			"Well-formed Ethernet/IPv4 ARP requests read on attached interfaces. Each is answered (pxresp_replies_total), ignored (pxresp_requests_ignored_total), rate limited (pxresp_rate_limited_total), not sent in dry run (pxresp_dry_run_replies_total) or failed to send (pxresp_send_errors_total)."),
		replies: d("pxresp_replies_total",
			"ARP replies sent."),
		ignored: d("pxresp_requests_ignored_total",
			"ARP requests not answered because the policy said so, by verdict.", "verdict"),
		rateLimited: d("pxresp_rate_limited_total",
			"ARP requests the policy would have answered that were not, because their interface's reply rate limit was reached."),
		dryRun: d("pxresp_dry_run_replies_total",
			"ARP replies that would have been sent but were not, because pxresp runs with --dry-run."),
		malformed: d("pxresp_malformed_frames_total",
			"Frames dropped because they are not well-formed Ethernet/IPv4 ARP (truncated, wrong hardware or protocol type or lengths, unknown opcode)."),
		sendErrors: d("pxresp_send_errors_total",
			"ARP replies the kernel refused to send."),
		readErrors: d("pxresp_read_errors_total",
			"Errors reading from an interface's socket, such as ENETDOWN while the link is down."),
		storms: d("pxresp_storms_total",
			"Storms found: a sender refused by its interface's rate limit more than the limit allows in a tenth of a second, whose frames the socket filter then sheds in the kernel."),
		shedding: d("pxresp_storms_shedding",
			"Senders whose frames the socket filters shed now (one at most per interface)."),
		shed: d("pxresp_shed_frames_total",
			"Frames from storming senders that the socket filters dropped in the kernel, estimated: each frame of a shed sender the filter lets through, one in a random sample of N, stands for N-1 dropped. Brought up to date once a second while a sender is shed."),
		socketQueued: d("pxresp_socket_queued_frames_total",
			"Frames that passed the socket filters and were queued for pxresp, as the kernel counts them (PACKET_STATISTICS); exact."),
		socketDrops: d("pxresp_socket_dropped_frames_total",
			"Frames that passed the socket filters but that the kernel dropped because the socket's queue was full (PACKET_STATISTICS); exact."),
		attaches: d("pxresp_attaches_total",
			"Interface listeners opened (an interface became selected, or its listener was reopened)."),
		detaches: d("pxresp_detaches_total",
			"Interface listeners closed (an interface was deleted, renamed out of the selection or left the network namespace)."),
		attachErrors: d("pxresp_attach_errors_total",
			"Interface listeners that could not be opened."),
		resyncs: d("pxresp_netlink_resyncs_total",
			"Times pxresp's netlink subscription lost notifications (the socket overflowed or failed) and pxresp subscribed again and read the full link and route lists; the interface watcher and the route cache resync together."),
		attached: d("pxresp_interfaces_attached",
			"Interfaces with an open listener now."),
		sysctlProblems: d("pxresp_sysctl_problems",
			"Attached interfaces whose IPv4 sysctls work against pxresp now, by check: proxy_arp (the kernel answers too), forwarding (off: pods' packets are not routed) or rp_filter (the pods' packets are dropped). pxresp status and the log name the interfaces and the fix.", "check"),
		skipped: d("pxresp_interfaces_skipped",
			"Interfaces in pxresp's network namespace that it does not serve now, by reason: no_rule (no rule matches the name), has_master (a bridge, bond or VRF port), noarp, loopback, not_ethernet.", "reason"),
		routeLookups: d("pxresp_route_lookups_total",
			"Route-mode route classifications of a request's target, by result: hit (answered from the route cache), miss (looked up over netlink), limited (a miss refused by the lookup rate limit; the request is ignored as route-unknown). Exported once a rule has been in route mode.", "result"),
		routeErrors: d("pxresp_route_lookup_errors_total",
			"Route-mode lookups that failed for another reason than the route (the interface is gone, netlink failed); the request is ignored as route-unknown. Failed netlink lookups are counted as misses too. Exported once a rule has been in route mode."),
		routeFallbacks: d("pxresp_route_fallbacks_total",
			"Route-mode netlink lookups whose input route lookup the kernel refused (forwarding off or rp_filter on the request's interface) and whose output route fallback found a unicast route. Counted as misses too. Exported once a rule has been in route mode."),
		routeInvalidations: d("pxresp_route_cache_invalidations_total",
			"Times the route cache was emptied: once per route, address, link, rule, nexthop or netconf notification, and when notifications are lost and at the resync after (pxresp_netlink_resyncs_total). Exported once a rule has been in route mode."),
		routeEntries: d("pxresp_route_cache_entries",
			"Route classifications cached now. Exported once a rule has been in route mode."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.requests, c.replies, c.ignored, c.rateLimited, c.dryRun, c.malformed, c.sendErrors, c.readErrors,
		c.storms, c.shedding, c.shed, c.socketQueued, c.socketDrops,
		c.attaches, c.detaches, c.attachErrors, c.resyncs, c.attached, c.sysctlProblems, c.skipped,
		c.routeLookups, c.routeErrors, c.routeFallbacks, c.routeInvalidations, c.routeEntries,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	s := c.snap()
	c.mu.Unlock()

	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	r := &s.Responders
	counter(c.requests, r.Requests)
	counter(c.replies, r.Replies)
	for v := policy.Verdict(0); int(v) < policy.NumVerdicts; v++ {
		if v != policy.Reply {
			counter(c.ignored, r.Ignored[v], v.String())
		}
	}
	counter(c.rateLimited, r.RateLimited)
	counter(c.dryRun, r.DryRun)
	counter(c.malformed, r.Malformed)
	counter(c.sendErrors, r.SendErrors)
	counter(c.readErrors, r.ReadErrors)
	counter(c.storms, r.Storms)
	ch <- prometheus.MustNewConstMetric(c.shedding, prometheus.GaugeValue, float64(r.Storms-r.StormsEnded))
	counter(c.shed, r.Shed)
	counter(c.socketQueued, r.KernelQueued)
	counter(c.socketDrops, r.KernelDrops)
	counter(c.attaches, s.Attaches)
	counter(c.detaches, s.Detaches)
	counter(c.attachErrors, s.AttachErrors)
	counter(c.resyncs, s.Resyncs)
	ch <- prometheus.MustNewConstMetric(c.attached, prometheus.GaugeValue, float64(s.Attached))
	for _, check := range diag.Checks {
		ch <- prometheus.MustNewConstMetric(c.sysctlProblems, prometheus.GaugeValue, float64(s.SysctlProblems[check]), check)
	}
	for _, r := range skipReasons {
		ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.GaugeValue, float64(s.Skipped[r.skip]), r.label)
	}

	if rt := s.Route; rt != nil {
		for i, v := range []uint64{rt.Hits, rt.Misses, rt.Limited} {
			counter(c.routeLookups, v, routeResults[i])
		}
		counter(c.routeErrors, rt.Errors)
		counter(c.routeFallbacks, rt.Fallbacks)
		counter(c.routeInvalidations, rt.Invalidations)
		ch <- prometheus.MustNewConstMetric(c.routeEntries, prometheus.GaugeValue, float64(rt.Entries))
	}
}

// newHTTPHandler serves the metrics endpoint and the health checks:
//
//   - /metrics: the registry, in the Prometheus text or protobuf format;
//   - /healthz: 200 "ok" while the process serves HTTP (liveness);
//   - /readyz: 200 "ready" once ready() is true (the initial interfaces are
//     attached), 503 with the reason before;
//   - /status: stat(), in JSON (status.Status), unless stat is nil.
//
// Each answers GET and HEAD only (405 otherwise); any other path is 404.
func newHTTPHandler(reg *prometheus.Registry, ready func() bool, stat func() *status.Status) http.Handler {
	mux := http.NewServeMux()
	// ContinueOnError: one failing collector (the process collector
	// cannot read /proc, say) must not hide the rest; the failure is
	// counted in promhttp_metric_handler_errors_total.
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: false,
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready() {
			plain(w, http.StatusOK, "ready\n")
			return
		}
		plain(w, http.StatusServiceUnavailable, "not ready: the initial interfaces are not attached yet\n")
	})
	if stat != nil {
		mux.HandleFunc("GET "+status.Path, func(w http.ResponseWriter, _ *http.Request) {
			b, err := json.MarshalIndent(stat(), "", "  ")
			if err != nil {
				plain(w, http.StatusInternalServerError, err.Error()+"\n")
				return
			}
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			_, _ = w.Write(append(b, '\n'))
		})
	}
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// serveHTTP serves h on ln until ctx is done, then shuts the server down
// (waiting at most a second for scrapes in flight) and returns. It returns
// the server's error if it stops for another reason. webConfig, if set, is
// an exporter-toolkit web config file: TLS and basic auth, read again at
// each connection and request, so that a new certificate or password
// applies without a restart.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, webConfig string, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	})
	err := web.Serve(ln, srv, &web.FlagConfig{
		WebListenAddresses: &[]string{ln.Addr().String()},
		WebConfigFile:      &webConfig,
	}, log)
	if stop() {
		// ctx is not done: the server failed on its own.
		return err
	}
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
