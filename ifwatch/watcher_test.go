package ifwatch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
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

const timeout = 5 * time.Second

// fakeSub is one fake subscription. Like netlink's, its goroutine sends
// each update with a blocking send and closes the channel after done is
// closed or after a receive error, reporting the error first.
type fakeSub[T any] struct {
	feed chan T
	fail chan error
	done <-chan struct{}
}

func startSub[T any](wg *sync.WaitGroup, ch chan<- T, done <-chan struct{}, onErr func(error)) *fakeSub[T] {
	s := &fakeSub[T]{feed: make(chan T), fail: make(chan error), done: done}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		for {
			select {
			case <-done:
				onErr(errors.New("Receive failed: use of closed file"))
				return
			case err := <-s.fail:
				onErr(err)
				return
			case u := <-s.feed:
				ch <- u
			}
		}
	}()
	return s
}

// send hands u to the subscription's goroutine.
func (s *fakeSub[T]) send(t *testing.T, u T) {
	t.Helper()
	if !s.trySend(u) {
		t.Fatal("fake subscription: send failed")
	}
}

// trySend hands u to the subscription's goroutine unless the subscription
// is stopped first. Unlike send, it may be called from any goroutine.
func (s *fakeSub[T]) trySend(u T) bool {
	select {
	case s.feed <- u:
		return true
	case <-s.done:
	case <-time.After(timeout):
	}
	return false
}

// overflow makes the subscription fail like a receive error does.
func (s *fakeSub[T]) overflow(t *testing.T) {
	t.Helper()
	select {
	case s.fail <- errors.New("Receive failed: no buffer space available"):
	case <-time.After(timeout):
		t.Fatal("fake subscription: fail timed out")
	}
}

// fakeSource is a source whose listings the test sets and whose
// subscriptions it drives.
type fakeSource struct {
	mu         sync.Mutex
	links      []netlink.Link
	routes     []netlink.Route
	linkErrs   []error // returned by the next listLinks calls, one each, with partial results
	routeErrs  []error // same for listRoutes
	linkSubErr error   // returned by subscribeLinks
	routeSubEr error   // returned by subscribeRoutes
	linkLists  int
	routeLists int

	linkSubs  chan *fakeSub[netlink.LinkUpdate]
	routeSubs chan *fakeSub[netlink.RouteUpdate]
	wg        sync.WaitGroup // subscription goroutines
	closed    atomic.Bool
}

func newFakeSource(links []netlink.Link, routes []netlink.Route) *fakeSource {
	return &fakeSource{
		links:     links,
		routes:    routes,
		linkSubs:  make(chan *fakeSub[netlink.LinkUpdate], 16),
		routeSubs: make(chan *fakeSub[netlink.RouteUpdate], 16),
	}
}

func (f *fakeSource) subscribeLinks(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	if f.linkSubErr != nil {
		return f.linkSubErr
	}
	f.linkSubs <- startSub(&f.wg, ch, done, onErr)
	return nil
}

func (f *fakeSource) subscribeRoutes(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error {
	if f.routeSubEr != nil {
		return f.routeSubEr
	}
	f.routeSubs <- startSub(&f.wg, ch, done, onErr)
	return nil
}

func (f *fakeSource) listLinks() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.linkLists++
	if len(f.linkErrs) > 0 {
		err := f.linkErrs[0]
		f.linkErrs = f.linkErrs[1:]
		return f.links[:len(f.links)/2], err
	}
	return slices.Clone(f.links), nil
}

func (f *fakeSource) listRoutes() ([]netlink.Route, error) {
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

func (f *fakeSource) set(links []netlink.Link, routes []netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links, f.routes = links, routes
}

func (f *fakeSource) lists() (links, routes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.linkLists, f.routeLists
}

// nextSubs returns the next link and route subscriptions Run makes.
func (f *fakeSource) nextSubs(t *testing.T) (*fakeSub[netlink.LinkUpdate], *fakeSub[netlink.RouteUpdate]) {
	t.Helper()
	var ls *fakeSub[netlink.LinkUpdate]
	select {
	case ls = <-f.linkSubs:
	case <-time.After(timeout):
		t.Fatal("no link subscription")
	}
	select {
	case rs := <-f.routeSubs:
		return ls, rs
	case <-time.After(timeout):
		t.Fatal("no route subscription")
	}
	return nil, nil
}

// waitSubsGone waits until every fake subscription goroutine has exited.
func (f *fakeSource) waitSubsGone(t *testing.T) {
	t.Helper()
	ok := make(chan struct{})
	go func() { f.wg.Wait(); close(ok) }()
	select {
	case <-ok:
	case <-time.After(timeout):
		t.Fatal("subscription goroutines still running")
	}
}

// harness runs a Watcher over a fakeSource.
type harness struct {
	t      *testing.T
	w      *Watcher
	src    *fakeSource
	events chan Event
	cancel context.CancelFunc
	ran    chan struct{} // closed when Run has returned err
	err    error
}

func start(t *testing.T, src *fakeSource, log *slog.Logger) *harness {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w, err := New(Config{Globs: []string{"cali*"}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	w.open = func() (source, error) { return src, nil }
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, w: w, src: src, events: make(chan Event, 256), cancel: cancel, ran: make(chan struct{})}
	go func() {
		defer close(h.ran)
		h.err = w.Run(ctx, func(ev Event) { h.events <- ev })
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

// expect reads len(want) events and compares them with want.
func (h *harness) expect(what string, want ...Event) {
	h.t.Helper()
	var got []Event
	deadline := time.After(timeout)
	for len(got) < len(want) {
		select {
		case ev := <-h.events:
			got = append(got, ev)
		case <-deadline:
			h.t.Fatalf("%s: timed out after %s, want %s", what, eventsString(got), eventsString(want))
		}
	}
	checkEvents(h.t, what, got, want)
}

// stop cancels Run, checks that it returns nil promptly, that it stopped
// every subscription and closed the source, and that no event is left.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case <-h.ran:
		if h.err != nil {
			h.t.Errorf("Run returned %v after cancel, want nil", h.err)
		}
	case <-time.After(time.Second):
		h.t.Fatal("Run did not return within 1s of cancel")
	}
	h.src.waitSubsGone(h.t)
	if !h.src.closed.Load() {
		h.t.Error("source not closed")
	}
	if n := len(h.events); n > 0 {
		h.t.Errorf("%d unexpected events left, first %s", n, fmtEvent(<-h.events))
	}
}

func TestRunFollowsEvents(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "caliB"}
	lo := link{index: 1, name: "lo", raw: unix.IFF_LOOPBACK, encap: "loopback"}
	eth := link{index: 2, name: "eth0"}
	src := newFakeSource(
		[]netlink.Link{lo.build(), eth.build(), a.build()},
		[]netlink.Route{route(5, "10.244.0.5/32"), route(2, "0.0.0.0/0")},
	)
	h := start(t, src, nil)
	ls, rs := src.nextSubs(t)
	h.expect("initial", attach(withOnLink(a.want(), "10.244.0.5/32")))

	ls.send(t, newLink(eth))
	ls.send(t, newLink(b))
	h.expect("new link", attach(b.want()))
	rs.send(t, newRoute(route(6, "10.244.0.6/32")))
	h.expect("route", update(withOnLink(b.want(), "10.244.0.6/32")))
	ls.send(t, delLink(a))
	h.expect("delete", detach(withOnLink(a.want(), "10.244.0.5/32")))
	h.stop()
	if n := h.w.Resyncs(); n != 0 {
		t.Errorf("Resyncs = %d, want 0", n)
	}
}

func TestRunResyncsAfterOverflow(t *testing.T) {
	for _, which := range []string{"link", "route"} {
		t.Run(which, func(t *testing.T) {
			a := link{index: 5, name: "caliA"}
			b := link{index: 6, name: "caliB"}
			c := link{index: 7, name: "caliC"}
			d := link{index: 8, name: "caliD"}
			aMAC := a
			aMAC.mac = "02:aa:bb:cc:dd:ee"
			src := newFakeSource([]netlink.Link{a.build(), b.build(), c.build()}, nil)
			var logs syncBuffer
			h := start(t, src, slog.New(slog.NewTextHandler(&logs, nil)))
			ls, rs := src.nextSubs(t)
			h.expect("initial", attach(a.want()), attach(b.want()), attach(c.want()))

			// Changes whose notifications are lost: b deleted, a's MAC
			// changed, d created, a route added to c.
			src.set([]netlink.Link{aMAC.build(), c.build(), d.build()}, []netlink.Route{route(7, "10.244.0.7/32")})
			// The route subscription is blocked sending an update when
			// the link one fails (or the other way round): the
			// resync must drain it.
			// These updates cause no event, whenever Run reads them.
			if which == "link" {
				go rs.trySend(newRoute(route(42, "10.9.0.0/16")))
				ls.overflow(t)
			} else {
				go ls.trySend(newLink(link{index: 42, name: "eth9"}))
				rs.overflow(t)
			}
			ls2, rs2 := src.nextSubs(t)
			h.expect("resync", detach(b.want()), update(aMAC.want()), update(withOnLink(c.want(), "10.244.0.7/32")), attach(d.want()))
			if n := h.w.Resyncs(); n != 1 {
				t.Errorf("Resyncs = %d, want 1", n)
			}
			if nl, nr := src.lists(); nl != 2 || nr != 2 {
				t.Errorf("listed links %d times and routes %d times, want 2 each", nl, nr)
			}

			// The new subscriptions work.
			ls2.send(t, delLink(d))
			h.expect("after resync", detach(d.want()))
			rs2.send(t, delRoute(route(7, "10.244.0.7/32")))
			h.expect("route after resync", update(c.want()))
			h.stop()

			out := logs.String()
			if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "resyncing") ||
				!strings.Contains(out, which+" subscription closed: Receive failed: no buffer space available") {
				t.Errorf("resync not logged at warn with its reason:\n%s", out)
			}
			if strings.Contains(out, "use of closed file") {
				t.Errorf("errors of a deliberate stop were logged:\n%s", out)
			}
		})
	}
}

func TestRunRetriesInterruptedDump(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "caliB"}
	src := newFakeSource([]netlink.Link{a.build(), b.build()}, []netlink.Route{route(6, "10.244.0.6/32")})
	src.linkErrs = []error{netlink.ErrDumpInterrupted, netlink.ErrDumpInterrupted}
	src.routeErrs = []error{netlink.ErrDumpInterrupted}
	h := start(t, src, nil)
	src.nextSubs(t)
	h.expect("initial", attach(a.want()), attach(withOnLink(b.want(), "10.244.0.6/32")))
	if nl, nr := src.lists(); nl != 3 || nr != 2 {
		t.Errorf("listed links %d times and routes %d times, want 3 and 2", nl, nr)
	}
	h.stop()
}

// runErr runs a Watcher over src, expecting Run to fail by itself.
func runErr(t *testing.T, src *fakeSource) error {
	t.Helper()
	w, err := New(Config{Globs: []string{"cali*"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w.open = func() (source, error) { return src, nil }
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background(), func(Event) {}) }()
	select {
	case err = <-errc:
	case <-time.After(timeout):
		t.Fatal("Run did not fail")
	}
	src.waitSubsGone(t)
	if !src.closed.Load() {
		t.Error("source not closed")
	}
	return err
}

func TestRunErrors(t *testing.T) {
	links := []netlink.Link{link{index: 5, name: "caliA"}.build()}
	t.Run("persistent dump interruption", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.linkErrs = slices.Repeat([]error{netlink.ErrDumpInterrupted}, dumpAttempts)
		err := runErr(t, src)
		if !errors.Is(err, netlink.ErrDumpInterrupted) || !strings.Contains(err.Error(), "list links") {
			t.Errorf("Run = %v, want a list links error wrapping ErrDumpInterrupted", err)
		}
		if n, _ := src.lists(); n != dumpAttempts {
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
		if _, n := src.lists(); n != 1 {
			t.Errorf("listed routes %d times, want 1", n)
		}
	})
	t.Run("link subscription", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.linkSubErr = unix.EPERM
		if err := runErr(t, src); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "subscribe to link updates") {
			t.Errorf("Run = %v, want a link subscription error wrapping EPERM", err)
		}
	})
	t.Run("route subscription", func(t *testing.T) {
		src := newFakeSource(links, nil)
		src.routeSubEr = unix.EPERM
		if err := runErr(t, src); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "subscribe to route updates") {
			t.Errorf("Run = %v, want a route subscription error wrapping EPERM", err)
		}
	})
	t.Run("open", func(t *testing.T) {
		w, err := New(Config{Globs: []string{"cali*"}})
		if err != nil {
			t.Fatal(err)
		}
		w.open = func() (source, error) { return nil, unix.EMFILE }
		if err := w.Run(context.Background(), func(Event) {}); !errors.Is(err, unix.EMFILE) {
			t.Errorf("Run = %v, want EMFILE", err)
		}
	})
}

func TestRunCancelLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	src := newFakeSource([]netlink.Link{link{index: 5, name: "caliA"}.build()}, nil)
	h := start(t, src, nil)
	ls, _ := src.nextSubs(t)
	h.expect("initial", attach(link{index: 5, name: "caliA"}.want()))
	// Leave the link subscription blocked in its send while Run stops.
	go ls.trySend(newLink(link{index: 42, name: "eth9"}))
	h.stop()
	leakcheck.WaitGoroutines(t, before)
}

func TestRunCanceledBeforeStart(t *testing.T) {
	src := newFakeSource([]netlink.Link{link{index: 5, name: "caliA"}.build()}, nil)
	w, err := New(Config{Globs: []string{"cali*"}})
	if err != nil {
		t.Fatal(err)
	}
	w.open = func() (source, error) { return src, nil }
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx, func(ev Event) { t.Errorf("event %s after cancel", fmtEvent(ev)) }); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	src.waitSubsGone(t)
}

func TestRunOnceAtATime(t *testing.T) {
	src := newFakeSource(nil, nil)
	h := start(t, src, nil)
	src.nextSubs(t)
	if err := h.w.Run(context.Background(), func(Event) {}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v, want an already running error", err)
	}
	h.stop()
}

func TestSubscriptionStopDrains(t *testing.T) {
	src := newFakeSource(nil, nil)
	w, err := New(Config{Globs: []string{"cali*"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := w.subscribe(src)
	if err != nil {
		t.Fatal(err)
	}
	ls, rs := src.nextSubs(t)
	ls.send(t, newLink(link{index: 5, name: "caliA"})) // now blocked sending to sub.links
	rs.send(t, newRoute(route(5, "10.244.0.5/32")))
	stopped := make(chan struct{})
	go func() { sub.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		t.Fatal("stop did not return")
	}
	src.waitSubsGone(t)
}

func TestNew(t *testing.T) {
	closed := netns.None()
	cases := []struct {
		name string
		cfg  Config
		want string // error; "" = ok
	}{
		{"ok", Config{Globs: []string{"cali*", "tap[0-9]"}}, ""},
		{"bad glob", Config{Globs: []string{"cali*", "cali["}}, `invalid interface glob "cali[": syntax error in pattern`},
		{"empty glob", Config{Globs: []string{""}}, `invalid interface glob "": empty`},
		{"no glob", Config{}, "no interface glob"},
		{"closed namespace", Config{Globs: []string{"cali*"}, Namespace: &closed}, "network namespace handle is closed"},
		{"negative buffer", Config{Globs: []string{"cali*"}, RecvBufSize: -1}, "negative netlink receive buffer size -1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Errorf("New = %v, want %q", err, c.want)
			}
		})
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

// SetGlobs changes the selection of a running Watcher: links newly
// selected are attached, links no longer selected detached, links selected
// before and after get no event at all, and routes are kept.
func TestSetGlobs(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "tap1"}
	c := link{index: 7, name: "caliC"}
	src := newFakeSource(
		[]netlink.Link{a.build(), b.build(), c.build()},
		[]netlink.Route{route(5, "10.244.0.5/32"), route(6, "10.0.0.6/32")},
	)
	h := start(t, src, nil)
	select {
	case <-h.w.Ready():
		t.Fatal("Ready before the first listing")
	default:
	}
	ls, _ := src.nextSubs(t)
	h.expect("initial", attach(withOnLink(a.want(), "10.244.0.5/32")), attach(c.want()))
	select {
	case <-h.w.Ready():
	case <-time.After(timeout):
		t.Fatal("Ready not closed after the first listing")
	}

	if err := h.w.SetGlobs([]string{"caliA", "tap*"}); err != nil {
		t.Fatal(err)
	}
	h.expect("new globs", attach(withOnLink(b.want(), "10.0.0.6/32")), detach(c.want()))
	// Notifications go on under the new globs.
	ls.send(t, newLink(link{index: 8, name: "caliD"}))
	ls.send(t, newLink(link{index: 9, name: "tap2"}))
	h.expect("after change", attach(link{index: 9, name: "tap2"}.want()))

	for _, bad := range [][]string{nil, {""}, {"cali["}} {
		if err := h.w.SetGlobs(bad); err == nil {
			t.Errorf("SetGlobs(%q) accepted", bad)
		}
	}
	h.stop()
	if n := h.w.Resyncs(); n != 0 {
		t.Errorf("Resyncs = %d, want 0", n)
	}
}

// Only the latest of several pending SetGlobs calls is applied.
func TestSetGlobsLatestWins(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "tap1"}
	w, err := New(Config{Globs: []string{"none"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]string{{"cali*"}, {"x*"}, {"tap*"}} {
		if err := w.SetGlobs(g); err != nil {
			t.Fatal(err)
		}
	}
	src := newFakeSource([]netlink.Link{a.build(), b.build()}, nil)
	w.open = func() (source, error) { return src, nil }
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 16)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(ev Event) { events <- ev }) }()
	defer func() { cancel(); <-done }()
	want := []Event{attach(b.want())}
	var got []Event
	for len(got) < len(want) {
		select {
		case ev := <-events:
			got = append(got, ev)
		case <-time.After(timeout):
			t.Fatalf("timed out: got %s", eventsString(got))
		}
	}
	checkEvents(t, "latest globs", got, want)
}
