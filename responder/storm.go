package responder

import (
	"encoding/binary"
	"math/bits"
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

// maxShift bounds the sample: at most one frame in 2^maxShift of the shed
// sender is let through.
const maxShift = 16

// shedRule is the sender the socket filter sheds: of its frames, only one
// in 2^shift, chosen at random by the kernel, reaches the socket. The zero
// shedRule sheds nothing.
type shedRule struct {
	mac   [6]byte
	shift uint8
}

func (s shedRule) active() bool { return s.shift > 0 }

// sample returns how many of the sender's frames each frame let through
// stands for.
func (s shedRule) sample() uint64 { return 1 << s.shift }

// macKey packs a MAC into a uint64 with bit 63 set, so that 0 means none.
func macKey(m [6]byte) uint64 {
	return 1<<63 | uint64(binary.BigEndian.Uint16(m[0:2]))<<32 | uint64(binary.BigEndian.Uint32(m[2:6]))
}

// shiftFor returns the sample shift that lets about between limit and twice
// limit frames a second through of a sender sending rate a second: the
// limit is still answered, and pxresp reads no more than it must.
func shiftFor(rate, limit float64) uint8 {
	if limit <= 0 || rate < 2*limit {
		return 1
	}
	return uint8(min(max(bits.Len64(uint64(rate/limit))-1, 1), maxShift))
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
	rule := shedRule{mac: mac, shift: shiftFor(rate, float64(r.limitRate))}
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
// under half the limit, or adapts the sample so that between the limit and
// twice the limit gets through.
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
	if shift := shiftFor(rate, limit); shift != r.shed.shift {
		rule := shedRule{mac: r.shed.mac, shift: shift}
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
