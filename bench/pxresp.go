package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// The pxresp process the bench runs (pxproc), in the host namespace:
//
//	ip netns exec HOST [taskset -c 0] BIN --iface 'cali*' --gw 169.254.1.1 [--rate-limit 0] --log-level LEVEL
//
// `ip netns exec` and taskset exec into the next program, so the PID is
// pxresp's (checked through /proc/PID/exe). The bench only ever signals
// this PID. The time of an attach is when its log line was read.

// startPxresp starts pxresp in the host namespace with the command line
// args, pinned to CPU 0 with taskset when pinned. Most sections turn its
// per-interface reply limit off (--rate-limit 0): the kernel has none, and
// the floods measure how fast pxresp can answer, not the limit.
func startPxresp(bin string, host *topo.NS, pinned bool, args ...string) (*pxproc.Proc, error) {
	var wrapper []string
	if pinned {
		wrapper = []string{"taskset", "-c", "0"}
	}
	p, err := pxproc.Start(host, pxproc.Options{Bin: bin, Wrapper: wrapper, Args: args})
	if err != nil {
		return nil, fmt.Errorf("start pxresp: %w", err)
	}
	if err := p.WaitExec(5 * time.Second); err != nil {
		_, _, serr := p.Stop(5 * time.Second)
		return nil, errors.Join(err, serr)
	}
	return p, nil
}

// lastLines returns the last 20 lines of pxresp's log, but for attach and
// detach lines, for error messages.
func lastLines(p *pxproc.Proc) string { return tail(p.Lines(), 20) }

// tail returns the last n of the lines but for attach and detach lines.
func tail(ls []pxproc.Line, n int) string {
	var tail []string
	for i := len(ls) - 1; i >= 0 && len(tail) < n; i-- {
		if m := ls[i].Attr("msg"); m != "attach" && m != "detach" {
			tail = append(tail, ls[i].Text)
		}
	}
	var b strings.Builder
	for i := len(tail) - 1; i >= 0; i-- {
		b.WriteString(tail[i])
		if i > 0 {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// waitAttached waits until at least n interfaces with the prefix are
// attached, for at most timeout. Needs --log-level info or debug.
func waitAttached(ctx context.Context, p *pxproc.Proc, prefix string, n int, timeout time.Duration) error {
	err := p.WaitUntil(ctx, timeout, func() bool { return p.NumAttached(prefix) >= n })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%d/%d interfaces %s* attached: %w: %s", p.NumAttached(prefix), n, prefix, err, lastLines(p))
	}
	return err
}

// attachTime returns when name was attached (of pxproc.Proc.Attached).
func attachTime(att map[int]pxproc.Iface, name string) (time.Time, bool) {
	for _, f := range att {
		if f.Name == name {
			return f.At, true
		}
	}
	return time.Time{}, false
}

// lastAttach returns the latest attach time among the attached interfaces
// (of pxproc.Proc.Attached) with prefix.
func lastAttach(att map[int]pxproc.Iface, prefix string) time.Time {
	var last time.Time
	for _, f := range att {
		if strings.HasPrefix(f.Name, prefix) && f.At.After(last) {
			last = f.At
		}
	}
	return last
}

// socketDrops returns the sum of the drop counters of pxresp's packet
// sockets, read with ss in the host namespace.
func socketDrops(ctx context.Context, p *pxproc.Proc, host *topo.NS) (uint64, error) {
	out, err := host.Exec(ctx, "ss", "-0", "-m", "-n", "-p")
	if err != nil {
		return 0, err
	}
	d, n := parseSSDrops(out, p.Pid())
	if n == 0 {
		return 0, errors.New("ss shows no packet socket of pxresp")
	}
	return d, nil
}
