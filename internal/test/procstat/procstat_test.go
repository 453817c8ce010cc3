package procstat

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pxresp/pxresp/internal/test/privtest"
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

func TestPacketSockets(t *testing.T) {
	text := `sk               RefCnt Type Proto  Iface R Rmem   User   Inode
ffff9b2c0a1b2000 3      3    0806   7     1 0      0      41001
ffff9b2c0a1b3000 3      3    0806   7     1 0      0      41002
ffff9b2c0a1b4000 3      3    0806   9     1 0      0      41003
ffff9b2c0a1b5000 3      3    0806   9     1 0      0      51000
`
	m, err := PacketSockets(text, []string{"41001", "41002", "41003", "99"})
	if err != nil || len(m) != 2 || m[7] != 2 || m[9] != 1 {
		t.Errorf("PacketSockets = %v, %v; want map[7:2 9:1]", m, err)
	}
	if m, err := PacketSockets("", nil); err != nil || len(m) != 0 {
		t.Errorf("empty: %v, %v", m, err)
	}
	if _, err := PacketSockets("head\nffff 3 3 0806 x 1 0 0 41001\n", []string{"41001"}); err == nil {
		t.Error("bad ifindex: no error")
	}
	s := Snapshot{FDs: 9, Sockets: 4, Threads: 7, RSSKB: 5000, Packet: m}
	s.BPF = BPF{Links: 2, Maps: 5, Progs: 1}
	if s.PacketSockets() != 3 || s.String() != "9 fds (4 sockets, 3 AF_PACKET; BPF: 2 links, 5 maps, 1 programs), 7 threads, RSS 5000 kB" {
		t.Errorf("String = %q", s.String())
	}
}

func TestChild(t *testing.T) {
	if _, err := Child(os.Getpid()); err == nil {
		t.Fatal("a process without children: no error")
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	pid, err := Child(os.Getpid())
	if err != nil || pid != cmd.Process.Pid {
		t.Errorf("Child = %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	// The child has exec'd sleep once its comm says so.
	var comm string
	for range 200 {
		if comm, err = Comm(pid); err != nil || comm == "sleep" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if comm != "sleep" {
		t.Errorf("Comm = %q, %v; want sleep", comm, err)
	}
}

func TestSnapSelf(t *testing.T) {
	s, err := Snap(os.Getpid())
	if err != nil || s.FDs == 0 || s.Threads == 0 || s.RSSKB == 0 {
		t.Errorf("Snap = %v, %v", s, err)
	}
}

// TestSnapCountsBPF: a BPF map this process creates shows in its snapshot,
// and is gone from it once closed.
func TestSnapCountsBPF(t *testing.T) {
	privtest.Require(t)
	before, err := Snap(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	with, err := Snap(os.Getpid())
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	after, err := Snap(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if with.BPF.Maps != before.BPF.Maps+1 || after.BPF != before.BPF || with.BPF.Links != before.BPF.Links || with.BPF.Progs != before.BPF.Progs {
		t.Errorf("BPF fds before %+v, with a map %+v, after closing it %+v", before.BPF, with.BPF, after.BPF)
	}
}
