package responder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/framecases"
	"github.com/pxresp/pxresp/policy"
)

var (
	hostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	gateway = netip.MustParseAddr("169.254.1.1")
)

// fakeTransport feeds frames and socket errors from channels, fails when
// told to, and records what is sent and the filters set.
type fakeTransport struct {
	in      chan []byte
	errs    chan error // reported through onErr
	fail    chan error // returned by receive
	sendErr error
	// rxAge, if set, makes each frame's receive timestamp that long before
	// it is handed to the Responder; 0 means no timestamp.
	rxAge time.Duration
	// filterErr is returned by setFilter after the first filterOK calls.
	filterErr error
	filterOK  int

	mu      sync.Mutex
	sent    [][]byte
	filters [][]net.HardwareAddr // the overrides of each setFilter call
	sheds   []shedRule           // the shed rule of each setFilter call
	queued  uint64               // returned by kernelStats
	closed  chan struct{}
	once    sync.Once
	closes  int
}

func newFake() *fakeTransport {
	return &fakeTransport{in: make(chan []byte), errs: make(chan error), fail: make(chan error), closed: make(chan struct{})}
}

func (f *fakeTransport) receive(handle func([]byte, int64), onErr func(error)) error {
	for {
		select {
		case fr := <-f.in:
			var rx int64
			if f.rxAge > 0 {
				rx = time.Now().Add(-f.rxAge).UnixNano()
			}
			handle(fr, rx)
		case err := <-f.errs:
			onErr(err)
		case err := <-f.fail:
			return err
		case <-f.closed:
			return net.ErrClosed
		}
	}
}

func (f *fakeTransport) send(frame []byte) error {
	if f.sendErr != nil {
		return f.sendErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, bytes.Clone(frame))
	return nil
}

func (f *fakeTransport) bound() bool { return true }

// kernelStats returns queued: what a test says the kernel queued.
func (f *fakeTransport) kernelStats() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queued, 0
}

func (f *fakeTransport) setFilter(shed shedRule, overrides ...net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.filterErr != nil && len(f.filters) >= f.filterOK {
		return f.filterErr
	}
	var macs []net.HardwareAddr
	for _, m := range overrides {
		if m != nil {
			macs = append(macs, bytes.Clone(m))
		}
	}
	f.filters = append(f.filters, macs)
	f.sheds = append(f.sheds, shed)
	return nil
}

func (f *fakeTransport) close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeTransport) takeSent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sent
	f.sent = nil
	return s
}

func gwPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New([]netip.Addr{gateway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestResponder(t testing.TB, f transport) *Responder {
	cfg := Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t)}}
	if err := checkConfig(&cfg); err != nil {
		t.Fatal(err)
	}
	return newResponder(f, cfg)
}

// loadFrameCases reads testdata/arp-frames.txt.
func loadFrameCases(t testing.TB) []framecases.Case {
	t.Helper()
	return framecases.Load(t, "../testdata/arp-frames.txt")
}

func TestFrames(t *testing.T) {
	for _, c := range loadFrameCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			f := newFake()
			r := newTestResponder(t, f)
			r.handle(c.In)
			sent := f.takeSent()
			st := r.Stats()
			switch c.Want {
			case "reply":
				if len(sent) != 1 {
					t.Fatalf("sent %d frames, want 1 reply", len(sent))
				}
				if !bytes.Equal(sent[0], c.Out) {
					t.Errorf("reply\n got %x\nwant %x", sent[0], c.Out)
				}
				if st.Requests != 1 || st.Replies != 1 {
					t.Errorf("stats %+v, want 1 request and 1 reply", st)
				}
			case "malformed":
				if len(sent) != 0 || st.Malformed != 1 || st.Requests != 0 {
					t.Errorf("sent %d, stats %+v: want nothing sent and 1 malformed", len(sent), st)
				}
			case "nothing":
				if len(sent) != 0 || st != (Stats{}) {
					t.Errorf("sent %d, stats %+v: want nothing at all", len(sent), st)
				}
			default:
				v := verdictByName(t, c.Want)
				if len(sent) != 0 {
					t.Errorf("sent %x, want nothing (%v)", sent, v)
				}
				if st.Requests != 1 || st.Ignored[v] != 1 || st.Replies != 0 {
					t.Errorf("stats %+v, want 1 request ignored as %v", st, v)
				}
			}
		})
	}
}

func verdictByName(t testing.TB, name string) policy.Verdict {
	for v := policy.Verdict(0); int(v) < policy.NumVerdicts; v++ {
		if v.String() == name {
			return v
		}
	}
	t.Fatalf("testdata: unknown verdict %q", name)
	return 0
}

// request builds the frame "who-has target tell sender", sent to dst.
func request(senderMAC net.HardwareAddr, sender, target netip.Addr, dst net.HardwareAddr) []byte {
	return arpframe.EncodeRequest(make([]byte, arpframe.Len), [6]byte(dst), [6]byte(senderMAC), sender, target)
}

var (
	podMAC    = net.HardwareAddr{0x02, 0, 0x0a, 0xf4, 0, 2}
	podIP     = netip.MustParseAddr("10.244.0.2")
	bcast     = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	gwRequest = request(podMAC, podIP, gateway, bcast)
)

// change applies r's current settings as mod changes them, the way the
// daemon applies a link's or a rule's change: every setting at once.
func change(r *Responder, mod func(*Settings)) error {
	st := r.st.Load()
	s := Settings{MAC: slices.Clone(st.mac[:]), Policy: st.policy, OnLink: slices.Clone(st.onLink)}
	if st.override {
		s.Override = slices.Clone(st.answer[:])
	}
	mod(&s)
	return r.Apply(s)
}

func TestApplyMACIsUsedInTheNextReply(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	newMAC := net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	if err := change(r, func(s *Settings) { s.MAC = newMAC }); err != nil {
		t.Fatal(err)
	}
	r.handle(gwRequest)
	// A unicast re-probe to the old MAC is now for another host.
	r.handle(request(podMAC, podIP, gateway, hostMAC))
	r.handle(request(podMAC, podIP, gateway, newMAC))
	sent := f.takeSent()
	if len(sent) != 2 {
		t.Fatalf("sent %d replies, want 2", len(sent))
	}
	for _, s := range sent {
		if !bytes.Equal(s[arpframe.OffEthSrc:arpframe.OffEthSrc+6], newMAC) || !bytes.Equal(s[arpframe.OffSHA:arpframe.OffSHA+6], newMAC) {
			t.Errorf("reply %x does not carry the new MAC %v", s, newMAC)
		}
	}
	if got := r.Stats().Ignored[policy.NotForUs]; got != 1 {
		t.Errorf("not-for-us = %d, want 1", got)
	}
	err := change(r, func(s *Settings) { s.MAC = net.HardwareAddr{1, 2, 3} })
	if err == nil || !strings.Contains(err.Error(), "calitest") || !strings.Contains(err.Error(), "01:02:03") {
		t.Errorf("Apply with a 3-byte MAC = %v, want an error naming the interface and the MAC", err)
	}
	if !bytes.Equal(r.MAC(), newMAC) {
		t.Errorf("MAC() = %v after a bad Apply, want %v", r.MAC(), newMAC)
	}
}

func TestOverrideMAC(t *testing.T) {
	f := newFake()
	override := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	r := newResponder(f, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Override: override, Policy: gwPolicy(t)}})
	r.handle(gwRequest)
	r.handle(request(podMAC, podIP, gateway, override)) // unicast to the override
	r.handle(request(podMAC, podIP, gateway, hostMAC))  // unicast to the device MAC
	// The device MAC changes; the override stays.
	if err := change(r, func(s *Settings) { s.MAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 9} }); err != nil {
		t.Fatal(err)
	}
	r.handle(gwRequest)
	sent := f.takeSent()
	if len(sent) != 4 {
		t.Fatalf("sent %d replies, want 4", len(sent))
	}
	for _, s := range sent {
		if !bytes.Equal(s[arpframe.OffSHA:arpframe.OffSHA+6], override) {
			t.Errorf("reply %x does not carry the override MAC", s)
		}
	}
}

func TestApplyPolicyAndOnLink(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	podB := netip.MustParseAddr("10.244.0.3")
	r.handle(request(podMAC, podIP, podB, bcast))
	p, err := policy.New([]netip.Addr{gateway}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	if err := change(r, func(s *Settings) { s.Policy = p }); err != nil {
		t.Fatal(err)
	}
	if err := change(r, func(s *Settings) { s.Policy = nil }); err == nil || !strings.Contains(err.Error(), "no policy") {
		t.Errorf("Apply without a policy = %v, want an error", err)
	}
	r.handle(request(podMAC, podIP, podB, bcast))
	if err := change(r, func(s *Settings) { s.OnLink = []netip.Prefix{netip.MustParsePrefix("10.244.0.3/32")} }); err != nil {
		t.Fatal(err)
	}
	r.handle(request(podMAC, podIP, podB, bcast))
	st := r.Stats()
	if st.Ignored[policy.NotTarget] != 1 || st.Replies != 1 || st.Ignored[policy.OwnAddress] != 1 {
		t.Errorf("stats %+v: want one not-a-target, one reply, one own-address", st)
	}
}

// TestStatsAdd: Add sums every counter, so that a counter added to Stats
// cannot be left out of the daemon's sums.
func TestStatsAdd(t *testing.T) {
	var a, b Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	n := uint64(1)
	var fill func(x, y reflect.Value)
	fill = func(x, y reflect.Value) {
		switch x.Kind() {
		case reflect.Uint64:
			x.SetUint(n)
			y.SetUint(1000 * n)
			n++
		case reflect.Array:
			for i := range x.Len() {
				fill(x.Index(i), y.Index(i))
			}
		default:
			t.Fatalf("Stats has a %v: teach this test and Add about it", x.Type())
		}
	}
	for i := range va.NumField() {
		fill(va.Field(i), vb.Field(i))
	}
	sum := a
	sum.Add(b)
	var check func(s, x, y reflect.Value, name string)
	check = func(s, x, y reflect.Value, name string) {
		if s.Kind() == reflect.Array {
			for i := range s.Len() {
				check(s.Index(i), x.Index(i), y.Index(i), fmt.Sprintf("%s[%d]", name, i))
			}
			return
		}
		if s.Uint() != x.Uint()+y.Uint() {
			t.Errorf("Add: %s = %d, want %d", name, s.Uint(), x.Uint()+y.Uint())
		}
	}
	vs := reflect.ValueOf(sum)
	for i := range vs.NumField() {
		check(vs.Field(i), va.Field(i), vb.Field(i), vs.Type().Field(i).Name)
	}
}

func TestSendErrorIsCounted(t *testing.T) {
	f := newFake()
	f.sendErr = syscall.ENOBUFS
	r := newTestResponder(t, f)
	r.handle(gwRequest)
	if st := r.Stats(); st.SendErrors != 1 || st.Replies != 0 {
		t.Errorf("stats %+v, want 1 send error", st)
	}
}

func TestConfigErrors(t *testing.T) {
	p := gwPolicy(t)
	for _, cfg := range []Config{
		{Index: 0, Name: "x", Settings: Settings{MAC: hostMAC, Policy: p}},
		{Index: 1, Name: "x", Settings: Settings{MAC: hostMAC}},
		{Index: 1, Name: "x", Settings: Settings{MAC: net.HardwareAddr{1, 2}, Policy: p}},
		{Index: 1, Name: "x", Settings: Settings{MAC: hostMAC, Override: net.HardwareAddr{1}, Policy: p}},
	} {
		if _, err := Listen(cfg); err == nil || !strings.Contains(err.Error(), `"x"`) {
			t.Errorf("Listen(%+v) error = %v, want one naming the interface", cfg, err)
		}
	}
}

func serve(t *testing.T, r *Responder, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	return done
}

func waitServe(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s")
		return nil
	}
}

func TestServeSurvivesBadFramesAndLinkDown(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	done := serve(t, r, context.Background())
	f.in <- []byte{1, 2, 3}
	f.in <- gwRequest
	f.errs <- syscall.ENETDOWN // link down, then up again
	f.in <- make([]byte, 100)
	f.in <- gwRequest
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve = %v after Close, want nil", err)
	}
	st := r.Stats()
	if st.Replies != 2 || st.Malformed != 2 || st.ReadErrors != 1 {
		t.Errorf("stats %+v: want 2 replies, 2 malformed, 1 read error", st)
	}
}

func TestServeStopsOnContext(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(t, r, ctx)
	f.in <- gwRequest
	cancel()
	if err := waitServe(t, done); err != nil {
		t.Fatalf("Serve = %v after cancel, want nil", err)
	}
	for range 3 {
		if err := r.Close(); err != nil {
			t.Fatalf("Close after Serve ended: %v", err)
		}
	}
	if f.closes != 1 {
		t.Errorf("transport closed %d times, want once", f.closes)
	}
}

func TestServeReturnsTransportFailure(t *testing.T) {
	f := newFake()
	r := newTestResponder(t, f)
	done := serve(t, r, context.Background())
	boom := errors.New("boom")
	f.fail <- boom
	err := waitServe(t, done)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "calitest") {
		t.Fatalf("Serve = %v, want the socket error naming the interface", err)
	}
	_ = r.Close()
}

func TestHandleDoesNotAllocate(t *testing.T) {
	r := newResponder(nopTransport{}, Config{Index: 7, Name: "calitest", Settings: Settings{MAC: hostMAC, Policy: gwPolicy(t),
		OnLink: []netip.Prefix{netip.MustParsePrefix("10.244.0.2/32")}}})
	for _, c := range loadFrameCases(t) {
		if n := testing.AllocsPerRun(50, func() { r.handle(c.In) }); n != 0 {
			t.Errorf("%s: %v allocs per frame", c.Name, n)
		}
	}
}

type nopTransport struct{}

func (nopTransport) receive(func([]byte, int64), func(error)) error { return net.ErrClosed }
func (nopTransport) send([]byte) error                              { return nil }
func (nopTransport) close() error                                   { return nil }
func (nopTransport) bound() bool                                    { return true }
func (nopTransport) setFilter(shedRule, ...net.HardwareAddr) error  { return nil }
func (nopTransport) kernelStats() (uint64, uint64)                  { return 0, 0 }
