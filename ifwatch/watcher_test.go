package ifwatch

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/netmon"
)

// Unit tests of the Watcher as a netmon.Consumer: the tests make the
// Monitor's calls themselves. ifwatch_linux_test.go runs it under a real
// Monitor.

const timeout = 5 * time.Second

// collector is a handler that keeps the events.
type collector struct {
	mu     sync.Mutex
	events []Event[string]
}

func (c *collector) handle(ev Event[string]) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

// take returns the events so far and forgets them.
func (c *collector) take() []Event[string] {
	c.mu.Lock()
	defer c.mu.Unlock()
	evs := c.events
	c.events = nil
	return evs
}

func newWatcher(t *testing.T, sel func(string) (string, bool)) (*Watcher[string], *collector) {
	t.Helper()
	c := &collector{}
	w, err := New(Config[string]{Select: sel, Handle: c.handle, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return w, c
}

func isReady(w *Watcher[string]) bool {
	select {
	case <-w.Ready():
		return true
	default:
		return false
	}
}

func TestWatcherFollowsEvents(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "caliB"}
	lo := link{index: 1, name: "lo", raw: unix.IFF_LOOPBACK, encap: "loopback"}
	eth := link{index: 2, name: "eth0"}
	w, c := newWatcher(t, globs("cali*"))
	if isReady(w) {
		t.Fatal("Ready before the first listing")
	}
	w.Resync(listing([]link{lo, eth, a}, route(5, "10.244.0.5/32"), route(2, "0.0.0.0/0")))
	checkEvents(t, "initial", c.take(), []Event[string]{attach(withOnLink(a.want(), "10.244.0.5/32"))})
	if !isReady(w) {
		t.Fatal("Ready not closed after the first listing")
	}

	w.Change(newLink(eth))
	w.Change(newLink(b))
	checkEvents(t, "new link", c.take(), []Event[string]{attach(b.want())})
	w.Change(newRoute(route(6, "10.244.0.6/32")))
	checkEvents(t, "route", c.take(), []Event[string]{update(withOnLink(b.want(), "10.244.0.6/32"))})
	w.Change(delLink(a))
	checkEvents(t, "delete", c.take(), []Event[string]{detach(withOnLink(a.want(), "10.244.0.5/32"))})
	for _, ev := range c.take() {
		t.Errorf("unexpected event %s", fmtEvent(ev))
	}
}

// Notifications of other groups cause no event.
func TestWatcherIgnoresOtherMessages(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	w, c := newWatcher(t, globs("cali*"))
	w.Resync(listing([]link{a}))
	c.take()
	for _, typ := range []uint16{unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_NEWRULE, unix.RTM_NEWNETCONF, unix.RTM_NEWNEXTHOP} {
		w.Change(&netmon.Message{Type: typ})
	}
	bridge := newLink(link{index: 5, name: "caliA", master: 9})
	bridge.Family = unix.AF_BRIDGE
	w.Change(bridge)
	checkEvents(t, "other messages", c.take(), nil)
}

// After lost notifications, the listing that follows reconciles: Lost
// itself changes nothing, and every event of the listing has Resync set.
func TestWatcherResyncAfterLoss(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "caliB"}
	c := link{index: 7, name: "caliC"}
	d := link{index: 8, name: "caliD"}
	aMAC := a
	aMAC.mac = "02:aa:bb:cc:dd:ee"
	w, col := newWatcher(t, globs("cali*"))
	w.Resync(listing([]link{a, b, c}))
	checkEvents(t, "initial", col.take(), []Event[string]{attach(a.want()), attach(b.want()), attach(c.want())})

	w.Lost("receive: no buffer space available")
	checkEvents(t, "lost", col.take(), nil)
	// Lost meanwhile: b deleted, a's MAC changed, d created, a route to c.
	w.Resync(listing([]link{aMAC, c, d}, route(7, "10.244.0.7/32")))
	evs := col.take()
	checkEvents(t, "resync", evs, []Event[string]{
		detach(b.want()), update(aMAC.want()), update(withOnLink(c.want(), "10.244.0.7/32")), attach(d.want()),
	})
	for _, ev := range evs {
		if !ev.Resync {
			t.Errorf("event of a resync without Resync: %s", fmtEvent(ev))
		}
	}
	// Notifications go on.
	w.Change(delLink(d))
	if evs := col.take(); len(evs) != 1 || evs[0].Resync {
		t.Errorf("after the resync: %s, want one Detach without Resync", eventsString(evs))
	}
}

func TestNew(t *testing.T) {
	sel := globs("cali*")
	handle := func(Event[string]) {}
	for _, tc := range []struct {
		name string
		cfg  Config[string]
		want string
	}{
		{"ok", Config[string]{Select: sel, Handle: handle}, ""},
		{"no selector", Config[string]{Handle: handle}, "ifwatch: no selector"},
		{"no handler", Config[string]{Select: sel}, "ifwatch: no event handler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("New = %v, want %q", err, tc.want)
			}
		})
	}
}

// SetSelector changes the selection of a running Watcher at once, without
// a listing: links newly selected are attached, links no longer selected
// detached, links whose rule changed updated, the others left alone; routes
// are kept, and notifications go on under the new selector.
func TestSetSelector(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "tap1"}
	c := link{index: 7, name: "caliC"}
	w, col := newWatcher(t, globs("cali*"))
	w.Resync(listing([]link{a, b, c}, route(5, "10.244.0.5/32"), route(6, "10.0.0.6/32")))
	checkEvents(t, "initial", col.take(), []Event[string]{attach(withOnLink(a.want(), "10.244.0.5/32")), attach(c.want())})

	if err := w.SetSelector(globs("cali*", "tap*")); err != nil {
		t.Fatal(err)
	}
	checkEvents(t, "a rule added", col.take(), []Event[string]{ruled(attach(withOnLink(b.want(), "10.0.0.6/32")), "tap*")})
	if err := w.SetSelector(globs("caliA", "tap*")); err != nil {
		t.Fatal(err)
	}
	checkEvents(t, "rules changed", col.take(), []Event[string]{
		ruled(update(withOnLink(a.want(), "10.244.0.5/32")), "caliA"), detach(c.want()),
	})
	w.Change(newLink(link{index: 8, name: "caliD"}))
	w.Change(newLink(link{index: 9, name: "tap2"}))
	checkEvents(t, "after the change", col.take(), []Event[string]{ruled(attach(link{index: 9, name: "tap2"}.want()), "tap*")})
	if err := w.SetSelector(nil); err == nil {
		t.Error("SetSelector(nil) accepted")
	}
	checkEvents(t, "refused selector", col.take(), nil)
}

// A reloaded configuration's rules are new values even when they say the
// same: every attached link gets an Update carrying its new rule.
func TestSetSelectorNewRules(t *testing.T) {
	type rule struct{ name string }
	sel := func(r *rule) func(string) (*rule, bool) {
		return func(name string) (*rule, bool) { return r, strings.HasPrefix(name, "cali") }
	}
	old, next := &rule{"calico"}, &rule{"calico"}
	var got []Event[*rule]
	w, err := New(Config[*rule]{Select: sel(old), Handle: func(ev Event[*rule]) { got = append(got, ev) }})
	if err != nil {
		t.Fatal(err)
	}
	w.Resync(listing([]link{{index: 5, name: "caliA"}, {index: 6, name: "caliB"}}))
	if err := w.SetSelector(sel(next)); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range got {
		kinds = append(kinds, fmt.Sprintf("%v %s %v", ev.Kind, ev.Link.Name, ev.Rule == next))
	}
	want := "[attach caliA false attach caliB false update caliA true update caliB true]"
	if fmt.Sprint(kinds) != want {
		t.Errorf("events %v, want %s", kinds, want)
	}
}

// A selector set before the first listing applies to it; only the latest
// counts.
func TestSetSelectorBeforeFirstListing(t *testing.T) {
	a := link{index: 5, name: "caliA"}
	b := link{index: 6, name: "tap1"}
	w, col := newWatcher(t, globs("none"))
	for _, g := range []string{"cali*", "x*", "tap*"} {
		if err := w.SetSelector(globs(g)); err != nil {
			t.Fatal(err)
		}
	}
	checkEvents(t, "before the listing", col.take(), nil)
	w.Resync(listing([]link{a, b}))
	checkEvents(t, "latest selector", col.take(), []Event[string]{ruled(attach(b.want()), "tap*")})
}

// Selector changes and notifications from two goroutines: the handler is
// never called concurrently (run with -race), and the final state is the
// last selector's.
func TestHandlerSerialized(t *testing.T) {
	var inside atomic.Int32
	var bad atomic.Bool
	attached := map[int]bool{}
	w, err := New(Config[string]{Select: globs("cali*"), Handle: func(ev Event[string]) {
		if inside.Add(1) != 1 {
			bad.Store(true)
		}
		attached[ev.Link.Index] = ev.Kind != Detach
		inside.Add(-1)
	}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w.Resync(listing(nil))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			w.Change(newLink(link{index: 100 + i%20, name: fmt.Sprintf("cali%d", i%20)}))
		}
	})
	wg.Go(func() {
		for i := range 200 {
			if err := w.SetSelector(globs([]string{"cali1*", "cali*"}[i%2])); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if bad.Load() {
		t.Fatal("the handler was called concurrently")
	}
	// The last selector was "cali*": all 20 links attached.
	n := 0
	for _, on := range attached {
		if on {
			n++
		}
	}
	if n != 20 {
		t.Errorf("%d links attached, want 20", n)
	}
}
