package netmon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Consumer receives what a Monitor reads. Its methods are called on the
// goroutine that runs Monitor.Run, one at a time; they must return quickly,
// since notifications wait meanwhile. The Listing and Message they get are
// shared with the other consumers: they must not modify them.
type Consumer interface {
	// Resync hands over a full listing of the namespace, taken after the
	// Monitor subscribed: at start, after every Lost, and when the
	// consumer registers while Run follows notifications.
	Resync(*Listing)
	// Change hands over one notification.
	Change(*Message)
	// Lost says that notifications may have been lost since the last
	// Resync; reason says why. A Resync follows once the Monitor has
	// subscribed again.
	Lost(reason string)
}

// Listing is the state of the namespace at a (re)subscription.
type Listing struct {
	// Links are every link of the namespace.
	Links []netlink.Link
	// Routes are the IPv4 routes of the main table.
	Routes []Route
}

// Message is one rtnetlink notification.
type Message struct {
	// Type is the message type (unix.RTM_NEWLINK, unix.RTM_NEWADDR, ...).
	Type uint16
	// Flags are the netlink header's flags (unix.NLM_F_REPLACE, ...).
	Flags uint16
	// Family is the address family of a link (ifi_family) or route
	// (rtm_family) message; 0 for other types.
	Family uint8
	// Link is the link of an RTM_NEWLINK or RTM_DELLINK; nil otherwise.
	Link netlink.Link
	// Route is the route of an RTM_NEWROUTE or RTM_DELROUTE; nil
	// otherwise.
	Route *Route
}

// Route is what a route message says about a route.
type Route struct {
	Family   int    // unix.AF_INET, ...
	Table    int    // RTA_TABLE, or rtm_table without it
	Type     int    // unix.RTN_*
	Flags    uint32 // rtm_flags (unix.RTM_F_CLONED, ...)
	Tos      int
	Priority int // RTA_PRIORITY, the metric
	// Dst is the destination; the default route (no RTA_DST) is 0.0.0.0/0.
	Dst netip.Prefix
	// OIF is the output ifindex (RTA_OIF); 0 for a route without one,
	// such as a multipath route.
	OIF int
}

// Config configures a Monitor.
type Config struct {
	// Namespace is the network namespace to follow. nil means the
	// namespace of the thread that calls New, normally the process's. The
	// Monitor keeps its own duplicate of the handle until Close: the
	// caller may close its own at any time.
	Namespace *netns.NsHandle
	// Logger receives a warn record per resync and debug records per
	// notification. nil means slog.Default().
	Logger *slog.Logger
	// RecvBufSize is the receive buffer size, in bytes, of the
	// subscription socket (SO_RCVBUF). 0 keeps the system default; the
	// kernel caps it at net.core.rmem_max unless RecvBufForce is set.
	RecvBufSize int
	// RecvBufForce sets the buffer with SO_RCVBUFFORCE, which ignores
	// net.core.rmem_max and needs CAP_NET_ADMIN.
	RecvBufForce bool
}

// Monitor follows the rtnetlink notifications of one network namespace
// for its consumers. Create it with New, release it with Close.
type Monitor struct {
	log     *slog.Logger
	ns      netns.NsHandle
	open    func() (source, error) // replaced by tests
	backoff time.Duration          // first retry delay; replaced by tests
	running atomic.Bool
	resyncs atomic.Uint64

	mu      sync.Mutex
	pending []*registration // registered, not yet delivered to
	wake    chan struct{}   // a registration is pending
	closed  bool

	// Owned by Run's goroutine.
	active []*registration
	lost   string // why the last subscription broke
}

// registration is one Register call.
type registration struct {
	c    Consumer
	gone atomic.Bool
}

// Delays of the retries after a failed (re)subscription or listing.
const (
	firstBackoff = 10 * time.Millisecond
	maxBackoff   = time.Second
)

// New validates cfg and returns a Monitor. It opens nothing but a
// duplicate of the namespace handle; Run subscribes.
func New(cfg Config) (*Monitor, error) {
	if cfg.RecvBufSize < 0 {
		return nil, fmt.Errorf("netmon: negative receive buffer size %d", cfg.RecvBufSize)
	}
	ns, err := ownNamespace(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("netmon: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Monitor{log: log, ns: ns, backoff: firstBackoff, wake: make(chan struct{}, 1)}
	m.open = func() (source, error) { return openNetlink(m.ns, cfg.RecvBufSize, cfg.RecvBufForce) }
	return m, nil
}

// Close releases the Monitor's namespace handle. Call it after Run has
// returned. It is safe to call more than once.
func (m *Monitor) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.ns.Close()
}

// InNamespace runs fn on a locked OS thread that is in the Monitor's
// namespace; sockets fn opens stay there. The thread switches namespace
// only if it is not there already, which needs CAP_SYS_ADMIN.
func (m *Monitor) InNamespace(fn func() error) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return errors.New("netmon: monitor closed")
	}
	return inNamespace(m.ns, fn)
}

// Register adds c to the consumers. It is safe to call at any time, also
// before Run and from a consumer's method. A consumer registered before
// Run gets Run's first listing; one registered while Run follows
// notifications gets a listing of its own, and one registered while Run
// retries a failed subscription gets Lost first. unregister removes c: no
// call to c starts after it returned (it does not wait for one in
// progress).
func (m *Monitor) Register(c Consumer) (unregister func()) {
	r := &registration{c: c}
	m.mu.Lock()
	m.pending = append(m.pending, r)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return func() {
		r.gone.Store(true)
		m.mu.Lock()
		m.pending = slices.DeleteFunc(m.pending, func(p *registration) bool { return p == r })
		m.mu.Unlock()
	}
}

// Resyncs returns how many times the Monitor lost its subscription and
// resynced its consumers. It is safe to call at any time.
func (m *Monitor) Resyncs() uint64 { return m.resyncs.Load() }

// Run subscribes, lists, delivers the listing to the consumers, then
// follows notifications until ctx is done (see the package doc). It
// returns nil once ctx is done, or an error if the first subscription or
// listing fails. It returns only after its reading goroutine has ended. A
// Monitor runs one Run at a time.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("netmon: monitor is already running")
	}
	defer m.running.Store(false)
	src, err := m.open()
	if err != nil {
		return err
	}
	defer src.close()

	listed := false
	delay := m.backoff
	for {
		reason, err := m.session(ctx, src, &listed)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !listed:
			return err
		case err != nil:
			m.log.Warn("netlink: resubscribing failed; retrying", "err", err, "delay", delay)
			if !m.wait(ctx, delay) {
				return nil
			}
			delay = min(2*delay, maxBackoff)
			continue
		}
		delay = m.backoff
		n := m.resyncs.Add(1)
		m.log.Warn("netlink subscription lost; resubscribing and resyncing", "reason", reason, "resyncs", n)
		m.lost = reason
		for _, r := range m.active {
			if !r.gone.Load() {
				r.c.Lost(reason)
			}
		}
	}
}

// session subscribes, lists, delivers the listing (setting *listed) and
// follows the subscription until it breaks (returning why) or ctx is done
// (returning ""). It returns an error if subscribing or listing fails.
func (m *Monitor) session(ctx context.Context, src source, listed *bool) (string, error) {
	c, err := src.subscribe()
	if err != nil {
		return "", fmt.Errorf("subscribe to netlink notifications: %w", err)
	}
	rd := startReader(c)
	defer rd.stop()
	m.activate()
	l, err := list(ctx, m.log, src)
	if err != nil {
		return "", err
	}
	if ctx.Err() != nil {
		return "", nil
	}
	m.deliver(m.active, func(c Consumer) { c.Resync(l) })
	*listed = true
	for {
		select {
		case <-ctx.Done():
			return "", nil
		case <-m.wake:
			regs := m.activate()
			if len(regs) == 0 {
				continue
			}
			l, err := list(ctx, m.log, src)
			if ctx.Err() != nil {
				return "", nil
			}
			if err != nil {
				return fmt.Sprintf("listing for a new consumer: %v", err), nil
			}
			m.deliver(regs, func(c Consumer) { c.Resync(l) })
		case b := <-rd.batches:
			if b.err != nil {
				return fmt.Sprintf("receive: %v", b.err), nil
			}
			if reason := m.batch(b.data); reason != "" {
				return reason, nil
			}
		}
	}
}

// batch decodes a batch of messages and delivers each; it returns why the
// batch cannot be trusted, or "".
func (m *Monitor) batch(data []byte) string {
	msgs, err := parse(data)
	if err != nil {
		return err.Error()
	}
	for i := range msgs {
		msg := &msgs[i]
		if m.log.Enabled(context.Background(), slog.LevelDebug) {
			m.log.Debug("netlink notification", debugAttrs(msg)...)
		}
		m.deliver(m.active, func(c Consumer) { c.Change(msg) })
	}
	return ""
}

// wait sleeps d, or until ctx is done (then it returns false). Consumers
// that register meanwhile are told that notifications are lost.
func (m *Monitor) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-m.wake:
			lost := m.lost
			m.deliver(m.activate(), func(c Consumer) { c.Lost(lost) })
		}
	}
}

// activate moves the pending registrations to the active ones, forgets
// unregistered ones, and returns those it moved.
func (m *Monitor) activate() []*registration {
	m.mu.Lock()
	regs := m.pending
	m.pending = nil
	m.mu.Unlock()
	m.active = slices.DeleteFunc(m.active, func(r *registration) bool { return r.gone.Load() })
	m.active = append(m.active, regs...)
	return regs
}

// deliver calls fn for each registration still registered.
func (m *Monitor) deliver(regs []*registration, fn func(Consumer)) {
	for _, r := range regs {
		if !r.gone.Load() {
			fn(r.c)
		}
	}
}

// list lists links and routes, retrying interrupted dumps.
func list(ctx context.Context, log *slog.Logger, src source) (*Listing, error) {
	links, err := retryDump(ctx, log, "links", src.listLinks)
	if err != nil {
		return nil, err
	}
	routes, err := retryDump(ctx, log, "routes", src.listRoutes)
	if err != nil {
		return nil, err
	}
	return &Listing{Links: links, Routes: routes}, nil
}

// Dumps that the kernel reports as interrupted (the table changed during
// the dump) are retried dumpAttempts times in all, waiting dumpBackoff,
// then twice as long each time.
const (
	dumpAttempts = 5
	dumpBackoff  = 10 * time.Millisecond
)

// retryDump calls list until it returns no netlink.ErrDumpInterrupted, at
// most dumpAttempts times. It returns ctx.Err() if ctx is done while it
// waits.
func retryDump[T any](ctx context.Context, log *slog.Logger, what string, list func() ([]T, error)) ([]T, error) {
	delay := dumpBackoff
	for attempt := 1; ; attempt++ {
		v, err := list()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == dumpAttempts {
			return nil, fmt.Errorf("list %s (attempt %d): %w", what, attempt, err)
		}
		log.Debug("netlink dump interrupted; retrying", "list", what, "attempt", attempt, "delay", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// source is the OS part of a Monitor; tests replace it with a fake.
// subscribe opens a socket subscribed to the groups; listLinks and
// listRoutes may return netlink.ErrDumpInterrupted.
type source interface {
	subscribe() (conn, error)
	listLinks() ([]netlink.Link, error)
	listRoutes() ([]Route, error)
	close()
}

// conn is one subscription. read blocks until a batch of notifications
// arrives (n > 0), the subscription fails, or close is called (then it
// returns an error).
type conn interface {
	read(buf []byte) (int, error)
	close() error
}

// batch is what the reader hands to Run: a copy of the bytes read, or the
// error that ended the subscription.
type batch struct {
	data []byte
	err  error
}

// reader reads a conn on a goroutine of its own.
type reader struct {
	c       conn
	batches chan batch
	done    chan struct{}
	exited  chan struct{}
}

// readBufSize is the largest batch read at once; the kernel sends each
// notification in a datagram of its own, far smaller.
const readBufSize = 64 << 10

func startReader(c conn) *reader {
	r := &reader{c: c, batches: make(chan batch), done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		buf := make([]byte, readBufSize)
		for {
			n, err := c.read(buf)
			b := batch{err: err}
			if err == nil {
				b.data = slices.Clone(buf[:n])
			}
			select {
			case r.batches <- b:
			case <-r.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// stop closes the conn and waits for the goroutine to end.
func (r *reader) stop() {
	close(r.done)
	_ = r.c.close()
	<-r.exited
}
