#!/usr/bin/env bash
# Real Argo CD on a cluster started by up.sh: the application controller and
# the repo-server as plain processes, Redis (their cache), and a Git server on
# loopback (Flux's, cluster/flux/git-server) that serves bare repositories
# from DIR/git/ over HTTP.
#
#   cluster/argocd.sh [--dir DIR] start      install CRDs and config, start all four
#   cluster/argocd.sh [--dir DIR] stop       stop them (the cluster and its objects stay)
#   cluster/argocd.sh [--dir DIR] repo NAME  create the bare repository DIR/git/NAME.git
#                                            (branch main) if missing; print its URL
#
# DIR defaults to $HGO_CLUSTER_DIR (set by with-cluster.sh), else
# $HGO_CACHE/clusters/default. `start` builds first if needed
# (argocd-build.sh, flux-build.sh for the Git server), and is a no-op while
# all four run.
#
# What `start` does and writes:
#   CRDs       Application, AppProject, ApplicationSet (v3.6.2's manifests/crds)
#   config     cluster/argocd/config.yaml: namespace argocd, argocd-cm (tracking
#              by annotation), the other ConfigMaps and argocd-secret (empty),
#              AppProject default, ServiceAccount argocd-application-controller
#              bound to cluster-admin
#   DIR/argocd/kubeconfig-application-controller
#              a one-year token of that ServiceAccount. The controller uses it
#              for its own objects (--kubeconfig) and, through
#              ARGOCD_FAKE_IN_CLUSTER=true + KUBECONFIG, for the destination
#              https://kubernetes.default.svc ("in-cluster"), which is thus
#              this API server. Applications target that server.
#   DIR/git/   the Git server's root: DIR/git/NAME.git is $ARGOCD_GIT_URL/NAME.git
#              (the same folder flux.sh serves; each runs its own server)
#   DIR/argocd.env  source it: ARGOCD_GIT_URL, ARGOCD_NAMESPACE, ARGOCD_GIT_ROOT,
#              ARGOCD_REDIS, ARGOCD_REPO_SERVER, the metrics URLs,
#              ARGOCD_APP_RESYNC (s), ARGOCD_SELF_HEAL_BACKOFF (s), ARGOCD_VERSION
#   DIR/pids   one "PID NAME BINARY" line each (names argocd-git-server,
#              argocd-redis, argocd-repo-server, argocd-application-controller):
#              down.sh stops them with the rest; argv.NAME: restart.sh can restart each
#   DIR/logs/<name>.log
# Ports are free ones picked at start, on 127.0.0.1, kept for a later start
# in the same DIR while free. One exception: the controller's metrics server
# listens on 0.0.0.0 (v3.6.2 hard-codes the address; only the port is a flag).
#
# HGO_ARGOCD_APP_RESYNC (default 10) is the controller's --app-resync in
# seconds (how often it compares every Application with Git; Argo CD's
# default is 120). Self-heal itself reacts to watch events of the live
# objects, after --self-heal-backoff-timeout-seconds (2, Argo CD's default).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"
source "$here/processes.sh"
source "$here/flux/versions.sh"   # FLUX_BIN: where the Git server is built
ARGOCD_VERSION=$(sed -n 's/^ARGOCD_VERSION=\${ARGOCD_VERSION:-\(.*\)}$/\1/p' "$here/argocd-build.sh")
ARGOCD_VERSION=${HGO_ARGOCD_VERSION:-$ARGOCD_VERSION}
ARGOCD_BIN=$HGO_CACHE/bin/argocd-$ARGOCD_VERSION
ARGOCD_NAMESPACE=argocd
APP_RESYNC=${HGO_ARGOCD_APP_RESYNC:-10}
# The repo-server remembers what a branch points at for 3 minutes by
# default (--revision-cache-expiration): a new commit would wait that long.
# HGO_ARGOCD_REVISION_CACHE (default 1s) lets each resync see it.
SELF_HEAL_BACKOFF=2

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
NAMES=(argocd-git-server argocd-redis argocd-repo-server argocd-application-controller)

alog() { printf '[argocd] %s\n' "$*" >&2; }

stop_argocd() { stop_processes alog argocd.env "${NAMES[@]}"; }

repo() { bare_repo "$1" argocd.env ARGOCD_GIT_URL; } # NAME: DIR/git/NAME.git, branch main

start_argocd() {
  local t0; t0=$(date +%s.%N)
  elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$t0" "$(date +%s.%N)"; }

  [ -f "$DIR/env" ] || { echo "$DIR has no env: start the cluster with cluster/up.sh --dir $DIR first" >&2; exit 2; }
  local all=1 n
  for n in "${NAMES[@]}"; do running "$n" >/dev/null || all=0; done
  if [ "$all" = 1 ] && [ -f "$DIR/argocd.env" ]; then
    alog "already running in $DIR"
    return 0
  fi
  stop_argocd || { alog "could not stop an earlier run"; exit 1; }

  "$here/argocd-build.sh"
  "$here/flux-build.sh"   # only for its git-http-server (cached after the first run)
  # shellcheck disable=SC1091
  source "$DIR/env"
  local kc=$DIR/kubeconfig
  command -v git >/dev/null || { alog "git is not installed (apt-get install git)"; exit 1; }
  local backend; backend="$(git --exec-path)/git-http-backend"
  [ -x "$backend" ] || { alog "$backend is missing (Debian's git package has it)"; exit 1; }
  # Redis: Debian's package, installed when missing (as root), as node.sh does.
  if ! command -v redis-server >/dev/null; then
    [ "$(id -u)" = 0 ] || { alog "Argo CD needs Redis: install the Debian package redis-server (as root)"; exit 1; }
    alog "installing redis-server (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 ||
      { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2; }
  fi
  local redis_server; redis_server=$(command -v redis-server)
  local A=$DIR/argocd
  mkdir -p "$A/redis" "$A/ssh" "$A/tls" "$A/plugins" "$A/tmp" "$DIR/git" "$DIR/logs"

  # --- CRDs and config ------------------------------------------------------
  alog "installing Argo CD $ARGOCD_VERSION CRDs and config (namespace $ARGOCD_NAMESPACE)"
  "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-argocd \
    -f "$ARGOCD_BIN/crds/" >/dev/null
  # Right after the create a CRD may have no status.conditions yet, and
  # kubectl wait then fails at once ("<nil> is of the type <nil>"): retry.
  local i
  for i in $(seq 1 60); do
    "$KUBECTL" --kubeconfig="$kc" wait --for=condition=Established --timeout=60s \
      -f "$ARGOCD_BIN/crds/" >/dev/null 2>&1 && break
    [ "$i" -lt 60 ] || { alog "FAILED: the CRDs are not Established"; exit 1; }
    sleep 0.5
  done
  "$KUBECTL" --kubeconfig="$kc" apply --server-side --force-conflicts --field-manager=hgo-argocd \
    -f "$here/argocd/config.yaml" >/dev/null

  # The controller's kubeconfig: a token of its ServiceAccount (a year), the
  # API server and CA of the admin one.
  local server ca token ctl=argocd-application-controller
  server=$("$KUBECTL" --kubeconfig="$kc" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.server}')
  ca=$("$KUBECTL" --kubeconfig="$kc" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')
  token=$("$KUBECTL" --kubeconfig="$kc" -n "$ARGOCD_NAMESPACE" create token "$ctl" --duration=8760h)
  ( umask 077
    cat >"$A/kubeconfig-$ctl" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hgo
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: system:serviceaccount:$ARGOCD_NAMESPACE:$ctl
  user:
    token: $token
contexts:
- name: $ctl@hgo
  context:
    cluster: hgo
    user: system:serviceaccount:$ARGOCD_NAMESPACE:$ctl
    namespace: $ARGOCD_NAMESPACE
current-context: $ctl@hgo
EOF
  )

  # --- ports ----------------------------------------------------------------
  # git, redis, repo-server, repo-server metrics, controller metrics
  local ports
  ports=$(python3 - "$A/ports" <<'PY'
import socket, sys
N = 5
def free(p, host="127.0.0.1"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, p)); return True
    except OSError:
        return False
    finally:
        s.close()
try:
    old = [int(x) for x in open(sys.argv[1]).read().split()]
except (OSError, ValueError):
    old = []
# The controller's metrics port is bound on 0.0.0.0: check it there.
if len(old) == N and all(free(p) for p in old[:-1]) and free(old[-1], "0.0.0.0"):
    print(*old)
else:
    socks = []
    for _ in range(N):
        s = socket.socket(); s.bind(("0.0.0.0", 0)); socks.append(s)
    print(*[s.getsockname()[1] for s in socks])
PY
)
  echo "$ports" >"$A/ports"
  local GIT_PORT REDIS_PORT REPO_PORT REPO_METRICS CTL_METRICS
  read -r GIT_PORT REDIS_PORT REPO_PORT REPO_METRICS CTL_METRICS <<<"$ports"

  fail() { # name message
    alog "FAILED: $1: $2 (after $(elapsed))"
    if [ -f "$DIR/logs/$1.log" ]; then
      echo "----- last lines of $DIR/logs/$1.log -----" >&2
      tail -n 40 "$DIR/logs/$1.log" >&2
      echo "-----" >&2
    fi
    stop_argocd >&2 || true
    exit 1
  }
  # start NAME [VAR=VALUE...] PROGRAM ARGS...: run it niced, in its own
  # session; DIR/pids gets the binary PROGRAM resolves to (what
  # /proc/PID/exe shows, as down.sh checks), while PROGRAM itself is run,
  # since redis-server is a symlink that picks its role by its name.
  start() {
    local name=$1; shift
    local pre=(/usr/bin/env)
    while [ "${1#*=}" != "$1" ]; do pre+=("$1"); shift; done
    local prog=$1; shift
    local real; real=$(readlink -f "$prog")
    printf '%s\0' "${pre[@]}" nice -n 10 "$prog" "$@" >"$DIR/argv.$name"
    # env and nice exec the program: the PID stays the same.
    setsid "${pre[@]}" nice -n 10 "$prog" "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
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
  alog "starting the Git server on http://127.0.0.1:$GIT_PORT (root $DIR/git)"
  start argocd-git-server "$FLUX_BIN/git-http-server" \
    -listen "127.0.0.1:$GIT_PORT" -root "$DIR/git" -backend "$backend"
  git_up() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GIT_PORT/" | grep -qv '^000$'; }
  wait_for argocd-git-server 10 git_up

  # --- Redis ----------------------------------------------------------------
  # A cache only: no persistence, loopback, no password.
  alog "starting Redis on 127.0.0.1:$REDIS_PORT"
  start argocd-redis "$redis_server" --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save '' --appendonly no --dir "$A/redis" --protected-mode yes --daemonize no
  redis_up() { python3 - "$REDIS_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
PY
  }
  wait_for argocd-redis 10 redis_up

  # --- repo-server and controller ------------------------------------------
  # One binary; ARGOCD_BINARY_NAME picks the role (it would otherwise be
  # taken from argv[0], the symlink's name). Paths the images provide under
  # /app/config and /home/argocd point into DIR/argocd; GPG off (it would
  # need /app/config/gpg).
  local common_env=(
    "ARGOCD_GPG_ENABLED=false"
    # git-verify-wrapper.sh (the image has it in /usr/local/bin)
    "PATH=$ARGOCD_BIN/scripts:$PATH"
    "ARGOCD_SSH_DATA_PATH=$A/ssh" "ARGOCD_TLS_DATA_PATH=$A/tls"
    "ARGOCD_PLUGINSOCKFILEPATH=$A/plugins" "TMPDIR=$A/tmp" "HOME=$A"
    # The Git credential helper's socket; default /tmp/reposerver-ask-pass.sock,
    # which two clusters on one machine would share.
    "ARGOCD_ASK_PASS_SOCK=$A/ask-pass.sock"
  )
  alog "starting argocd-repo-server on 127.0.0.1:$REPO_PORT (plaintext gRPC)"
  start argocd-repo-server ARGOCD_BINARY_NAME=argocd-repo-server "${common_env[@]}" \
    "$ARGOCD_BIN/argocd" \
    --address 127.0.0.1 --port "$REPO_PORT" --disable-tls --client-ca-path '' \
    --metrics-address 127.0.0.1 --metrics-port "$REPO_METRICS" \
    --redis "127.0.0.1:$REDIS_PORT" --logformat json --loglevel info \
    --revision-cache-expiration "${HGO_ARGOCD_REVISION_CACHE:-1s}"
  wait_for argocd-repo-server 60 curl -sf -o /dev/null "http://127.0.0.1:$REPO_METRICS/metrics"

  alog "starting argocd-application-controller (app resync ${APP_RESYNC}s)"
  start argocd-application-controller ARGOCD_BINARY_NAME=argocd-application-controller "${common_env[@]}" \
    "ARGOCD_FAKE_IN_CLUSTER=true" "KUBECONFIG=$A/kubeconfig-$ctl" \
    "$ARGOCD_BIN/argocd" \
    --kubeconfig "$A/kubeconfig-$ctl" --namespace "$ARGOCD_NAMESPACE" \
    --repo-server "127.0.0.1:$REPO_PORT" --repo-server-plaintext \
    --redis "127.0.0.1:$REDIS_PORT" \
    --metrics-port "$CTL_METRICS" \
    --app-resync "$APP_RESYNC" --app-resync-jitter 0 \
    --self-heal-backoff-timeout-seconds "$SELF_HEAL_BACKOFF" \
    --status-processors 4 --operation-processors 4 \
    --logformat json --loglevel info
  wait_for argocd-application-controller 90 curl -sf -o /dev/null "http://127.0.0.1:$CTL_METRICS/healthz"
  for n in "${NAMES[@]}"; do alive "$n"; done

  cat >"$DIR/argocd.env" <<EOF
export ARGOCD_VERSION=$ARGOCD_VERSION
export ARGOCD_NAMESPACE=$ARGOCD_NAMESPACE
# Repositories: \$ARGOCD_GIT_URL/NAME.git is $DIR/git/NAME.git (cluster/argocd.sh repo NAME).
export ARGOCD_GIT_URL=http://127.0.0.1:$GIT_PORT
export ARGOCD_GIT_ROOT=$DIR/git
export ARGOCD_REDIS=127.0.0.1:$REDIS_PORT
export ARGOCD_REPO_SERVER=127.0.0.1:$REPO_PORT
export ARGOCD_REPO_SERVER_METRICS=http://127.0.0.1:$REPO_METRICS/metrics
export ARGOCD_CONTROLLER_METRICS=http://127.0.0.1:$CTL_METRICS/metrics
export ARGOCD_APP_RESYNC=$APP_RESYNC
export ARGOCD_SELF_HEAL_BACKOFF=$SELF_HEAL_BACKOFF
# Applications deploy to this API server as destination server:
export ARGOCD_DEST_SERVER=https://kubernetes.default.svc
EOF
  chmod 600 "$DIR/argocd.env"
  alog "Argo CD $ARGOCD_VERSION ready in $(elapsed): git http://127.0.0.1:$GIT_PORT, namespace $ARGOCD_NAMESPACE"
  echo "use it: source $DIR/argocd.env; cluster/argocd.sh --dir $DIR repo NAME"
}

case $cmd in
  start) start_argocd ;;
  stop) stop_argocd ;;
  repo) repo "${1:?repo NAME}" ;;
  *) echo "unknown command: $cmd (see --help)" >&2; exit 2 ;;
esac
