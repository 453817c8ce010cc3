package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// pxProc is one pxresp process the bench started, in the host namespace:
//
//	[taskset -c 0] ip netns exec HOST BIN --iface 'cali*' --gw 169.254.1.1 --log-level LEVEL
//
// taskset and `ip netns exec` exec into the next program, so the PID is
// pxresp's (checked through /proc/PID/comm). The bench only ever signals this
// PID. It follows pxresp's stderr: the time of every `msg=attach` line by
// interface name, and the last lines for error messages.
type pxProc struct {
	cmd    *exec.Cmd
	pid    int
	pinned bool
	start  time.Time

	mu       sync.Mutex
	attached map[string]time.Time // iface -> time its attach line was read
	detached int
	tail     []string
	partial  []byte
	changed  chan struct{} // closed and replaced at every attach line

	exited  chan struct{}
	waitErr error
}

// Write is pxresp's stderr, split into lines.
func (p *pxProc) Write(b []byte) (int, error) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.partial[:i]), now)
		p.partial = p.partial[i+1:]
	}
	if len(p.partial) > 1<<16 { // a line that never ends
		p.line(string(p.partial), now)
		p.partial = p.partial[:0]
	}
	return len(b), nil
}

// line handles one stderr line (p.mu held).
func (p *pxProc) line(l string, now time.Time) {
	switch logMsg(l) {
	case "attach":
		if name := logAttr(l, "iface"); name != "" {
			if _, ok := p.attached[name]; !ok {
				p.attached[name] = now
			}
			close(p.changed)
			p.changed = make(chan struct{})
		}
		return
	case "detach":
		if name := logAttr(l, "iface"); name != "" {
			delete(p.attached, name)
			p.detached++
		}
		return
	}
	p.tail = append(p.tail, l)
	if len(p.tail) > 20 {
		p.tail = p.tail[len(p.tail)-20:]
	}
}

// logMsg returns the msg of a slog text line (`... msg=attach iface=...`).
func logMsg(l string) string { return logAttr(l, "msg") }

// logAttr returns the value of key=value in a slog text line (unquoted
// values only, which is what interface names and messages without spaces
// are).
func logAttr(l, key string) string {
	for _, f := range strings.Fields(l) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// launcher starts child processes from one OS thread that lives as long as
// the bench: Pdeathsig (SIGKILL to pxresp if the bench dies) is tied to the
// thread that forked, and Go ends other threads at will.
var launcher = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread() // never unlocked: this thread only launches
		for fn := range ch {
			fn()
		}
	}()
	return ch
})

// startPxresp starts pxresp in the host namespace, pinned to CPU 0 with
// taskset when pinned. Its per-interface reply limit is off: the kernel has
// none, and the floods measure how fast pxresp can answer, not the limit.
func startPxresp(bin string, host *topo.NS, pinned bool, level string) (*pxProc, error) {
	args := []string{"ip", "netns", "exec", host.Name, bin, "--iface", "cali*", "--gw", topo.Gateway.String(),
		"--rate-limit", "0", "--log-level", level}
	if pinned {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	p := &pxProc{pinned: pinned, attached: map[string]time.Time{}, changed: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout = p
	p.cmd.Stderr = p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // Ctrl-C in the terminal goes to the bench, which stops pxresp itself
		Pdeathsig: syscall.SIGKILL, // if the bench is killed
	}
	errc := make(chan error, 1)
	launcher() <- func() { errc <- p.cmd.Start() }
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start pxresp: %w", err)
	}
	p.pid = p.cmd.Process.Pid
	p.start = time.Now()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	// Wait until the PID is pxresp itself (taskset and ip have exec'd).
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid))
		if err == nil && strings.TrimSpace(string(b)) == "pxresp" {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("pxresp exited at start (%v): %s", p.waitErr, p.lastLines())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) || i > 5000 {
			_ = p.stop()
			return nil, fmt.Errorf("pid %d is still %q after 5s, not pxresp", p.pid, strings.TrimSpace(string(b)))
		}
	}
}

func (p *pxProc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// alive reports whether the process is still running.
func (p *pxProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process it started, waits up to 5 s, then
// SIGKILL and waits up to 5 s more.
func (p *pxProc) stop() error {
	if p == nil || !p.alive() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
		return errors.New("pxresp did not stop within 5s of SIGTERM: killed")
	case <-time.After(5 * time.Second):
		return fmt.Errorf("pxresp pid %d survives SIGKILL", p.pid)
	}
}

// attachedCount returns how many attached interfaces have a name with the
// given prefix.
func (p *pxProc) attachedCount(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for name := range p.attached {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	return n
}

// attachTime returns when name was attached.
func (p *pxProc) attachTime(name string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.attached[name]
	return t, ok
}

// lastAttach returns the latest attach time among names with prefix.
func (p *pxProc) lastAttach(prefix string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for name, t := range p.attached {
		if strings.HasPrefix(name, prefix) && t.After(last) {
			last = t
		}
	}
	return last
}

// waitAttached waits until at least n interfaces with the prefix are
// attached, for at most timeout. Needs --log-level info or debug.
func (p *pxProc) waitAttached(ctx context.Context, prefix string, n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		got := p.attachedCount(prefix)
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-p.exited:
			return fmt.Errorf("pxresp exited (%v) with %d/%d attached: %s", p.waitErr, got, n, p.lastLines())
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%d/%d interfaces %s* attached after %v", got, n, prefix, timeout)
		}
	}
}

// snap reads the process's CPU and switches.
func (p *pxProc) snap() (procSnap, error) { return readProc(p.pid) }

// socketDrops returns the sum of the drop counters of pxresp's packet
// sockets, read with ss in the host namespace.
func (p *pxProc) socketDrops(ctx context.Context, host *topo.NS) (uint64, error) {
	out, err := host.Exec(ctx, "ss", "-0", "-m", "-n", "-p")
	if err != nil {
		return 0, err
	}
	d, n := parseSSDrops(out, p.pid)
	if n == 0 {
		return 0, errors.New("ss shows no packet socket of pxresp")
	}
	return d, nil
}
