package daemon

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// dropPrivileges keeps CAP_NET_RAW and gives up every other capability, for
// good. The daemon calls it once, after its initial interfaces are
// attached; it still needs CAP_NET_RAW for the AF_PACKET socket of every
// interface that appears later (on the eBPF datapath, those of route-mode
// rules). The eBPF datapath needs nothing more once its program is loaded:
// the kernel checks CAP_BPF and CAP_NET_ADMIN when a program is loaded and
// its maps are created, not when the program's file descriptor attaches it
// to an interface (a tcx link) nor when a map is updated through its own.
//
// Afterwards, on every thread of the process: the permitted and effective
// sets are {CAP_NET_RAW} (or empty, if it was not held), the inheritable and
// ambient sets are empty, the bounding set is {CAP_NET_RAW} if CAP_SETPCAP
// was held (without it the kernel refuses to shrink it), and no_new_privs is
// set, so no execve can regain anything. The user ID does not change.
//
// A process that holds nothing but CAP_NET_RAW already (a non-root user
// with the ambient capability, as the systemd unit and the DaemonSet start
// it) is left alone. It logs one info line either way, with the
// capabilities before and after.
//
// The capability calls go through libcap's psx mechanism, which repeats them
// on every OS thread: Linux keeps capabilities per thread, and the Go
// runtime runs goroutines on all of them.
func dropPrivileges(log *slog.Logger) error {
	before, err := readPrivileges()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(before.permitted, func(v cap.Value) bool { return v != cap.NET_RAW }) {
		log.Info("privileges already minimal", "caps", before)
		return nil
	}
	keep := []cap.Value{}
	if slices.Contains(before.permitted, cap.NET_RAW) {
		keep = append(keep, cap.NET_RAW)
	}
	// Inheritable and ambient sets emptied, and, with CAP_SETPCAP, the
	// bounding set cut down to what is kept. This goes first: it needs
	// CAP_SETPCAP, which the next step gives up.
	iab := cap.NewIAB()
	setpcap := slices.Contains(before.permitted, cap.SETPCAP)
	if setpcap {
		for v := range cap.MaxBits() {
			if !slices.Contains(keep, v) {
				if err := iab.SetVector(cap.Bound, true, v); err != nil {
					return fmt.Errorf("dropping privileges: %w", err)
				}
			}
		}
	}
	if err := iab.SetProc(); err != nil {
		return fmt.Errorf("dropping privileges: inheritable, ambient and bounding sets: %w", err)
	}
	set := cap.NewSet()
	for _, f := range []cap.Flag{cap.Permitted, cap.Effective} {
		if err := set.SetFlag(f, true, keep...); err != nil {
			return fmt.Errorf("dropping privileges: %w", err)
		}
	}
	if err := set.SetProc(); err != nil {
		return fmt.Errorf("dropping privileges: setting capabilities %q: %w", set, err)
	}
	if _, err := cap.Prctlw(unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
		return fmt.Errorf("dropping privileges: PR_SET_NO_NEW_PRIVS: %w", err)
	}

	after, err := readPrivileges()
	if err != nil {
		return err
	}
	want := privileges{permitted: keep, effective: keep, bounding: before.bounding, noNewPrivs: true}
	if setpcap {
		want.bounding = keep
	}
	if !after.equal(want) {
		return fmt.Errorf("dropping privileges: capabilities are %v, want %v", after, want)
	}
	log.Info("privileges dropped", "before", before, "after", after)
	return nil
}

// privileges are the capability sets of the calling thread.
type privileges struct {
	permitted, effective, inheritable, ambient, bounding []cap.Value
	noNewPrivs                                           bool
}

func readPrivileges() (privileges, error) {
	var p privileges
	set := cap.GetProc()
	for v := range cap.MaxBits() {
		for _, f := range []struct {
			flag cap.Flag
			to   *[]cap.Value
		}{{cap.Permitted, &p.permitted}, {cap.Effective, &p.effective}, {cap.Inheritable, &p.inheritable}} {
			on, err := set.GetFlag(f.flag, v)
			if err != nil {
				return p, fmt.Errorf("reading capabilities: %w", err)
			}
			if on {
				*f.to = append(*f.to, v)
			}
		}
		if on, err := cap.GetAmbient(v); err != nil {
			return p, fmt.Errorf("reading the ambient capabilities: %w", err)
		} else if on {
			p.ambient = append(p.ambient, v)
		}
		if on, err := cap.GetBound(v); err != nil {
			return p, fmt.Errorf("reading the bounding set: %w", err)
		} else if on {
			p.bounding = append(p.bounding, v)
		}
	}
	n, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return p, fmt.Errorf("reading no_new_privs: %w", err)
	}
	p.noNewPrivs = n == 1
	return p, nil
}

func (p privileges) equal(q privileges) bool {
	return slices.Equal(p.permitted, q.permitted) && slices.Equal(p.effective, q.effective) &&
		slices.Equal(p.inheritable, q.inheritable) && slices.Equal(p.ambient, q.ambient) &&
		slices.Equal(p.bounding, q.bounding) && p.noNewPrivs == q.noNewPrivs
}

// capList names the capabilities: "cap_net_raw,cap_setpcap", "none",
// "all", or, for a set with most of them, "all but cap_sys_resource".
func capList(vs []cap.Value) string {
	n := int(cap.MaxBits())
	switch {
	case len(vs) == 0:
		return "none"
	case len(vs) == n:
		return "all"
	}
	var names []string
	if len(vs) > n/2 {
		for v := range cap.MaxBits() {
			if !slices.Contains(vs, v) {
				names = append(names, v.String())
			}
		}
		return "all but " + strings.Join(names, ",")
	}
	for _, v := range vs {
		names = append(names, v.String())
	}
	return strings.Join(names, ",")
}

// LogValue logs the sets as a group: permitted=... effective=...
func (p privileges) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("permitted", capList(p.permitted)),
		slog.String("effective", capList(p.effective)),
		slog.String("inheritable", capList(p.inheritable)),
		slog.String("ambient", capList(p.ambient)),
		slog.String("bounding", capList(p.bounding)),
		slog.Bool("no_new_privs", p.noNewPrivs),
	)
}

func (p privileges) String() string {
	return fmt.Sprintf("permitted=%s effective=%s inheritable=%s ambient=%s bounding=%s no_new_privs=%v",
		capList(p.permitted), capList(p.effective), capList(p.inheritable), capList(p.ambient), capList(p.bounding), p.noNewPrivs)
}
