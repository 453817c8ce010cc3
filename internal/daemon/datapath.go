package daemon

import (
	"errors"
	"fmt"

	"github.com/pxresp/pxresp/internal/config"
	"github.com/pxresp/pxresp/policy"
)

// Datapath is how pxresp answers: Packet reads each request from an
// AF_PACKET socket and writes the reply (CAP_NET_RAW); EBPF answers
// gateway-mode rules from a tc program in the kernel (loading it needs
// CAP_BPF and CAP_NET_ADMIN), and route-mode rules as Packet
// does. Auto is EBPF where this process and its kernel allow it, Packet
// elsewhere.
type Datapath string

// The values of --datapath.
const (
	Auto   Datapath = "auto"
	Packet Datapath = "packet"
	EBPF   Datapath = "ebpf"
)

// ParseDatapath parses "auto", "packet" or "ebpf".
func ParseDatapath(s string) (Datapath, error) {
	switch d := Datapath(s); d {
	case Auto, Packet, EBPF:
		return d, nil
	}
	return "", errors.New("want auto, packet or ebpf")
}

// chooseDatapath resolves want to the datapath that runs, and why:
// "requested", or for Auto "auto: " and what is missing. supported reports
// whether the eBPF datapath can run (nil) or what it lacks; Packet never
// calls it. EBPF without support is an error naming what is missing. Auto
// in a dry run is Packet: only it logs each would-be reply.
func chooseDatapath(want Datapath, dryRun bool, supported func() error) (Datapath, string, error) {
	switch want {
	case Packet:
		return Packet, "requested", nil
	case EBPF:
		if err := supported(); err != nil {
			return "", "", fmt.Errorf("the eBPF datapath (--datapath ebpf) cannot run: %w", err)
		}
		return EBPF, "requested", nil
	case Auto, "":
		if dryRun {
			return Packet, "auto: --dry-run logs each would-be reply, which the eBPF program does not", nil
		}
		if err := supported(); err != nil {
			return Packet, "auto: " + err.Error(), nil
		}
		return EBPF, "auto: the kernel and the capabilities allow it", nil
	}
	return "", "", fmt.Errorf("unknown datapath %q", want)
}

// ruleDatapath is the datapath that serves rule r's interfaces when dp
// runs: the eBPF program answers gateway-mode rules only; route-mode rules
// (route mode and proxy entries) are served from AF_PACKET on both.
func ruleDatapath(dp Datapath, r *config.Rule) Datapath {
	if dp == EBPF && r.Mode == policy.GatewayMode {
		return EBPF
	}
	return Packet
}
