package responder

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// filter returns the classic BPF program attached to every socket, so that
// the kernel wakes pxresp only for frames it may have to answer or count:
//
//   - outgoing frames (our own replies) are dropped;
//   - frames for another host (PACKET_OTHERHOST) are dropped, unless
//     acceptOtherHost: with a --mac override, unicast re-probes are sent to a
//     MAC the kernel does not own, and must reach userspace to be matched;
//   - VLAN-tagged frames are dropped: the kernel's ARP on this device does
//     not see them either;
//   - well-formed ARP replies are dropped;
//   - Ethernet/IPv4 ARP requests pass;
//   - frames that claim to be ARP but are truncated or have bad header fields
//     or an unknown opcode pass too, so that they are counted as malformed.
//     Legitimate traffic never contains them, so they cost nothing.
func filter(acceptOtherHost bool) ([]bpf.RawInstruction, error) {
	const (
		accept = 0x40000 // snapshot length: the whole frame
		drop   = 0
	)
	otherHost := uint32(unix.PACKET_OTHERHOST)
	if acceptOtherHost {
		otherHost = unix.PACKET_OUTGOING // a duplicate test: never OTHERHOST
	}
	// Jump offsets are relative to the next instruction; the labels in the
	// comments name the targets.
	prog := []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 13}, // drop
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: otherHost, SkipTrue: 12}, // drop
		/* 3 */ bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 10}, // drop
		/* 5 */ bpf.LoadExtension{Num: bpf.ExtLen},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpLessThan, Val: FrameLen, SkipTrue: 7}, // accept: short
		/* 7 */ bpf.LoadAbsolute{Off: offEthType, Size: 2},
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeARP, SkipTrue: 5}, // accept: malformed
		/* 9 */ bpf.LoadAbsolute{Off: offHType, Size: 4},
		/* 10 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: hTypeEther<<16 | pTypeIPv4, SkipTrue: 3}, // accept: malformed
		/* 11 */ bpf.LoadAbsolute{Off: offHLen, Size: 4},
		/* 12 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | opRequest, SkipTrue: 1}, // accept: a request
		/* 13 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6<<24 | 4<<16 | opReply, SkipTrue: 1}, // drop: a reply
		/* 14 */ bpf.RetConstant{Val: accept},
		/* 15 */ bpf.RetConstant{Val: drop},
	}
	return bpf.Assemble(prog)
}
