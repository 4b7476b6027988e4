#!/usr/bin/env bash
# Restarts one process of a cluster started by up.sh (kube-apiserver, etcd,
# ...) with the command line it was started with, and waits until the API
# server answers again. For tests of what survives a restart.
#   cluster/restart.sh [--dir DIR] NAME
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/versions.sh"

DIR=${HGO_CLUSTER_DIR:-}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    *) break ;;
  esac
done
name=${1:?usage: $0 [--dir DIR] NAME}
[ -n "$DIR" ] && [ -f "$DIR/pids" ] || { echo "no cluster in '$DIR' (pass --dir or set HGO_CLUSTER_DIR)" >&2; exit 2; }
[ -f "$DIR/argv.$name" ] || { echo "no command line recorded for $name in $DIR" >&2; exit 2; }

pid=$(awk -v n="$name" '$2 == n {print $1}' "$DIR/pids")
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
fi

mapfile -d '' argv <"$DIR/argv.$name"
setsid "${argv[@]}" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
new=$!
# The pids file keeps one line per process: this one's, updated.
awk -v n="$name" -v p="$new" '$2 == n {$1 = p} {print}' "$DIR/pids" >"$DIR/pids.new"
mv "$DIR/pids.new" "$DIR/pids"

# shellcheck disable=SC1091
source "$DIR/env"
for _ in $(seq 1 240); do
  if [ "$(curl -sk -H "Authorization: Bearer $HGO_ADMIN_TOKEN" "$HGO_APISERVER/readyz")" = ok ]; then
    echo "[cluster] $name restarted (pid $new); the API server is ready"
    exit 0
  fi
  kill -0 "$new" 2>/dev/null || { echo "$name exited after its restart; see $DIR/logs/$name.log" >&2; exit 1; }
  sleep 0.25
done
echo "the API server did not come back within 60 s after restarting $name" >&2
exit 1
