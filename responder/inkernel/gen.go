package inkernel

// The program, compiled for little-endian BPF (amd64 and arm64 alike) by
// bpf2go: make generate, with Debian's clang, llvm and libbpf-dev. The
// object and the Go bindings it writes are committed, so that go build
// needs no clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror -Ibpf/include" -type counters -type iface -type limit -type addr_key -type verdict -type iface_flag pxresp bpf/pxresp.c
