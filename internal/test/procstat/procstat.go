// Package procstat reads figures of another process from /proc: CPU time,
// fields of its status file, its file descriptors and sockets, and its
// child. Tests, the bench and the soak use it to watch the pxresp process
// they started.
package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TicksPerSecond is USER_HZ, the unit of utime and stime: 100 on every Linux
// architecture Go supports.
const TicksPerSecond = 100

// CPUTicks returns utime+stime of process pid (all its threads), in ticks.
func CPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	u, s, err := ParseStatTimes(string(b))
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + s, nil
}

// ParseStatTimes returns utime and stime (fields 14 and 15, in ticks) from
// the text of a /proc stat file. The command name (field 2) may contain
// spaces and parentheses, so fields are counted after the last ')'.
func ParseStatTimes(stat string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14 -> f[11], stime f[12].
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stat: %d fields after the command", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stat utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stat stime: %w", err)
	}
	return utime, stime, nil
}

// Status returns the numbers of the given keys of /proc/PID/status, such as
// "Threads" and "VmRSS" (in kB). A key that is missing is an error.
func Status(pid int, keys ...string) ([]uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	vals := make([]uint64, len(keys))
	for i, k := range keys {
		v, ok := StatusField(string(b), k)
		if !ok {
			return nil, fmt.Errorf("/proc/%d/status: no %s", pid, k)
		}
		vals[i] = v
	}
	return vals, nil
}

// StatusField returns the first number of the line "key:" in the text of a
// /proc status file ("VmRSS:	  1234 kB" -> 1234).
func StatusField(status, key string) (uint64, bool) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}

// FDs returns how many file descriptors process pid has open, and the inode
// numbers of those that are sockets ("socket:[N]"). An fd closed while it
// is being read is skipped.
func FDs(pid int) (fds int, sockets []string, err error) {
	fds, sockets, _, err = readFDs(pid)
	return fds, sockets, err
}

// BPF counts a process's fds for BPF objects, by kind: links (a tc or XDP
// attachment held by the fd), maps and programs.
type BPF struct {
	Links, Maps, Progs int
}

// readFDs is FDs, and the process's BPF objects.
func readFDs(pid int) (fds int, sockets []string, bpf BPF, err error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, BPF{}, err
	}
	for _, e := range ents {
		dst, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(dst, "socket:["); ok {
			sockets = append(sockets, strings.TrimSuffix(ino, "]"))
		}
		switch dst { // the kernel's names for them (anon_inode_getfile)
		case "anon_inode:bpf_link":
			bpf.Links++
		case "anon_inode:bpf-map":
			bpf.Maps++
		case "anon_inode:bpf-prog":
			bpf.Progs++
		}
	}
	return len(ents), sockets, bpf, nil
}

// Snapshot is what a process holds, read from /proc.
type Snapshot struct {
	FDs     int         // entries of /proc/PID/fd
	Sockets int         // of those, sockets (packet, netlink, ...)
	Threads int         // Threads: of /proc/PID/status
	RSSKB   int         // VmRSS: of /proc/PID/status, in kB
	Packet  map[int]int // ifindex -> its AF_PACKET sockets bound there
	BPF     BPF         // of the fds, BPF links, maps and programs
}

// Snap reads the fds, sockets, threads and RSS of process pid, and maps its
// AF_PACKET sockets to the interfaces they are bound to: the inode of each
// socket fd is looked up in /proc/PID/net/packet (the packet sockets of the
// process's network namespace, with their ifindex).
func Snap(pid int) (Snapshot, error) {
	fds, socks, bpf, err := readFDs(pid)
	if err != nil {
		return Snapshot{}, err
	}
	v, err := Status(pid, "Threads", "VmRSS")
	if err != nil {
		return Snapshot{}, err
	}
	pk, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/packet", pid))
	if err != nil {
		return Snapshot{}, err
	}
	packet, err := PacketSockets(string(pk), socks)
	if err != nil {
		return Snapshot{}, fmt.Errorf("/proc/%d/net/packet: %w", pid, err)
	}
	return Snapshot{FDs: fds, Sockets: len(socks), Threads: int(v[0]), RSSKB: int(v[1]), Packet: packet, BPF: bpf}, nil
}

func (s Snapshot) String() string {
	return fmt.Sprintf("%d fds (%d sockets, %d AF_PACKET; BPF: %d links, %d maps, %d programs), %d threads, RSS %d kB",
		s.FDs, s.Sockets, s.PacketSockets(), s.BPF.Links, s.BPF.Maps, s.BPF.Progs, s.Threads, s.RSSKB)
}

// PacketSockets returns how many AF_PACKET sockets the snapshot holds.
func (s Snapshot) PacketSockets() int {
	n := 0
	for _, c := range s.Packet {
		n += c
	}
	return n
}

// PacketSockets counts, by ifindex, the sockets of a /proc net/packet
// text (sk RefCnt Type Proto Iface R Rmem User Inode) whose inodes are
// among inodes.
func PacketSockets(netPacket string, inodes []string) (map[int]int, error) {
	mine := make(map[string]bool, len(inodes))
	for _, ino := range inodes {
		mine[ino] = true
	}
	m := make(map[int]int)
	lines := strings.Split(netPacket, "\n")
	for _, line := range lines[min(1, len(lines)):] {
		f := strings.Fields(line)
		if len(f) < 9 || !mine[f[8]] {
			continue
		}
		idx, err := strconv.Atoi(f[4])
		if err != nil {
			return nil, fmt.Errorf("bad line %q", line)
		}
		m[idx]++
	}
	return m, nil
}

// Child returns the only child of process pid (the program a forking
// wrapper such as strace started); another number of children is an error.
func Child(pid int) (int, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		return 0, err
	}
	var kids []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				kids = append(kids, n)
			}
		}
	}
	if len(kids) != 1 {
		return 0, fmt.Errorf("process %d has children %v, want one", pid, kids)
	}
	return kids[0], nil
}

// Comm returns the command name of process pid (/proc/PID/comm).
func Comm(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b)), err
}
