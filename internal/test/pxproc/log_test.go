package pxproc

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

const attachLine = `time=2026-11-23T10:00:00.000Z level=INFO msg=attach iface=cali0123456789a ifindex=7 mac=ee:ee:ee:ee:ee:ee up=true`

func TestAttr(t *testing.T) {
	l := Line{Text: attachLine}
	for _, c := range []struct{ key, want string }{
		{"msg", "attach"}, {"iface", "cali0123456789a"}, {"ifindex", "7"}, {"up", "true"},
		{"level", "INFO"}, {"time", "2026-11-23T10:00:00.000Z"},
		{"if", ""},   // a prefix of a key is not the key
		{"face", ""}, // nor a suffix
		{"nothing", ""},
	} {
		if got := l.Attr(c.key); got != c.want {
			t.Errorf("Attr(%q) = %q, want %q", c.key, got, c.want)
		}
	}
	for _, c := range []struct{ line, key, want string }{
		{`level=WARN msg="link changed" iface="calia"`, "msg", "link changed"},
		{`level=WARN msg="link changed" iface="calia"`, "iface", "calia"},
		{`msg=x err="open \"a b\": no such file" k=v`, "err", `open "a b": no such file`},
		{`msg=x err="open \"a b\": no such file" k=v`, "k", "v"},
		{`msg=sysctl fix=net.ipv4.conf.cali1.proxy_arp=0 up=1`, "fix", "net.ipv4.conf.cali1.proxy_arp=0"},
		{`msg=x empty= after=1`, "empty", ""},
		{`msg=x empty= after=1`, "after", "1"},
		{`  msg=x	tab=1  `, "tab", "1"},
		{`msg="unterminated k=v`, "msg", `"unterminated`}, // not logfmt: up to the blank
		{`msg="unterminated k=v`, "k", "v"},
		{`garbage words msg=x`, "msg", "x"},
		{`"quoted key"=1 msg=x`, "quoted key", "1"},
		{"", "msg", ""},
	} {
		if got := (Line{Text: c.line}).Attr(c.key); got != c.want {
			t.Errorf("Attr(%q) of %q = %q, want %q", c.key, c.line, got, c.want)
		}
	}
}

func TestUint(t *testing.T) {
	l := Line{Text: `msg=detach iface=cali0 requests=12 replies=0 rate_limited=x`}
	for key, want := range map[string]uint64{"requests": 12, "replies": 0, "rate_limited": 0, "none": 0} {
		if got := l.Uint(key); got != want {
			t.Errorf("Uint(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestHasAndContains(t *testing.T) {
	l := Line{Text: attachLine}
	for _, c := range []struct {
		m    Match
		want bool
	}{
		{Has("msg=attach", "iface=cali0123456789a"), true},
		{Has("msg=attach iface=cali0123456789a"), true},
		{Has("msg=attach", "iface=cali0"), false}, // a prefix is not the name
		{Has("msg=attach", "iface=cali0123456789b"), false},
		{Has("msg=detach"), false},
		{Has("msg=attach"), true},
		{Has("mac"), true}, // a key alone: present
		{Has("rule"), false},
		{Has(), true},
		{Has("up=true"), true}, // the last pair
		{Has(`msg="attach"`), true},
		{Contains("msg=attach", "cali0123"), true},
		{Contains("msg=attach", "cali9"), false},
		{Contains(), true},
	} {
		if got := c.m.Matches(l); got != c.want {
			t.Errorf("%v on %q = %v, want %v", c.m, l.Text, got, c.want)
		}
	}
	changed := Line{Text: `level=INFO msg="link changed" iface=cali1 ifindex=3 up=true`}
	if !Has(`msg="link changed"`, "iface=cali1", "up=true").Matches(changed) {
		t.Errorf("quoted message: no match on %q", changed.Text)
	}
	if Has(`msg="link"`).Matches(changed) {
		t.Error("a word of a quoted value matched")
	}
	if s := Has("msg=attach", "iface=x").String(); s != "msg=attach iface=x" {
		t.Errorf("String = %q", s)
	}
}

// chunks returns its chunks one Read at a time.
type chunks []string

func (c *chunks) Read(b []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(b, (*c)[0])
	(*c)[0] = (*c)[0][n:]
	if (*c)[0] == "" {
		*c = (*c)[1:]
	}
	return n, nil
}

func TestRead(t *testing.T) {
	var seen []string
	p := newProc(Options{OnLine: func(l Line) { seen = append(seen, l.Text) }})
	ch := p.changed
	long := strings.Repeat("x", maxLine+10)
	// Lines may arrive in pieces, several in one read, and the last one
	// without a newline.
	in := chunks{
		"level=INFO msg=start iface=[cali*]\nlevel=INFO msg=att",
		"ach iface=calib000001 ifindex=9 mac=ee:ee:ee:ee:ee:ee\n",
		"level=INFO msg=attach iface=calib000002 ifindex=10\nlevel=INFO msg=attach iface=caliX ifindex=11\n",
		"level=INFO msg=detach iface=calib000002 ifindex=10\nlevel=INFO msg=attach iface=caliY\n",
		long + "\n",
		"level=ERROR msg=oops",
	}
	p.read(&in)
	ls := p.Lines()
	want := []string{
		"level=INFO msg=start iface=[cali*]",
		"level=INFO msg=attach iface=calib000001 ifindex=9 mac=ee:ee:ee:ee:ee:ee",
		"level=INFO msg=attach iface=calib000002 ifindex=10",
		"level=INFO msg=attach iface=caliX ifindex=11",
		"level=INFO msg=detach iface=calib000002 ifindex=10",
		"level=INFO msg=attach iface=caliY",
		long[:maxLine], long[maxLine:],
		"level=ERROR msg=oops",
	}
	if len(ls) != len(want) {
		t.Fatalf("%d lines, want %d: %q", len(ls), len(want), ls)
	}
	for i := range want {
		if ls[i].Text != want[i] {
			t.Errorf("line %d = %.80q, want %.80q", i, ls[i].Text, want[i])
		}
		if i > 0 && ls[i].At.Before(ls[i-1].At) {
			t.Errorf("line %d read before line %d", i, i-1)
		}
	}
	if ls[2].At != ls[3].At {
		t.Error("two lines of one read have different times")
	}
	if len(seen) != len(want) {
		t.Errorf("OnLine saw %d lines, want %d", len(seen), len(want))
	}
	select {
	case <-ch:
	default:
		t.Error("a line did not signal")
	}

	// The attach table: by ifindex; a line without one does not count.
	att := p.Attached()
	if len(att) != 2 || att[9].Name != "calib000001" || att[11].Name != "caliX" || att[9].At != ls[1].At {
		t.Errorf("Attached = %v", att)
	}
	for prefix, want := range map[string]int{"calib": 1, "cali": 2, "": 2, "caliY": 0} {
		if n := p.NumAttached(prefix); n != want {
			t.Errorf("NumAttached(%q) = %d, want %d", prefix, n, want)
		}
	}
	if n := p.Count(Has("msg=attach")); n != 4 {
		t.Errorf("Count(msg=attach) = %d, want 4", n)
	}
	if l, ok := p.Find(Has("msg=attach")); !ok || l.Attr("iface") != "calib000001" {
		t.Errorf("Find = %q, %v", l.Text, ok)
	}
	if _, ok := p.Find(Has("msg=none")); ok {
		t.Error("Find of no line: found")
	}
	if got := p.Tail(1); got != "level=ERROR msg=oops" {
		t.Errorf("Tail(1) = %q", got)
	}
	if got := p.Tail(100); got != p.Log() || !strings.HasPrefix(got, want[0]+"\n"+want[1]+"\n") {
		t.Errorf("Tail(100) is not the log: %.100q", got)
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	p := newProc(Options{})
	go func() {
		for i := range 5 {
			p.add(Line{Text: "level=INFO msg=attach iface=cali" + string(rune('0'+i)), At: time.Now()})
		}
	}()
	l, err := p.Wait(ctx, Has("msg=attach"), 3, 5*time.Second)
	if err != nil || l.Attr("iface") != "cali2" {
		t.Fatalf("Wait for the third = %q, %v", l.Text, err)
	}
	if l, err := p.Wait(ctx, Has("msg=attach"), 5, 5*time.Second); err != nil || l.Attr("iface") != "cali4" {
		t.Fatalf("Wait for the fifth = %q, %v", l.Text, err)
	}
	if _, err := p.Wait(ctx, Has("msg=attach"), 6, 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "5 of 6 lines with msg=attach within") {
		t.Errorf("Wait for a sixth: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Wait(cctx, Has("msg=detach"), 1, time.Minute); err != context.Canceled {
		t.Errorf("Wait with ctx done: %v", err)
	}
	n := 0
	if err := p.WaitUntil(ctx, 5*time.Second, func() bool { n++; return n == 3 }); err != nil {
		t.Errorf("WaitUntil (polling): %v", err)
	}
	if err := p.WaitUntil(ctx, 20*time.Millisecond, func() bool { return false }); err == nil {
		t.Error("WaitUntil of false: no error")
	}

	// The end: a line that came with it is still found; then Wait fails
	// at once.
	p.add(Line{Text: "level=INFO msg=stopped"})
	p.finish(nil)
	if _, err := p.Wait(ctx, Has("msg=stopped"), 1, time.Minute); err != nil {
		t.Errorf("Wait for the last line: %v", err)
	}
	start := time.Now()
	if _, err := p.Wait(ctx, Has("msg=detach"), 1, time.Minute); err == nil || !strings.Contains(err.Error(), "exited (exit status 0) after 0 of 1") || time.Since(start) > 10*time.Second {
		t.Errorf("Wait after the end: %v", err)
	}
	if err := p.WaitUntil(ctx, time.Minute, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitUntil after the end: %v", err)
	}
	if p.Alive() || p.ExitCode() != -1 {
		t.Errorf("after the end: alive %v, exit code %d", p.Alive(), p.ExitCode())
	}
}
