package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// kind is the kind of request: a pod's first (broadcast) request or a
// unicast re-probe to ee:ee:ee:ee:ee:ee.
type kind int

const (
	broadcastReq kind = iota
	unicastReq
)

func (k kind) String() string {
	if k == unicastReq {
		return "unicast"
	}
	return "broadcast"
}

var modes = []string{"pinned", "unpinned"}

// cpuFor is the CPU the client thread is pinned to in mode (-1: any).
func cpuFor(mode string) int {
	if mode == "pinned" {
		return 0
	}
	return -1
}

// errDoubleReply means more replies came than requests were sent without a
// timeout: two responders answered at once, which the bench must never let
// happen. It stops the run.
var errDoubleReply = errors.New("more replies than requests: two responders answered")

// rotate returns s rotated left by r.
func rotate[T any](s []T, r int) []T {
	n := len(s)
	out := make([]T, 0, n)
	for i := range n {
		out = append(out, s[(i+r)%n])
	}
	return out
}

// series returns (creating it) the series for scope/responder/kind/mode.
func (e *env) series(scope, resp string, k kind, mode string) *Series {
	for _, s := range e.res.Latency {
		if s.Scope == scope && s.Responder == resp && s.Kind == k.String() && s.Mode == mode {
			return s
		}
	}
	s := &Series{Scope: scope, Responder: resp, Kind: k.String(), Mode: mode}
	e.res.Latency = append(e.res.Latency, s)
	return s
}

// warmup is how many round trips each block makes before it starts
// recording (not for Kd broadcast requests, which take 0.4 s each).
const warmup = 200

// block takes up to n round trips, one request outstanding, cycling over
// socks, on a client thread pinned per mode, after warmup unrecorded ones;
// it adds them to s as one round. Bounded by n and by maxDur.
func (e *env) block(ctx context.Context, s *Series, socks []*rawSock, k kind, n int, timeout, maxDur time.Duration) error {
	skip := warmup
	if s.Responder == Kd && k == broadcastReq {
		skip = 0
	}
	for _, c := range socks {
		if err := c.setRecvTimeout(timeout); err != nil {
			return err
		}
		c.drain()
	}
	samples := make([]int64, 0, n)
	lost, extra, sent := 0, 0, 0
	var ioErr error
	err := onThread(cpuFor(s.Mode), func() error {
		t0 := time.Now()
		for i := range n + skip {
			if i&63 == 0 && (ctx.Err() != nil || time.Since(t0) > maxDur) {
				break
			}
			c := socks[i%len(socks)]
			extra += c.drain()
			sent++
			ns, err := c.rtt(c.request(k), timeout)
			switch {
			case i < skip && err == nil:
			case err == nil:
				samples = append(samples, ns)
			case errors.Is(err, errTimeout):
				lost++
			default:
				ioErr = err
				return nil
			}
		}
		return nil
	})
	if err == nil {
		err = ioErr
	}
	// Late or duplicate replies: wait a little, then count what is queued.
	time.Sleep(20 * time.Millisecond)
	for _, c := range socks {
		extra += c.drain()
	}
	s.Samples = append(s.Samples, samples...)
	s.Sent += sent
	s.lost += lost
	s.Extra += extra
	s.Rounds = append(s.Rounds, summarize(samples, lost))
	if extra > lost {
		return fmt.Errorf("%w: %s %s %s: %d requests, %d lost, %d extra replies", errDoubleReply, s.Responder, s.Kind, s.Mode, len(samples)+lost, lost, extra)
	}
	return err
}

// probe sends a request every `every` until a reply comes, for at most
// total, and returns when the reply was read.
func probe(ctx context.Context, c *rawSock, k kind, every, total time.Duration) (time.Time, error) {
	if err := c.setRecvTimeout(every); err != nil {
		return time.Time{}, err
	}
	t0 := time.Now()
	for i := 0; i < 100000 && time.Since(t0) < total && ctx.Err() == nil; i++ {
		_, err := c.rtt(c.request(k), every)
		if err == nil {
			at := time.Now()
			// A reply to an earlier probe may still be on its way: let
			// it come and drop it, so that the next block does not count
			// it as a duplicate.
			time.Sleep(5 * time.Millisecond)
			c.drain()
			return at, nil
		}
		if !errors.Is(err, errTimeout) {
			return time.Time{}, err
		}
	}
	return time.Time{}, fmt.Errorf("no reply on %s/%s within %v", c.ns, c.ifname, total)
}

// probeAll sends a broadcast request on every socket not yet answered,
// every `every`, until all are answered (at most total), and returns when
// the last one first answered (to within `every`).
func probeAll(ctx context.Context, socks []*rawSock, every, total time.Duration) (time.Time, error) {
	answered := make([]bool, len(socks))
	left := len(socks)
	var last time.Time
	t0 := time.Now()
	for i := 0; i < 100000 && left > 0; i++ {
		if ctx.Err() != nil {
			return last, context.Cause(ctx)
		}
		if time.Since(t0) > total {
			return last, fmt.Errorf("%d of %d interfaces still silent after %v", left, len(socks), total)
		}
		for j, c := range socks {
			if !answered[j] {
				if err := c.send(&c.bcast); err != nil {
					return last, err
				}
			}
		}
		time.Sleep(every)
		now := time.Now()
		for j, c := range socks {
			if c.drain() > 0 && !answered[j] {
				answered[j], last = true, now
				left--
			}
		}
	}
	time.Sleep(5 * time.Millisecond)
	for _, c := range socks {
		c.drain()
	}
	return last, nil
}

// silent checks that nobody answers on c (before pxresp starts there).
func silent(c *rawSock) error {
	if err := c.setRecvTimeout(30 * time.Millisecond); err != nil {
		return err
	}
	// Replies to an earlier slot's requests (a flood's backlog, answered
	// before its responder stopped) are not answers to these.
	c.drain()
	for _, k := range []kind{broadcastReq, unicastReq} {
		_, err := c.rtt(c.request(k), 30*time.Millisecond)
		if err == nil {
			return fmt.Errorf("a %s request on %s/%s was answered before pxresp started", k, c.ns, c.ifname)
		}
		if !errors.Is(err, errTimeout) {
			return err
		}
	}
	c.drain()
	return nil
}

// runLatency: round trips from one pod, broadcast and unicast, pinned and
// unpinned, in rounds that rotate K0, Kd, P, E. Only one responder is ever
// active: the kernel's proxy_arp is on only during its own slot and pxresp
// runs only during P's and E's (started, checked, measured, stopped).
func (e *env) runLatency(ctx context.Context) error {
	o := e.o
	c := e.podS
	ifs := []string{e.pod.HostIf}
	kdPerRound := 0
	if o.KdSamples > 0 {
		kdPerRound = (o.KdSamples + o.Rounds - 1) / o.Rounds
	}
	kdLeft := map[string]int{"pinned": o.KdSamples, "unpinned": o.KdSamples}
	defer e.summarize("pod") // what was measured, even when cut short
	for r := range o.Rounds {
		for _, resp := range rotate([]string{K0, Kd, P, E}, r) {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			ms := modes
			if r%2 == 1 {
				ms = rotate(modes, 1)
			}
			if err := e.latencySlot(ctx, resp, ms, ifs, c, kdPerRound, kdLeft); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, resp, err)
			}
		}
		logf("latency round %d/%d done", r+1, o.Rounds)
	}
	return nil
}

// summarize computes the summaries of the series of scope.
func (e *env) summarize(scope string) {
	for _, s := range e.res.Latency {
		if s.Scope == scope {
			s.Summary = summarize(s.Samples, s.lost)
		}
	}
}

// latencySlot measures one responder in one round.
func (e *env) latencySlot(ctx context.Context, resp string, ms []string, ifs []string, c *rawSock, kdPerRound int, kdLeft map[string]int) (err error) {
	o := e.o
	maxDur := 30 * time.Second
	switch resp {
	case K0, Kd:
		var off func() error
		if _, off, err = e.kernelOn(ctx, resp, ifs, c); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, off()) }() // err: the named result
		for _, m := range ms {
			for _, k := range []kind{broadcastReq, unicastReq} {
				n, timeout := o.Samples, o.timeout
				if resp == Kd && k == broadcastReq {
					n = min(kdPerRound, kdLeft[m])
					kdLeft[m] -= n
					timeout = 2 * time.Second
					if n == 0 {
						continue
					}
				}
				if err := e.block(ctx, e.series("pod", resp, k, m), []*rawSock{c}, k, n, timeout, maxDur); err != nil {
					return err
				}
			}
		}
		return nil
	case P, E:
		for _, m := range ms {
			if err := e.kernelSilent(ctx, ifs); err != nil {
				return err
			}
			if err := silent(c); err != nil {
				return err
			}
			if _, err := e.startPx(resp, m == "pinned", "warn"); err != nil {
				return err
			}
			if _, err := probe(ctx, c, broadcastReq, 2*time.Millisecond, 5*time.Second); err != nil {
				return fmt.Errorf("pxresp not answering: %w (%s)", err, lastLines(e.px))
			}
			for _, k := range []kind{broadcastReq, unicastReq} {
				s := e.series("pod", resp, k, m)
				before, err := readProc(e.px.Pid())
				if err != nil {
					return err
				}
				if err := e.block(ctx, s, []*rawSock{c}, k, o.Samples, o.timeout, maxDur); err != nil {
					return err
				}
				after, err := readProc(e.px.Pid())
				if err != nil {
					return err
				}
				s.PxSwitches += after.Switches - before.Switches
			}
			if !e.px.Alive() {
				return fmt.Errorf("pxresp died during the round: %s", lastLines(e.px))
			}
			if err := e.stopPx(); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown responder %q", resp)
}
