package inkernel

// The program, compiled for little-endian BPF (amd64 and arm64 alike) by
// bpf2go: make generate, with Debian's clang, llvm and libbpf-dev (and
// linux-libc-dev's uapi headers). bpf/include holds the three asm/ headers
// those include, as the generic ones every architecture uses, so that the
// build reads nothing from the build machine's multiarch directory and
// gives the same bytes on any machine. The object and the Go bindings are
// committed, so that go build needs no clang.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cflags "-O2 -mcpu=v3 -Wall -Werror -Ibpf/include" -type counters -type iface -type limit -type addr_key -type verdict -type iface_flag pxresp bpf/pxresp.c
