package pxproc

import "slices"

// Datapaths are the values of pxresp's --datapath that the tests run
// each datapath-independent test on: the AF_PACKET one and the in-kernel
// (tc eBPF) one. "auto" is not among them: it picks one of these.
var Datapaths = []string{"packet", "ebpf"}

// DatapathArgs returns args with "--datapath dp" in front of them.
func DatapathArgs(dp string, args ...string) []string {
	return slices.Concat([]string{"--datapath", dp}, args)
}

// ChoseDatapath matches the start-up line that names the datapath chosen.
func ChoseDatapath(dp string) Match { return Has("msg=datapath", "datapath="+dp) }
