package arptest

import (
	"encoding/binary"
	"slices"

	"github.com/pxresp/pxresp/internal/arpframe"
)

// Hand-made variants of a frame, for the tests of hostile and tagged
// frames. Each returns a new slice.

// VLANTag inserts a VLAN tag (TPID tpid, TCI tci) after the Ethernet
// addresses of f.
func VLANTag(f []byte, tpid, tci uint16) []byte {
	b := slices.Clone(f[:arpframe.OffEthType])
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, tci)
	return append(b, f[arpframe.OffEthType:]...)
}

// Untag removes the first VLAN tag, as the receiving kernel does.
func Untag(f []byte) []byte {
	return append(slices.Clone(f[:arpframe.OffEthType]), f[arpframe.OffEthType+4:]...)
}

// Tag returns the TCI of f's VLAN tag (802.1Q or 802.1ad), or -1 if f is
// untagged.
func Tag(f []byte) int {
	if len(f) < arpframe.OffEthType+4 {
		return -1
	}
	switch binary.BigEndian.Uint16(f[arpframe.OffEthType:]) {
	case 0x8100, 0x88a8:
		return int(binary.BigEndian.Uint16(f[arpframe.OffEthType+2:]))
	}
	return -1
}

// PadTo appends zero bytes to f up to n bytes.
func PadTo(f []byte, n int) []byte { return append(slices.Clone(f), make([]byte, n-len(f))...) }

// Edit returns a copy of f with b written at off.
func Edit(f []byte, off int, b ...byte) []byte {
	c := slices.Clone(f)
	copy(c[off:], b)
	return c
}
