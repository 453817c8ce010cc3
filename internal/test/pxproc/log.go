package pxproc

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Line is one line of pxresp's output and when it was read.
type Line struct {
	Text string
	At   time.Time // when the read that completed the line returned
}

func (l Line) String() string { return l.Text }

// Attr returns the value of key in the line ("" if it has none). The line
// is logfmt, as slog's text handler writes it: key=value pairs separated by
// blanks, a value in double quotes with Go escapes when it needs them.
func (l Line) Attr(key string) string {
	v, _ := lookup(l.Text, key)
	return v
}

// Uint returns the value of key as a number, 0 if it is absent or not one.
func (l Line) Uint(key string) uint64 {
	n, _ := strconv.ParseUint(l.Attr(key), 10, 64)
	return n
}

// pair is one key[=value] of a logfmt line.
type pair struct {
	key, val string
	hasVal   bool
}

// next reads the first key[=value] of s. ok is false when s has no more.
func next(s string) (p pair, rest string, ok bool) {
	s = strings.TrimLeft(s, " \t")
	if s == "" {
		return pair{}, "", false
	}
	p.key, s = token(s, " \t=")
	if strings.HasPrefix(s, "=") {
		p.hasVal = true
		p.val, s = token(s[1:], " \t")
	}
	return p, s, true
}

// token reads a quoted string, or else up to one of stop.
func token(s, stop string) (tok, rest string) {
	if strings.HasPrefix(s, `"`) {
		if q, err := strconv.QuotedPrefix(s); err == nil {
			u, _ := strconv.Unquote(q)
			return u, s[len(q):]
		}
	}
	if i := strings.IndexAny(s, stop); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// parse splits a logfmt line into its pairs.
func parse(s string) []pair {
	var ps []pair
	for p, rest, ok := next(s); ok; p, rest, ok = next(rest) {
		ps = append(ps, p)
	}
	return ps
}

// lookup returns the value of the first pair with key.
func lookup(s, key string) (string, bool) {
	if !strings.Contains(s, key) {
		return "", false
	}
	for p, rest, ok := next(s); ok; p, rest, ok = next(rest) {
		if p.key == key {
			return p.val, true
		}
	}
	return "", false
}

// A Match selects log lines.
type Match struct {
	desc string
	fn   func(Line) bool
}

// Matches reports whether l is one of the lines m selects.
func (m Match) Matches(l Line) bool { return m.fn(l) }

func (m Match) String() string { return m.desc }

// Has matches the lines that hold every pair of the pattern, which is
// logfmt itself: Has("msg=attach", "iface=cali1") or
// Has(`msg="link changed" up=true`). A value must be equal, not a prefix; a
// key without "=value" need only be present.
func Has(pattern ...string) Match {
	desc := strings.Join(pattern, " ")
	want := parse(desc)
	return Match{desc: desc, fn: func(l Line) bool {
		for _, w := range want {
			v, ok := lookup(l.Text, w.key)
			if !ok || (w.hasVal && v != w.val) {
				return false
			}
		}
		return true
	}}
}

// Contains matches the lines that contain every one of subs.
func Contains(subs ...string) Match {
	return Match{desc: fmt.Sprintf("%q", subs), fn: func(l Line) bool {
		for _, s := range subs {
			if !strings.Contains(l.Text, s) {
				return false
			}
		}
		return true
	}}
}

// Iface is an interface that pxresp attached, from its attach line.
type Iface struct {
	Name  string
	Index int
	At    time.Time // when the attach line was read
}

func (f Iface) String() string { return f.Name }
