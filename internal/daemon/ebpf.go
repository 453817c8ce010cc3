package daemon

import (
	"errors"

	"github.com/pxresp/pxresp/responder"
)

// errNoEBPF: this build has no eBPF datapath yet.
var errNoEBPF = errors.New("this build of pxresp has no eBPF datapath")

// ebpfSupported reports whether the eBPF datapath can run here, or what
// it lacks.
var ebpfSupported = func() error { return errNoEBPF }

// openEBPF loads the eBPF program, shared by every interface: listen
// attaches it to one, close detaches what is left and unloads it.
func openEBPF() (listen func(responder.Config) (server, error), close func() error, err error) {
	return nil, nil, errNoEBPF
}
