package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// Measurements of pxresp alone (the kernel has no process and no attach
// step): attach latency, idle cost, memory, a burst of new interfaces.

// farIP returns the sender address the client uses on far-side veth number
// i of a group (base picks the group): inside the pod network, routed
// nowhere, never anyone's.
func farIP(base byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, base + byte(i>>8), byte(i)})
}

// startPxInfo starts an unpinned pxresp as resp (P or E) at info level
// (attach lines on stderr) and waits until it attached the pod's interface.
func (e *env) startPxInfo(ctx context.Context, resp string) (*pxproc.Proc, error) {
	p, err := e.startPx(resp, false, "info")
	if err != nil {
		return nil, err
	}
	if err := waitAttached(ctx, p, e.pod.HostIf, 1, 10*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// memPoint records pxresp's VmRSS with n attached interfaces, once per n.
func (e *env) memPoint(p *pxproc.Proc, n int) error {
	for _, m := range e.res.Memory {
		if m.Interfaces == n {
			return nil
		}
	}
	v, err := procstat.Status(p.Pid(), "VmRSS")
	if err != nil {
		return err
	}
	rss := v[0]
	e.res.Memory = append(e.res.Memory, MemPoint{Interfaces: n, RSSkB: rss})
	logf("pxresp VmRSS with %d attached interface%s: %d kB", n, plural(n), rss)
	return nil
}

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// netlinkAt opens a netlink handle in the named namespace.
func netlinkAt(name string) (*netlink.Handle, netns.NsHandle, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, netns.None(), err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, netns.None(), err
	}
	return nl, h, nil
}

// runAttach: a new veth appears (host side down, far side up in the far
// namespace) and pxresp attaches; a client on the far side sends a
// broadcast request every period; at T0 the host side is set up (netlink,
// from the bench); the first reply ends the repetition.
func (e *env) runAttach(ctx context.Context) error {
	far, err := e.farNS(ctx)
	if err != nil {
		return err
	}
	hostNL, hostNS, err := netlinkAt(e.t.Host.Name)
	if err != nil {
		return err
	}
	defer hostNS.Close()
	defer hostNL.Close()
	farNL, farH, err := netlinkAt(far.Name)
	if err != nil {
		return err
	}
	defer farH.Close()
	defer farNL.Close()

	for _, resp := range []string{P, E} {
		if err := e.attachSlot(ctx, resp, hostNL, farNL, far, farH); err != nil {
			return fmt.Errorf("%s: %w", resp, err)
		}
		if err := e.stopPx(); err != nil {
			return err
		}
	}
	return nil
}

// attachSlot runs the attach repetitions on a pxresp started as resp.
func (e *env) attachSlot(ctx context.Context, resp string, hostNL, farNL *netlink.Handle, far *topo.NS, farH netns.NsHandle) error {
	o := e.o
	p, err := e.startPxInfo(ctx, resp)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	res := &AttachResult{Responder: resp, Reps: o.AttachReps}
	if resp == P {
		if err := e.memPoint(p, p.NumAttached("cali")); err != nil {
			return err
		}
		e.res.Attach = res
	} else {
		e.res.AttachE = res
	}
	defer func() { res.Summary = summarize(res.UpToReply, res.Failed) }()
	for rep := range o.AttachReps {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		lat, c2a, setup, err := e.attachOnce(ctx, p, hostNL, farNL, far, farH, rep)
		if err != nil {
			res.Failed++
			logf("attach rep %d: %v", rep, err)
			if !p.Alive() {
				return fmt.Errorf("pxresp died: %s", lastLines(p))
			}
			continue
		}
		res.UpToReply = append(res.UpToReply, lat)
		res.CreateToAttach = append(res.CreateToAttach, c2a)
		res.SetUpCallNs = append(res.SetUpCallNs, setup)
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d attach repetitions failed", res.Failed, res.Reps)
	}
	return nil
}

func (e *env) attachOnce(ctx context.Context, p *pxproc.Proc, hostNL, farNL *netlink.Handle, far *topo.NS, farH netns.NsHandle, rep int) (lat, createToAttach, setUp int64, err error) {
	name, peer := fmt.Sprintf("calia%06d", rep), fmt.Sprintf("fa%d", rep)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, HardwareAddr: net.HardwareAddr(gatewayMAC[:])},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(farH)),
	}
	tCreate := time.Now()
	if err := hostNL.LinkAdd(veth); err != nil {
		return 0, 0, 0, fmt.Errorf("create %s: %w", name, err)
	}
	host, err := hostNL.LinkByName(name)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() {
		if derr := hostNL.LinkDel(host); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	pl, err := farNL.LinkByName(peer)
	if err != nil {
		return 0, 0, 0, err
	}
	if err := farNL.LinkSetUp(pl); err != nil {
		return 0, 0, 0, err
	}
	if err := waitAttached(ctx, p, name, 1, 5*time.Second); err != nil {
		return 0, 0, 0, err
	}
	ta, _ := attachTime(p.Attached(), name)
	createToAttach = ta.Sub(tCreate).Nanoseconds()
	c, err := openRawSock(far, peer, farIP(200, rep))
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.close()

	started := make(chan struct{})
	type result struct {
		at    time.Time
		sends int
		err   error
	}
	done := make(chan result, 1)
	period := e.o.period
	go func() {
		var r result
		r.err = onThread(-1, func() error {
			close(started)
			limit := time.Now().Add(3 * time.Second)
			for i := 0; i < 100000; i++ {
				_ = c.send(&c.bcast) // fails (ENOBUFS, ENETDOWN) while the host side is down
				r.sends++
				if c.waitReadable(period) {
					for range 100 {
						n := c.recvDontWait()
						if n < 0 {
							break
						}
						if c.m.match(c.buf[:n]) {
							r.at = time.Now()
							return nil
						}
					}
				}
				if time.Now().After(limit) {
					return errors.New("no reply within 3s of starting to send")
				}
			}
			return errors.New("no reply after 100000 requests")
		})
		done <- r
	}()
	<-started
	time.Sleep(2 * time.Millisecond) // several requests into the void first
	t0 := time.Now()
	if err := hostNL.LinkSetUp(host); err != nil {
		<-done
		return 0, 0, 0, err
	}
	setUp = time.Since(t0).Nanoseconds()
	r := <-done
	if r.err != nil {
		return 0, 0, 0, fmt.Errorf("%s: %w (after %d requests)", name, r.err, r.sends)
	}
	if r.at.Before(t0) {
		return 0, 0, 0, fmt.Errorf("%s: a reply came before the host side was up", name)
	}
	return r.at.Sub(t0).Nanoseconds(), createToAttach, setUp, nil
}

// manyVeths returns the ip -batch commands that create n veths: host side
// PREFIX%06d (MAC ee:ee:ee:ee:ee:ee, set up), far side peer%d in far, and
// the far-side commands that set those up.
func manyVeths(prefix, peer, far string, n int) (host, farSide []string) {
	for i := range n {
		name := fmt.Sprintf("%s%06d", prefix, i)
		host = append(host,
			fmt.Sprintf("link add %s address %s type veth peer name %s%d netns %s", name, net.HardwareAddr(gatewayMAC[:]), peer, i, far),
			fmt.Sprintf("link set %s up", name))
		farSide = append(farSide, fmt.Sprintf("link set %s%d up", peer, i))
	}
	return host, farSide
}

// runIdle: pxresp with IdleIfaces attached interfaces (the pod's and
// IdleIfaces-1 new ones) and no ARP at all: CPU and wake-ups over IdleDur.
func (e *env) runIdle(ctx context.Context) error {
	o := e.o
	far, err := e.farNS(ctx)
	if err != nil {
		return err
	}
	p, err := e.startPxInfo(ctx, P)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	if err := e.memPoint(p, p.NumAttached("cali")); err != nil {
		return err
	}
	n := o.IdleIfaces - 1
	host, farSide := manyVeths("calii", "fi", far.Name, n)
	defer func() {
		// pxresp first, so that it does not log n detaches.
		if serr := e.stopPx(); serr != nil {
			logf("stopping pxresp: %v", serr)
		}
		var del []string
		for i := range n {
			del = append(del, fmt.Sprintf("link del calii%06d", i))
		}
		if derr := e.t.Host.Batch(context.WithoutCancel(ctx), del); derr != nil {
			logf("deleting the idle interfaces: %v", derr)
		}
	}()
	if err := e.t.Host.Batch(ctx, host); err != nil {
		return err
	}
	if err := far.Batch(ctx, farSide); err != nil {
		return err
	}
	if err := waitAttached(ctx, p, "cali", o.IdleIfaces, 60*time.Second); err != nil {
		return err
	}
	// Let the new links settle (carrier, link notifications) first.
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	if err := e.memPoint(p, p.NumAttached("cali")); err != nil {
		return err
	}
	s0, err := readProc(p.Pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, o.idleDur); err != nil {
		return err
	}
	s1, err := readProc(p.Pid())
	if err != nil {
		return err
	}
	el := time.Since(t0)
	e.res.Idle = &IdleResult{
		Interfaces: p.NumAttached("cali"),
		DurationNs: el.Nanoseconds(),
		CPUTicks:   s1.Ticks - s0.Ticks,
		CPUNs:      s1.CPUNs - s0.CPUNs,
		Wakeups:    int64(s1.Switches) - int64(s0.Switches),
		Switches0:  s0.Switches,
		Threads:    s1.Threads,
		CPUPercent: 100 * float64(s1.CPUNs-s0.CPUNs) / float64(el.Nanoseconds()),
	}
	logf("idle: %+v", *e.res.Idle)
	if !p.Alive() {
		return fmt.Errorf("pxresp died: %s", lastLines(p))
	}
	return nil
}

// scaleNames returns the host-side names of the burst interfaces and the
// indexes of the sampled ones, spread evenly.
func scaleSample(n, k int) []int {
	var idx []int
	for j := range k {
		idx = append(idx, j*n/k+(n/k)/2)
	}
	return idx
}

// openScaleSocks opens the clients on the far ends of the sampled burst
// interfaces.
func (e *env) openScaleSocks(far *topo.NS) ([]*rawSock, []string, error) {
	var names, hostIfs []string
	var ips []netip.Addr
	for _, i := range scaleSample(e.o.Burst, e.o.ScaleSample) {
		names = append(names, fmt.Sprintf("fb%d", i))
		ips = append(ips, farIP(128, i))
		hostIfs = append(hostIfs, fmt.Sprintf("calib%06d", i))
	}
	socks, err := openRawSocks(far, names, ips)
	return socks, hostIfs, err
}

// runBurst: Burst new interfaces in one `ip -n HOST -batch -` (with their
// far sides set up by a second batch) while pxresp runs; time until it has
// logged the attach of all of them, and until every sampled one answers.
func (e *env) runBurst(ctx context.Context) error {
	o := e.o
	far, err := e.farNS(ctx)
	if err != nil {
		return err
	}
	p, err := e.startPxInfo(ctx, P)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	host, farSide := manyVeths("calib", "fb", far.Name, o.Burst)
	res := &BurstResult{Interfaces: o.Burst}
	e.res.Burst = res
	t0 := time.Now()
	if err := e.t.Host.Batch(ctx, host); err != nil {
		return err
	}
	t1 := time.Now()
	if err := far.Batch(ctx, farSide); err != nil {
		return err
	}
	t2 := time.Now()
	res.HostBatchNs, res.CreateNs = t1.Sub(t0).Nanoseconds(), t2.Sub(t0).Nanoseconds()
	// The clients on the sampled far ends, while pxresp attaches.
	socks, _, err := e.openScaleSocks(far)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range socks {
			c.close()
		}
	}()
	werr := waitAttached(ctx, p, "calib", o.Burst, 60*time.Second)
	res.Attached = p.NumAttached("calib")
	if werr != nil {
		return werr
	}
	last := lastAttach(p.Attached(), "calib")
	res.AllAttachedNs, res.AfterCreateNs = last.Sub(t0).Nanoseconds(), last.Sub(t1).Nanoseconds()
	answered, err := probeAll(ctx, socks, time.Millisecond, 10*time.Second)
	if err != nil {
		return err
	}
	res.SampleAnswerNs, res.Sampled = answered.Sub(t0).Nanoseconds(), len(socks)
	logf("burst: %d interfaces created in %v (host batch %v), all attached %v after the start, %v after the host batch",
		o.Burst, time.Duration(res.CreateNs), time.Duration(res.HostBatchNs), time.Duration(res.AllAttachedNs), time.Duration(res.AfterCreateNs))
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	return e.memPoint(p, p.NumAttached("cali"))
}

// ensureBurstIfaces creates the burst interfaces without measuring, when the
// burst section did not run.
func (e *env) ensureBurstIfaces(ctx context.Context, far *topo.NS) error {
	if _, err := e.t.Host.Exec(ctx, "ip", "link", "show", "dev", fmt.Sprintf("calib%06d", e.o.Burst-1)); err == nil {
		return nil
	}
	host, farSide := manyVeths("calib", "fb", far.Name, e.o.Burst)
	if err := e.t.Host.Batch(ctx, host); err != nil {
		return err
	}
	return far.Batch(ctx, farSide)
}

// silentAll checks that none of socks gets an answer to a broadcast request.
func silentAll(socks []*rawSock) error {
	for _, c := range socks {
		c.drain()
		if err := c.send(&c.bcast); err != nil {
			return err
		}
	}
	time.Sleep(30 * time.Millisecond)
	for _, c := range socks {
		if c.drain() > 0 {
			return fmt.Errorf("%s/%s answered before pxresp started", c.ns, c.ifname)
		}
	}
	return nil
}

// runScale: round trips spread over ScaleSample of the Burst interfaces
// (their far ends in one namespace without addresses), rounds rotating K0,
// P and E, pinned and unpinned, broadcast requests.
func (e *env) runScale(ctx context.Context) error {
	o := e.o
	far, err := e.farNS(ctx)
	if err != nil {
		return err
	}
	if err := e.ensureBurstIfaces(ctx, far); err != nil {
		return err
	}
	socks, hostIfs, err := e.openScaleSocks(far)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range socks {
			c.close()
		}
	}()
	total := 1 + o.Burst // the pod's interface and the burst's
	defer e.summarize("scale")
	for r := range o.ScaleRounds {
		for _, resp := range rotate([]string{K0, P, E}, r) {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			ms := modes
			if r%2 == 1 {
				ms = rotate(modes, 1)
			}
			if err := e.scaleSlot(ctx, resp, ms, socks, hostIfs, total); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, resp, err)
			}
		}
		logf("scale round %d/%d done", r+1, o.ScaleRounds)
	}
	return nil
}

func (e *env) scaleSlot(ctx context.Context, resp string, ms []string, socks []*rawSock, hostIfs []string, total int) (err error) {
	o := e.o
	maxDur := 60 * time.Second
	switch resp {
	case K0:
		if err := e.setKernel(ctx, hostIfs, true, 0); err != nil {
			return err
		}
		defer func() {
			if oerr := e.setKernel(ctx, hostIfs, false, 0); oerr != nil {
				err = errors.Join(err, oerr)
			}
		}()
		for _, c := range socks {
			if _, err := probe(ctx, c, broadcastReq, 100*time.Millisecond, 3*time.Second); err != nil {
				return fmt.Errorf("kernel proxy_arp not answering: %w", err)
			}
		}
		for _, m := range ms {
			if err := e.block(ctx, e.series("scale", K0, broadcastReq, m), socks, broadcastReq, o.ScaleSamples, o.timeout, maxDur); err != nil {
				return err
			}
		}
		return nil
	case P, E:
		for _, m := range ms {
			if err := e.kernelSilent(ctx, hostIfs); err != nil {
				return err
			}
			if err := silentAll(socks); err != nil {
				return err
			}
			t0 := time.Now()
			p, err := e.startPx(resp, m == "pinned", "info")
			if err != nil {
				return err
			}
			if err := waitAttached(ctx, p, "cali", total, 60*time.Second); err != nil {
				return err
			}
			if e.res.Burst != nil && resp == P {
				e.res.Burst.StartupAttachNs = append(e.res.Burst.StartupAttachNs, lastAttach(p.Attached(), "cali").Sub(t0).Nanoseconds())
			}
			for _, c := range socks {
				if _, err := probe(ctx, c, broadcastReq, 2*time.Millisecond, 5*time.Second); err != nil {
					return fmt.Errorf("pxresp not answering: %w", err)
				}
			}
			if err := e.block(ctx, e.series("scale", resp, broadcastReq, m), socks, broadcastReq, o.ScaleSamples, o.timeout, maxDur); err != nil {
				return err
			}
			if !p.Alive() {
				return fmt.Errorf("pxresp died: %s", lastLines(p))
			}
			if err := e.stopPx(); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown responder %q", resp)
}
