package topo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// cmdTimeout bounds every `ip` or `sysctl` command that topo runs for itself,
// whatever the caller's context says.
const cmdTimeout = 10 * time.Second

// NS is a named network namespace (a bind mount under /run/netns) that a
// Topology created.
type NS struct {
	Name string
}

// Exec runs `ip netns exec NAME args...` and returns its combined output.
// The command is bounded only by ctx. On failure the error holds the command
// line, the exit status and the output.
func (n *NS) Exec(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("topo: Exec needs a command")
	}
	return run(ctx, true, append([]string{"netns", "exec", n.Name}, args...)...)
}

// IP runs `ip -n NAME args...` (bounded by ctx and by 10 s).
func (n *NS) IP(ctx context.Context, args ...string) error {
	_, err := n.ipOut(ctx, args...)
	return err
}

// ipOut is IP returning stdout.
func (n *NS) ipOut(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return run(ctx, false, append([]string{"-n", n.Name}, args...)...)
}

// Sysctl writes key=value inside the namespace with
// `ip netns exec NAME sysctl -qw key=value` (bounded by ctx and by 10 s).
// Only keys under "net." are accepted: the others (kernel.*, vm.*) are
// global to the machine, not to the namespace. Keys may use dots or slashes;
// an interface name with a dot needs the slash form.
func (n *NS) Sysctl(ctx context.Context, key, value string) error {
	return n.sysctls(ctx, key+"="+value)
}

// sysctls writes several key=value pairs in one command.
func (n *NS) sysctls(ctx context.Context, kvs ...string) error {
	for _, kv := range kvs {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !(strings.HasPrefix(k, "net.") || strings.HasPrefix(k, "net/")) || strings.ContainsAny(k, " \t\n") {
			return fmt.Errorf("topo: sysctl %q: only net.* keys of the namespace may be written", kv)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := run(ctx, true, append([]string{"netns", "exec", n.Name, "sysctl", "-qw"}, kvs...)...)
	return err
}

// Handle opens the namespace; the caller closes the handle.
func (n *NS) Handle() (netns.NsHandle, error) {
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		return netns.None(), fmt.Errorf("topo: open netns %s: %w", n.Name, err)
	}
	return h, nil
}

// Do runs fn on an OS thread switched into the namespace and waits for it.
//
// fn runs on a new goroutine locked to its thread; afterwards the thread is
// switched back and unlocked. If switching back fails, the thread stays
// locked, so the Go runtime ends it with the goroutine and it never runs
// other code in the wrong namespace. Sockets that fn opens stay in the
// namespace for their whole life; goroutines that fn starts do NOT run in
// it. A panic in fn is re-raised in the caller, and runtime.Goexit in fn
// (t.FailNow, t.SkipNow) is repeated in the caller.
func (n *NS) Do(fn func() error) error {
	target, err := n.Handle()
	if err != nil {
		return err
	}
	defer target.Close()

	type result struct {
		err      error
		panicked bool
		value    any
		goexit   bool
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		res := result{goexit: true} // cleared when fn returns normally
		var orig netns.NsHandle = -1
		defer func() {
			if r := recover(); r != nil {
				res = result{panicked: true, value: r}
			}
			if orig.IsOpen() {
				err := netns.Set(orig)
				orig.Close()
				if err != nil {
					// Stay locked: this thread dies with the goroutine.
					res.err = errors.Join(res.err, fmt.Errorf("topo: switch back from netns %s: %w", n.Name, err))
					done <- res
					return
				}
			}
			runtime.UnlockOSThread()
			done <- res
		}()
		o, err := netns.Get()
		if err != nil {
			res = result{err: fmt.Errorf("topo: get current netns: %w", err)}
			return
		}
		if err := netns.Set(target); err != nil {
			o.Close()
			res = result{err: fmt.Errorf("topo: enter netns %s: %w", n.Name, err)}
			return
		}
		orig = o
		res.err = fn()
		res.goexit = false
	}()
	res := <-done
	switch {
	case res.panicked:
		panic(res.value)
	case res.goexit:
		runtime.Goexit()
	}
	return res.err
}

// run runs `ip args...`. With combined it returns stdout and stderr
// together; otherwise stdout only. The error names the command line, the exit
// status and stderr (or the combined output).
func run(ctx context.Context, combined bool, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if combined {
		cmd.Stderr = &stdout
	}
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if combined {
			msg = strings.TrimSpace(stdout.String())
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("%s: %w: %s", cmdline(cmd.Args), err, msg)
		}
		return stdout.String(), fmt.Errorf("%s: %w", cmdline(cmd.Args), err)
	}
	return stdout.String(), nil
}

// cmdline renders args as a shell-like command line for messages.
func cmdline(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$*?[]{}|&;<>()`") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}
