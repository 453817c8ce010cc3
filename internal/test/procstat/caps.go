package procstat

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Capability masks the tests compare against.
const (
	NetRawMask = 1 << unix.CAP_NET_RAW // 0x2000
	SetpcapBit = 1 << unix.CAP_SETPCAP
	// NetAdminMask is CAP_NET_ADMIN's bit.
	NetAdminMask = 1 << unix.CAP_NET_ADMIN
)

// AsNobody is the setpriv prefix that runs a command as nobody (65534).
var AsNobody = []string{"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"}

// CapLines picks the capability lines (CapInh, CapPrm, CapEff, CapBnd,
// CapAmb, NoNewPrivs) out of a /proc status file.
func CapLines(status string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(l, ":")
		switch k {
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs":
			if ok {
				m[k] = strings.TrimSpace(v)
			}
		}
	}
	return m
}

// TaskCaps reads the capability lines of every thread of process pid
// ("self" or a number), by thread id.
func TaskCaps(pid string) (map[string]map[string]string, error) {
	dir := filepath.Join("/proc", pid, "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := map[string]map[string]string{}
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "status")); err == nil {
			m[e.Name()] = CapLines(string(b))
		} // else the thread ended
	}
	return m, nil
}

// Caps are expected capability lines, as numbers.
type Caps struct{ Inh, Prm, Eff, Bnd, Amb, NoNewPrivs uint64 }

// CheckTasks requires every task (from TaskCaps) to show exactly want, and
// that there are several.
func CheckTasks(t testing.TB, tasks map[string]map[string]string, want Caps) {
	t.Helper()
	if len(tasks) < 2 {
		t.Errorf("%d threads, want several", len(tasks))
	}
	for tid, m := range tasks {
		for _, c := range []struct {
			key  string
			want uint64
			base int
		}{
			{"CapInh", want.Inh, 16}, {"CapPrm", want.Prm, 16}, {"CapEff", want.Eff, 16},
			{"CapBnd", want.Bnd, 16}, {"CapAmb", want.Amb, 16}, {"NoNewPrivs", want.NoNewPrivs, 10},
		} {
			got, err := strconv.ParseUint(m[c.key], c.base, 64)
			if err != nil || got != c.want {
				t.Errorf("thread %s: %s %q, want %#x", tid, c.key, m[c.key], c.want)
			}
		}
	}
}

// AllCaps is the calling process's own bounding set: what a child starts
// with. It is every capability of the kernel unless the machine holds back
// some.
func AllCaps(t testing.TB) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(CapLines(string(b))["CapBnd"], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
