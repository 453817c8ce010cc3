package responder

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/pxresp/pxresp/internal/arpframe"
)

// filter returns the classic BPF program attached to every socket, so that
// the kernel wakes pxresp only for frames it may have to answer or count:
//
//   - outgoing frames (our own replies) are dropped;
//   - frames for another host (PACKET_OTHERHOST) are dropped, except, with
//     a --mac override, those sent to the override MAC: unicast re-probes go
//     to a MAC the kernel does not own. overrides holds the override MACs
//     to let through (entries that are not 6 bytes long are skipped): one,
//     or none, except while Apply changes it, when the filter passes
//     the old and the new MAC for a moment;
//   - VLAN-tagged frames never reach pxresp as such. The kernel takes the
//     tag off before it hands the frame to a socket bound to ETH_P_ARP and,
//     as there is no VLAN device, marks a frame with a VLAN ID other than 0
//     PACKET_OTHERHOST: it is dropped as a frame for another host, as the
//     kernel's ARP drops it. (With an override, a tagged frame sent to the
//     override MAC cannot be told from an untagged one any more and passes.)
//     A priority-tagged
//     frame (VLAN ID 0) arrives untagged and is an ordinary request, which
//     the kernel's ARP answers too. The test of SKF_AD_VLAN_TAG_PRESENT
//     below only matters where a driver leaves the tag on the frame;
//     responder/hostile_linux_test.go checks all of this on a real veth;
//   - well-formed ARP replies are dropped;
//   - Ethernet/IPv4 ARP requests pass;
//   - frames that claim to be ARP but are truncated or have bad header fields
//     or an unknown opcode pass too, so that they are counted as malformed.
//     Legitimate traffic never contains them, so they cost nothing.
//
// With an active shed rule, frames from the rule's sender (Ethernet source
// MAC) are dropped first, before any other test, except a random one in
// rule.sample() (SKF_AD_RANDOM), which goes on through the tests above.
func filter(shed shedRule, overrides ...net.HardwareAddr) ([]bpf.RawInstruction, error) {
	const (
		accept = 0x40000 // snapshot length: the whole frame
		drop   = 0
	)
	var macs [][6]byte
	for _, m := range overrides {
		if len(m) == 6 && !slices.Contains(macs, [6]byte(m)) {
			macs = append(macs, [6]byte(m))
		}
	}
	// The program is head, otherHost, tail; drop is its last instruction.
	// Jump offsets count from the next instruction, and are filled in once
	// the layout is known: jumps to "drop", "tail" or "next" (the next
	// override's check, or drop after the last one) are marked in target.
	const (
		toDrop = iota + 1
		toTail
		toNext
	)
	var otherHost []bpf.Instruction
	var target []int // per otherHost instruction
	if len(macs) == 0 {
		otherHost, target = []bpf.Instruction{bpf.Jump{}}, []int{toDrop}
	}
	var starts []int // index in otherHost of each override's check
	for i, m := range macs {
		starts = append(starts, len(otherHost))
		// Only frames sent to one of the override MACs pass.
		otherHost = append(otherHost,
			bpf.LoadAbsolute{Off: arpframe.OffEthDst, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(m[0:4])},
			bpf.LoadAbsolute{Off: arpframe.OffEthDst + 4, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(binary.BigEndian.Uint16(m[4:6]))},
		)
		target = append(target, 0, toNext, 0, toNext)
		if i < len(macs)-1 {
			otherHost = append(otherHost, bpf.Jump{})
			target = append(target, toTail)
		}
	}
	tail := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 10}, // drop
		/* 2 */ bpf.LoadExtension{Num: bpf.ExtLen},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpLessThan, Val: arpframe.Len, SkipTrue: 7}, // accept: short
		/* 4 */ bpf.LoadAbsolute{Off: arpframe.OffEthType, Size: 2},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arpframe.EtherTypeARP, SkipTrue: 5}, // accept: malformed
		/* 6 */ bpf.LoadAbsolute{Off: arpframe.OffHType, Size: 4},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arpframe.HTypeEther<<16 | arpframe.PTypeIPv4, SkipTrue: 3}, // accept: malformed
		/* 8 */ bpf.LoadAbsolute{Off: arpframe.OffHLen, Size: 4},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | arpframe.OpRequest, SkipTrue: 1}, // accept: a request
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | arpframe.OpReply, SkipTrue: 1}, // drop: a reply
		/* 11 */ bpf.RetConstant{Val: accept},
		/* 12 */ bpf.RetConstant{Val: drop},
	}
	head := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING}, // drop
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: uint8(len(otherHost))}, // tail
	}
	prog := slices.Concat(head, otherHost, tail)
	if shed.active() {
		prog = append(shedding(shed, len(prog)), prog...)
	}
	if len(prog) > 255 {
		return nil, fmt.Errorf("BPF filter for %d override MACs is too long", len(macs))
	}
	base := len(prog) - len(head) - len(otherHost) - len(tail) // the shedding block's length
	dropAt, tailAt := len(prog)-1, base+len(head)+len(otherHost)
	prog[base+1] = bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: uint8(dropAt - base - 2)}
	block := 0
	for j, tgt := range target {
		i := base + len(head) + j
		if block+1 < len(starts) && j >= starts[block+1] {
			block++
		}
		var to int
		switch tgt {
		case 0:
			continue
		case toDrop:
			to = dropAt
		case toTail:
			to = tailAt
		case toNext:
			to = dropAt
			if block+1 < len(starts) {
				to = base + len(head) + starts[block+1]
			}
		}
		skip := to - i - 1
		switch in := prog[i].(type) {
		case bpf.JumpIf:
			in.SkipTrue = uint8(skip)
			prog[i] = in
		case bpf.Jump:
			in.Skip = uint32(skip)
			prog[i] = in
		}
	}
	return bpf.Assemble(prog)
}

// shedding returns the instructions that go before a program of rest
// instructions ending in its drop: a frame from shed's sender goes on to
// the program only if a random number is 0 modulo shed.sample(); it is
// dropped otherwise. A frame too short to have a source MAC is dropped.
func shedding(shed shedRule, rest int) []bpf.Instruction {
	const n = 7 // instructions in the block
	drop := n + rest - 1
	return []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: arpframe.OffEthSrc, Size: 4},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(shed.mac[0:4]), SkipTrue: n - 2},
		/* 2 */ bpf.LoadAbsolute{Off: arpframe.OffEthSrc + 4, Size: 2},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(binary.BigEndian.Uint16(shed.mac[4:6])), SkipTrue: n - 4},
		/* 4 */ bpf.LoadExtension{Num: bpf.ExtRand},
		/* 5 */ bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: shed.n},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: uint8(drop - 6 - 1)},
	}
}
