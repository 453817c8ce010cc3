package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/pxproc"
)

func TestTail(t *testing.T) {
	var ls []pxproc.Line
	for _, l := range []string{
		"level=INFO msg=start iface=[cali*]",
		"level=INFO msg=attach iface=calib000001 ifindex=9",
		"level=WARN msg=one",
		"level=INFO msg=detach iface=calib000001 ifindex=9",
		"level=ERROR msg=oops",
	} {
		ls = append(ls, pxproc.Line{Text: l})
	}
	if got := tail(ls, 2); got != "level=WARN msg=one\nlevel=ERROR msg=oops" {
		t.Errorf("tail(2) = %q", got)
	}
	if got := tail(ls, 20); !strings.HasPrefix(got, "level=INFO msg=start") || strings.Contains(got, "msg=attach") || strings.Contains(got, "msg=detach") {
		t.Errorf("tail(20) = %q", got)
	}
	if got := tail(nil, 20); got != "" {
		t.Errorf("tail of nothing = %q", got)
	}
}

func TestAttachTimes(t *testing.T) {
	t0 := time.Now()
	att := map[int]pxproc.Iface{
		9:  {Name: "calib000001", Index: 9, At: t0},
		10: {Name: "calib000002", Index: 10, At: t0.Add(time.Second)},
		11: {Name: "caliX", Index: 11, At: t0.Add(2 * time.Second)},
	}
	if at, ok := attachTime(att, "calib000002"); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Errorf("attachTime = %v, %v", at, ok)
	}
	if _, ok := attachTime(att, "calib"); ok {
		t.Error("attachTime of a prefix: found")
	}
	if got := lastAttach(att, "calib"); !got.Equal(t0.Add(time.Second)) {
		t.Errorf("lastAttach(calib) = %v", got)
	}
	if got := lastAttach(att, "cali"); !got.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("lastAttach(cali) = %v", got)
	}
	if got := lastAttach(att, "nothing"); !got.IsZero() {
		t.Errorf("lastAttach(nothing) = %v", got)
	}
}

func TestParseSSDrops(t *testing.T) {
	out := `Netid Recv-Q Send-Q Local Address:Port Peer Address:PortProcess
p_raw 212992 0             [2054]:cali2c7032f0518             *     users:(("pxresp",pid=18229,fd=8)) skmem:(r212992,rb212992,t0,tb212992,f0,w0,o632,bl0,d185645)
p_raw 0      0             [2054]:calib000001             *     users:(("pxresp",pid=18229,fd=9)) skmem:(r0,rb212992,t0,tb212992,f0,w0,o632,bl0,d5)
p_raw 0      0             [2054]:cali9             *     users:(("other",pid=182290,fd=9)) skmem:(r0,rb212992,t0,tb212992,f0,w0,o632,bl0,d7)
`
	d, n := parseSSDrops(out, 18229)
	if d != 185650 || n != 2 {
		t.Errorf("parseSSDrops = %d over %d sockets, want 185650 over 2", d, n)
	}
	if d, n := parseSSDrops("", 1); d != 0 || n != 0 {
		t.Error("drops in empty output")
	}
}
