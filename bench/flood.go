package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// flood sends broadcast requests from one pod for dur (and at most maxCount
// requests): as fast as one thread can when rate is 0, else at rate
// requests/s in batches of rate/1000 per millisecond. Another thread counts
// the replies until drain after the last request. Neither thread is pinned.
func flood(ctx context.Context, c *rawSock, dur time.Duration, rate float64, maxCount int64, drain time.Duration) (*FloodRun, error) {
	if err := c.setRecvTimeout(10 * time.Millisecond); err != nil {
		return nil, err
	}
	c.drain()
	c.packetStats() // reset
	run := &FloodRun{Pace: "max"}
	if rate > 0 {
		run.Pace, run.TargetRate = "fixed", rate
		maxCount = min(maxCount, int64(rate*dur.Seconds()))
	}
	var (
		sendDone  atomic.Int64 // UnixNano when the sender stopped; 0 while it runs
		replies   int64
		lastReply time.Time
		t0        time.Time
		recvErr   error
	)
	ready := make(chan time.Time, 1)
	recvDone := make(chan struct{})
	// The receiver reads on its own copy of the matcher and buffer.
	rc := &rawSock{fd: c.fd, m: c.m}
	go func() {
		defer close(recvDone)
		recvErr = onThread(-1, func() error {
			start := <-ready
			hard := start.Add(dur + drain + 10*time.Second)
			for range 4*maxCount + 1_000_000 {
				n, err := unix.Read(rc.fd, rc.buf[:])
				now := time.Now()
				if err == nil && rc.m.match(rc.buf[:n]) {
					replies++
					lastReply = now
				} else if err != nil && err != unix.EAGAIN && err != unix.EINTR {
					return fmt.Errorf("flood receive: %w", err)
				}
				if sd := sendDone.Load(); sd != 0 && now.UnixNano() > sd+drain.Nanoseconds() {
					return nil
				}
				if now.After(hard) {
					return errors.New("flood receiver: hard time limit")
				}
			}
			return errors.New("flood receiver: read limit")
		})
	}()
	req := c.request(broadcastReq)
	sendErr := onThread(-1, func() error {
		t0 = time.Now()
		ready <- t0
		defer func() { sendDone.Store(time.Now().UnixNano()) }()
		var sent, errs int64
		defer func() { run.Sent, run.SendErrors = sent, errs }()
		if rate <= 0 {
			for i := int64(0); i < maxCount; i++ {
				if i&255 == 0 && (time.Since(t0) > dur || ctx.Err() != nil) {
					break
				}
				if _, err := unix.Write(c.fd, req[:]); err != nil {
					errs++
				} else {
					sent++
				}
			}
			run.DurationNs = time.Since(t0).Nanoseconds()
			return nil
		}
		batch := batchFor(rate)
		for i := int64(0); i < 2*maxCount+1_000_000 && ctx.Err() == nil; i++ {
			el := time.Since(t0)
			if el > dur+time.Second { // could not keep up: stop anyway
				break
			}
			// A failed send counts as done for the pacing, not as sent.
			due := pacedDue(el, rate, maxCount)
			for range pacedBatch(sent+errs, due, 2*batch) {
				if _, err := unix.Write(c.fd, req[:]); err != nil {
					errs++
				} else {
					sent++
				}
			}
			if sent+errs >= maxCount {
				break
			}
			if d := pacedSleep(time.Since(t0), sent+errs, rate, batch); d > 0 {
				time.Sleep(d)
			}
		}
		run.DurationNs = time.Since(t0).Nanoseconds()
		return nil
	})
	if sendErr != nil {
		select { // the sender thread never started: release the receiver
		case ready <- time.Now():
		default:
		}
		sendDone.Store(time.Now().UnixNano())
	}
	<-recvDone
	st := c.packetStats()
	run.ClientDrops = st.Drops
	run.Replies = replies
	if run.DurationNs > 0 {
		run.SendRate = float64(run.Sent) / (float64(run.DurationNs) / 1e9)
	}
	if replies > 0 {
		if span := lastReply.Sub(t0); span > 0 {
			run.ReplyRate = float64(replies) / span.Seconds()
		}
	}
	if run.Sent > 0 {
		run.Loss = 1 - float64(replies)/float64(run.Sent)
	}
	if replies > run.Sent {
		return run, fmt.Errorf("%w: flood sent %d, got %d replies", errDoubleReply, run.Sent, replies)
	}
	return run, errors.Join(sendErr, recvErr)
}

// runFlood: floods at the maximum rate and at the fixed rate, in rounds
// rotating K0, P, E, Kd; one responder active at a time, as in runLatency.
func (e *env) runFlood(ctx context.Context) error {
	o := e.o
	c := e.podS
	ifs := []string{e.pod.HostIf}
	for r := range o.FloodRounds {
		for _, resp := range rotate([]string{K0, P, E, Kd}, r) {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := e.floodSlot(ctx, r+1, resp, ifs, c); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, resp, err)
			}
		}
		logf("flood round %d/%d done", r+1, o.FloodRounds)
	}
	return nil
}

func (e *env) floodSlot(ctx context.Context, round int, resp string, ifs []string, c *rawSock) (err error) {
	o := e.o
	drain := 100 * time.Millisecond
	switch resp {
	case K0, Kd:
		var delay int
		var off func() error
		if delay, off, err = e.kernelOn(ctx, resp, ifs, c); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, off()) }() // err: the named result
		if resp == Kd {
			// Delayed replies come up to proxy_delay later.
			drain = time.Duration(delay)*10*time.Millisecond + 200*time.Millisecond
		}
	case P, E:
		if err := e.kernelSilent(ctx, ifs); err != nil {
			return err
		}
		if err := silent(c); err != nil {
			return err
		}
		if _, err := e.startPx(resp, false, "warn"); err != nil {
			return err
		}
		defer func() {
			if serr := e.stopPx(); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
		if _, err := probe(ctx, c, broadcastReq, 2*time.Millisecond, 5*time.Second); err != nil {
			return fmt.Errorf("pxresp not answering: %w", err)
		}
	}
	for _, rate := range []float64{0, o.FloodRate} {
		var before procSnap
		var dropsBefore uint64
		if resp == P { // E has no packet socket
			if dropsBefore, err = socketDrops(ctx, e.px, e.t.Host); err != nil {
				return err
			}
		}
		if isPx(resp) {
			if before, err = readProc(e.px.Pid()); err != nil {
				return err
			}
		}
		run, err := flood(ctx, c, o.floodDur, rate, o.FloodMax, drain)
		if run != nil {
			run.Responder, run.Round = resp, round
			if isPx(resp) {
				after, serr := readProc(e.px.Pid())
				if serr != nil {
					err = errors.Join(err, serr)
				} else {
					run.CPUTicks, run.CPUNs = after.Ticks-before.Ticks, after.CPUNs-before.CPUNs
				}
				if !e.px.Alive() {
					err = errors.Join(err, fmt.Errorf("pxresp died during the flood: %s", lastLines(e.px)))
				}
			}
			if resp == P {
				if d, derr := socketDrops(ctx, e.px, e.t.Host); derr != nil {
					err = errors.Join(err, derr)
				} else {
					run.RespDrops = int64(d - dropsBefore)
				}
			}
			e.res.Flood = append(e.res.Flood, run)
			logf("flood %s %s: sent %d (%.0f/s), %d replies (%.0f/s), loss %.4f%%, client drops %d, pxresp socket drops %d",
				resp, run.Pace, run.Sent, run.SendRate, run.Replies, run.ReplyRate, 100*run.Loss, run.ClientDrops, run.RespDrops)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
