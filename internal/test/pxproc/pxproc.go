// Package pxproc runs the pxresp binary as a process in a network
// namespace, for the tests, the demo, the bench and the soak.
//
// Start runs `ip netns exec NS [WRAPPER...] BIN ARGS...` in a process group
// of its own (a Ctrl-C reaches only the caller), SIGKILLed if the caller
// dies, and collects its stdout and stderr line by line with the time each
// line arrived. The lines are logfmt, as slog's text handler writes them:
// Line.Attr reads a value, Has and Contains select lines, Wait waits for
// the n-th of them, Count counts them, Attached replays the attach and
// detach lines. Stop sends SIGTERM, then SIGKILL after a bounded wait.
// Only the process that Start started is ever signalled.
//
// For tests, Bin builds cmd/pxresp once per test binary ($PXRESP_TEST_BIN
// names a binary to use instead) and Main removes the build at the end;
// the functions and methods whose names end in T fail the test where the
// others return an error.
package pxproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pxresp/pxresp/internal/test/procstat"
	"github.com/pxresp/pxresp/internal/test/topo"
)

const (
	// maxLine is the longest line kept whole: a longer one is split.
	maxLine = 64 << 10
	// drainWait bounds the wait for the end of the output after the
	// process exited (a process it left behind may hold the pipe).
	drainWait = time.Second
	// killWait bounds the wait for the exit after SIGKILL.
	killWait = 5 * time.Second
	// pollEvery is how often WaitUntil and WaitExec look without a new line.
	pollEvery = 50 * time.Millisecond
)

// Options say what to run.
type Options struct {
	// Bin is the pxresp binary. StartT builds one (Bin) when Bin and
	// Command are empty.
	Bin string
	// Wrapper runs the binary: the command is `Wrapper... Bin Args...`
	// (setpriv, strace, taskset ...). One that execs leaves Pid pxresp's.
	Wrapper []string
	Args    []string
	// Command, if set, is the whole command instead of Wrapper, Bin and
	// Args: for a wrapper that takes the binary in an option of its own
	// (capsh --shell=BIN -- ARGS).
	Command []string
	// Env is added to the environment, which is the caller's without
	// its PXRESP_* variables (Environ).
	Env []string
	// OnLine, if set, sees every line as it arrives (on another goroutine).
	OnLine func(Line)
	// Timeout bounds WaitT; 5 s if zero.
	Timeout time.Duration
}

func (o Options) command() ([]string, error) {
	if len(o.Command) > 0 {
		return o.Command, nil
	}
	if o.Bin == "" {
		return nil, errors.New("pxproc: no binary (Options.Bin)")
	}
	return slices.Concat(o.Wrapper, []string{o.Bin}, o.Args), nil
}

// Proc is a process that Start started, and what it has written so far.
type Proc struct {
	opts Options
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and its output is read
	err  error         // from Wait, once done

	mu       sync.Mutex
	lines    []Line
	attached map[int]Iface
	changed  chan struct{} // closed and replaced at every line and at the end
	ended    bool          // done, seen under mu
}

func newProc(o Options) *Proc {
	return &Proc{opts: o, done: make(chan struct{}), attached: map[int]Iface{}, changed: make(chan struct{})}
}

// launcher starts processes from one OS thread that lives as long as the
// program: Pdeathsig is tied to the thread that forked, and Go ends other
// threads at will.
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

// Start runs the command of o in ns with `ip netns exec` (which execs it in
// place).
func Start(ns *topo.NS, o Options) (*Proc, error) {
	argv, err := o.command()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(Environ(), o.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	launcher() <- func() { errc <- cmd.Start() }
	err = <-errc
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("pxproc: start %s in %s: %w", argv[0], ns.Name, err)
	}
	p := newProc(o)
	p.cmd = cmd
	eof := make(chan struct{})
	go func() {
		p.read(r)
		close(eof)
	}()
	go func() {
		err := cmd.Wait()
		select {
		case <-eof:
		case <-time.After(drainWait):
			r.Close()
			<-eof
		}
		r.Close()
		p.finish(err)
	}()
	return p, nil
}

// Environ is the caller's environment without its PXRESP_* variables:
// the harness's own (PXRESP_PRIVILEGED, ...) are not pxresp's, which
// refuses a PXRESP_* variable it does not know. Options.Env sets pxresp's.
func Environ() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PXRESP_") })
}

// stampReader notes when its last read returned.
type stampReader struct {
	r  io.Reader
	at time.Time
}

func (s *stampReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	s.at = time.Now()
	return n, err
}

// read collects the lines of r until it ends.
func (p *Proc) read(r io.Reader) {
	sr := &stampReader{r: r}
	br := bufio.NewReaderSize(sr, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			p.add(Line{Text: strings.TrimSuffix(string(b), "\n"), At: sr.at})
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (p *Proc) add(l Line) {
	p.mu.Lock()
	p.lines = append(p.lines, l)
	switch l.Attr("msg") {
	case "attach":
		if i, err := strconv.Atoi(l.Attr("ifindex")); err == nil {
			p.attached[i] = Iface{Name: l.Attr("iface"), Index: i, At: l.At}
		}
	case "detach":
		if i, err := strconv.Atoi(l.Attr("ifindex")); err == nil {
			delete(p.attached, i)
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.opts.OnLine != nil {
		p.opts.OnLine(l)
	}
}

// finish records the exit, after the last line.
func (p *Proc) finish(err error) {
	p.err = err
	close(p.done)
	p.mu.Lock()
	p.ended = true
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Pid is the process id: pxresp's own unless a wrapper forks.
func (p *Proc) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Alive reports whether the process has not exited yet (or its output is
// still being read).
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitCode is the exit code once the process has exited: -1 before, or if
// a signal ended it.
func (p *Proc) ExitCode() int {
	if p.Alive() || p.cmd == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// state describes how the process ended, for messages.
func (p *Proc) state() string {
	if p.err != nil {
		return p.err.Error()
	}
	return "exit status 0"
}

// Signal sends sig to the process (and to nothing else: the os.Process
// holds a pidfd).
func (p *Proc) Signal(sig os.Signal) error {
	if !p.Alive() {
		return os.ErrProcessDone
	}
	return p.cmd.Process.Signal(sig)
}

// WaitExit waits at most timeout for the process to exit and returns its
// exit code.
func (p *Proc) WaitExit(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.ExitCode(), nil
	case <-t.C:
		return -1, fmt.Errorf("pxproc: pid %d still running after %v", p.Pid(), timeout)
	}
}

// Stop sends SIGTERM unless the process has exited, waits at most wait,
// then sends SIGKILL and waits at most 5 s more. It returns the exit code
// (-1 if a signal ended it) and how long the exit took; the error says if
// it had to be killed.
func (p *Proc) Stop(wait time.Duration) (code int, took time.Duration, err error) {
	start := time.Now()
	if !p.Alive() {
		return p.ExitCode(), 0, nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return -1, 0, fmt.Errorf("pxproc: SIGTERM to pid %d: %w", p.Pid(), err)
	}
	if code, err := p.WaitExit(wait); err == nil {
		return code, time.Since(start), nil
	}
	if err := p.Kill(); err != nil {
		return -1, time.Since(start), err
	}
	return p.ExitCode(), time.Since(start), fmt.Errorf("pxproc: pid %d did not exit within %v of SIGTERM: killed", p.Pid(), wait)
}

// Kill sends SIGKILL unless the process has exited and waits at most 5 s
// for the exit.
func (p *Proc) Kill() error {
	if !p.Alive() {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pxproc: SIGKILL to pid %d: %w", p.Pid(), err)
	}
	if _, err := p.WaitExit(killWait); err != nil {
		return fmt.Errorf("pxproc: pid %d survives SIGKILL: %w", p.Pid(), err)
	}
	return nil
}

// WaitExec waits at most timeout until the process runs Options.Bin
// itself, that is until the wrappers before it (ip netns exec, taskset)
// have exec'd.
func (p *Proc) WaitExec(timeout time.Duration) error {
	want, err := filepath.Abs(p.opts.Bin)
	if err == nil {
		want, err = filepath.EvalSymlinks(want)
	}
	if err != nil {
		return fmt.Errorf("pxproc: binary %q: %w", p.opts.Bin, err)
	}
	start := time.Now()
	var exe string
	for i := 0; i < 5000 && time.Since(start) < timeout; i++ {
		if exe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid())); err == nil && exe == want {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("pxproc: pid %d exited (%s) before it ran %s:\n%s", p.Pid(), p.state(), want, p.Tail(20))
		case <-time.After(time.Millisecond):
		}
	}
	return fmt.Errorf("pxproc: pid %d runs %q after %v, not %s", p.Pid(), exe, timeout, want)
}

// Child returns the only child of the process, for a wrapper that forks
// (strace): held by a pidfd, so that a signal never reaches another process
// that reuses its pid.
func (p *Proc) Child() (*os.Process, error) {
	pid, err := procstat.Child(p.Pid())
	if err != nil {
		return nil, err
	}
	return os.FindProcess(pid)
}

// Lines returns the lines so far.
func (p *Proc) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// Log returns the lines so far as one text.
func (p *Proc) Log() string { return p.Tail(-1) }

// Tail returns the last n lines (all if n < 0) as one text.
func (p *Proc) Tail(n int) string {
	p.mu.Lock()
	ls := p.lines
	p.mu.Unlock()
	if n >= 0 && len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(l.Text)
	}
	return b.String()
}

// Count returns how many lines so far m matches.
func (p *Proc) Count(m Match) int {
	p.mu.Lock()
	ls := p.lines
	p.mu.Unlock()
	n := 0
	for _, l := range ls {
		if m.Matches(l) {
			n++
		}
	}
	return n
}

// Find returns the first line so far that m matches.
func (p *Proc) Find(m Match) (Line, bool) {
	p.mu.Lock()
	ls := p.lines
	p.mu.Unlock()
	for _, l := range ls {
		if m.Matches(l) {
			return l, true
		}
	}
	return Line{}, false
}

// Attached returns the interfaces pxresp serves now by ifindex, replayed
// from its attach and detach lines (those that name an ifindex).
func (p *Proc) Attached() map[int]Iface {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[int]Iface, len(p.attached))
	for i, f := range p.attached {
		m[i] = f
	}
	return m
}

// NumAttached returns how many interfaces whose names start with prefix
// pxresp serves now (as Attached).
func (p *Proc) NumAttached(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.attached {
		if strings.HasPrefix(f.Name, prefix) {
			n++
		}
	}
	return n
}

// Wait waits until m has matched n lines and returns the n-th, for at most
// timeout; it fails early if the process exits first or ctx ends.
func (p *Proc) Wait(ctx context.Context, m Match, n int, timeout time.Duration) (Line, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	seen, found := 0, 0
	for {
		p.mu.Lock()
		ls, changed, ended := p.lines, p.changed, p.ended
		p.mu.Unlock()
		for _, l := range ls[seen:] {
			if m.Matches(l) {
				if found++; found >= n {
					return l, nil
				}
			}
		}
		seen = len(ls)
		if ended {
			return Line{}, fmt.Errorf("pxproc: pid %d exited (%s) after %d of %d lines with %v", p.Pid(), p.state(), found, n, m)
		}
		select {
		case <-changed:
		case <-t.C:
			return Line{}, fmt.Errorf("pxproc: %d of %d lines with %v within %v", found, n, m, timeout)
		case <-ctx.Done():
			return Line{}, ctx.Err()
		}
	}
}

// WaitUntil waits at most timeout until cond holds, checking it at every
// line and at least every 50 ms (it may look at more than the log); it
// fails early if the process exits first or ctx ends.
func (p *Proc) WaitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		p.mu.Lock()
		changed, ended := p.changed, p.ended
		p.mu.Unlock()
		if cond() {
			return nil
		}
		if ended {
			return fmt.Errorf("pxproc: pid %d exited (%s)", p.Pid(), p.state())
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-t.C:
			return fmt.Errorf("pxproc: not within %v", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
