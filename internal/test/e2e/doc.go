// Package e2e holds the end-to-end tests of the built pxresp binary: it
// runs in the host namespace of a reference topology of each test's own
// (internal/test/topo), started and stopped through internal/test/pxproc,
// while the pods' kernels, ping, arping and raw ARP clients talk through it.
// The package has no code outside its tests.
package e2e
