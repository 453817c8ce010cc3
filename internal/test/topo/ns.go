package topo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

const (
	// cmdTimeout bounds every `ip` or `sysctl` command that topo runs for
	// itself, whatever the caller's context says.
	cmdTimeout = 10 * time.Second
	// upTimeout bounds WaitUp.
	upTimeout = 3 * time.Second
	// batchTimeout bounds Batch: a batch of thousands of links takes
	// seconds.
	batchTimeout = 2 * time.Minute
	runNetns     = "/run/netns"
)

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

// Create makes the namespace: `ip netns add NAME` (bounded by ctx and by
// 10 s). The caller removes it with Delete.
func (n *NS) Create(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := run(ctx, true, "netns", "add", n.Name)
	return err
}

// Delete removes the namespace, `ip netns del NAME` (bounded by ctx and by
// 10 s), unless it is already gone. A process still running in it keeps it
// alive, unnamed, until it exits.
func (n *NS) Delete(ctx context.Context) error {
	if _, err := os.Lstat(filepath.Join(runNetns, n.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := run(ctx, true, "netns", "del", n.Name)
	return err
}

// IP runs `ip -n NAME args...` (bounded by ctx and by 10 s).
func (n *NS) IP(ctx context.Context, args ...string) error {
	_, err := n.IPOut(ctx, args...)
	return err
}

// IPOut is IP returning stdout; with "-j" first in args, ip's JSON.
func (n *NS) IPOut(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return run(ctx, false, append([]string{"-n", n.Name}, args...)...)
}

// Batch runs `ip -n NAME -batch -` with cmds on stdin, one a line (bounded
// by ctx and by 2 minutes).
func (n *NS) Batch(ctx context.Context, cmds []string) error {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", n.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch (%d commands): %w: %s", n.Name, len(cmds), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Sysctl writes key=value inside the namespace with
// `ip netns exec NAME sysctl -qw key=value` (bounded by ctx and by 10 s).
// Only keys under "net." are accepted: the others (kernel.*, vm.*) are
// global to the machine, not to the namespace. Keys may use dots or slashes;
// an interface name with a dot needs the slash form.
func (n *NS) Sysctl(ctx context.Context, key, value string) error {
	return n.Sysctls(ctx, key+"="+value)
}

// Sysctls is Sysctl for several "key=value" pairs, written in one command
// in order; it writes none unless every key is accepted.
func (n *NS) Sysctls(ctx context.Context, kvs ...string) error {
	for _, kv := range kvs {
		if k, _, ok := strings.Cut(kv, "="); !ok || !netKey(k) {
			return fmt.Errorf("topo: sysctl %q: only net.* keys of the namespace may be written", kv)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	_, err := run(ctx, true, append([]string{"netns", "exec", n.Name, "sysctl", "-qw"}, kvs...)...)
	return err
}

// ReadSysctl returns the value of a net.* key inside the namespace
// (`ip netns exec NAME sysctl -n key`, bounded by ctx and by 10 s), without
// the trailing newline.
func (n *NS) ReadSysctl(ctx context.Context, key string) (string, error) {
	if !netKey(key) {
		return "", fmt.Errorf("topo: sysctl %q: only net.* keys of the namespace may be read", key)
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := run(ctx, false, "netns", "exec", n.Name, "sysctl", "-n", key)
	return strings.TrimSpace(out), err
}

// InitSysctls writes the namespace-wide IPv4 settings, to be done before
// any interface exists (a new interface copies conf/default): proxy_arp 0
// and rp_filter 0 on all and default (a new namespace inherits the root
// namespace's settings, which may differ), and ip_forward and
// conf/{all,default}/forwarding 1 if forward, else 0.
func (n *NS) InitSysctls(ctx context.Context, forward bool) error {
	fwd := "0"
	if forward {
		fwd = "1"
	}
	return n.Sysctls(ctx,
		"net.ipv4.ip_forward="+fwd,
		"net.ipv4.conf.all.forwarding="+fwd,
		"net.ipv4.conf.default.forwarding="+fwd,
		"net.ipv4.conf.all.proxy_arp=0",
		"net.ipv4.conf.default.proxy_arp=0",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	)
}

// netKey reports whether k is a sysctl key of the namespace: under net.
// (or net/), without white space.
func netKey(k string) bool {
	return (strings.HasPrefix(k, "net.") || strings.HasPrefix(k, "net/")) && !strings.ContainsAny(k, " \t\n")
}

// LinkMAC returns the MAC address of interface ifname.
func (n *NS) LinkMAC(ctx context.Context, ifname string) (net.HardwareAddr, error) {
	l, err := n.showLink(ctx, ifname)
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(l.Address)
	if err != nil {
		return nil, fmt.Errorf("topo: %s in %s: address %q: %w", ifname, n.Name, l.Address, err)
	}
	return mac, nil
}

// WaitUp polls (every 5 ms, at most 3 s) until interface ifname is UP and
// LOWER_UP: a packet sent before the carrier is up is lost.
func (n *NS) WaitUp(ctx context.Context, ifname string) error {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		l, err := n.showLink(ctx, ifname)
		if err != nil {
			return err
		}
		if slices.Contains(l.Flags, "UP") && slices.Contains(l.Flags, "LOWER_UP") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topo: %s in %s not up with carrier after %v (flags %v): %w", ifname, n.Name, upTimeout, l.Flags, ctx.Err())
		case <-tick.C:
		}
	}
}

// link is the part of `ip -j link show` that topo reads.
type link struct {
	Index     int      `json:"ifindex"`
	Name      string   `json:"ifname"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	Address   string   `json:"address"`
}

func (n *NS) showLink(ctx context.Context, ifname string) (link, error) {
	out, err := n.IPOut(ctx, "-j", "link", "show", "dev", ifname)
	if err != nil {
		return link{}, err
	}
	var ls []link
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		return link{}, fmt.Errorf("topo: ip -n %s -j link show dev %s: unexpected output %q (%v)", n.Name, ifname, out, err)
	}
	return ls[0], nil
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
