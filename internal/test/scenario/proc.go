package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// Proc is a process (pxresp, or a stand-in) running in a namespace, with
// its stdout and stderr collected line by line.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited and its output is read

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

// Start runs `ip netns exec NS bin args...` (ip execs bin: same pid) in its
// own process group, so that a Ctrl-C on the terminal reaches only the
// caller, which stops the process itself; it gets SIGTERM if the caller's
// thread dies. onLine, if not nil, sees every output line as it arrives
// (from another goroutine).
func Start(ns *topo.NS, bin string, args []string, onLine func(string)) (*Proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s in %s: %w", bin, ns.Name, err)
	}
	w.Close()
	p := &Proc{cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(line)
			}
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		r.Close()
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited (and its output is read).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit code once Exited, -1 before or if killed by a signal.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Lines returns the output lines so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// WaitFor waits at most timeout for an output line that match accepts and
// returns it, or "" and false (also when the process exits or ctx ends
// first).
func (p *Proc) WaitFor(ctx context.Context, timeout time.Duration, match func(line string) bool) (string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines, p.changed
		p.mu.Unlock()
		for _, l := range lines[seen:] {
			if match(l) {
				return l, true
			}
		}
		seen = len(lines)
		select {
		case <-changed:
		case <-p.done:
			// The last lines may have come with the exit.
			for _, l := range p.Lines()[seen:] {
				if match(l) {
					return l, true
				}
			}
			return "", false
		case <-timer.C:
			return "", false
		case <-ctx.Done():
			return "", false
		}
	}
}

// LogLine returns a matcher for a text log line (slog's key=value format)
// that has every one of the given key=value fields, e.g.
// LogLine("msg=attach", "iface=cali0").
func LogLine(fields ...string) func(string) bool {
	return func(line string) bool {
		have := strings.Fields(line)
		for _, f := range fields {
			if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, f) }) {
				return false
			}
		}
		return true
	}
}

// Attached matches pxresp's log line for attaching ifname.
func Attached(ifname string) func(string) bool { return LogLine("msg=attach", "iface="+ifname) }

// Detached matches pxresp's log line for detaching ifname.
func Detached(ifname string) func(string) bool { return LogLine("msg=detach", "iface="+ifname) }

// Stop sends SIGTERM (unless the process has exited) and waits at most
// wait, then SIGKILLs it. It returns the exit code (-1 if killed by a
// signal) and how long it took to exit.
func (p *Proc) Stop(wait time.Duration) (int, time.Duration, error) {
	t0 := time.Now()
	if !p.Exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return -1, 0, fmt.Errorf("SIGTERM: %w", err)
		}
	}
	var err error
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("did not exit within %v: killed", wait)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(t0), err
}
