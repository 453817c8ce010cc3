package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pxresp/pxresp/internal/test/procstat"
)

// What the bench reads about the pxresp process from /proc.

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
	UTicks   uint64 // utime alone: time in user mode
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
	u, st, err := procstat.ParseStatTimes(string(b))
	if err != nil {
		return s, err
	}
	s.Ticks, s.UTicks = u+st, u
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil {
		return s, err
	}
	for _, t := range tasks {
		status, err := os.ReadFile(filepath.Join(t, "status"))
		if err != nil {
			continue
		}
		v, ok1 := procstat.StatusField(string(status), "voluntary_ctxt_switches")
		nv, ok2 := procstat.StatusField(string(status), "nonvoluntary_ctxt_switches")
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
