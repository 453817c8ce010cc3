package responder

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/policy"
)

// TestRateLimitOnSocket floods a rate-limited Responder from a pod through
// a real veth: every request read is either answered or counted as rate
// limited, the answers stay within the limit, and once the flood stops the
// pod is answered again at once.
func TestRateLimitOnSocket(t *testing.T) {
	const (
		rate  = 100
		burst = 10
		dur   = time.Second
		most  = 2_000_000 // frames, whatever dur allows
	)
	tp := newTopo(t, 1)
	pod := tp.Pods[0]
	pol, err := policy.New([]netip.Addr{topo.Gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var r *Responder
	err = tp.Host.Do(func() error {
		ifi, err := net.InterfaceByName(pod.HostIf)
		if err != nil {
			return err
		}
		r, err = Listen(Config{Index: ifi.Index, Name: ifi.Name, Settings: Settings{MAC: ifi.HardwareAddr, Policy: pol},
			RateLimit: rate})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	cl := newClient(t, pod)
	req := request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)

	sent := 0
	t0 := time.Now()
	for i := 0; i < most && (i&255 != 0 || time.Since(t0) < dur); i++ {
		if err := cl.c.Send(req); err == nil {
			sent++
		}
	}
	window := time.Since(t0)
	// Wait (at most 5 s) for the Responder to work through its queue: until
	// its counts stop moving for 50 ms.
	var st Stats
	for stable, deadline := 0, time.Now().Add(5*time.Second); stable < 50 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		if now := r.Stats(); now.Requests == st.Requests {
			stable++
		} else {
			st, stable = now, 0
		}
	}
	took := time.Since(t0)
	t.Logf("sent %d requests in %v; responder read %d, replied %d, rate limited %d (over %v)",
		sent, window.Round(time.Millisecond), st.Requests, st.Replies, st.RateLimited, took.Round(time.Millisecond))

	if sent < 20*rate {
		t.Fatalf("sent only %d requests in %v: not a flood against %d/s", sent, window, rate)
	}
	if st.Requests == 0 || st.Requests > uint64(sent) {
		t.Errorf("responder read %d requests of %d sent", st.Requests, sent)
	}
	if st.Replies+st.RateLimited+st.SendErrors != st.Requests {
		t.Errorf("stats %+v: every request read should be answered, rate limited or a send error", st)
	}
	if allowed := uint64(rate*took.Seconds()*1.05) + burst + 1; st.Replies > allowed || st.Replies == 0 {
		t.Errorf("%d replies in %v at %d/s with a burst of %d: want 1 to %d", st.Replies, took, rate, burst, allowed)
	}
	// The limit throttles; it does not ban. A token comes back every 10 ms.
	if reply := cl.ask(t, req, time.Second); reply == nil {
		t.Error("no answer after the flood stopped")
	}
}
