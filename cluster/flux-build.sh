#!/usr/bin/env bash
# Builds (once) what cluster/flux.sh runs, from Go modules, into a cache keyed
# by version, $HGO_CACHE/bin/flux-$FLUX_VERSION/:
#   source-controller, kustomize-controller   Flux's controllers (v1.9.6)
#   git-http-server                           git http-backend over HTTP (cluster/flux/git-server)
#   crds/*.yaml                               every CRD the two controllers watch
#   rbac/{source,kustomize}/*.yaml            their own config/rbac (ClusterRoles, bindings)
# With --helm (or HGO_FLUX_HELM=1) also helm-controller, into its own folder
# $HGO_CACHE/bin/flux-helm-controller-$FLUX_HELM_CONTROLLER_VERSION/:
#   helm-controller, crds/*.yaml (HelmRelease), rbac/helm/*.yaml
# A second run only checks (about 10 ms). Delete the folder to rebuild.
# Versions and the reasons for each pin: cluster/flux/versions.sh,
# cluster/flux/helm/versions.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"
source "$here/flux/versions.sh"
source "$here/flux/helm/versions.sh"
export GOTOOLCHAIN=$FLUX_GOTOOLCHAIN

HELM=${HGO_FLUX_HELM:-0}
case ${1:-} in
  --helm) HELM=1 ;;
  '') ;;
  *) echo "usage: $0 [--helm]" >&2; exit 2 ;;
esac

GIT_SERVER_SRC=$here/flux/git-server
# The git server is our own source: its binary is rebuilt when the source changes.
git_server_stamp() { cat "$GIT_SERVER_SRC/go.mod" "$GIT_SERVER_SRC/main.go" | sha256sum | cut -d' ' -f1; }

complete() {
  local f
  for f in source-controller kustomize-controller git-http-server; do [ -x "$FLUX_BIN/$f" ] || return 1; done
  for f in source.toolkit.fluxcd.io_gitrepositories kustomize.toolkit.fluxcd.io_kustomizations; do
    [ -s "$FLUX_BIN/crds/$f.yaml" ] || return 1
  done
  [ -s "$FLUX_BIN/rbac/source/role.yaml" ] && [ -s "$FLUX_BIN/rbac/kustomize/role.yaml" ] || return 1
  [ "$(cat "$FLUX_BIN/git-http-server.sha256" 2>/dev/null)" = "$(git_server_stamp)" ] || return 1
  [ "$HELM" = 1 ] || return 0
  [ -x "$FLUX_HELM_BIN/helm-controller" ] &&
    [ -s "$FLUX_HELM_BIN/crds/helm.toolkit.fluxcd.io_helmreleases.yaml" ] &&
    [ -s "$FLUX_HELM_BIN/rbac/helm/role.yaml" ]
}
complete && exit 0

mkdir -p "$FLUX_BIN"
# Two runs at once (two with-cluster.sh) build once: the second waits here.
exec 9>"$FLUX_BIN.lock"
flock 9
complete && exit 0

t0=$(date +%s)
module_dir() { # module@version -> its read-only copy in GOMODCACHE
  go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'
}

# build_controller NAME VERSION [go mod edit flags...]; OUT (default
# $FLUX_BIN) is the folder it goes to.
# Each controller is built from its own module (its main package, its go.mod
# with its replace lines and pins), not from a wrapper module: a wrapper would
# have to repeat its replace for github.com/opencontainers/go-digest.
build_controller() {
  local name=$1 version=$2; shift 2
  local out=${OUT:-$FLUX_BIN}
  [ -x "$out/$name" ] && return 0
  log "building $name $version (cold: about 7 min for source and kustomize on 2 cores)"
  local mod src=$HGO_CACHE/src/flux-$version/$name
  mod=$(module_dir "github.com/fluxcd/$name@$version")
  rm -rf "$src"; mkdir -p "$(dirname "$src")" "$out"
  cp -r "$mod" "$src"; chmod -R u+w "$src"
  # Its go.mod replaces github.com/fluxcd/NAME/api with ./api, a folder the
  # module's zip leaves out (a nested module); without the replace the
  # required api version comes from the proxy.
  (cd "$src" && go mod edit -dropreplace="github.com/fluxcd/$name/api" "$@")
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" .)
  mv "$out/$name.tmp" "$out/$name"
  # The CRDs and RBAC come from the same module version as the binary.
  mkdir -p "$out/crds" "$out/rbac/${name%-controller}"
  cp "$mod"/config/crd/bases/*.yaml "$out/crds/"
  cp "$mod"/config/rbac/*.yaml "$out/rbac/${name%-controller}/"
  chmod -R u+w "$out/crds" "$out/rbac"
}

build_git_server() {
  [ "$(cat "$FLUX_BIN/git-http-server.sha256" 2>/dev/null)" = "$(git_server_stamp)" ] &&
    [ -x "$FLUX_BIN/git-http-server" ] && return 0
  log "building git-http-server (standard library only)"
  (cd "$GIT_SERVER_SRC" && go build -trimpath -ldflags "-s -w" -o "$FLUX_BIN/git-http-server.tmp" .)
  mv "$FLUX_BIN/git-http-server.tmp" "$FLUX_BIN/git-http-server"
  git_server_stamp >"$FLUX_BIN/git-http-server.sha256"
}

# If the CRDs or RBAC of a built controller went missing, build it again.
for n in source kustomize; do
  [ -s "$FLUX_BIN/rbac/$n/role.yaml" ] || rm -f "$FLUX_BIN/$n-controller"
done
build_controller source-controller "$FLUX_SOURCE_CONTROLLER_VERSION" \
  -require="github.com/fluxcd/pkg/artifact@$FLUX_SOURCE_ARTIFACT_PIN"
build_controller kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
build_git_server
if [ "$HELM" = 1 ]; then
  [ -s "$FLUX_HELM_BIN/rbac/helm/role.yaml" ] || rm -f "$FLUX_HELM_BIN/helm-controller"
  # Its own lock: the build above needs none of it.
  mkdir -p "$FLUX_HELM_BIN"
  exec 8>"$FLUX_HELM_BIN.lock"
  flock 8
  OUT=$FLUX_HELM_BIN build_controller helm-controller "$FLUX_HELM_CONTROLLER_VERSION"
fi
helm_note=''
[ "$HELM" = 1 ] && helm_note=", helm-controller $FLUX_HELM_CONTROLLER_VERSION under $FLUX_HELM_BIN"
complete || { log "FAILED: $FLUX_BIN$helm_note: still incomplete"; exit 1; }
log "Flux $FLUX_VERSION ready under $FLUX_BIN$helm_note ($(( $(date +%s) - t0 ))s)"
