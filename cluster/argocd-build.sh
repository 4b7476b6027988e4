#!/usr/bin/env bash
# Builds (once) what cluster/argocd.sh runs, from Go module source, into a
# cache keyed by version, $HGO_CACHE/bin/argocd-$ARGOCD_VERSION/:
#   argocd                            Argo CD's multi-call binary
#   argocd-application-controller     symlink: the binary picks its role by name
#   argocd-repo-server                symlink
#   crds/*.yaml                       Application, AppProject, ApplicationSet CRDs
#   scripts/{git-verify-wrapper,gpg-wrapper}.sh
#                                     what the image puts in /usr/local/bin: the
#                                     repo-server runs git-verify-wrapper.sh for
#                                     every Git source (GPG on or off) and fails
#                                     with "permission denied" when it is not on PATH
# A second run only checks. Delete the folder to rebuild.
# The git server it uses is Flux's (cluster/flux/git-server, built by
# cluster/flux-build.sh); cluster/argocd.sh builds that too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

# v3.6.2: the newest stable release the Go module proxy serves, and the first
# line that builds here. v3.5.x and v3.4.x do not: they require
# github.com/argoproj/argo-cd/gitops-engine at a pseudo-version
# (v0.7.1-0.20250908182407-97ad5b59a627) the proxy refuses
# ("403 Forbidden: This module version is not available"); from v3.6.0 the
# engine is the served module github.com/argoproj/argo-cd/gitops-engine/v3.
ARGOCD_VERSION=${ARGOCD_VERSION:-v3.6.2}
# Its go.mod says `go 1.27.0`; the machine's Go is older, and go1.27.3 is the
# newer toolchain the proxy serves (76 MB, downloaded once into GOMODCACHE).
export GOTOOLCHAIN=${ARGOCD_GOTOOLCHAIN:-go1.27.3}
# With cgo (Go's default, unlike the rest of this folder): the dependencies
# were first built that way, so the build cache serves them. A dynamically
# linked binary is fine: it only runs on this machine.
export CGO_ENABLED=1
ARGOCD_BIN=$HGO_CACHE/bin/argocd-$ARGOCD_VERSION

complete() {
  [ -x "$ARGOCD_BIN/argocd" ] && [ -L "$ARGOCD_BIN/argocd-application-controller" ] &&
    [ -L "$ARGOCD_BIN/argocd-repo-server" ] &&
    [ -s "$ARGOCD_BIN/crds/application-crd.yaml" ] && [ -s "$ARGOCD_BIN/crds/appproject-crd.yaml" ] &&
    [ -x "$ARGOCD_BIN/scripts/git-verify-wrapper.sh" ] && [ -x "$ARGOCD_BIN/scripts/gpg-wrapper.sh" ]
}
complete && exit 0

mkdir -p "$ARGOCD_BIN"
# Two runs at once build once: the second waits here.
exec 9>"$ARGOCD_BIN.lock"
flock 9
complete && exit 0

t0=$(date +%s)
gocmd() { nice -n 19 go "$@"; }
mod=$(gocmd mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')

if [ ! -x "$ARGOCD_BIN/argocd" ]; then
  log "building argocd $ARGOCD_VERSION (cold: about 6 min on 2 cores; about 300 MB of build cache)"
  src=$HGO_CACHE/src/argocd-$ARGOCD_VERSION
  rm -rf "$src"; mkdir -p "$(dirname "$src")"
  cp -r "$mod" "$src"; chmod -R u+w "$src"
  # go.mod replaces github.com/argoproj/argo-cd/gitops-engine/v3 with
  # ./gitops-engine, a nested module the module zip leaves out; without the
  # replace the required version (same as ARGOCD_VERSION) comes from the
  # proxy. Its go.sum has no line for it, so download it to add one.
  (cd "$src" && go mod edit -dropreplace github.com/argoproj/argo-cd/gitops-engine/v3)
  (cd "$src" && gocmd mod download github.com/argoproj/argo-cd/gitops-engine/v3)
  p=github.com/argoproj/argo-cd/v3/common
  (cd "$src" && gocmd build -ldflags "-s -w -X $p.version=${ARGOCD_VERSION#v} -X $p.gitTag=$ARGOCD_VERSION" \
    -o "$ARGOCD_BIN/argocd.tmp" ./cmd)
  mv "$ARGOCD_BIN/argocd.tmp" "$ARGOCD_BIN/argocd"
fi
ln -sfn argocd "$ARGOCD_BIN/argocd-application-controller"
ln -sfn argocd "$ARGOCD_BIN/argocd-repo-server"
# The CRDs come from the same module version as the binary.
mkdir -p "$ARGOCD_BIN/crds"
cp "$mod"/manifests/crds/*-crd.yaml "$ARGOCD_BIN/crds/"
chmod -R u+w "$ARGOCD_BIN/crds"
mkdir -p "$ARGOCD_BIN/scripts"
cp "$mod"/hack/git-verify-wrapper.sh "$mod"/hack/gpg-wrapper.sh "$ARGOCD_BIN/scripts/"
chmod -R u+w,a+rx "$ARGOCD_BIN/scripts"
complete || { log "FAILED: $ARGOCD_BIN is still incomplete"; exit 1; }
log "Argo CD $ARGOCD_VERSION ready under $ARGOCD_BIN ($(( $(date +%s) - t0 ))s)"
