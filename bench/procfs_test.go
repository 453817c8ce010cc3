package main

import (
	"strings"
	"testing"
	"time"
)

func TestLogAttrs(t *testing.T) {
	l := `time=2025-01-01T00:00:00Z level=INFO msg=attach iface=cali0123456789a ifindex=7 mac=ee:ee:ee:ee:ee:ee up=true`
	if logMsg(l) != "attach" || logAttr(l, "iface") != "cali0123456789a" || logAttr(l, "ifindex") != "7" {
		t.Errorf("msg %q iface %q", logMsg(l), logAttr(l, "iface"))
	}
	if logAttr(l, "if") != "" {
		t.Error("prefix of a key matched")
	}
	if got := logAttr(`level=WARN msg="link changed" iface="calia"`, "iface"); got != "calia" {
		t.Errorf("quoted value: %q", got)
	}
}

func TestPxProcStderr(t *testing.T) {
	p := &pxProc{attached: map[string]time.Time{}, changed: make(chan struct{})}
	ch := p.changed
	// Lines may arrive in pieces.
	for _, chunk := range []string{
		"level=INFO msg=start iface=[cali*]\nlevel=INFO msg=att",
		"ach iface=calib000001 ifindex=9 mac=ee:ee:ee:ee:ee:ee\n",
		"level=INFO msg=attach iface=calib000002 ifindex=10\nlevel=INFO msg=attach iface=caliX ifindex=11\n",
		"level=INFO msg=detach iface=calib000002 ifindex=10\nlevel=ERROR msg=oops\n",
	} {
		if _, err := p.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.attachedCount("calib"); n != 1 {
		t.Errorf("attached calib* = %d, want 1", n)
	}
	if n := p.attachedCount("cali"); n != 2 {
		t.Errorf("attached cali* = %d, want 2", n)
	}
	if _, ok := p.attachTime("calib000001"); !ok {
		t.Error("no attach time")
	}
	select {
	case <-ch:
	default:
		t.Error("attach did not signal")
	}
	if got := p.lastLines(); !strings.Contains(got, "msg=oops") || strings.Contains(got, "msg=attach") {
		t.Errorf("tail %q", got)
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
