// Package deploy holds pxresp's deployment files: pxresp.service (a
// hardened systemd unit), daemonset.yaml (Kubernetes) and config.yaml (an
// example config). It has no code; its tests check the files:
// systemd-analyze verify and security on the unit, a strict decode of the
// manifests into the Kubernetes API types, pxresp's config parser on both
// configs, and, as root, a traced run of pxresp against the unit's system
// call filter and address families.
package deploy
