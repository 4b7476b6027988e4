#!/usr/bin/env bash
# Real Flux on a cluster started by up.sh: source-controller and
# kustomize-controller as plain processes, and a Git server on loopback that
# serves bare repositories from DIR/git/ over HTTP.
#
#   cluster/flux.sh [--dir DIR] start [--helm]
#                                          install the CRDs and RBAC, start all three;
#                                          --helm (or HGO_FLUX_HELM=1): helm-controller too
#   cluster/flux.sh [--dir DIR] stop       stop them (the cluster and its objects stay)
#   cluster/flux.sh [--dir DIR] repo NAME  create the bare repository DIR/git/NAME.git
#                                          (branch main) if missing; print its URL
#
# HGO_FLUX_GIT_AUTH=user:password makes the Git server require those
# credentials (HTTP basic auth) for every fetch and push; flux.env then has
# FLUX_GIT_USERNAME and FLUX_GIT_PASSWORD, and a GitRepository needs a
# secretRef to a Secret with keys username and password. Unset: anyone on
# loopback may fetch and push. To change it, stop and start again.
#
# DIR defaults to $HGO_CLUSTER_DIR (set by with-cluster.sh), else
# $HGO_CACHE/clusters/default. `start` builds first if needed
# (flux-build.sh), and is a no-op while all three run.
#
# With --helm, helm-controller (cluster/flux/helm/versions.sh) runs as a
# fourth process like kustomize-controller: the HelmRelease CRD, its own
# ServiceAccount helm-controller and config/rbac (cluster/flux/helm/rbac),
# DIR/flux/kubeconfig-helm-controller, health and metrics on loopback
# (FLUX_HELM_HEALTH, FLUX_HELM_METRICS in flux.env), a pid line
# "PID helm-controller BINARY" and DIR/logs/helm-controller.log. A `start`
# without --helm while all run is a no-op like any other (helm-controller
# keeps running); when it has to start anything, it stops all and starts the
# three without helm-controller.
#
# What `start` does and writes:
#   CRDs       every CRD of the two controllers (GitRepository, Kustomization,
#              OCIRepository, Bucket, HelmRepository, HelmChart, ExternalArtifact)
#   RBAC       namespace flux-system; ServiceAccounts source-controller and
#              kustomize-controller bound to the ClusterRoles of the
#              controllers' own config/rbac (cluster/flux/rbac)
#   DIR/flux/kubeconfig-{source,kustomize}-controller
#              each controller's credentials: a token of its ServiceAccount
#   DIR/flux/storage   source-controller's artifacts, served over HTTP
#   DIR/git/           the Git server's root: DIR/git/NAME.git is $FLUX_GIT_URL/NAME.git
#   DIR/flux.env       source it: FLUX_GIT_URL=http://127.0.0.1:PORT, FLUX_NAMESPACE,
#                      FLUX_GIT_ROOT, FLUX_GIT_USERNAME/PASSWORD (empty without
#                      HGO_FLUX_GIT_AUTH), FLUX_SOURCE_STORAGE_URL, the health and
#                      metrics addresses, FLUX_VERSION
#   DIR/pids           one "PID NAME BINARY" line each (names flux-git-server,
#                      source-controller, kustomize-controller): down.sh stops them
#                      with the rest; argv.NAME: restart.sh can restart each
#   DIR/logs/{flux-git-server,source-controller,kustomize-controller}.log
# Ports are free ones picked at start, all on 127.0.0.1; a later start in
# the same DIR takes the same ports again while they are free, so URLs that
# objects already hold (the Git server's) stay valid.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"
source "$here/processes.sh"
source "$here/flux/versions.sh"
source "$here/flux/helm/versions.sh"

DIR=${HGO_CLUSTER_DIR:-$HGO_CACHE/clusters/default}
GRACE=${HGO_DOWN_GRACE:-10}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) break ;;
  esac
done
cmd=${1:-}
[ -n "$cmd" ] || { echo "usage: $0 [--dir DIR] start|stop|repo NAME (see --help)" >&2; exit 2; }
shift
[ -d "$DIR" ] || { echo "no cluster dir $DIR" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)
KUBECTL=$TOOLS_BIN/kubectl
# Every process this script may start, in start order (stop goes backwards).
NAMES=(flux-git-server source-controller kustomize-controller helm-controller)
HELM=${HGO_FLUX_HELM:-0}

flog() { printf '[flux] %s\n' "$*" >&2; }

stop_flux() { stop_processes flog flux.env "${NAMES[@]}"; }

repo() { bare_repo "$1" flux.env FLUX_GIT_URL; } # NAME: DIR/git/NAME.git, branch main

start_flux() {
  local t0; t0=$(date +%s.%N)
  elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$t0" "$(date +%s.%N)"; }

  [ -f "$DIR/env" ] || { echo "$DIR has no env: start the cluster with cluster/up.sh --dir $DIR first" >&2; exit 2; }
  local want=(flux-git-server source-controller kustomize-controller) build=()
  [ "$HELM" = 1 ] && { want+=(helm-controller); build=(--helm); }
  local all=1 n
  for n in "${want[@]}"; do running "$n" >/dev/null || all=0; done
  if [ "$all" = 1 ] && [ -f "$DIR/flux.env" ]; then
    flog "already running in $DIR"
    return 0
  fi
  stop_flux || { flog "could not stop an earlier run"; exit 1; }

  "$here/flux-build.sh" ${build[@]+"${build[@]}"}
  # shellcheck disable=SC1091
  source "$DIR/env"
  local kc=$DIR/kubeconfig
  command -v git >/dev/null || { flog "git is not installed (apt-get install git)"; exit 1; }
  local backend; backend="$(git --exec-path)/git-http-backend"
  [ -x "$backend" ] || { flog "$backend is missing (Debian's git package has it)"; exit 1; }
  mkdir -p "$DIR/flux/storage" "$DIR/git" "$DIR/logs"

  # --- CRDs, namespace, ServiceAccounts, RBAC -------------------------------
  flog "installing Flux $FLUX_VERSION CRDs and RBAC"
  "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-flux \
    -f "$FLUX_BIN/crds/" >/dev/null
  "$KUBECTL" --kubeconfig="$kc" wait --for=condition=Established --timeout=60s \
    -f "$FLUX_BIN/crds/" >/dev/null
  rm -rf "$DIR/flux/rbac"
  mkdir -p "$DIR/flux/rbac"
  cp "$here"/flux/rbac/*.yaml "$DIR/flux/rbac/"
  cp -r "$FLUX_BIN/rbac/source" "$FLUX_BIN/rbac/kustomize" "$DIR/flux/rbac/"
  "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-flux \
    -k "$DIR/flux/rbac" >/dev/null
  local ctls=(source-controller kustomize-controller)
  if [ "$HELM" = 1 ]; then
    flog "installing helm-controller $FLUX_HELM_CONTROLLER_VERSION CRD and RBAC"
    "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-flux \
      -f "$FLUX_HELM_BIN/crds/" >/dev/null
    "$KUBECTL" --kubeconfig="$kc" wait --for=condition=Established --timeout=60s \
      -f "$FLUX_HELM_BIN/crds/" >/dev/null
    rm -rf "$DIR/flux/rbac-helm"
    mkdir -p "$DIR/flux/rbac-helm"
    cp "$here"/flux/helm/rbac/*.yaml "$DIR/flux/rbac-helm/"
    cp -r "$FLUX_HELM_BIN/rbac/helm" "$DIR/flux/rbac-helm/"
    "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-flux \
      -k "$DIR/flux/rbac-helm" >/dev/null
    ctls+=(helm-controller)
  fi

  # One kubeconfig per controller, with a token of its ServiceAccount (a
  # year: the API server sets no maximum), the API server and CA of the admin one.
  local server ca ctl token
  server=$("$KUBECTL" --kubeconfig="$kc" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')
  ca=$("$KUBECTL" --kubeconfig="$kc" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
  for ctl in "${ctls[@]}"; do
    token=$("$KUBECTL" --kubeconfig="$kc" -n "$FLUX_NAMESPACE" create token "$ctl" --duration=8760h)
    ( umask 077
      cat >"$DIR/flux/kubeconfig-$ctl" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hgo
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: system:serviceaccount:$FLUX_NAMESPACE:$ctl
  user:
    token: $token
contexts:
- name: $ctl@hgo
  context:
    cluster: hgo
    user: system:serviceaccount:$FLUX_NAMESPACE:$ctl
    namespace: $FLUX_NAMESPACE
current-context: $ctl@hgo
EOF
    )
  done

  # --- ports ----------------------------------------------------------------
  # git, storage, source health, source metrics, kustomize health, kustomize
  # metrics, helm health, helm metrics (taken with or without --helm): the
  # ones of the last start in DIR while all are still free.
  local ports
  ports=$(python3 - "$DIR/flux/ports" <<'PY'
import socket, sys
def free(p):
    # As Go listens: SO_REUSEADDR, so a port whose old connections are in
    # TIME_WAIT counts as free.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
try:
    old = [int(x) for x in open(sys.argv[1]).read().split()]
except (OSError, ValueError):
    old = []
N = 8
# A file of 6 (from before helm-controller) keeps its 6 and gets 2 more.
keep = old if len(old) in (6, N) and all(free(p) for p in old) else []
socks = []
for _ in range(N - len(keep)):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*keep, *[s.getsockname()[1] for s in socks])
PY
)
  echo "$ports" >"$DIR/flux/ports"
  local GIT_PORT STORAGE_PORT SC_HEALTH SC_METRICS KC_HEALTH KC_METRICS HC_HEALTH HC_METRICS
  read -r GIT_PORT STORAGE_PORT SC_HEALTH SC_METRICS KC_HEALTH KC_METRICS HC_HEALTH HC_METRICS <<<"$ports"

  fail() { # name message
    flog "FAILED: $1: $2 (after $(elapsed))"
    if [ -f "$DIR/logs/$1.log" ]; then
      echo "----- last lines of $DIR/logs/$1.log -----" >&2
      tail -n 40 "$DIR/logs/$1.log" >&2
      echo "-----" >&2
    fi
    stop_flux >&2 || true
    exit 1
  }
  start() { # name binary args... (binary may be "env VAR=... BINARY")
    local name=$1 bin=$2; shift 2
    local real=$bin pre=()
    if [ "$bin" = env ]; then
      pre=(/usr/bin/env)
      while [ "${1#*=}" != "$1" ]; do pre+=("$1"); shift; done
      real=$1; shift
    fi
    real=$(readlink -f "$real")
    printf '%s\0' "${pre[@]}" "$real" "$@" >"$DIR/argv.$name"
    setsid "${pre[@]}" "$real" "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
    echo "$! $name $real" >>"$DIR/pids"
  }
  alive() {
    local pid; pid=$(awk -v n="$1" '$2 == n {p = $1} END {print p}' "$DIR/pids")
    kill -0 "$pid" 2>/dev/null || fail "$1" "process exited"
  }
  wait_for() { # name seconds command...
    local name=$1 limit=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
      alive "$name"
      [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "not ready within ${limit}s"
      sleep 0.2
    done
  }

  # --- Git server -----------------------------------------------------------
  local auth=() git_user='' git_password=''
  rm -f "$DIR/flux/git-auth"
  if [ -n "${HGO_FLUX_GIT_AUTH:-}" ]; then
    case $HGO_FLUX_GIT_AUTH in ?*:*) ;; *) flog "HGO_FLUX_GIT_AUTH wants user:password"; exit 2 ;; esac
    git_user=${HGO_FLUX_GIT_AUTH%%:*} git_password=${HGO_FLUX_GIT_AUTH#*:}
    (umask 077; printf '%s\n' "$HGO_FLUX_GIT_AUTH" >"$DIR/flux/git-auth")
    auth=(-auth-file "$DIR/flux/git-auth")
  fi
  flog "starting the Git server on http://127.0.0.1:$GIT_PORT (root $DIR/git${git_user:+, basic auth as $git_user})"
  start flux-git-server "$FLUX_BIN/git-http-server" \
    -listen "127.0.0.1:$GIT_PORT" -root "$DIR/git" -backend "$backend" ${auth[@]+"${auth[@]}"}
  git_up() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GIT_PORT/" | grep -qv '^000$'; }
  wait_for flux-git-server 10 git_up

  # --- controllers ----------------------------------------------------------
  # The controllers read KUBECONFIG (they have no --kubeconfig flag); the env
  # prefix is part of the recorded command line, so restart.sh keeps it.
  # Leader election off (one replica); every namespace watched (default).
  flog "starting source-controller (artifacts at http://127.0.0.1:$STORAGE_PORT)"
  start source-controller env "KUBECONFIG=$DIR/flux/kubeconfig-source-controller" \
    "$FLUX_BIN/source-controller" \
    --log-level=info --log-encoding=json \
    --storage-path="$DIR/flux/storage" \
    --storage-addr="127.0.0.1:$STORAGE_PORT" \
    --storage-adv-addr="127.0.0.1:$STORAGE_PORT" \
    --health-addr="127.0.0.1:$SC_HEALTH" \
    --metrics-addr="127.0.0.1:$SC_METRICS"
  flog "starting kustomize-controller"
  start kustomize-controller env "KUBECONFIG=$DIR/flux/kubeconfig-kustomize-controller" \
    "$FLUX_BIN/kustomize-controller" \
    --log-level=info --log-encoding=json \
    --health-addr="127.0.0.1:$KC_HEALTH" \
    --metrics-addr="127.0.0.1:$KC_METRICS"
  if [ "$HELM" = 1 ]; then
    # It fetches chart artifacts from source-controller's storage URL (the
    # HelmChart's status.artifact.url), which is on loopback too.
    flog "starting helm-controller $FLUX_HELM_CONTROLLER_VERSION"
    start helm-controller env "KUBECONFIG=$DIR/flux/kubeconfig-helm-controller" \
      "$FLUX_HELM_BIN/helm-controller" \
      --log-level=info --log-encoding=json \
      --health-addr="127.0.0.1:$HC_HEALTH" \
      --metrics-addr="127.0.0.1:$HC_METRICS"
  fi
  wait_for source-controller 60 curl -sf "http://127.0.0.1:$SC_HEALTH/readyz"
  wait_for source-controller 30 curl -sf -o /dev/null "http://127.0.0.1:$STORAGE_PORT/"
  wait_for kustomize-controller 60 curl -sf "http://127.0.0.1:$KC_HEALTH/readyz"
  [ "$HELM" = 1 ] && wait_for helm-controller 60 curl -sf "http://127.0.0.1:$HC_HEALTH/readyz"
  for n in "${want[@]}"; do alive "$n"; done

  cat >"$DIR/flux.env" <<EOF
export FLUX_VERSION=$FLUX_VERSION
export FLUX_NAMESPACE=$FLUX_NAMESPACE
# Repositories: \$FLUX_GIT_URL/NAME.git is $DIR/git/NAME.git (cluster/flux.sh repo NAME).
export FLUX_GIT_URL=http://127.0.0.1:$GIT_PORT
export FLUX_GIT_ROOT=$DIR/git
export FLUX_GIT_USERNAME=$git_user
export FLUX_GIT_PASSWORD=$git_password
export FLUX_SOURCE_STORAGE_URL=http://127.0.0.1:$STORAGE_PORT
export FLUX_SOURCE_HEALTH=http://127.0.0.1:$SC_HEALTH
export FLUX_SOURCE_METRICS=http://127.0.0.1:$SC_METRICS
export FLUX_KUSTOMIZE_HEALTH=http://127.0.0.1:$KC_HEALTH
export FLUX_KUSTOMIZE_METRICS=http://127.0.0.1:$KC_METRICS
EOF
  if [ "$HELM" = 1 ]; then
    cat >>"$DIR/flux.env" <<EOF
export FLUX_HELM_CONTROLLER_VERSION=$FLUX_HELM_CONTROLLER_VERSION
export FLUX_HELM_HEALTH=http://127.0.0.1:$HC_HEALTH
export FLUX_HELM_METRICS=http://127.0.0.1:$HC_METRICS
EOF
  fi
  chmod 600 "$DIR/flux.env"
  flog "Flux $FLUX_VERSION${build:+ with helm-controller $FLUX_HELM_CONTROLLER_VERSION} ready in $(elapsed): git http://127.0.0.1:$GIT_PORT, namespace $FLUX_NAMESPACE"
  echo "use it: source $DIR/flux.env; cluster/flux.sh --dir $DIR repo NAME"
}

case $cmd in
  start)
    case ${1:-} in
      --helm) HELM=1 ;;
      '') ;;
      *) echo "start takes only --helm, got '$1'" >&2; exit 2 ;;
    esac
    start_flux ;;
  stop) stop_flux ;;
  repo) repo "${1:?repo NAME}" ;;
  *) echo "unknown command: $cmd (see --help)" >&2; exit 2 ;;
esac
