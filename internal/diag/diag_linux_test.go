package diag

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// TestCheckAgainstKernel reads the real /proc/sys of the test's own host
// namespace and checks each finding against what the kernel then does with
// real packets: the kernel's proxy ARP answers a pod exactly when diag
// reports proxy_arp; a pod's ping reaches the far end of the uplink exactly
// when diag reports neither forwarding nor rp_filter.
func TestCheckAgainstKernel(t *testing.T) {
	tp := topotest.New(t, 1, "diag")
	pod := tp.Pods[0]
	ctx := context.Background()
	host := func(kvs ...string) {
		t.Helper()
		for _, kv := range kvs {
			k, v, _ := strings.Cut(kv, "=")
			if err := tp.Host.Sysctl(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	find := func(hasRoute bool) []string {
		t.Helper()
		var got []Finding
		if err := tp.Host.Do(func() (err error) {
			got, err = Check(pod.HostIf, hasRoute)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return checks(got)
	}
	dev := "net.ipv4.conf." + pod.HostIf + "."

	// The reference topology is clean.
	if got := find(true); len(got) != 0 {
		t.Fatalf("findings on the reference topology: %q", got)
	}
	// Another namespace's interface is not visible from this thread's.
	if _, err := Check(pod.HostIf, true); err == nil || !strings.Contains(err.Error(), "interface "+pod.HostIf) {
		t.Errorf("Check in the test's own namespace: %v, want an error naming %s", err, pod.HostIf)
	}

	t.Run("proxy_arp", func(t *testing.T) {
		c, err := arptest.Open(pod.NS, pod.PodIf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		host("net.ipv4.neigh." + pod.HostIf + ".proxy_delay=0")
		req := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
		for _, s := range []struct{ all, dev string }{{"0", "0"}, {"1", "0"}, {"0", "1"}, {"1", "1"}, {"0", "0"}} {
			host("net.ipv4.conf.all.proxy_arp="+s.all, dev+"proxy_arp="+s.dev)
			got := find(true)
			flagged := slices.Contains(got, ProxyARP)
			wait := 300 * time.Millisecond
			if flagged {
				wait = 2 * time.Second
			}
			r, err := c.Ask(req, wait)
			if err != nil {
				t.Fatal(err)
			}
			if answered := r != nil; answered != flagged {
				t.Errorf("all.proxy_arp=%s, %s.proxy_arp=%s: kernel answered %v, diag findings %q", s.all, pod.HostIf, s.dev, answered, got)
			}
		}
	})

	// A static neighbour entry for the gateway: the pod sends without ARP.
	if err := pod.NS.IP(ctx, "neigh", "replace", topo.Gateway.String(), "lladdr", topo.GatewayMAC.String(),
		"dev", pod.PodIf, "nud", "permanent"); err != nil {
		t.Fatal(err)
	}
	route := []string{pod.IP.String() + "/32", "dev", pod.HostIf, "scope", "link"}
	for _, s := range []struct {
		name     string
		sysctls  []string
		hasRoute bool
		want     []string
	}{
		{"clean", nil, true, nil},
		{"forwarding off", []string{dev + "forwarding=0"}, true, []string{Forwarding}},
		{"forwarding off on all only", []string{"net.ipv4.conf.all.forwarding=0", "net.ipv4.conf.up0.forwarding=1", dev + "forwarding=1"}, true, nil},
		{"no route, rp_filter off", nil, false, nil},
		{"no route, rp_filter strict", []string{dev + "rp_filter=1"}, false, []string{RPFilter}},
		{"no route, rp_filter strict on all", []string{"net.ipv4.conf.all.rp_filter=1"}, false, []string{RPFilter}},
		{"no route, rp_filter strict, loose on all", []string{"net.ipv4.conf.all.rp_filter=2", dev + "rp_filter=1"}, false, []string{RPFilter}},
		{"no route, rp_filter loose", []string{dev + "rp_filter=2"}, false, []string{RPFilter}},
		{"route, rp_filter strict", []string{dev + "rp_filter=1"}, true, nil},
		{"route, rp_filter loose", []string{"net.ipv4.conf.all.rp_filter=2"}, true, nil},
	} {
		t.Run(s.name, func(t *testing.T) {
			defer host("net.ipv4.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0", dev+"rp_filter=0")
			host(s.sysctls...)
			if !s.hasRoute {
				if err := tp.Host.IP(ctx, append([]string{"route", "del"}, route...)...); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := tp.Host.IP(ctx, append([]string{"route", "add"}, route...)...); err != nil {
						t.Fatal(err)
					}
				}()
			}
			got := find(s.hasRoute)
			if !slices.Equal(got, s.want) {
				t.Errorf("findings %q, want %q", got, s.want)
			}
			before := inEchos(t, tp.Sink)
			_, _ = pod.NS.Exec(ctx, "ping", "-c", "1", "-W", "1", tp.SinkIP.String())
			reached := inEchos(t, tp.Sink) > before
			if want := len(got) == 0; reached != want {
				t.Errorf("the pod's ping reached the sink: %v; diag findings %q", reached, got)
			}
		})
	}
}

// inEchos is the Icmp InEchos counter of ns (echo requests received).
func inEchos(t *testing.T, ns *topo.NS) uint64 {
	t.Helper()
	out, err := ns.Exec(context.Background(), "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InEchos"); i > 0 && i < len(f) {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no Icmp InEchos in /proc/net/snmp of %s:\n%s", ns.Name, out)
	return 0
}
