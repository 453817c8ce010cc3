package responder

import (
	"encoding/binary"
	"net"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// filter returns the classic BPF program attached to every socket, so that
// the kernel wakes pxresp only for frames it may have to answer or count:
//
//   - outgoing frames (our own replies) are dropped;
//   - frames for another host (PACKET_OTHERHOST) are dropped, except, with
//     a --mac override, those sent to the override MAC: unicast re-probes go
//     to a MAC the kernel does not own;
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
func filter(override net.HardwareAddr) ([]bpf.RawInstruction, error) {
	const (
		accept = 0x40000 // snapshot length: the whole frame
		drop   = 0
	)
	// The program is head, otherHost, tail; drop is its last instruction.
	// Jump offsets count from the next instruction.
	var otherHost []bpf.Instruction
	if len(override) == 6 {
		// Only frames sent to the override MAC pass.
		otherHost = []bpf.Instruction{
			bpf.LoadAbsolute{Off: offEthDst, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(override[0:4]), SkipTrue: 0}, // drop
			bpf.LoadAbsolute{Off: offEthDst + 4, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(binary.BigEndian.Uint16(override[4:6])), SkipTrue: 0}, // drop
		}
	} else {
		otherHost = []bpf.Instruction{bpf.Jump{Skip: 0}} // drop
	}
	tail := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 10}, // drop
		/* 2 */ bpf.LoadExtension{Num: bpf.ExtLen},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpLessThan, Val: FrameLen, SkipTrue: 7}, // accept: short
		/* 4 */ bpf.LoadAbsolute{Off: offEthType, Size: 2},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeARP, SkipTrue: 5}, // accept: malformed
		/* 6 */ bpf.LoadAbsolute{Off: offHType, Size: 4},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: hTypeEther<<16 | pTypeIPv4, SkipTrue: 3}, // accept: malformed
		/* 8 */ bpf.LoadAbsolute{Off: offHLen, Size: 4},
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | opRequest, SkipTrue: 1}, // accept: a request
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | opReply, SkipTrue: 1}, // drop: a reply
		/* 11 */ bpf.RetConstant{Val: accept},
		/* 12 */ bpf.RetConstant{Val: drop},
	}
	head := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING}, // drop
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: uint8(len(otherHost))}, // tail
	}
	prog := slices.Concat(head, otherHost, tail)
	dropAt := len(prog) - 1
	skipToDrop := func(i int) uint8 { return uint8(dropAt - i - 1) }
	prog[1] = bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: skipToDrop(1)}
	for i := len(head); i < len(head)+len(otherHost); i++ {
		switch in := prog[i].(type) {
		case bpf.JumpIf:
			in.SkipTrue = skipToDrop(i)
			prog[i] = in
		case bpf.Jump:
			in.Skip = uint32(skipToDrop(i))
			prog[i] = in
		}
	}
	return bpf.Assemble(prog)
}
