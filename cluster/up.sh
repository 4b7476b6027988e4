#!/usr/bin/env bash
# Starts a real local Kubernetes control plane as plain processes on 127.0.0.1:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake
# nodes). Every port is picked free at start; all state lives in one directory.
#
#   cluster/up.sh [--dir DIR] [--nodes N] [--max-pods N] [--real-nodes N]
#
# --real-nodes N (or HGO_REAL_NODES) adds N real nodes: a kubelet with its
# own containerd each, where the operator runs from its image (node.sh).
# Images listed in HGO_NODE_IMAGES (OCI archives) are imported into them.
# --max-pods sets each node's pod capacity (default 110, the kubelet's).
# HGO_MAX_PODS sets the same default, so wrappers such as with-cluster.sh
# need not pass it through.
# HGO_KCM_QPS (default 20, the controller manager's own) sets the controller
# manager's client rate: --kube-api-qps=N --kube-api-burst=2N. At 20
# requests/s its ReplicaSets create about 20 pods/s, too slow for thousands
# (`make bench` sets 300). When set, ReplicaSets and Deployments also sync 20
# at a time instead of 5.
#
# DIR (default $HGO_CACHE/clusters/default) is wiped and gets:
#   kubeconfig         admin kubeconfig (token auth, CA-verified TLS)
#   kubeconfig-tester  the same for the unprivileged user "tester"
#   kubeconfig-commander, kubeconfig-responder
#                      responders: "commander" (group healing-guard:approvers)
#                      and "responder"; they have no rights until bound
#   env                source it: KUBECONFIG, HGO_APISERVER, HGO_ADMIN_TOKEN,
#                      HGO_TESTER_TOKEN, HGO_CLUSTER_DIR, PATH (kubectl, helm)
#   pids               "PID NAME BINARY" per started process (read by down.sh)
#   argv.NAME          its command line, NUL-separated (read by restart.sh)
#   logs/*.log         one log per component
# Stop it with cluster/down.sh --dir DIR.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

DIR=$HGO_CACHE/clusters/default
NODES=3
MAX_PODS=${HGO_MAX_PODS:-110}
REAL_NODES=${HGO_REAL_NODES:-0}
KCM_QPS=${HGO_KCM_QPS:-}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#*=}; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#*=}; shift ;;
    --max-pods) MAX_PODS=$2; shift 2 ;;
    --max-pods=*) MAX_PODS=${1#*=}; shift ;;
    --real-nodes) REAL_NODES=$2; shift 2 ;;
    --real-nodes=*) REAL_NODES=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $NODES in ''|*[!0-9]*) echo "--nodes wants a number, got '$NODES'" >&2; exit 2 ;; esac
case $REAL_NODES in ''|*[!0-9]*) echo "--real-nodes wants a number, got '$REAL_NODES'" >&2; exit 2 ;; esac
case $MAX_PODS in ''|0|*[!0-9]*) echo "--max-pods wants a positive number, got '$MAX_PODS'" >&2; exit 2 ;; esac
case $KCM_QPS in *[!0-9]*|0) echo "HGO_KCM_QPS wants a positive number, got '$KCM_QPS'" >&2; exit 2 ;; esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

t0=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}s')" "$t0" "$(date +%s.%N)"; }

"$here/build.sh"
# shellcheck source=node.sh
source "$here/node.sh"
[ "$REAL_NODES" -eq 0 ] || install_node_packages

# Stop whatever an earlier run left in DIR, then wipe it. Refuse to wipe a
# non-empty directory that this script did not create.
"$here/down.sh" --dir "$DIR" >/dev/null
if [ -n "$(ls -A "$DIR")" ] && [ ! -e "$DIR/.hgo-cluster" ]; then
  echo "refusing to wipe $DIR: not empty and not made by up.sh (.hgo-cluster missing)" >&2
  exit 1
fi
find "$DIR" -mindepth 1 -delete
touch "$DIR/.hgo-cluster"
mkdir -p "$DIR/logs" "$DIR/etcd" "$DIR/certs" "$DIR/pki"
: >"$DIR/pids"

KUBECTL=$TOOLS_BIN/kubectl
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT < <(free_ports 5)

FAILED=
fail() { # component message
  log "FAILED: $1: $2 (after $(elapsed))"
  if [ -f "$DIR/logs/$1.log" ]; then
    echo "----- last lines of $DIR/logs/$1.log -----" >&2
    tail -n 40 "$DIR/logs/$1.log" >&2
    echo "-----" >&2
  fi
  FAILED=1
  "$here/down.sh" --dir "$DIR" >&2 || true
  exit 1
}
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -z "$FAILED" ]; then
    log "failed or interrupted (exit $rc); stopping what was started"
    "$here/down.sh" --dir "$DIR" >&2 || true
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

start() { # name binary args...
  local name=$1 bin; bin=$(readlink -f "$2"); shift 2
  # The command line, NUL-separated, for restart.sh.
  printf '%s\0' "$bin" "$@" >"$DIR/argv.$name"
  # setsid: own session, so a terminal hang-up or Ctrl-C does not reach it.
  setsid "$bin" "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo "$! $name $bin" >>"$DIR/pids"
}

alive() { # name: fail if its process has exited
  local pid
  pid=$(awk -v n="$1" '$2 == n {print $1}' "$DIR/pids")
  kill -0 "$pid" 2>/dev/null || fail "$1" "process exited"
}

wait_for() { # name seconds command...: poll until command succeeds
  local name=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    alive "$name"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "not ready within ${limit}s"
    sleep 0.2
  done
}

# --- credentials ---------------------------------------------------------
ADMIN_TOKEN=$(openssl rand -hex 24)
TESTER_TOKEN=$(openssl rand -hex 24)
# Two responders for the admission policy: a commander who may approve
# steps, and an on-call responder who may not.
COMMANDER_TOKEN=$(openssl rand -hex 24)
RESPONDER_TOKEN=$(openssl rand -hex 24)
cat >"$DIR/pki/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,admin,"system:masters"
$TESTER_TOKEN,tester,tester
$COMMANDER_TOKEN,commander,commander,"healing-guard:approvers"
$RESPONDER_TOKEN,responder,responder
EOF
openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
chmod 600 "$DIR/pki/"*
KUBELET_CLIENT=()
if [ "$REAL_NODES" -gt 0 ]; then
  prepare_real_nodes "$REAL_NODES"
  KUBELET_CLIENT=(
    --kubelet-client-certificate="$DIR/pki/apiserver-kubelet-client.crt"
    --kubelet-client-key="$DIR/pki/apiserver-kubelet-client.key"
    # The nodes' names resolve nowhere; their addresses do.
    --kubelet-preferred-address-types=InternalIP
  )
fi

# --- etcd ----------------------------------------------------------------
log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$ETCD_BIN/etcd" \
  --name=hgo \
  --data-dir="$DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="hgo=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --log-level=warn
wait_for etcd 20 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ------------------------------------------------------
# Every request a ServiceAccount makes is audited (metadata only): the RBAC
# check of `make test` compares what the operators under test called with
# what the chart grants them (tests/rbac_audit.rs).
cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
EOF
log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --secure-port="$API_PORT" \
  --cert-dir="$DIR/certs" \
  --token-auth-file="$DIR/pki/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$DIR/pki/sa.pub" \
  --service-account-signing-key-file="$DIR/pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --allow-privileged=true \
  --audit-policy-file="$DIR/audit-policy.yaml" \
  --audit-log-path="$DIR/audit.log" \
  --audit-log-format=json \
  ${KUBELET_CLIENT[@]+"${KUBELET_CLIENT[@]}"}
api_ready() {
  [ "$(curl -sk -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$API_PORT/readyz")" = ok ]
}
wait_for kube-apiserver 60 api_ready

# The self-signed serving cert file holds the leaf and the CA that signed it;
# it verifies https://127.0.0.1:PORT, so the kubeconfig uses it as its CA.
CA=$DIR/certs/apiserver.crt
[ -s "$CA" ] || fail kube-apiserver "no self-signed cert in $DIR/certs"
CA_DATA=$(base64 -w0 <"$CA")
write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hgo
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $CA_DATA
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@hgo
  context:
    cluster: hgo
    user: $2
current-context: $2@hgo
EOF
  chmod 600 "$1"
}
write_kubeconfig "$DIR/kubeconfig" admin "$ADMIN_TOKEN"
write_kubeconfig "$DIR/kubeconfig-tester" tester "$TESTER_TOKEN"
write_kubeconfig "$DIR/kubeconfig-commander" commander "$COMMANDER_TOKEN"
write_kubeconfig "$DIR/kubeconfig-responder" responder "$RESPONDER_TOKEN"
KC=$DIR/kubeconfig
"$KUBECTL" --kubeconfig="$KC" version >/dev/null 2>&1 || fail kube-apiserver "kubectl cannot reach it with $KC"

# --- kube-controller-manager, kube-scheduler -----------------------------
log "starting kube-controller-manager and kube-scheduler"
# Unset: the controller manager's defaults (20 requests/s, burst 30), as always.
KCM_RATE=()
if [ -n "$KCM_QPS" ]; then
  KCM_RATE=(
    --kube-api-qps="$KCM_QPS"
    --kube-api-burst=$((KCM_QPS * 2))
    --concurrent-replicaset-syncs=20
    --concurrent-deployment-syncs=20
  )
fi
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$KC" \
  --authentication-kubeconfig="$KC" \
  --authorization-kubeconfig="$KC" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --controllers='*' \
  --service-account-private-key-file="$DIR/pki/sa.key" \
  --root-ca-file="$CA" \
  --service-cluster-ip-range=10.96.0.0/16 \
  ${KCM_RATE[@]+"${KCM_RATE[@]}"}
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$KC" \
  --authentication-kubeconfig="$KC" \
  --authorization-kubeconfig="$KC" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHED_PORT" \
  --leader-elect=false

# --- kwok ----------------------------------------------------------------
# Stock stages from the build, then the project's failure-injection stages.
{
  cat "$KWOK_BIN/stages.yaml"
  for f in "$here"/stages/*.yaml; do echo "---"; cat "$f"; done
} >"$DIR/kwok.yaml"
log "starting kwok"
start kwok "$KWOK_BIN/kwok" \
  --kubeconfig="$KC" \
  --config="$DIR/kwok.yaml" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 \
  --node-ip=127.0.0.1 \
  --cidr=10.244.0.0/16

wait_for kube-controller-manager 30 curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 30 curl -sfk "https://127.0.0.1:$SCHED_PORT/healthz"

# --- nodes ---------------------------------------------------------------
log "creating $NODES kwok nodes"
{
  for i in $(seq 1 "$NODES"); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec: {}
status:
  capacity: {cpu: "32", memory: 256Gi, pods: "$MAX_PODS"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "$MAX_PODS"}
EOF
  done
} >"$DIR/nodes.yaml"
[ "$NODES" -eq 0 ] || "$KUBECTL" --kubeconfig="$KC" apply -f "$DIR/nodes.yaml" >/dev/null ||
  fail kwok "could not create nodes"

# Ready, and no taints left (the node lifecycle controller puts a not-ready
# taint on new nodes and lifts it once kwok reports them Ready).
nodes_ready() {
  local out
  out=$("$KUBECTL" --kubeconfig="$KC" get nodes -o \
    'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}')
  [ "$(grep -c '^True $' <<<"$out")" -eq "$NODES" ]
}
wait_for kwok 60 nodes_ready
# Pods in "default" are refused until its service account exists.
sa_ready() { "$KUBECTL" --kubeconfig="$KC" -n default get serviceaccount default; }
wait_for kube-controller-manager 30 sa_ready
[ "$REAL_NODES" -eq 0 ] || start_real_nodes "$REAL_NODES"
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do alive "$c"; done

cat >"$DIR/env" <<EOF
export HGO_CLUSTER_DIR=$DIR
export KUBECONFIG=$DIR/kubeconfig
export HGO_APISERVER=https://127.0.0.1:$API_PORT
export HGO_ADMIN_TOKEN=$ADMIN_TOKEN
export HGO_TESTER_TOKEN=$TESTER_TOKEN
export PATH=$TOOLS_BIN:\$PATH
export HGO_AIOSMTPD=$SMTP_VENV/bin/aiosmtpd
export HGO_REAL_NODES=$REAL_NODES
EOF
chmod 600 "$DIR/env"

log "cluster ready in $(elapsed): $NODES kwok nodes, $REAL_NODES real, API https://127.0.0.1:$API_PORT"
cat <<EOF
kubeconfig: $DIR/kubeconfig   (admin; unprivileged user: $DIR/kubeconfig-tester)
use it:     source $DIR/env && kubectl get nodes
stop it:    $here/down.sh --dir $DIR
EOF
