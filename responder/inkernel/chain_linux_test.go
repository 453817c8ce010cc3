package inkernel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/arptest"
	"github.com/pxresp/pxresp/internal/test/topo"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// arpCounter loads a stand-in for another tcx program on the interface (a
// CNI's): it counts the ARP frames it sees in a one-slot array and passes
// every frame on (TCX_NEXT). Both are closed when t ends.
func arpCounter(t *testing.T) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	const next = -1 // TCX_NEXT
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "MIT",
		Instructions: asm.Instructions{
			// if (skb->protocol != htons(ETH_P_ARP)) goto out
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word),
			asm.JNE.Imm(asm.R2, 0x0608, "out"),
			// counter = lookup(&m, &0); if counter: *counter += 1
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, 0),
			asm.Mov.Imm(asm.R0, next).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, m
}

// TestOtherTCXProgramsRun: the program goes first in the interface's tcx
// chain, even when another program was attached before it, and what it
// does not answer goes on to the next one; what it answers does not.
func TestOtherTCXProgramsRun(t *testing.T) {
	tp := topotest.New(t, 1, "pxik")
	pod := tp.Pods[0]
	cl := topotest.Client(t, pod)
	counter, seen := arpCounter(t)
	ifi := hostIf(t, tp, pod)
	var other link.Link
	err := tp.Host.Do(func() error {
		var err error
		other, err = link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: counter, Attach: ebpf.AttachTCXIngress})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	i := attachTo(t, load(t), tp, pod, nil)

	answered := arptest.Request(pod.MAC, pod.IP, topo.Gateway, arptest.Broadcast)
	ignored := arptest.Request(pod.MAC, pod.IP, netip.MustParseAddr("10.244.0.99"), arptest.Broadcast)
	malformed := arptest.Edit(answered, arpframe.OffOp, 0, 9)
	for range 3 {
		if topotest.Ask(t, cl, answered, time.Second) == nil {
			t.Fatal("the gateway not answered with another tcx program on the interface")
		}
	}
	for _, f := range [][]byte{ignored, ignored, malformed} {
		if got := topotest.Ask(t, cl, f, silence); got != nil {
			t.Fatalf("answered %x", got)
		}
	}
	var n uint64
	deadline := time.Now().Add(2 * time.Second)
	for {
		if err := seen.Lookup(uint32(0), &n); err != nil {
			t.Fatal(err)
		}
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n != 3 {
		t.Errorf("the other program saw %d ARP frames, want the 3 the program passed on (2 ignored, 1 malformed)", n)
	}
	if st := i.Stats(); st.Replies != 3 || st.Malformed != 1 || st.Requests != 5 {
		t.Errorf("stats %+v", st)
	}
	if progs := topotest.TCXIngress(t, tp.Host, pod.HostIf); len(progs) != 2 {
		t.Errorf("%d programs on %s, want 2", len(progs), pod.HostIf)
	} else if info, err := i.p.objs.Pxresp.Info(); err != nil {
		t.Fatal(err)
	} else if id, _ := info.ID(); progs[0].ID != id {
		t.Errorf("tcx chain %v: pxresp's program (%d) is not first", progs, id)
	}
}
