// Package deploy holds pxresp's deployment files, each in a packet and an
// eBPF variant: pxresp.service and pxresp-ebpf.service (hardened systemd
// units), daemonset.yaml and daemonset-ebpf.yaml (Kubernetes), and
// podmonitor.yaml (Prometheus Operator), config.yaml (an example config)
// and image.sh (`make image`); README.md says how to install and which
// variant to use. It has no code; its tests check the files: systemd-analyze
// verify and security on the units, a strict decode of the manifests into
// their API types, that each eBPF variant differs from its packet one only
// where it must, pxresp's config parser on both configs, and, as root, a
// traced run of pxresp against each unit's system call filter and the
// image run by podman as each DaemonSet says.
package deploy
