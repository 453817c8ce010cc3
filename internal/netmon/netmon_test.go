package netmon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/test/leakcheck"
)

// Unit tests: the delivery and resync logic over a fake source. The
// privileged tests in netmon_linux_test.go run it against the kernel.

const timeout = 5 * time.Second

// fakeConn is one fake subscription: read returns what the test feeds it.
type fakeConn struct {
	feed   chan []byte
	fail   chan error
	done   chan struct{}
	once   sync.Once
	closed atomic.Bool
}

func newFakeConn() *fakeConn {
	return &fakeConn{feed: make(chan []byte), fail: make(chan error), done: make(chan struct{})}
}

func (c *fakeConn) read(buf []byte) (int, error) {
	select {
	case b := <-c.feed:
		return copy(buf, b), nil
	case err := <-c.fail:
		return 0, err
	case <-c.done:
		return 0, os.ErrClosed
	}
}

func (c *fakeConn) close() error {
	c.once.Do(func() { c.closed.Store(true); close(c.done) })
	return nil
}

// send hands a batch to the reader.
func (c *fakeConn) send(t *testing.T, b ...[]byte) {
	t.Helper()
	select {
	case c.feed <- slices.Concat(b...):
	case <-time.After(timeout):
		t.Fatal("fake conn: nobody reads")
	}
}

// breaks makes the next read fail with err.
func (c *fakeConn) breaks(t *testing.T, err error) {
	t.Helper()
	select {
	case c.fail <- err:
	case <-time.After(timeout):
		t.Fatal("fake conn: nobody reads")
	}
}

// fakeSource is a source whose listings the test sets and whose
// subscriptions it drives.
type fakeSource struct {
	mu          sync.Mutex
	links       []netlink.Link
	routes      []Route
	linkErrs    []error // returned by the next listLinks calls, one each
	routeErrs   []error // same for listRoutes
	subErrs     []error // returned by the next subscribe calls, one each
	linkLists   int
	routeLists  int
	subscribes  int
	duringList  func()      // called by listLinks, if set
	onSubscribe func(n int) // called by the nth subscribe, if set

	conns  chan *fakeConn
	closed atomic.Bool
}

func newFakeSource(links []netlink.Link, routes []Route) *fakeSource {
	return &fakeSource{links: links, routes: routes, conns: make(chan *fakeConn, 16)}
}

func (f *fakeSource) subscribe() (conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subscribes++
	if f.onSubscribe != nil {
		f.onSubscribe(f.subscribes)
	}
	if len(f.subErrs) > 0 {
		err := f.subErrs[0]
		f.subErrs = f.subErrs[1:]
		return nil, err
	}
	c := newFakeConn()
	f.conns <- c
	return c, nil
}

func (f *fakeSource) listLinks() ([]netlink.Link, error) {
	f.mu.Lock()
	f.linkLists++
	hook := f.duringList
	var err error
	if len(f.linkErrs) > 0 {
		err, f.linkErrs = f.linkErrs[0], f.linkErrs[1:]
	}
	links := slices.Clone(f.links)
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err != nil {
		return nil, err
	}
	return links, nil
}

func (f *fakeSource) listRoutes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routeLists++
	if len(f.routeErrs) > 0 {
		err := f.routeErrs[0]
		f.routeErrs = f.routeErrs[1:]
		return nil, err
	}
	return slices.Clone(f.routes), nil
}

func (f *fakeSource) close() { f.closed.Store(true) }

func (f *fakeSource) set(links []netlink.Link, routes []Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links, f.routes = links, routes
}

func (f *fakeSource) counts() (subscribes, linkLists, routeLists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subscribes, f.linkLists, f.routeLists
}

// nextConn returns the next subscription Run makes.
func (f *fakeSource) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(timeout):
		t.Fatal("no subscription")
	}
	return nil
}

// journal records the calls of several consumers, in order.
type journal struct {
	mu     sync.Mutex
	calls  []string
	notify chan struct{}
}

func newJournal() *journal { return &journal{notify: make(chan struct{}, 1)} }

func (j *journal) add(s string) {
	j.mu.Lock()
	j.calls = append(j.calls, s)
	j.mu.Unlock()
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

// expect waits for len(want) more calls and compares them with want.
func (j *journal) expect(t *testing.T, what string, want ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		j.mu.Lock()
		n := len(j.calls)
		j.mu.Unlock()
		if n >= len(want) {
			break
		}
		select {
		case <-j.notify:
		case <-deadline:
			j.mu.Lock()
			defer j.mu.Unlock()
			t.Fatalf("%s: timed out with calls %q, want %q", what, j.calls, want)
		}
	}
	j.mu.Lock()
	got := j.calls[:len(want)]
	j.calls = j.calls[len(want):]
	j.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// none checks that no call is recorded within a short while.
func (j *journal) none(t *testing.T, what string) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.calls) > 0 {
		t.Errorf("%s: unexpected calls %q", what, j.calls)
	}
}

// consumer writes its calls to a journal under its name.
type consumer struct {
	name string
	j    *journal
}

func (c consumer) Resync(l *Listing) {
	var names []string
	for _, x := range l.Links {
		names = append(names, x.Attrs().Name)
	}
	for _, r := range l.Routes {
		names = append(names, r.Dst.String())
	}
	c.j.add(fmt.Sprintf("%s resync %s", c.name, strings.Join(names, ",")))
}

func (c consumer) Change(m *Message) {
	s := c.name + " " + MsgType(m.Type)
	if m.Link != nil {
		s += " " + m.Link.Attrs().Name
	}
	if m.Route != nil {
		s += " " + m.Route.Dst.String()
	}
	c.j.add(s)
}

func (c consumer) Lost(reason string) { c.j.add(c.name + " lost: " + reason) }

func veth(index int, name string) netlink.Link {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: index, Name: name}}
}

// harness runs a Monitor over a fakeSource.
type harness struct {
	m      *Monitor
	src    *fakeSource
	logs   *syncBuffer
	cancel context.CancelFunc
	ran    chan struct{}
	err    error
}

func newTestMonitor(t *testing.T, src *fakeSource, logs io.Writer) *Monitor {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	m, err := New(Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.open = func() (source, error) { return src, nil }
	m.backoff = time.Millisecond
	return m
}

// start runs a Monitor over src with the given consumers registered.
func start(t *testing.T, src *fakeSource, cs ...Consumer) *harness {
	t.Helper()
	return startWith(t, src, time.Millisecond, cs...)
}

// startWith is start with the first retry delay backoff.
func startWith(t *testing.T, src *fakeSource, backoff time.Duration, cs ...Consumer) *harness {
	t.Helper()
	logs := &syncBuffer{}
	h := &harness{m: newTestMonitor(t, src, logs), src: src, logs: logs, ran: make(chan struct{})}
	h.m.backoff = backoff
	for _, c := range cs {
		h.m.Register(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.ran)
		h.err = h.m.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.ran:
		case <-time.After(timeout):
		}
	})
	return h
}

// stop cancels Run and checks that it returns nil promptly and closed the
// source.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.ran:
		if h.err != nil {
			t.Errorf("Run returned %v after cancel, want nil", h.err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of cancel")
	}
	if !h.src.closed.Load() {
		t.Error("source not closed")
	}
}

func TestRunDeliversInOrder(t *testing.T) {
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, []Route{{Family: unix.AF_INET, Dst: mustPrefix("10.244.0.5/32"), OIF: 5}})
	h := start(t, src, consumer{"A", j}, consumer{"B", j})
	c := src.nextConn(t)
	j.expect(t, "initial", "A resync caliA,10.244.0.5/32", "B resync caliA,10.244.0.5/32")

	// One batch of several messages, then another: each message to every
	// consumer, in order.
	c.send(t, linkMsg(unix.RTM_NEWLINK, rawLink{index: 6, name: "caliB"}),
		routeMsg(unix.RTM_NEWROUTE, 0, rawRoute{dst: "10.244.0.6/32", oif: 6}))
	c.send(t, otherMsg(unix.RTM_NEWADDR, unix.SizeofIfAddrmsg))
	j.expect(t, "changes",
		"A newlink caliB", "B newlink caliB",
		"A newroute 10.244.0.6/32", "B newroute 10.244.0.6/32",
		"A newaddr", "B newaddr")
	h.stop(t)
	if n := h.m.Resyncs(); n != 0 {
		t.Errorf("Resyncs = %d, want 0", n)
	}
	if !c.closed.Load() {
		t.Error("subscription not closed")
	}
}

// Notifications of changes made during the listing are delivered after
// it: the subscription is open before the listing starts.
func TestNotificationsDuringListingFollowIt(t *testing.T) {
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
	fed := make(chan struct{})
	src.duringList = func() {
		src.mu.Lock()
		src.duringList = nil
		src.mu.Unlock()
		c := <-src.conns
		go func() {
			c.feed <- linkMsg(unix.RTM_NEWLINK, rawLink{index: 6, name: "caliB"})
			close(fed)
		}()
		src.conns <- c
		<-fed // the reader has it: read before the listing ends
	}
	h := start(t, src, consumer{"A", j})
	j.expect(t, "listing, then the change made during it", "A resync caliA", "A newlink caliB")
	h.stop(t)
}

func TestRunResyncsAfterLoss(t *testing.T) {
	cases := []struct {
		name   string
		breaks func(t *testing.T, c *fakeConn)
		reason string
	}{
		{"ENOBUFS", func(t *testing.T, c *fakeConn) {
			c.breaks(t, os.NewSyscallError("read", unix.ENOBUFS))
		}, "receive: read: no buffer space available"},
		{"other receive error", func(t *testing.T, c *fakeConn) {
			c.breaks(t, errors.New("fake: socket gone"))
		}, "receive: fake: socket gone"},
		{"undecodable message", func(t *testing.T, c *fakeConn) {
			c.send(t, nlmsg(unix.RTM_NEWROUTE, 0, make([]byte, 4)))
		}, "decode newroute: 4 bytes, shorter than rtmsg"},
		{"error message", func(t *testing.T, c *fakeConn) {
			c.send(t, nlmsg(unix.NLMSG_ERROR, 0, make([]byte, 20)))
		}, "netlink error message on the subscription socket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := newJournal()
			src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
			h := start(t, src, consumer{"A", j}, consumer{"B", j})
			c := src.nextConn(t)
			j.expect(t, "initial", "A resync caliA", "B resync caliA")

			src.set([]netlink.Link{veth(5, "caliA"), veth(6, "caliB")}, nil)
			tc.breaks(t, c)
			c2 := src.nextConn(t)
			j.expect(t, "resync",
				"A lost: "+tc.reason, "B lost: "+tc.reason,
				"A resync caliA,caliB", "B resync caliA,caliB")
			if !c.closed.Load() {
				t.Error("the broken subscription was not closed")
			}
			if n := h.m.Resyncs(); n != 1 {
				t.Errorf("Resyncs = %d, want 1", n)
			}
			// The new subscription works.
			c2.send(t, linkMsg(unix.RTM_DELLINK, rawLink{index: 6, name: "caliB"}))
			j.expect(t, "after the resync", "A dellink caliB", "B dellink caliB")
			h.stop(t)

			logs := h.logs.String()
			if n := strings.Count(logs, "level=WARN"); n != 1 || !strings.Contains(logs, "resyncing") ||
				!strings.Contains(logs, tc.reason) || !strings.Contains(logs, "resyncs=1") {
				t.Errorf("want the resync logged once at warn with its reason %q:\n%s", tc.reason, logs)
			}
		})
	}
}

// When subscribing or listing again fails, Run retries with a backoff; a
// consumer registering meanwhile is told at once that notifications are
// lost. The retries are not resyncs.
func TestRunRetriesFailedResubscription(t *testing.T) {
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
	h := start(t, src, consumer{"A", j})
	c := src.nextConn(t)
	j.expect(t, "initial", "A resync caliA")

	// After the loss: three failed subscribes (B registers during the
	// second), then a subscription whose listing fails, then one that
	// works.
	src.mu.Lock()
	src.subErrs = []error{unix.EMFILE, unix.EMFILE, unix.EMFILE}
	src.routeErrs = []error{unix.EBUSY}
	src.onSubscribe = func(n int) {
		if n == 3 {
			h.m.Register(consumer{"B", j})
		}
	}
	src.mu.Unlock()
	c.breaks(t, errors.New("fake: gone"))
	j.expect(t, "lost, retries, resync",
		"A lost: receive: fake: gone",
		"B lost: receive: fake: gone",
		"A resync caliA", "B resync caliA")
	j.none(t, "after the resync")
	if n := h.m.Resyncs(); n != 1 {
		t.Errorf("Resyncs = %d, want 1", n)
	}
	if subs, _, _ := src.counts(); subs != 6 {
		t.Errorf("%d subscribes, want 6 (first, 3 failures, one whose listing failed, the last)", subs)
	}
	h.stop(t)
	if logs := h.logs.String(); strings.Count(logs, "resubscribing failed") != 4 || strings.Count(logs, "resyncing") != 1 {
		t.Errorf("want 4 failed retries and 1 resync logged:\n%s", logs)
	}
}

// A consumer that registers while Run follows notifications gets a
// listing of its own, then the notifications; unregistering ends its
// calls.
func TestRegisterWhileRunning(t *testing.T) {
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
	h := start(t, src, consumer{"A", j})
	c := src.nextConn(t)
	j.expect(t, "initial", "A resync caliA")

	src.set([]netlink.Link{veth(5, "caliA"), veth(6, "caliB")}, nil)
	unregister := h.m.Register(consumer{"B", j})
	j.expect(t, "B's own listing", "B resync caliA,caliB")
	c.send(t, otherMsg(unix.RTM_NEWRULE, 12))
	j.expect(t, "both get changes", "A newrule", "B newrule")
	unregister()
	unregister() // idempotent
	c.send(t, otherMsg(unix.RTM_DELRULE, 12))
	j.expect(t, "after unregister", "A delrule")
	// Registered and unregistered before Run sees it: never called.
	h.m.Register(consumer{"C", j})()
	c.send(t, otherMsg(unix.RTM_NEWNEXTHOP, 8))
	j.expect(t, "C never called", "A newnexthop")
	j.none(t, "at the end")
	h.stop(t)
	if _, nl, _ := src.counts(); nl != 2 {
		t.Errorf("%d link listings, want 2 (start, B)", nl)
	}
}

func TestRunRetriesInterruptedDump(t *testing.T) {
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, []Route{{Dst: mustPrefix("10.244.0.6/32")}})
	src.linkErrs = []error{netlink.ErrDumpInterrupted, netlink.ErrDumpInterrupted}
	src.routeErrs = []error{netlink.ErrDumpInterrupted}
	h := start(t, src, consumer{"A", j})
	j.expect(t, "initial", "A resync caliA,10.244.0.6/32")
	if _, nl, nr := src.counts(); nl != 3 || nr != 2 {
		t.Errorf("listed links %d times and routes %d times, want 3 and 2", nl, nr)
	}
	h.stop(t)
}

// runErr runs a Monitor over src, expecting Run to fail by itself.
func runErr(t *testing.T, src *fakeSource) error {
	t.Helper()
	m := newTestMonitor(t, src, nil)
	j := newJournal()
	m.Register(consumer{"A", j})
	errc := make(chan error, 1)
	go func() { errc <- m.Run(context.Background()) }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(timeout):
		t.Fatal("Run did not fail")
	}
	if !src.closed.Load() {
		t.Error("source not closed")
	}
	j.none(t, "a failed Run")
	return err
}

func TestRunErrors(t *testing.T) {
	links := []netlink.Link{veth(5, "caliA")}
	t.Run("persistent dump interruption", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.linkErrs = slices.Repeat([]error{netlink.ErrDumpInterrupted}, dumpAttempts)
		err := runErr(t, src)
		if !errors.Is(err, netlink.ErrDumpInterrupted) || !strings.Contains(err.Error(), "list links") {
			t.Errorf("Run = %v, want a list links error wrapping ErrDumpInterrupted", err)
		}
		if _, n, _ := src.counts(); n != dumpAttempts {
			t.Errorf("listed links %d times, want %d", n, dumpAttempts)
		}
	})
	t.Run("list error not retried", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.routeErrs = []error{unix.EPERM}
		err := runErr(t, src)
		if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "list routes") {
			t.Errorf("Run = %v, want a list routes error wrapping EPERM", err)
		}
		if _, _, n := src.counts(); n != 1 {
			t.Errorf("listed routes %d times, want 1", n)
		}
	})
	t.Run("subscription", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.subErrs = []error{unix.EPERM}
		if err := runErr(t, src); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "subscribe to netlink notifications") {
			t.Errorf("Run = %v, want a subscription error wrapping EPERM", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		m := newTestMonitor(t, nil, nil)
		m.open = func() (source, error) { return nil, unix.EMFILE }
		if err := m.Run(context.Background()); !errors.Is(err, unix.EMFILE) {
			t.Errorf("Run = %v, want EMFILE", err)
		}
	})
}

func TestRunCancelLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	j := newJournal()
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
	h := start(t, src, consumer{"A", j})
	c := src.nextConn(t)
	j.expect(t, "initial", "A resync caliA")
	// Leave the reader blocked handing over a batch while Run stops.
	c.send(t, otherMsg(unix.RTM_NEWADDR, unix.SizeofIfAddrmsg))
	go func() {
		select {
		case c.feed <- otherMsg(unix.RTM_DELADDR, unix.SizeofIfAddrmsg):
		case <-c.done:
		}
	}()
	h.stop(t)
	leakcheck.WaitGoroutines(t, before)
}

// Run stops promptly while it waits to retry a failed subscription.
func TestRunCancelDuringBackoff(t *testing.T) {
	j := newJournal()
	src := newFakeSource(nil, nil)
	h := startWith(t, src, time.Hour, consumer{"A", j})
	c := src.nextConn(t)
	j.expect(t, "initial", "A resync ")
	src.mu.Lock()
	src.subErrs = []error{unix.EMFILE}
	src.mu.Unlock()
	c.breaks(t, errors.New("fake: gone"))
	j.expect(t, "lost", "A lost: receive: fake: gone")
	waitFor(t, "the failed resubscription", func() bool { s, _, _ := src.counts(); return s == 2 })
	h.stop(t)
}

func TestRunCanceledBeforeStart(t *testing.T) {
	src := newFakeSource([]netlink.Link{veth(5, "caliA")}, nil)
	m := newTestMonitor(t, src, nil)
	j := newJournal()
	m.Register(consumer{"A", j})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	j.none(t, "a canceled Run")
}

func TestRunOnceAtATime(t *testing.T) {
	src := newFakeSource(nil, nil)
	h := start(t, src)
	src.nextConn(t)
	if err := h.m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v, want an already running error", err)
	}
	h.stop(t)
}

func TestNew(t *testing.T) {
	closed := netns.None()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{}, ""},
		{"negative buffer", Config{RecvBufSize: -1}, "netmon: negative receive buffer size -1"},
		{"closed namespace", Config{Namespace: &closed}, "netmon: the network namespace handle is closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("New = %v, want %q", err, tc.want)
			}
			if m != nil {
				if err := m.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := m.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
				if err := m.InNamespace(func() error { return nil }); err == nil {
					t.Error("InNamespace after Close succeeded")
				}
			}
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// waitFor polls cond every millisecond, at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
