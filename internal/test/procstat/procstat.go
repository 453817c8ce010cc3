// Package procstat reads figures of another process from /proc: CPU time,
// fields of its status file, and its file descriptors and sockets. Tests,
// the bench and the soak use it to watch the pxresp process they started.
package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
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
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, nil, err
	}
	for _, e := range ents {
		dst, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(dst, "socket:["); ok {
			sockets = append(sockets, strings.TrimSuffix(ino, "]"))
		}
	}
	return len(ents), sockets, nil
}
