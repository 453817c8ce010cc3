// Package deploy holds pxresp's deployment files: pxresp.service (a
// hardened systemd unit), daemonset.yaml (Kubernetes), podmonitor.yaml
// (Prometheus Operator), config.yaml (an example config) and image.sh
// (`make image`); README.md says how to install. It has no code; its tests
// check the files: systemd-analyze verify and security on the unit, a
// strict decode of the manifests into their API types, pxresp's config
// parser on both configs, and, as root, a traced run of pxresp against the
// unit's system call filter and the image run by podman as the DaemonSet
// says.
package deploy
