#!/usr/bin/env bash
# Runs a command against a fresh local control plane, then stops it.
#   cluster/with-cluster.sh [--dir DIR] -- COMMAND [ARGS...]
# The command sees KUBECONFIG, HGO_APISERVER, ... (see up.sh) and kubectl/helm on PATH.
# HGO_KEEP_CLUSTER=1 keeps the state and logs (the audit log among them) of a
# run that passed, too, for a look afterwards.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

dir=$HGO_CACHE/clusters/run-$$
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--dir DIR] -- COMMAND [ARGS...]" >&2; exit 2; }

# A failed run keeps its state and logs for a look (etcd alone takes 60 MiB):
# only the three newest are kept, so they never fill a disk.
prune_kept() {
  local old
  # shellcheck disable=SC2012
  ls -dt "$HGO_CACHE"/clusters/run-* 2>/dev/null | tail -n +4 | while read -r old; do
    # A run still going has processes in its pids file.
    [ -s "$old/pids" ] && continue
    rm -rf "$old"
  done || true
}
prune_kept

cleanup() {
  local code=$?
  "$here/down.sh" --dir "$dir" >/dev/null 2>&1 || true
  if [ "$code" = 0 ] && [ "${HGO_KEEP_CLUSTER:-}" != 1 ]; then
    rm -rf "$dir"
  else
    log "cluster state and logs kept in $dir"
  fi
  exit "$code"
}
trap cleanup EXIT INT TERM
"$here/up.sh" --dir "$dir"
# shellcheck disable=SC1091
source "$dir/env"
"$@"
