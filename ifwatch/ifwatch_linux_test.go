package ifwatch

// Privileged tests: each creates its own network namespace (pxrw-<pid>-<random>),
// works only inside it and deletes it on every exit path. They never touch
// the root namespace or its interfaces.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/netmon"
	"github.com/pxresp/pxresp/internal/test/leakcheck"
	"github.com/pxresp/pxresp/internal/test/netmontest"
	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS is a network namespace created by a test.
type testNS struct {
	name string
	h    netns.NsHandle
}

// newNS creates a uniquely named namespace, deleted when the test ends.
func newNS(t *testing.T) *testNS {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	ns := &testNS{name: fmt.Sprintf("pxrw-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))}
	run(t, "", "netns", "add", ns.name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	h, err := netns.GetFromName(ns.name)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns.name, err)
	}
	ns.h = h
	t.Cleanup(func() { h.Close() })
	return ns
}

// ip runs `ip -n NS args...`; any failure is fatal.
func (ns *testNS) ip(t *testing.T, args ...string) {
	t.Helper()
	run(t, "", append([]string{"-n", ns.name}, args...)...)
}

// batch runs one `ip -n NS -batch -` with the given commands.
func (ns *testNS) batch(t *testing.T, cmds []string) {
	t.Helper()
	run(t, strings.Join(cmds, "\n")+"\n", "-n", ns.name, "-batch", "-")
}

func run(t *testing.T, stdin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// recorder collects the events of a Watcher and checks that they are
// consistent: Attach only for detached links, Update and Detach only for
// attached ones.
type recorder struct {
	mu       sync.Mutex
	events   []Event[string]
	cursor   int // events before it were consumed by waitFor
	attached map[int]Link
	errs     []string
	notify   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{attached: make(map[int]Link), notify: make(chan struct{}, 1)}
}

func (r *recorder) handle(ev Event[string]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	_, attached := r.attached[ev.Link.Index]
	if attached == (ev.Kind == Attach) {
		r.errs = append(r.errs, fmt.Sprintf("%s with link attached=%v", fmtEvent(ev), attached))
	}
	if ev.Kind == Detach {
		delete(r.attached, ev.Link.Index)
	} else {
		r.attached[ev.Link.Index] = ev.Link
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// waitFor returns the first event after the previously matched one for
// which match is true; it fails the test after 5 s.
func (r *recorder) waitFor(t *testing.T, desc string, match func(Event[string]) bool) Event[string] {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for i := r.cursor; i < len(r.events); i++ {
			if match(r.events[i]) {
				r.cursor = i + 1
				ev := r.events[i]
				r.mu.Unlock()
				return ev
			}
		}
		seen := eventsString(r.events[r.cursor:])
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events since the last match: %s", desc, seen)
		}
	}
}

// until waits, up to d, for cond to hold over the attached set.
func (r *recorder) until(t *testing.T, d time.Duration, desc string, cond func(map[int]Link) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		ok := cond(r.attached)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", d, desc)
		}
	}
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("inconsistent event: %s", e)
	}
}

// is matches an event of kind about the link named name for which ok
// (if not nil) holds.
func is(kind Kind, name string, ok func(Link) bool) func(Event[string]) bool {
	return func(ev Event[string]) bool {
		return ev.Kind == kind && ev.Link.Name == name && (ok == nil || ok(ev.Link))
	}
}

func onLink(p ...string) func(Link) bool {
	want := prefixes(p...)
	return func(l Link) bool { return slices.Equal(l.OnLink, want) }
}

func isUp(want bool) func(Link) bool { return func(l Link) bool { return l.Up == want } }

// watch runs a Monitor on ns with a Watcher of the "cali*" links
// registered. The returned stop function, also called when the test ends,
// cancels Run and checks that it returns nil within a second and that the
// events were consistent.
func watch(t *testing.T, ns *testNS, cfg netmon.Config) (m *netmon.Monitor, rec *recorder, stop func()) {
	t.Helper()
	cfg.Namespace = &ns.h
	m = netmontest.New(t, cfg)
	rec = newRecorder()
	w, err := New(Config[string]{Select: globs("cali*"), Handle: rec.handle, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	m.Register(w)
	return m, rec, netmontest.Run(t, m, func() { rec.check(t) })
}

func TestNetnsLifecycle(t *testing.T) {
	privtest.Require(t)
	ns := newNS(t)
	ns.batch(t, []string{
		"link add caliA type veth peer name peerA",
		"link add vethX type veth peer name vethY",
		"link set caliA address ee:ee:ee:ee:ee:ee",
		"link set caliA up",
		"link set peerA up",
		"link set vethX up",
	})
	before := runtime.NumGoroutine()
	m, rec, stop := watch(t, ns, netmon.Config{})

	rec.waitFor(t, "Attach caliA", is(Attach, "caliA", func(l Link) bool {
		return l.MAC.String() == "ee:ee:ee:ee:ee:ee" && l.Up && l.OnLink == nil
	}))

	start := time.Now()
	ns.ip(t, "link", "add", "caliB", "type", "veth", "peer", "name", "peerB")
	rec.waitFor(t, "Attach caliB", is(Attach, "caliB", isUp(false)))
	t.Logf("new link attached %v after `ip link add` started", time.Since(start))
	ns.ip(t, "link", "set", "caliB", "up")
	rec.waitFor(t, "caliB up", is(Update, "caliB", isUp(true)))

	ns.ip(t, "link", "set", "caliA", "address", "02:00:00:00:aa:01")
	rec.waitFor(t, "MAC change", is(Update, "caliA", func(l Link) bool { return l.MAC.String() == "02:00:00:00:aa:01" }))

	ns.ip(t, "link", "set", "caliA", "down")
	rec.waitFor(t, "caliA down", is(Update, "caliA", isUp(false)))
	ns.ip(t, "link", "set", "caliA", "up")
	rec.waitFor(t, "caliA up", is(Update, "caliA", isUp(true)))

	// Routes: add, move to another link with replace, delete.
	ns.ip(t, "route", "add", "10.244.0.2/32", "dev", "caliA", "scope", "link")
	rec.waitFor(t, "route on caliA", is(Update, "caliA", onLink("10.244.0.2/32")))
	ns.ip(t, "route", "add", "10.244.1.0/24", "dev", "caliA")
	rec.waitFor(t, "second route on caliA", is(Update, "caliA", onLink("10.244.0.2/32", "10.244.1.0/24")))
	ns.ip(t, "route", "replace", "10.244.0.2/32", "dev", "caliB", "scope", "link")
	rec.waitFor(t, "route left caliA", is(Update, "caliA", onLink("10.244.1.0/24")))
	rec.waitFor(t, "route moved to caliB", is(Update, "caliB", onLink("10.244.0.2/32")))
	ns.ip(t, "route", "del", "10.244.0.2/32", "dev", "caliB")
	rec.waitFor(t, "route deleted", is(Update, "caliB", onLink()))

	// Going down flushes caliA's routes without a route notification.
	ns.ip(t, "link", "set", "caliA", "down")
	rec.waitFor(t, "caliA down flushes routes", is(Update, "caliA", func(l Link) bool { return !l.Up && l.OnLink == nil }))

	// Rename out of the glob and back (caliA is down).
	ns.ip(t, "link", "set", "caliA", "name", "xA")
	rec.waitFor(t, "rename out", is(Detach, "caliA", nil))
	ns.ip(t, "link", "set", "xA", "name", "caliA")
	rec.waitFor(t, "rename in", is(Attach, "caliA", isUp(false)))
	ns.ip(t, "link", "set", "caliA", "up")
	rec.waitFor(t, "caliA up again", is(Update, "caliA", isUp(true)))

	ns.ip(t, "link", "set", "caliA", "arp", "off")
	rec.waitFor(t, "NOARP", is(Detach, "caliA", nil))
	ns.ip(t, "link", "set", "caliA", "arp", "on")
	rec.waitFor(t, "ARP again", is(Attach, "caliA", nil))

	ns.ip(t, "link", "add", "br0", "type", "bridge")
	ns.ip(t, "link", "set", "caliB", "master", "br0")
	rec.waitFor(t, "enslaved", is(Detach, "caliB", nil))
	ns.ip(t, "link", "set", "caliB", "nomaster")
	rec.waitFor(t, "released", is(Attach, "caliB", nil))

	other := newNS(t)
	ns.ip(t, "link", "set", "caliB", "netns", other.name)
	rec.waitFor(t, "moved to another netns", is(Detach, "caliB", nil))

	ns.ip(t, "link", "del", "caliA")
	rec.waitFor(t, "deleted", is(Detach, "caliA", nil))

	rec.mu.Lock()
	if len(rec.attached) != 0 {
		t.Errorf("links still attached: %v", rec.attached)
	}
	for _, ev := range rec.events {
		if !strings.HasPrefix(ev.Link.Name, "cali") {
			t.Errorf("event for a link outside the glob: %s", fmtEvent(ev))
		}
	}
	t.Logf("%d events, %d resyncs", len(rec.events), m.Resyncs())
	rec.mu.Unlock()
	stop()
	leakcheck.WaitGoroutines(t, before)
}

// TestNetnsOverflow makes a subscription overflow with a tiny receive
// buffer and a burst of link creations, and checks that the resync leaves
// exactly the matching links attached.
func TestNetnsOverflow(t *testing.T) {
	privtest.Require(t)
	ns := newNS(t)
	ns.ip(t, "link", "add", "cali-first", "type", "veth", "peer", "name", "p-first")
	before := runtime.NumGoroutine()
	m, rec, stop := watch(t, ns, netmon.Config{
		RecvBufSize:  1, // the kernel rounds it up to its minimum
		RecvBufForce: true,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	rec.waitFor(t, "Attach cali-first", is(Attach, "cali-first", nil))

	h, err := netlink.NewHandleAt(ns.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// matching returns the links that the watcher should have attached.
	matching := func() map[int]string {
		links, err := h.LinkList()
		if err != nil {
			t.Fatalf("list links: %v", err)
		}
		m := make(map[int]string)
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "cali") {
				m[l.Attrs().Index] = l.Attrs().Name
			}
		}
		return m
	}

	const bursts, pairs = 3, 100
	for b := 0; b < bursts && m.Resyncs() == 0; b++ {
		var cmds []string
		for i := range pairs {
			cmds = append(cmds, fmt.Sprintf("link add cali%d-%03d type veth peer name p%d-%03d", b, i, b, i))
		}
		start := time.Now()
		ns.batch(t, cmds)
		want := matching()
		rec.until(t, 30*time.Second, fmt.Sprintf("exactly the %d matching links attached", len(want)),
			func(got map[int]Link) bool {
				if len(got) != len(want) {
					return false
				}
				for i, l := range got {
					if want[i] != l.Name {
						return false
					}
				}
				return true
			})
		t.Logf("burst %d: %d veth pairs; %d links attached %v after it started; %d resyncs",
			b, pairs, len(want), time.Since(start), m.Resyncs())
	}
	if m.Resyncs() == 0 {
		t.Fatalf("no resync after %d bursts: the receive buffer never overflowed", bursts)
	}

	// The watcher still follows the namespace.
	ns.ip(t, "link", "add", "cali-last", "type", "veth", "peer", "name", "p-last")
	rec.waitFor(t, "Attach cali-last", is(Attach, "cali-last", nil))
	stop()
	leakcheck.WaitGoroutines(t, before)
}

// TestNetnsCurrentNamespace runs a Monitor without Config.Namespace,
// made on a thread that entered the test namespace, and run from another.
func TestNetnsCurrentNamespace(t *testing.T) {
	privtest.Require(t)
	ns := newNS(t)
	ns.ip(t, "link", "add", "caliA", "type", "veth", "peer", "name", "peerA")
	var m *netmon.Monitor
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked: it ends with the goroutine instead of
		// returning to the pool in the test namespace.
		runtime.LockOSThread()
		if err := netns.Set(ns.h); err != nil {
			errc <- err
			return
		}
		var err error
		m, err = netmon.New(netmon.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rec := newRecorder()
	w, err := New(Config[string]{Select: globs("cali*"), Handle: rec.handle})
	if err != nil {
		t.Fatal(err)
	}
	m.Register(w)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { errc <- m.Run(ctx) }()
	ev := rec.waitFor(t, "Attach caliA", is(Attach, "caliA", nil))
	h, err := netlink.NewHandleAt(ns.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("caliA")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Index != ev.Link.Index || l.Attrs().HardwareAddr.String() != ev.Link.MAC.String() {
		t.Errorf("attached %s, but the namespace's caliA is index %d, MAC %s",
			fmtEvent(ev), l.Attrs().Index, l.Attrs().HardwareAddr)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("Run did not return after cancel")
	}
	rec.check(t)
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
