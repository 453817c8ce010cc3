package responder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/ratelimit"
	"github.com/pxresp/pxresp/policy"
)

// Settings are what a Responder answers with: Listen takes them in Config,
// Apply changes them in place on the open socket.
type Settings struct {
	// MAC is the interface's current hardware address, 6 bytes. Unicast
	// requests sent to it are answered, and replies carry it unless
	// Override is set.
	MAC net.HardwareAddr
	// Override, if set, is the MAC to answer with instead of MAC (--mac, a
	// rule's mac); it must pass policy.CheckMAC. Unicast requests sent to
	// it are answered too.
	Override net.HardwareAddr
	// Policy decides which requests to answer. Required.
	Policy *policy.Policy
	// OnLink holds the prefixes the host routes out this interface: a
	// request for an address in them is the requester's own side of the
	// link, and a gateway-mode policy never answers it (route mode asks
	// the Router instead).
	OnLink []netip.Prefix
}

// Check reports what is wrong with s, naming the value: Listen and Apply
// refuse such Settings, and so does every datapath.
func (s *Settings) Check() error {
	switch {
	case s.Policy == nil:
		return errors.New("no policy")
	case len(s.MAC) != 6:
		return fmt.Errorf("MAC %v: not a 6-byte Ethernet address", s.MAC)
	case len(s.Override) > 0:
		if err := policy.CheckMAC(s.Override); err != nil {
			return fmt.Errorf("override MAC %v: %w", s.Override, err)
		}
	}
	return nil
}

// Config describes the interface a Responder serves and what it answers.
type Config struct {
	// Index and Name identify the interface. Index is what the socket binds
	// to; Name is for logs.
	Index int
	Name  string
	// Settings are what it answers with at first; Apply changes them.
	Settings
	// Logger receives per-frame debug records and warnings; nil means
	// slog.Default().
	Logger *slog.Logger
	// RateLimit caps the replies sent on this interface, in replies per
	// second (a token bucket); 0 or less means no limit. A request the
	// policy would answer while the bucket is empty is counted in
	// Stats.RateLimited and not answered. pxresp passes
	// DefaultRateLimit unless told otherwise.
	RateLimit int
	// RateBurst is how many replies may go out at once after a quiet
	// spell; 0 means a tenth of a second's worth of RateLimit, at least
	// 10. It is ignored without a RateLimit.
	RateBurst int
	// Router classifies the host's route to a request's target for
	// route-mode policies: the policy asks it (policy.Decide) only for
	// requests whose answer hangs on the route. Without a Router those
	// get the verdict route-unknown. It is fixed for the Responder's life:
	// Apply may switch between gateway and route mode, and the Router
	// stays.
	Router policy.Router
	// DryRun makes the Responder decide, rate limit, count and log at info
	// level ("dry run: would reply") each reply it would send, and send
	// nothing. Would-be replies are counted in Stats.DryRun, not in
	// Stats.Replies.
	DryRun bool
	// Latency, if set, receives one observation per reply sent: the
	// seconds from the kernel's receive timestamp of the request
	// (SO_TIMESTAMPNS, CLOCK_REALTIME) to the return of the send. The
	// socket then reads with recvmsg to get the timestamp. A request
	// without a timestamp (no or a short control message) is answered and
	// not observed.
	Latency Observer
}

// Observer receives latency observations, in seconds.
// prometheus.Observer (a Histogram or Summary) satisfies it. Observe is
// called from the Serve goroutine of every Responder that has it: it must be
// safe for concurrent use and should not allocate.
type Observer interface{ Observe(float64) }

// Stats are a Responder's counters since it was created.
type Stats struct {
	// Requests counts well-formed ARP requests read.
	Requests uint64
	// Replies counts replies sent.
	Replies uint64
	// Ignored counts requests not answered, by verdict (index
	// policy.Verdict; Ignored[policy.Reply] stays 0).
	Ignored [policy.NumVerdicts]uint64
	// Malformed counts frames dropped because they are not well-formed
	// Ethernet/IPv4 ARP.
	Malformed uint64
	// SendErrors counts replies the kernel refused to send.
	SendErrors uint64
	// ReadErrors counts errors from the socket other than Close, such as
	// ENETDOWN when the link goes down.
	ReadErrors uint64
	// RateLimited counts requests the policy would have answered that
	// were not, because the interface's rate limit was reached. They are
	// counted in Requests too.
	RateLimited uint64
	// DryRun counts replies that were due (decided and within the rate
	// limit) but not sent because of Config.DryRun. They are not in
	// Replies.
	DryRun uint64
	// Storms counts the storms found: a sender was shed by the socket
	// filter (see the package doc). StormsEnded counts those that ended;
	// Storms-StormsEnded senders are shed now.
	Storms, StormsEnded uint64
	// Shed estimates the frames the socket filter dropped from shed
	// senders: each frame of a shed sender that the filter let through,
	// one in a sample of N chosen at random, stands for N-1 dropped. It is
	// brought up to date once a second while a sender is shed.
	Shed uint64
	// KernelQueued and KernelDrops are the kernel's counts for the socket
	// (PACKET_STATISTICS): frames that passed the filter and were queued
	// for pxresp, and frames that passed it but were dropped because the
	// socket's queue was full. Both are exact.
	KernelQueued, KernelDrops uint64
}

// Add adds o's counters to s, so that s sums several Responders' (or one
// Responder's over several lives).
func (s *Stats) Add(o Stats) {
	s.Requests += o.Requests
	s.Replies += o.Replies
	for i := range o.Ignored {
		s.Ignored[i] += o.Ignored[i]
	}
	s.Malformed += o.Malformed
	s.SendErrors += o.SendErrors
	s.ReadErrors += o.ReadErrors
	s.RateLimited += o.RateLimited
	s.DryRun += o.DryRun
	s.Storms += o.Storms
	s.StormsEnded += o.StormsEnded
	s.Shed += o.Shed
	s.KernelQueued += o.KernelQueued
	s.KernelDrops += o.KernelDrops
}

// state is what the hot path reads: swapped as a whole, read with one atomic
// load per frame.
type state struct {
	mac      [6]byte // the interface's MAC
	answer   [6]byte // the MAC replies carry
	policy   *policy.Policy
	onLink   []netip.Prefix
	override bool // answer is an override MAC
}

// newState returns the state of s, which check accepted.
func newState(s *Settings) *state {
	st := &state{policy: s.Policy, onLink: slices.Clone(s.OnLink)}
	copy(st.mac[:], s.MAC)
	var ov net.HardwareAddr
	if len(s.Override) > 0 {
		ov = s.Override
	}
	st.setOverride(ov)
	return st
}

// setOverride makes replies carry ov, or with a nil ov the interface's MAC.
func (s *state) setOverride(ov net.HardwareAddr) {
	if ov == nil {
		s.answer, s.override = s.mac, false
		return
	}
	s.answer, s.override = [6]byte(ov), true
}

// overrideMAC returns a copy of the override MAC, or nil if there is none.
func (s *state) overrideMAC() net.HardwareAddr {
	if !s.override {
		return nil
	}
	return slices.Clone(s.answer[:])
}

func (s *state) equal(o *state) bool {
	return s.mac == o.mac && s.answer == o.answer && s.override == o.override &&
		s.policy == o.policy && slices.Equal(s.onLink, o.onLink)
}

// Responder answers ARP requests on one interface. Create it with Listen
// (or newResponder in tests), run Serve, stop it with Close or by cancelling
// Serve's context.
type Responder struct {
	name  string
	index int
	t     transport
	log   *slog.Logger
	debug bool
	info  bool

	// Fixed at creation (Config).
	router  policy.Router
	dryRun  bool
	latency Observer

	st atomic.Pointer[state]
	mu sync.Mutex // serialises Apply and the filter's shedding

	// The socket filter's state, under mu: the override MACs it passes
	// and the sender it sheds. stormTick runs on tick while one is shed.
	overrides   []net.HardwareAddr
	shed        shedRule
	shedSince   time.Time
	tickSampled uint64
	tick        *time.Timer

	// shedKey is macKey of the shed sender, 0 when none is. sampleFrom
	// is the count of requests read after which the shed sender's frames
	// are the filter's sample: those before were queued before the swap.
	shedKey, sampleFrom                            atomic.Uint64
	shedSampled, shedEstimate, storms, stormsEnded atomic.Uint64
	limitRate, limitBurst                          int // from the limiter; 0: no limit

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error

	// Used only by the goroutine running Serve.
	req   arpframe.Frame
	preq  policy.Request
	reply [arpframe.Len]byte
	limit ratelimit.Limiter
	// shedLimit limits the replies to the shed sender's sample instead of
	// limit, so that its sample does not starve the interface's other
	// senders.
	shedLimit ratelimit.Limiter
	fullLimit ratelimit.Limiter // limit as it was created: full
	wall      wallClock
	detect    detector

	requests, replies, malformed, sendErrors, readErrors, rateLimited, dryRuns atomic.Uint64
	ignored                                                                    [policy.NumVerdicts]atomic.Uint64
}

// transport moves frames for one interface.
type transport interface {
	// receive calls handle for each frame and onErr for each socket error
	// (ENETDOWN, say) until the transport is closed; then it returns
	// net.ErrClosed. handle and onErr are never called concurrently. The
	// frame passed to handle is valid only during the call. rx is the
	// kernel's receive timestamp of the frame in nanoseconds since the Unix
	// epoch (CLOCK_REALTIME), or 0 if there is none: the transport reads
	// timestamps only when it was opened for them.
	receive(handle func(frame []byte, rx int64), onErr func(error)) error
	// send transmits one frame.
	send(frame []byte) error
	// bound reports whether the socket is still bound to the interface.
	bound() bool
	// setFilter replaces the socket's BPF filter, in place, with one that
	// sheds the sender of shed, if it is active, and lets through frames
	// for other hosts sent to any of the 6-byte MACs in overrides (others
	// are ignored). See filter.
	setFilter(shed shedRule, overrides ...net.HardwareAddr) error
	// kernelStats returns the kernel's counts of frames queued for the
	// socket and dropped because its queue was full, since it was opened.
	kernelStats() (queued, drops uint64)
	close() error
}

// Listen opens an AF_PACKET socket on the interface cfg describes, in the
// network namespace of the calling thread, and returns a Responder for it.
// It needs CAP_NET_RAW.
func Listen(cfg Config) (*Responder, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	t, err := listenPacket(cfg.Index, cfg.Name, cfg.Override, cfg.Latency != nil)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (ifindex %d): %w", cfg.Name, cfg.Index, err)
	}
	return newResponder(t, cfg), nil
}

func checkConfig(cfg *Config) error {
	if cfg.Index <= 0 {
		return fmt.Errorf("responder for %q: invalid ifindex %d", cfg.Name, cfg.Index)
	}
	if err := cfg.Settings.Check(); err != nil {
		return fmt.Errorf("responder for %q: %w", cfg.Name, err)
	}
	return nil
}

func newResponder(t transport, cfg Config) *Responder {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("iface", cfg.Name, "ifindex", cfg.Index)
	r := &Responder{
		name:      cfg.Name,
		index:     cfg.Index,
		t:         t,
		log:       log,
		debug:     log.Enabled(context.Background(), slog.LevelDebug),
		info:      log.Enabled(context.Background(), slog.LevelInfo),
		limit:     newLimiter(&cfg, nil),
		shedLimit: newLimiter(&cfg, nil),
		fullLimit: newLimiter(&cfg, nil),

		router:  cfg.Router,
		dryRun:  cfg.DryRun,
		latency: cfg.Latency,
	}
	r.preq.Ifindex = cfg.Index
	if interval, burst := r.limit.Limit(); interval > 0 {
		r.limitRate, r.limitBurst = int(time.Second/interval), burst
	}
	st := newState(&cfg.Settings)
	if ov := st.overrideMAC(); ov != nil {
		r.overrides = []net.HardwareAddr{ov}
	}
	r.st.Store(st)
	return r
}

// Apply makes s the Responder's settings, in place: the socket stays open.
// It works out what changed and does only that; settings equal to the
// current ones change nothing. The next request is decided and answered
// under s. Settings that are not valid (no policy, a MAC that is not 6
// bytes, an override that policy.CheckMAC refuses) are an error, and change
// nothing. Apply is safe to call from any goroutine, concurrently with
// Serve.
//
// When the override MAC changes (set, changed or cleared), the socket's BPF
// filter, which lets through frames for other hosts only when they are
// sent to the override MAC, is replaced in place: first by one that passes
// both the old and the new override, then, once the next reply carries the
// new MAC, by one that passes only the new one. No request to the new MAC
// (which a pod learns only from a reply carrying it) or broadcast is lost
// on the way; a request still sent to the old override MAC is not answered
// (counted not-for-us if it was already queued, dropped by the filter
// after that). If the first filter cannot be attached, the rest of s is
// applied, the old override stays, and Apply returns the error; if the
// second cannot, the new override is in use, the filter still passes the
// old one too, and Apply returns the error.
func (r *Responder) Apply(s Settings) error {
	if err := s.Check(); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	next := newState(&s)
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.st.Load()
	if next.equal(cur) {
		return nil
	}
	oldOv, newOv := cur.overrideMAC(), next.overrideMAC()
	if bytes.Equal(oldOv, newOv) {
		r.st.Store(next)
		return nil
	}
	both := []net.HardwareAddr{oldOv, newOv}
	if err := r.t.setFilter(r.shed, both...); err != nil {
		next.setOverride(oldOv)
		r.st.Store(next)
		return fmt.Errorf("%s: replace the BPF filter: %w", r.name, err)
	}
	r.overrides = both
	r.st.Store(next)
	if err := r.t.setFilter(r.shed, newOv); err != nil {
		return fmt.Errorf("%s: replace the BPF filter: %w", r.name, err)
	}
	r.overrides = []net.HardwareAddr{newOv}
	return nil
}

// MAC returns the hardware address replies currently carry.
func (r *Responder) MAC() net.HardwareAddr {
	a := r.st.Load().answer
	return net.HardwareAddr(a[:])
}

// Bound reports whether the socket still receives from its interface. It
// does not once the interface has left the network namespace, even if it
// came back under the same index: the listener must then be opened again.
func (r *Responder) Bound() bool { return r.t.bound() }

// Stats returns a snapshot of the counters. It is safe to call at any time.
func (r *Responder) Stats() Stats {
	s := Stats{
		Requests:    r.requests.Load(),
		Replies:     r.replies.Load(),
		Malformed:   r.malformed.Load(),
		SendErrors:  r.sendErrors.Load(),
		ReadErrors:  r.readErrors.Load(),
		RateLimited: r.rateLimited.Load(),
		DryRun:      r.dryRuns.Load(),
		Storms:      r.storms.Load(),
		StormsEnded: r.stormsEnded.Load(),
		Shed:        r.shedEstimate.Load(),
	}
	s.KernelQueued, s.KernelDrops = r.t.kernelStats()
	for i := range r.ignored {
		s.Ignored[i] = r.ignored[i].Load()
	}
	return s
}

// Serve reads and answers requests until Close is called or ctx is done,
// and then returns nil. Socket errors (ENETDOWN while the link is down) are
// counted and do not end it. Serve must not be called more than once.
func (r *Responder) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = r.Close() })
	defer stop()
	err := r.t.receive(r.handleAt, r.readError)
	if r.closed.Load() || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", r.name, err)
}

// readError counts a socket error. It runs where handle runs.
func (r *Responder) readError(err error) {
	r.readErrors.Add(1)
	if errors.Is(err, syscall.ENETDOWN) {
		// The link went down; the socket serves again once it is up.
		r.log.Debug("link down", "err", err)
		return
	}
	r.log.Warn("socket read error", "err", err)
}

// handle processes one frame that has no receive timestamp.
func (r *Responder) handle(frame []byte) { r.handleAt(frame, 0) }

// handleAt processes one frame received at rx (see transport.receive). It
// runs on the Serve goroutine only.
func (r *Responder) handleAt(frame []byte, rx int64) {
	req := &r.req
	if err := arpframe.Decode(frame, req); err != nil {
		r.malformed.Add(1)
		if r.debug {
			r.log.Debug("malformed frame", "len", len(frame), "err", err)
		}
		return
	}
	if req.Op != arpframe.OpRequest {
		// The BPF filter drops replies; one may slip in only while the
		// filter is being attached.
		return
	}
	r.requests.Add(1)
	limit := &r.limit
	if r.sampled(req.EthSrc) {
		limit = &r.shedLimit
	}
	s := r.st.Load()
	p := &r.preq
	p.SenderMAC = req.SHA
	p.SenderIP = req.SPA
	p.TargetIP = req.TPA
	switch req.EthDst {
	case arpframe.Broadcast:
		p.Delivery = policy.Broadcast
	case s.answer, s.mac:
		p.Delivery = policy.Unicast
	default:
		p.Delivery = policy.OtherHost
	}
	p.TargetOnLink = onLink(s.onLink, req.TPA)
	v := s.policy.Decide(p, r.router)
	if v != policy.Reply {
		r.ignored[v].Add(1)
		if r.debug {
			r.log.Debug("ignored", "verdict", v, "sender", req.SPA, "target", req.TPA, "delivery", p.Delivery)
		}
		return
	}
	// Replies are limited, not reads: a request that would not be
	// answered costs no token.
	if !limit.Allow() {
		r.rateLimited.Add(1)
		r.overLimit(req.EthSrc)
		if r.debug {
			r.log.Debug("rate limited", "sender", req.SPA, "target", req.TPA, "delivery", p.Delivery)
		}
		return
	}
	if r.dryRun {
		r.dryRuns.Add(1)
		if r.info {
			r.log.Info("dry run: would reply", "sender", req.SPA, "target", req.TPA, "delivery", p.Delivery,
				"mac", net.HardwareAddr(s.answer[:]).String())
		}
		return
	}
	if err := r.t.send(arpframe.EncodeReply(r.reply[:], req, s.answer)); err != nil {
		r.sendErrors.Add(1)
		if r.debug {
			r.log.Debug("send failed", "err", err)
		}
		return
	}
	if r.latency != nil && rx != 0 {
		// Both ends on CLOCK_REALTIME; a step of the clock in between
		// can make it negative, and then it is not observed.
		if d := r.wall.now() - rx; d >= 0 {
			r.latency.Observe(float64(d) / 1e9)
		}
	}
	r.replies.Add(1)
	if r.debug {
		r.log.Debug("replied", "sender", req.SPA, "target", req.TPA, "delivery", p.Delivery)
	}
}

func onLink(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Close stops Serve and closes the socket. It is safe to call more than
// once and from any goroutine; later calls return the first call's result.
func (r *Responder) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed.Store(true)
		r.endShedding()
		r.mu.Unlock()
		r.closeErr = r.t.close()
	})
	return r.closeErr
}
