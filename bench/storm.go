package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// The storm section: pods flood broadcast requests at the maximum rate
// their senders reach while another pod (the observer, the bench's own
// pod) asks one request at a time. Each slot (K0, then P and E at their
// default settings) measures the observer alone, then during a one-pod
// storm, then during a storm of StormPods pods at once.

// stormWarmup is how long after a storm starts the observer starts asking:
// the time pxresp takes to find the storm and shed it is in it.
const stormWarmup = 300 * time.Millisecond

// stormEvery is the observer's pace: one request every stormEvery.
const stormEvery = 2 * time.Millisecond

// StormRun is one storm: Stormers pods flooding at once, measured on the
// observer.
type StormRun struct {
	Responder  string  `json:"responder"`
	Round      int     `json:"round"`
	Stormers   int     `json:"stormers"`
	DurationNs int64   `json:"duration_ns"`     // the longest flood's sending time
	Sent       int64   `json:"sent"`            // by all stormers
	SendRate   float64 `json:"send_rate"`       // all stormers, requests/s
	Replies    int64   `json:"stormer_replies"` // to all stormers
	// ReplyRate is the stormers' replies per second, per stormer (mean).
	ReplyRate float64 `json:"stormer_reply_rate"`
	Baseline  Summary `json:"observer_baseline"` // the observer alone, same slot
	During    Summary `json:"observer_during"`
	// Arrived is During up to the kernel's receive timestamp of each
	// reply, without the observer's own wake-up.
	Arrived Summary `json:"observer_during_arrived"`
	// P and E only: pxresp's CPU (schedstat, all threads) from the floods'
	// start to their end (drain included), and in % of one core over that
	// time; UserTicks, its time in user mode (utime, clock ticks).
	CPUNs      uint64  `json:"pxresp_cpu_schedstat_ns,omitempty"`
	CPUPercent float64 `json:"pxresp_cpu_percent,omitempty"`
	UserTicks  uint64  `json:"pxresp_user_ticks,omitempty"`
	// BaselineCPUPercent is pxresp's CPU while the observer asked alone.
	BaselineCPUPercent float64 `json:"pxresp_baseline_cpu_percent,omitempty"`
	// Storms is pxresp's "storm start" lines during the run (P only: E
	// limits in the kernel and sheds nothing).
	Storms int `json:"pxresp_storms,omitempty"`
	// BacklogDrops is the frames the kernel dropped, on every CPU, because
	// a CPU's input backlog was full (/proc/net/softnet_stat, second
	// column; machine-wide), during the run: lost before any socket or
	// proxy_arp sees them.
	BacklogDrops uint64 `json:"backlog_drops"`
}

// runStorm: rounds of K0, P and E slots, in rotating order.
func (e *env) runStorm(ctx context.Context) error {
	o := e.o
	// Every flooding pod runs a sender and a receiver, each on a thread
	// of its own, and so does the observer: with fewer Ps than such
	// threads, a thread whose blocking read returns finds its P taken by
	// a sender, which keeps it until the runtime preempts it (10 ms), and
	// the observer would measure this process's scheduler, not the
	// responder. A P for each keeps them apart, as separate pods are.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 2*o.StormPods+4)))
	var stormers []*rawSock
	defer func() {
		for _, s := range stormers {
			s.close()
		}
	}()
	for range o.StormPods {
		p, err := e.t.AddPod(ctx)
		if err != nil {
			return err
		}
		s, err := openRawSock(p.NS, p.PodIf, p.IP)
		if err != nil {
			return err
		}
		stormers = append(stormers, s)
	}
	ifs := []string{e.pod.HostIf}
	for _, p := range e.t.Pods[1:] {
		ifs = append(ifs, p.HostIf)
	}
	for r := range o.StormRounds {
		for _, resp := range rotate([]string{K0, P, E}, r) {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := e.stormSlot(ctx, r+1, resp, ifs, stormers); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, resp, err)
			}
		}
		logf("storm round %d/%d done", r+1, o.StormRounds)
	}
	return nil
}

func (e *env) stormSlot(ctx context.Context, round int, resp string, ifs []string, stormers []*rawSock) (err error) {
	c := e.podS
	all := append([]*rawSock{c}, stormers...)
	switch resp {
	case K0:
		var off func() error
		if _, off, err = e.kernelOn(ctx, K0, ifs, c); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, off()) }()
	case P, E:
		if err := e.kernelSilent(ctx, ifs); err != nil {
			return err
		}
		if err := silent(c); err != nil {
			return err
		}
		// Default settings: no --rate-limit; P on the AF_PACKET datapath,
		// which sheds storms in its socket filter, E on the eBPF one, which
		// limits in the kernel (startPxArgs passes --datapath).
		if _, err := e.startPxArgs(resp, false, "--iface", "cali*", "--gw", topo.Gateway.String(), "--log-level", "warn"); err != nil {
			return err
		}
		defer func() {
			if serr := e.stopPx(); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
	}
	if _, err := probeAll(ctx, all, 20*time.Millisecond, 10*time.Second); err != nil {
		return fmt.Errorf("%s not answering every pod: %w", resp, err)
	}
	var before procSnap
	if isPx(resp) {
		if before, err = readProc(e.px.Pid()); err != nil {
			return err
		}
	}
	t0 := time.Now()
	base, _, err := observe(ctx, c, e.o.StormProbes, e.o.timeout, nil)
	if err != nil {
		return err
	}
	var baseCPU float64
	if isPx(resp) {
		after, err := readProc(e.px.Pid())
		if err != nil {
			return err
		}
		baseCPU = 100 * float64(after.CPUNs-before.CPUNs) / float64(time.Since(t0).Nanoseconds())
		logf("storm %s, no storm: observer p50 %s p99 %s lost %d, pxresp CPU %.1f%%", resp, fmtDur(base.P50), fmtDur(base.P99), base.Lost, baseCPU)
	}
	for _, n := range []int{1, len(stormers)} {
		run, err := e.storm(ctx, resp, stormers[:n], base)
		if run != nil {
			run.Round, run.BaselineCPUPercent = round, baseCPU
			e.res.Storm = append(e.res.Storm, run)
			logf("storm %s, %d pod(s): sent %d (%.0f/s), stormer replies %.0f/s each, observer p50 %s p99 %s lost %d (reply arrived p50 %s p99 %s) (alone: %s, %s), pxresp CPU %.1f%%, storms %d, backlog drops %d",
				resp, n, run.Sent, run.SendRate, run.ReplyRate, fmtDur(run.During.P50), fmtDur(run.During.P99), run.During.Lost,
				fmtDur(run.Arrived.P50), fmtDur(run.Arrived.P99), fmtDur(base.P50), fmtDur(base.P99), run.CPUPercent, run.Storms, run.BacklogDrops)
		}
		if err != nil {
			return err
		}
		if resp == P {
			// The next storm starts once pxresp has ended this one's
			// shedding, as an idle interface would be.
			p := e.px
			starts := p.Count(pxproc.Has(`msg="storm start"`))
			if err := p.WaitUntil(ctx, 10*time.Second, func() bool { return p.Count(pxproc.Has(`msg="storm end"`)) >= starts }); err != nil {
				return fmt.Errorf("shedding not ended 10 s after the storm: %w: %s", err, lastLines(p))
			}
		}
	}
	return nil
}

// storm floods from every stormer at once, at the maximum rate, while the
// observer asks StormProbes requests from stormWarmup on.
func (e *env) storm(ctx context.Context, resp string, stormers []*rawSock, base Summary) (*StormRun, error) {
	o := e.o
	dur := stormWarmup + time.Duration(o.StormProbes)*stormEvery + 500*time.Millisecond
	run := &StormRun{Responder: resp, Stormers: len(stormers), Baseline: base}
	var before procSnap
	var starts0 int
	if isPx(resp) {
		var err error
		if before, err = readProc(e.px.Pid()); err != nil {
			return nil, err
		}
		starts0 = e.px.Count(pxproc.Has(`msg="storm start"`))
	}
	drops0, err := backlogDrops()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	runs := make([]*FloodRun, len(stormers))
	errs := make([]error, len(stormers))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, s := range stormers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = flood(ctx, s, dur, 0, o.FloodMax, 100*time.Millisecond)
		}()
	}
	go func() { wg.Wait(); close(stop) }()
	var obsErr error
	select {
	case <-time.After(stormWarmup):
		run.During, run.Arrived, obsErr = observe(ctx, e.podS, o.StormProbes, o.timeout, stop)
	case <-stop:
	}
	<-stop
	wall := time.Since(t0)
	for _, r := range runs {
		if r == nil {
			continue
		}
		run.Sent += r.Sent
		run.Replies += r.Replies
		run.SendRate += r.SendRate
		run.DurationNs = max(run.DurationNs, r.DurationNs)
		run.ReplyRate += r.ReplyRate / float64(len(stormers))
	}
	drops1, derr := backlogDrops()
	run.BacklogDrops = drops1 - drops0
	err = errors.Join(append(errs, obsErr, derr)...)
	if isPx(resp) {
		after, serr := readProc(e.px.Pid())
		if serr != nil {
			return run, errors.Join(err, serr)
		}
		run.CPUNs, run.UserTicks = after.CPUNs-before.CPUNs, after.UTicks-before.UTicks
		run.CPUPercent = 100 * float64(run.CPUNs) / float64(wall.Nanoseconds())
		run.Storms = e.px.Count(pxproc.Has(`msg="storm start"`)) - starts0
		if !e.px.Alive() {
			err = errors.Join(err, fmt.Errorf("pxresp died during the storm: %s", lastLines(e.px)))
		}
	}
	return run, err
}

// observe asks n broadcast requests on c, one at a time, at most one every
// stormEvery, each waiting at most timeout, and stops early when stop is
// closed. It runs on a thread of its own.
//
// It also returns, from the same requests, the time from the send to the
// kernel's receive timestamp of the reply (SIOCGSTAMPNS: when the reply
// entered the pod's side of the link), which leaves out how long the
// pod's own thread took to be woken and read it.
func observe(ctx context.Context, c *rawSock, n int, timeout time.Duration, stop <-chan struct{}) (Summary, Summary, error) {
	var queued []int64
	var samples []int64
	lost := 0
	err := onThread(-1, func() error {
		if err := c.setRecvTimeout(timeout); err != nil {
			return err
		}
		c.drain()
		c.stamp() // the first call turns the kernel's receive timestamps on
		next := time.Now()
		for range n {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			select {
			case <-stop:
				return nil
			default:
			}
			// A well-behaved pod: one request per stormEvery at most, and
			// no catching up after a late wake-up.
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			next = time.Now().Add(stormEvery)
			sent := time.Now().UnixNano()
			ns, err := c.rtt(&c.bcast, timeout)
			switch {
			case err == nil:
				samples = append(samples, ns)
				if st := c.stamp(); st > sent {
					queued = append(queued, st-sent)
				}
			case errors.Is(err, errTimeout):
				lost++
			default:
				return err
			}
		}
		return nil
	})
	// A late reply must not pass for the next request's.
	time.Sleep(5 * time.Millisecond)
	c.drain()
	return summarize(samples, lost), summarize(queued, 0), err
}

// backlogDrops returns the sum over the CPUs of the frames dropped because
// the CPU's input backlog was full (/proc/net/softnet_stat, second column).
func backlogDrops() (uint64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0, err
	}
	return parseSoftnetDrops(string(b))
}

// parseSoftnetDrops sums the second column (hexadecimal) of softnet_stat.
func parseSoftnetDrops(s string) (uint64, error) {
	var sum uint64
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			return 0, fmt.Errorf("softnet_stat: line %q", l)
		}
		v, err := strconv.ParseUint(f[1], 16, 32)
		if err != nil {
			return 0, fmt.Errorf("softnet_stat: %w", err)
		}
		sum += v
	}
	return sum, nil
}
