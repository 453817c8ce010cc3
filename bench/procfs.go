package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What the bench reads about the pxresp process from /proc.

// parseStatTimes returns utime and stime (fields 14 and 15, clock ticks)
// from the text of /proc/PID/stat. The command name (field 2) may contain
// spaces and parentheses, so fields are counted after the last ')'.
func parseStatTimes(stat string) (utime, stime uint64, err error) {
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

// statusField returns the first number of the line "key:" in the text of a
// /proc status file ("VmRSS:	  1234 kB" -> 1234).
func statusField(status, key string) (uint64, bool) {
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

// parseSchedstat returns the first field of /proc/PID/task/TID/schedstat:
// time spent on the CPU, in nanoseconds.
func parseSchedstat(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, errors.New("schedstat: empty")
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// procSnap is a snapshot of a process's CPU use and context switches.
type procSnap struct {
	Ticks    uint64 // utime+stime of the process (all threads), clock ticks
	CPUNs    uint64 // sum over its threads of schedstat run time, ns
	Switches uint64 // sum over its threads of voluntary+nonvoluntary ctxt switches
	Threads  int
}

// readProc takes a snapshot of pid. Threads that exit between the listing
// and the reads are skipped (their switches are then missing from the sum).
func readProc(pid int) (procSnap, error) {
	var s procSnap
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	u, st, err := parseStatTimes(string(b))
	if err != nil {
		return s, err
	}
	s.Ticks = u + st
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil {
		return s, err
	}
	for _, t := range tasks {
		status, err := os.ReadFile(filepath.Join(t, "status"))
		if err != nil {
			continue
		}
		v, ok1 := statusField(string(status), "voluntary_ctxt_switches")
		nv, ok2 := statusField(string(status), "nonvoluntary_ctxt_switches")
		if !ok1 || !ok2 {
			continue
		}
		s.Switches += v + nv
		s.Threads++
		if ss, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if ns, err := parseSchedstat(string(ss)); err == nil {
				s.CPUNs += ns
			}
		}
	}
	return s, nil
}

// readRSSkB returns VmRSS of pid in kB.
func readRSSkB(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	v, ok := statusField(string(b), "VmRSS")
	if !ok {
		return 0, errors.New("no VmRSS in status")
	}
	return v, nil
}

// clockTicks is USER_HZ, the unit of utime and stime: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// parseSSDrops sums the drop counters (skmem d) of the packet sockets that
// `ss -0 -m -n -p` lists for process pid: frames the kernel dropped
// because the socket's receive buffer was full.
func parseSSDrops(out string, pid int) (drops uint64, sockets int) {
	owner := fmt.Sprintf(",pid=%d,", pid)
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, owner) {
			continue
		}
		_, mem, ok := strings.Cut(l, "skmem:(")
		if !ok {
			continue
		}
		mem, _, _ = strings.Cut(mem, ")")
		for _, f := range strings.Split(mem, ",") {
			if v, ok := strings.CutPrefix(f, "d"); ok {
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					drops += n
					sockets++
				}
			}
		}
	}
	return drops, sockets
}
