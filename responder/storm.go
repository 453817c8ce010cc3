package responder

import (
	"encoding/binary"
	"math"
	"net"
	"slices"
	"time"

	"github.com/pxresp/pxresp/internal/ratelimit"
)

// stormWindow is the detector's window: a sender refused more than the
// limit allows in it (at least the burst) is storming.
const stormWindow = 100 * time.Millisecond

// stormTick is how often, while a sender is shed, its sample is looked at
// to adapt the sample or end the shedding.
const stormTick = 250 * time.Millisecond

// maxSample bounds the sample: at most one frame in maxSample of the shed
// sender is let through.
const maxSample = 1 << 16

// sampleMargin is how much more than the limit the sample aims to let
// through of a shed sender: enough that the sampling's randomness, and the
// sender's own rate changing between two ticks, seldom take the sender
// below its limit; the frames over the limit that pxresp reads and refuses
// cost little, as they are read in batches (see shedPace).
const sampleMargin = 1.25

// shedRule is the sender the socket filter sheds: of its frames, only one
// in n, chosen at random by the kernel, reaches the socket. The zero
// shedRule sheds nothing.
type shedRule struct {
	mac [6]byte
	n   uint32
}

func (s shedRule) active() bool { return s.n > 1 }

// sample returns how many of the sender's frames each frame let through
// stands for.
func (s shedRule) sample() uint64 { return uint64(s.n) }

// macKey packs a MAC into a uint64 with bit 63 set, so that 0 means none.
func macKey(m [6]byte) uint64 {
	return 1<<63 | uint64(binary.BigEndian.Uint16(m[0:2]))<<32 | uint64(binary.BigEndian.Uint32(m[2:6]))
}

// sampleFor returns the sample (one frame in n) that lets about
// sampleMargin times limit frames a second through of a sender sending
// rate a second: the limit is still answered, and pxresp reads little more
// than it must. It is at least 2 (a sender is shed only once it sends
// more than twice the limit) and at most maxSample.
func sampleFor(rate, limit float64) uint32 {
	if limit <= 0 {
		return 2
	}
	return uint32(min(max(math.Round(rate/(sampleMargin*limit)), 2), maxSample))
}

// resample reports whether a shed rule sampling one in n should sample one
// in want instead: only for a change of more than an eighth, so that the
// estimate's noise does not swap the filter on every tick.
func resample(n, want uint32) bool {
	d := int64(want) - int64(n)
	return d*8 > int64(n) || -d*8 > int64(n)
}

// detector finds the sender of a storm from the requests the limit
// refuses: it keeps, per window of stormWindow, the sender refused most
// often (a one-entry Misra-Gries count, exact when one sender dominates).
// Only the Serve goroutine uses it; it does not allocate.
type detector struct {
	start int64 // ratelimit.Monotonic at the window's start; 0: none
	mac   [6]byte
	count int64 // Misra-Gries count of mac
}

// refuse counts a refusal of a request from mac at now. As soon as one
// sender has been refused threshold times within a window, it returns that
// sender, the rate it was refused at, per second, and true, and starts a
// new window.
func (d *detector) refuse(mac [6]byte, now int64, threshold int64) (storm [6]byte, rate float64, ok bool) {
	if d.start == 0 || now-d.start >= int64(stormWindow) {
		*d = detector{start: now}
	}
	switch {
	case d.count == 0:
		d.mac, d.count = mac, 1
	case d.mac == mac:
		d.count++
	default:
		d.count--
	}
	if d.count < threshold {
		return storm, 0, false
	}
	// At least a millisecond: a burst of refusals read from the socket's
	// queue at once says little about the sender's rate.
	el := max(now-d.start, int64(time.Millisecond))
	storm, rate = d.mac, float64(d.count)*1e9/float64(el)
	*d = detector{}
	return storm, rate, true
}

// overLimit is called by the Serve goroutine for each request the limit
// refuses; it sheds the sender once it is found to storm.
func (r *Responder) overLimit(src [6]byte) {
	if r.shedKey.Load() != 0 || r.limitRate <= 0 {
		// One sender is shed at a time; its sample, and any other
		// sender, is rate limited as usual meanwhile.
		return
	}
	threshold := max(int64(float64(r.limitRate)*stormWindow.Seconds()), int64(r.limitBurst))
	mac, rate, ok := r.detect.refuse(src, ratelimit.Monotonic(), threshold)
	if !ok {
		return
	}
	// The sender sends what the limit allows plus what it refused.
	if r.engage(mac, rate+float64(r.limitRate)) {
		// The storm emptied the interface's bucket; from now on its
		// sample has a bucket of its own, and the other senders get
		// theirs back full.
		r.limit = r.fullLimit
	}
}

// sampled reports whether src is the shed sender, and counts its frame in
// the sample unless it was queued before the filter was swapped. It runs on
// the Serve goroutine, after the frame was counted in requests.
func (r *Responder) sampled(src [6]byte) bool {
	if k := r.shedKey.Load(); k == 0 || k != macKey(src) {
		return false
	}
	if r.requests.Load() > r.sampleFrom.Load() {
		r.shedSampled.Add(1)
	}
	return true
}

// engage starts shedding mac, estimated to send rate requests a second,
// and reports whether it did.
func (r *Responder) engage(mac [6]byte, rate float64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || r.shed.active() {
		return false
	}
	rule := shedRule{mac: mac, n: sampleFor(rate, float64(r.limitRate))}
	if err := r.t.setFilter(rule, r.overrides...); err != nil {
		r.log.Warn("storm: cannot attach the shedding filter", "sender", net.HardwareAddr(mac[:]).String(), "err", err)
		return false
	}
	// The frames queued before the swap are not the sample: the kernel
	// has queued so many (PACKET_STATISTICS), of which this goroutine has
	// read the requests counted so far.
	queued, _ := r.t.kernelStats()
	r.sampleFrom.Store(max(queued, r.requests.Load()))
	r.shed = rule
	r.shedSince = time.Now()
	r.tickSampled = r.shedSampled.Load()
	r.shedKey.Store(macKey(mac))
	r.storms.Add(1)
	r.log.Warn("storm start", "sender", net.HardwareAddr(mac[:]).String(),
		"rate", int64(rate), "limit", r.limitRate, "sample", rule.sample())
	if r.tick == nil {
		r.tick = time.AfterFunc(stormTick, r.stormTick)
	} else {
		r.tick.Reset(stormTick)
	}
	return true
}

// stormTick runs every stormTick while a sender is shed: from the frames
// of the sender that the filter let through since the last tick, it
// estimates the sender's rate and ends the shedding once the rate is back
// under half the limit, or adapts the sample so that about sampleMargin
// times the limit gets through.
func (r *Responder) stormTick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || !r.shed.active() {
		return
	}
	got := r.countShed()
	rate := float64(got*r.shed.sample()) / stormTick.Seconds()
	limit := float64(r.limitRate)
	mac := net.HardwareAddr(r.shed.mac[:]).String()
	if rate < limit/2 {
		if err := r.t.setFilter(shedRule{}, r.overrides...); err != nil {
			r.log.Warn("storm: cannot detach the shedding filter", "sender", mac, "err", err)
			r.tick.Reset(stormTick)
			return
		}
		r.endShedding()
		r.log.Warn("storm end", "sender", mac, "rate", int64(rate),
			"lasted", time.Since(r.shedSince).Round(time.Millisecond).String(), "shed", r.shedEstimate.Load())
		return
	}
	if n := sampleFor(rate, limit); resample(r.shed.n, n) {
		rule := shedRule{mac: r.shed.mac, n: n}
		if err := r.t.setFilter(rule, r.overrides...); err == nil {
			r.shed = rule
		}
	}
	r.tick.Reset(stormTick)
}

// Shedding reports the sender whose frames the socket filter sheds now,
// and how many of its frames each one let through stands for; nil and 0
// when none is shed.
func (r *Responder) Shedding() (sender net.HardwareAddr, sample uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.shed.active() {
		return nil, 0
	}
	return slices.Clone(r.shed.mac[:]), r.shed.sample()
}

// countShed adds to the estimate of frames shed those the sample let
// through since the last count stand for, and returns how many it let
// through. The caller holds mu, and a sender is shed.
func (r *Responder) countShed() uint64 {
	now := r.shedSampled.Load()
	got := now - r.tickSampled
	r.tickSampled = now
	r.shedEstimate.Add(got * (r.shed.sample() - 1))
	return got
}

// endShedding counts the storm as ended and stops the tick, once the
// filter no longer sheds its sender or the socket is closing. The caller
// holds mu.
func (r *Responder) endShedding() {
	if r.tick != nil {
		r.tick.Stop()
	}
	if !r.shed.active() {
		return
	}
	r.countShed()
	r.shedKey.Store(0)
	r.shed = shedRule{}
	r.stormsEnded.Add(1)
}
