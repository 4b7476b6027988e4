#!/usr/bin/env bash
# The kubectl plugin for release (`make plugin-archive`):
#   target/dist/kubectl-healing_guard-<version>-linux-amd64.tar.gz
#     kubectl-healing_guard            static (musl), so it runs on any Linux
#     kubectl_complete-healing_guard   kubectl's completion hook
#   target/dist/kubectl-healing_guard-<version>-linux-amd64.tar.gz.sha256
#   target/dist/healing-guard.yaml     plugin/krew.yaml with that version and sha256
# The version is Cargo.toml's. The archive is the same bytes for the same
# binary (sorted, fixed owner and mtime, gzip without a name or time).
# The rendered manifest is checked against the archive, and, where krew is
# on PATH, installed from it into a throwaway KREW_ROOT.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=versions.sh
source "$repo/cluster/versions.sh"
# The image's release build (cluster/image.sh) shares this target directory.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$RELEASE_TARGET_DIR}

log() { echo "[plugin-archive] $*" >&2; }
fail() { log "$*"; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || fail "no version in Cargo.toml"
target=x86_64-unknown-linux-musl
name=kubectl-healing_guard-$version-linux-amd64
dist=$repo/target/dist
archive=$dist/$name.tar.gz

rustup target list --installed 2>/dev/null | grep -qx "$target" ||
  fail "the $target target is missing: rustup target add $target"
command -v musl-gcc >/dev/null ||
  fail "musl-gcc is missing (it compiles ring for $target): apt-get install musl-tools"

log "building kubectl-healing_guard $version for $target"
# ring's C and assembly need a C compiler for musl; symbols are not needed.
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --locked --target "$target" --bin kubectl-healing_guard
binary=$CARGO_TARGET_DIR/$target/release/kubectl-healing_guard
"$binary" --version >/dev/null || fail "$binary does not run"
# Static-pie has a dynamic section too, but needs no shared library.
if [ "$(readelf -d "$binary" | grep -c NEEDED)" != 0 ]; then
  fail "$binary needs shared libraries: $(readelf -d "$binary" | grep NEEDED | tr '\n' ' ')"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/kubectl-healing_guard"
install -m 0755 plugin/kubectl_complete-healing_guard "$stage/"
mkdir -p "$dist"
# Reproducible: the time of the last commit, not of the build.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$stage" -cf - kubectl-healing_guard kubectl_complete-healing_guard |
  gzip -n -9 >"$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
(cd "$dist" && echo "$sha  $name.tar.gz" >"$name.tar.gz.sha256")

manifest=$dist/healing-guard.yaml
sed -e "s/{{VERSION}}/$version/g" -e "s/{{SHA256}}/$sha/g" plugin/krew.yaml >"$manifest"
# The manifest must name this archive and its sha256, and nothing be left unfilled.
! grep -n '{{' "$manifest" || fail "$manifest: a placeholder is left"
grep -q "^    sha256: \"$sha\"$" "$manifest" || fail "$manifest: sha256 is not the archive's"
grep -q "^    uri: https://github.com/healing-guard/healing-guard-operator/releases/download/v$version/$name.tar.gz$" "$manifest" ||
  fail "$manifest: uri does not name $name.tar.gz of v$version"
(cd "$dist" && sha256sum --quiet -c "$name.tar.gz.sha256") || fail "sha256 file does not match"

# krew as krew installs itself (kubectl-krew), or as `go install` names it.
krew=$(command -v kubectl-krew || command -v krew || true)
if [ -n "$krew" ]; then
  log "installing with krew from the manifest and archive (throwaway KREW_ROOT)"
  krew_root=$(mktemp -d)
  KREW_ROOT=$krew_root "$krew" install --manifest="$manifest" --archive="$archive" </dev/null >&2
  "$krew_root/bin/kubectl-healing_guard" --version >/dev/null || fail "the krew-installed plugin does not run"
  rm -rf "$krew_root"
else
  log "krew is not on PATH: the manifest was checked by its fields only"
fi

log "$(du -h "$archive" | cut -f1) $archive"
echo "$sha  $archive"
echo "krew manifest: $manifest"
