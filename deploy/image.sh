#!/usr/bin/env bash
# Builds pxresp's OCI image with buildah, from no base image: for each of
# ARCHES, the static binary $DIST/pxresp-linux-ARCH twice, as
# /usr/local/bin/pxresp with the file capability cap_net_raw=ep (the
# packet datapath) and as /usr/local/bin/pxresp-ebpf with
# cap_bpf,cap_net_admin,cap_net_raw=ep (the eBPF datapath; deploy/README.md
# says why two files), passwd and group entries for 65532,
# the licence and the org.opencontainers.image labels; then one image index
# named $IMAGE in container storage, also written to
# $DIST/pxresp-image.oci.tar. Run by `make image` (as root), which sets
# IMAGE, VERSION, REVISION, CREATED (epoch seconds), DIST and ARCHES;
# STORAGE holds extra buildah storage options (--root DIR ...).
set -euo pipefail
cd "$(dirname "$0")/.."

for v in IMAGE VERSION REVISION CREATED DIST ARCHES; do
	if [ -z "${!v:-}" ]; then
		echo "image.sh: $v is not set (run make image)" >&2
		exit 2
	fi
done
if [ "$(id -u)" -ne 0 ]; then
	echo "image.sh: must run as root (buildah mount, setcap): sudo make image" >&2
	exit 1
fi
for tool in buildah setcap; do
	if ! command -v "$tool" >/dev/null; then
		echo "image.sh: $tool is missing (Debian package ${tool/setcap/libcap2-bin})" >&2
		exit 1
	fi
done
read -r -a storage <<<"${STORAGE:-}"
bh() { buildah "${storage[@]}" "$@"; }

ctr=
cleanup() { if [ -n "$ctr" ]; then bh rm "$ctr" >/dev/null || true; fi; }
trap cleanup EXIT

# A rebuild replaces the index and the images of an earlier one.
if bh manifest inspect "$IMAGE" >/dev/null 2>&1; then
	bh manifest rm "$IMAGE" >/dev/null
fi
for arch in $ARCHES; do
	bh rmi "$IMAGE-$arch" >/dev/null 2>&1 || true
done
bh manifest create "$IMAGE" >/dev/null

for arch in $ARCHES; do
	bin="$DIST/pxresp-linux-$arch"
	[ -f "$bin" ] || { echo "image.sh: $bin is missing (make release)" >&2; exit 1; }
	ctr=$(bh from --arch "$arch" --os linux scratch)
	root=$(bh mount "$ctr")
	install -D -m 0755 "$bin" "$root/usr/local/bin/pxresp"
	setcap cap_net_raw=ep "$root/usr/local/bin/pxresp"
	# A copy, not a link: a file capability belongs to the inode.
	install -D -m 0755 "$bin" "$root/usr/local/bin/pxresp-ebpf"
	setcap cap_bpf,cap_net_admin,cap_net_raw=ep "$root/usr/local/bin/pxresp-ebpf"
	install -D -m 0644 LICENSE "$root/usr/share/licenses/pxresp/LICENSE"
	install -d -m 0755 "$root/etc"
	printf 'root:x:0:0:root:/:/sbin/nologin\npxresp:x:65532:65532:pxresp:/:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\npxresp:x:65532:\n' >"$root/etc/group"
	chmod 0644 "$root/etc/passwd" "$root/etc/group"
	bh umount "$ctr" >/dev/null
	bh config --os linux --arch "$arch" \
		--user 65532:65532 --workingdir / \
		--entrypoint '["/usr/local/bin/pxresp"]' --cmd '' \
		--label org.opencontainers.image.title=pxresp \
		--label "org.opencontainers.image.description=Answers ARP for Calico-style pods in place of the kernel's proxy_arp" \
		--label "org.opencontainers.image.version=$VERSION" \
		--label "org.opencontainers.image.revision=$REVISION" \
		--label org.opencontainers.image.source=https://github.com/pxresp/pxresp \
		--label org.opencontainers.image.licenses=Apache-2.0 \
		"$ctr"
	bh commit --quiet --format oci --timestamp "$CREATED" --identity-label=false \
		--manifest "$IMAGE" "$ctr" "$IMAGE-$arch" >/dev/null
	bh rm "$ctr" >/dev/null
	ctr=
	echo "image.sh: $IMAGE-$arch built"
done

archive="$DIST/pxresp-image.oci.tar"
rm -f "$archive"
bh manifest push --quiet --all --format oci "$IMAGE" "oci-archive:$archive:$IMAGE"
echo "image.sh: $IMAGE (index of: $ARCHES) in container storage and $archive"
