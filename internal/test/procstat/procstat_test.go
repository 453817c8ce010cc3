package procstat

import (
	"net"
	"os"
	"testing"
)

func TestParseStatTimes(t *testing.T) {
	u, s, err := ParseStatTimes("4242 (px re) sp)) S 1 2 3 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 3 0 123 456 789")
	if err != nil || u != 37 || s != 5 {
		t.Errorf("ParseStatTimes = %d, %d, %v; want 37, 5, nil", u, s, err)
	}
	for _, bad := range []string{"", "4242 no-paren S 1", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 5"} {
		if _, _, err := ParseStatTimes(bad); err == nil {
			t.Errorf("ParseStatTimes(%q): no error", bad)
		}
	}
}

func TestStatusField(t *testing.T) {
	status := "Name:\tpxresp\nThreads:\t7\nVmRSS:\t    5732 kB\nEmpty:\n"
	for _, c := range []struct {
		key  string
		want uint64
		ok   bool
	}{{"Threads", 7, true}, {"VmRSS", 5732, true}, {"Empty", 0, false}, {"Name", 0, false}, {"Missing", 0, false}} {
		if v, ok := StatusField(status, c.key); v != c.want || ok != c.ok {
			t.Errorf("StatusField(%q) = %d, %v; want %d, %v", c.key, v, ok, c.want, c.ok)
		}
	}
}

// The readers, on this test process.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := CPUTicks(pid); err != nil {
		t.Error(err)
	}
	v, err := Status(pid, "Threads", "VmRSS")
	if err != nil || v[0] == 0 || v[1] == 0 {
		t.Errorf("Status = %v, %v", v, err)
	}
	if _, err := Status(pid, "NoSuchKey"); err == nil {
		t.Error("Status of a missing key: no error")
	}
	fds, socks, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fds2, socks2, err := FDs(pid)
	if err != nil || fds2 != fds+1 || len(socks2) != len(socks)+1 {
		t.Errorf("with one more socket: %d fds, %d sockets; before %d, %d (%v)", fds2, len(socks2), fds, len(socks), err)
	}
}
