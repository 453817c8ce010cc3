package daemon

import (
	"github.com/pxresp/pxresp/responder"
	"github.com/pxresp/pxresp/responder/inkernel"
)

// ebpfSupported reports whether the eBPF datapath can run here, or what
// it lacks.
func ebpfSupported() error { return inkernel.Supported() }

// openEBPF loads the eBPF program, shared by every interface: listen
// attaches it to one (in the calling thread's network namespace), close
// detaches what is left and unloads it.
func openEBPF() (listen func(responder.Config) (server, error), close func() error, err error) {
	p, err := inkernel.Load()
	if err != nil {
		return nil, nil, err
	}
	return func(c responder.Config) (server, error) {
		i, err := p.Attach(c)
		if err != nil {
			return nil, err
		}
		return i, nil
	}, p.Close, nil
}
