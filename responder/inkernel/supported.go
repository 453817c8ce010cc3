package inkernel

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// Supported reports whether the eBPF datapath can run in this process: nil,
// or an error naming what is missing, in words an operator can act on. It
// checks the effective capabilities, loads the program (the verifier's
// verdict), and asks the kernel for a tcx link on an interface index that
// cannot exist, which only a kernel with tcx refuses with ENODEV. It leaves
// nothing behind.
func Supported() error {
	set := cap.GetProc()
	for _, c := range []cap.Value{cap.BPF, cap.NET_ADMIN} {
		on, err := set.GetFlag(cap.Effective, c)
		if err != nil {
			return fmt.Errorf("reading the capabilities: %w", err)
		}
		if !on {
			return fmt.Errorf("%s not held", capName(c))
		}
	}
	p, err := Load()
	if errors.Is(err, unix.EPERM) {
		// The capabilities are held, so what refuses is not them.
		return fmt.Errorf("bpf(2) refused although CAP_BPF and CAP_NET_ADMIN are held (a seccomp profile that forbids it?): %w", err)
	}
	if err != nil {
		return err
	}
	defer p.Close()
	return probeTCX(p.objs.Pxresp)
}

// noIfindex is an interface index no interface has: the kernel's are
// positive ints, and this is -1 as one.
const noIfindex = 1<<32 - 1

func probeTCX(prog *ebpf.Program) error {
	l, err := link.AttachTCX(link.TCXOptions{Interface: noIfindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		_ = l.Close()
		return errors.New("probing tcx: the kernel attached to a nonexistent interface")
	case errors.Is(err, unix.ENODEV):
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return errors.New("the kernel has no tcx (Linux 6.6 or later)")
	}
	return fmt.Errorf("probing tcx: %w", err)
}

// capName returns "CAP_BPF" for cap.BPF, and so on.
func capName(c cap.Value) string { return strings.ToUpper(c.String()) }
