#!/usr/bin/env bash
# `make image`: the operator's image, built without a container engine. The
# release binaries (operator and kubectl plugin, static, musl) and the CA
# bundle go into one layer on an empty base; the image runs as 65532:65532
# and writes nothing outside /tmp, so a read-only root filesystem suits it.
# The result is an OCI archive (an OCI image layout, tarred):
#
#   cluster/image.sh [--tag TAG] [--import DIR]
#     -> target/image/healing-guard-operator-TAG.oci.tar  (TAG: Cargo.toml's version)
#
# --import DIR imports it into the real nodes of the cluster in DIR (up.sh
# --real-nodes); `ctr images import` names it REPOSITORY:TAG, REPOSITORY from
# HGO_IMAGE_REPOSITORY (default the chart's image.repository).
# The Dockerfile builds the same layout for a registry.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
source "$here/versions.sh"

REPOSITORY=${HGO_IMAGE_REPOSITORY:-ghcr.io/healing-guard/healing-guard-operator}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
TAG=$VERSION
IMPORT=
while [ $# -gt 0 ]; do
  case $1 in
    --tag) TAG=$2; shift 2 ;;
    --import) IMPORT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

TARGET=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v umoci >/dev/null || missing+=(umoci)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

# A target directory in the cache: the musl build shares nothing with the
# tests', and its dependencies outlive a clean checkout.
log "building the release binaries for $TARGET"
export CARGO_TARGET_DIR=${HGO_IMAGE_TARGET_DIR:-$RELEASE_TARGET_DIR}
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --quiet --release --locked --target "$TARGET" --bins --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/$TARGET/release

work=$root/target/image
out=$work/healing-guard-operator-$TAG.oci.tar
rootfs=$work/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
install -m 0755 "$bin/healing-guard-operator" "$bin/kubectl-healing_guard" "$rootfs/"
# reqwest and lettre verify TLS against the system bundle (SSL_CERT_FILE
# overrides it, e.g. with a CA bundle mounted from a ConfigMap).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

source "$here/node.sh"
oci_archive "$work" "$rootfs" "$TAG" "$out.tmp" \
  --config.user 65532:65532 \
  --config.entrypoint /healing-guard-operator \
  --config.cmd run \
  --config.exposedports 8080/tcp \
  --config.workingdir / \
  --config.label "org.opencontainers.image.title=healing-guard-operator" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "org.opencontainers.image.source=https://github.com/healing-guard/healing-guard-operator"
mv "$out.tmp" "$out"
echo "$REPOSITORY" >"$out.repository"

# What a pull moves (the archive: compressed layer, config, manifest) and
# what the container sees (the unpacked root filesystem).
archive_bytes=$(stat -c %s "$out")
rootfs_bytes=$(du -sb "$rootfs" | awk '{print $1}')
log "image $REPOSITORY:$TAG: $out"
printf 'image size: %s archive (compressed), %s unpacked (operator %s, plugin %s)\n' \
  "$(numfmt --to=iec-i --suffix=B "$archive_bytes")" \
  "$(numfmt --to=iec-i --suffix=B "$rootfs_bytes")" \
  "$(numfmt --to=iec-i --suffix=B "$(stat -c %s "$rootfs/healing-guard-operator")")" \
  "$(numfmt --to=iec-i --suffix=B "$(stat -c %s "$rootfs/kubectl-healing_guard")")"

if [ -n "$IMPORT" ]; then
  DIR=$(cd "$IMPORT" && pwd)
  for d in "$DIR"/node-*; do
    [ -d "$d" ] || continue
    import_image "${d##*-}" "$out"
    log "imported into $(node_name "${d##*-}")"
  done
fi
