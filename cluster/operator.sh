#!/usr/bin/env bash
# Runs the operator binary on this machine against the local control plane,
# as the Helm chart's ServiceAccount (so RBAC is the chart's, not admin's).
#   cluster/operator.sh --dir CLUSTER_DIR [--namespace NS] [-- extra run args]
# Writes CLUSTER_DIR/operator.{kubeconfig,log} and appends its PID to CLUSTER_DIR/pids.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
source "$here/versions.sh"

dir=$HGO_CACHE/clusters/default
system_ns=healing-guard-system
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --namespace) extra+=(--namespace "$2"); shift 2 ;;
    --) shift; extra+=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
# shellcheck disable=SC1091
source "$dir/env"

kubectl create namespace "$system_ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm template healing-guard-operator "$repo/charts/healing-guard-operator" --namespace "$system_ns" \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  --show-only templates/remediator.yaml | kubectl apply -f - >/dev/null
token=$(kubectl -n "$system_ns" create token healing-guard-operator --duration 24h)
cp "$dir/kubeconfig" "$dir/operator.kubeconfig"
user=$(kubectl config view -o jsonpath='{.contexts[0].context.user}')
kubectl --kubeconfig "$dir/operator.kubeconfig" config set-credentials "$user" --token="$token" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
binary=$repo/target/debug/healing-guard-operator
[ -x "$binary" ] || (cd "$repo" && cargo build --quiet)
KUBECONFIG=$dir/operator.kubeconfig RUST_LOG=${RUST_LOG:-warn,healing_guard_operator=info,kube_client::client::builder=off} \
  "$binary" run --listen "127.0.0.1:$port" "${extra[@]}" >"$dir/operator.log" 2>&1 &
pid=$!
echo "$pid operator $binary" >>"$dir/pids"
echo "HGO_METRICS=http://127.0.0.1:$port/metrics" >"$dir/operator.env"
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
    log "operator running (pid $pid), metrics on http://127.0.0.1:$port/metrics, log $dir/operator.log"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/operator.log" >&2; exit 1; }
  sleep 0.2
done
log "operator did not become ready"; tail -20 "$dir/operator.log" >&2; exit 1
